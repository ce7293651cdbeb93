// ShardedLayout: where every weight of a PaLM model lives on a pod × data × model mesh, and the
// maps between a rank's shard and the single-device `Parameters` layout.
//
// Model axis (Megatron-LM, Shoeybi et al. 2019, §3): `w_in` is column-parallel, `w_out` row-parallel.
// Model shard m owns query heads [m·H/M, (m+1)·H/M) and d_ff columns [m·F/M, (m+1)·F/M) of gate and
// up, and the matching rows of `w_out`: its weights are exactly `Parameters(config: local)`, the
// single-device layout of the config with H/M heads and F/M d_ff (`local`), so the one Model runs
// its blocks on them unchanged.
// Data axis (FSDP / ZeRO-3): that local layout is a run of contiguous buckets, [embed | ln_f] then
// one per layer (Parameters.swift); each bucket is padded to a multiple of 16·D floats and cut into D
// equal chunks, and a rank stores chunk `data` of every bucket, back to back (its "shard"). With
// D = 1 every bucket is its own chunk (the layout is already 16-float aligned), so the shard IS
// `Parameters(config: local)`, and at (1,1,1) it is the single-device model: no copy, no padding.

import PalmTensor

/// The sizes and offsets of the sharded layout for one config and mesh (the same on every rank).
///
/// Why the single K/V head is REPLICATED on every model shard rather than sharded: PaLM uses
/// multi-query attention, so all H query heads read the same K and V. Sharding K/V across `model`
/// would force a collective inside attention. Its weight is small (d × 2Q), so every shard keeps a
/// full copy; the shards' partial K/V gradients (each from its own heads) are summed over `model`
/// in the backward's one collective, so the copies stay bit-identical. LayerNorm scales, the
/// embedding and the final LayerNorm are replicated over `model` too; their gradients come from
/// replicated inputs and are identical on every model shard without any collective.
public struct ShardedLayout: Sendable, Equatable {
  public let config: PalmConfig
  public let shape: MeshShape
  /// The config one model shard computes: H/M heads and F/M d_ff columns, the rest as `config`.
  public let local: PalmConfig
  /// The local parameter table (`Parameters.layout(for: local)`) and its float count.
  public let localEntries: [ParameterEntry]
  public let localFloats: Int
  /// Bucket b's range in the local layout: 0 is the head (embed, ln_f), 1 + i is layer i.
  public let buckets: [Range<Int>]
  /// Floats of bucket b's chunk on each data rank (the bucket padded to 16·D, divided by D).
  public let chunkFloats: [Int]
  /// Offset of bucket b's chunk in a rank's shard; and the shard's size.
  public let chunkOffsets: [Int]
  public let shardFloats: Int

  /// Validates config and mesh (throws `MeshError` / `PalmConfig.Invalid` before any work).
  public init(config: PalmConfig, shape: MeshShape) throws {
    try config.validate()
    try shape.validate(config: config, batch: config.batch)
    self.config = config
    self.shape = shape
    var local = config
    local.heads = config.heads / shape.model
    local.dFF = config.dFF / shape.model
    self.local = local
    (localEntries, localFloats) = Parameters.layout(for: local)
    let byName = Dictionary(uniqueKeysWithValues: localEntries.map { ($0.name, $0) })
    func end(_ name: String) -> Int { let e = byName[name]!; return e.offset + Arena.rounded(e.count) }
    var buckets = [0..<end("ln_f.scale")]
    for i in 0..<config.layers { buckets.append(byName["layers.\(i).ln.scale"]!.offset..<end("layers.\(i).w_out")) }
    self.buckets = buckets
    let pad = 16 * shape.data
    chunkFloats = buckets.map { ($0.count + pad - 1) / pad * pad / shape.data }
    var offsets: [Int] = [], total = 0
    for c in chunkFloats { offsets.append(total); total += c }
    chunkOffsets = offsets
    shardFloats = total
  }

  /// Buckets: the head and one per layer.
  public var bucketCount: Int { buckets.count }
  /// The bucket of layer i.
  public static func layerBucket(_ i: Int) -> Int { i + 1 }
  public static let headBucket = 0
  /// Bucket b's size once gathered over `data` (its padded size).
  public func gatheredFloats(_ b: Int) -> Int { chunkFloats[b] * shape.data }
  /// The largest gathered layer bucket (the size of the reusable gathered-layer buffer).
  public var layerGatherFloats: Int { (1..<bucketCount).map(gatheredFloats).max() ?? 0 }
  /// True when a rank's shard is its whole model shard (no data sharding).
  public var shardIsLocal: Bool { shape.data == 1 }

  // MARK: - Model axis: the local layout inside the full one

  /// Column runs of the local `w_in` taken from the full `w_in` on model shard m:
  /// (full column start, local column start, width).
  public func wInColumns(model m: Int) -> [(full: Int, local: Int, count: Int)] {
    let lhq = local.queryColumns, lf = local.dFF
    return [(m * lhq, 0, lhq), (config.keyColumn, local.keyColumn, 2 * config.headDim),
            (config.gateColumn + m * lf, local.gateColumn, lf), (config.upColumn + m * lf, local.upColumn, lf)]
  }

  /// Row runs of the local `w_out` taken from the full `w_out` on model shard m.
  public func wOutRows(model m: Int) -> [(full: Int, local: Int, count: Int)] {
    let lhq = local.queryColumns
    return [(m * lhq, 0, lhq), (config.queryColumns + m * local.dFF, lhq, local.dFF)]
  }

  /// Runs (full flat offset, local flat offset, count) that place model shard m's local tensor
  /// `name` in the full tensor of the same name (offsets relative to each tensor's start). A
  /// replicated tensor is one run. Row-major: `w_in` is d rows of column runs, `w_out` row runs.
  public func runs(of name: String, model m: Int) -> [(full: Int, local: Int, count: Int)] {
    let d = config.dModel
    if name.hasSuffix(".w_in") {
      let fullIn = config.inputProjectionColumns, localIn = local.inputProjectionColumns
      return (0..<d).flatMap { r in wInColumns(model: m).map { (r * fullIn + $0.full, r * localIn + $0.local, $0.count) } }
    }
    if name.hasSuffix(".w_out") { return wOutRows(model: m).map { ($0.full * d, $0.local * d, $0.count * d) } }
    let e = localEntries.first { $0.name == name }!
    return [(0, 0, e.count)]
  }

  /// Ranges of the local layout whose elements every model shard holds (LayerNorm scales, the
  /// K/V columns of `w_in`, the head): counted on model shard 0 only in global sums (the gradient
  /// norm, Adafactor's RMS terms). Sorted, disjoint.
  public var replicatedRanges: [Range<Int>] {
    var r: [Range<Int>] = [buckets[0]]
    let q2 = 2 * config.headDim, localIn = local.inputProjectionColumns
    for e in localEntries where e.name.hasPrefix("layers.") {
      if e.name.hasSuffix(".ln.scale") { r.append(e.offset..<(e.offset + e.count)) }
      if e.name.hasSuffix(".w_in") {
        for row in 0..<config.dModel {
          let s = e.offset + row * localIn + local.keyColumn
          r.append(s..<(s + q2))
        }
      }
    }
    return r.sorted { $0.lowerBound < $1.lowerBound }
  }

  /// Where the local range `r` lies in this data rank's shard: the part of it inside chunk `data`
  /// of its bucket, as a shard range, or nil when this rank does not hold any of it.
  public func shardRange(of r: Range<Int>, data: Int) -> Range<Int>? {
    guard let b = buckets.firstIndex(where: { $0.contains(r.lowerBound) }) else { return nil }
    let lo = buckets[b].lowerBound + data * chunkFloats[b], hi = lo + chunkFloats[b]
    let a = max(r.lowerBound, lo), z = min(r.upperBound, hi)
    guard a < z else { return nil }
    return (chunkOffsets[b] + a - lo)..<(chunkOffsets[b] + z - lo)
  }
}

/// The planned bytes of one rank of a mesh: what `palm train --mesh` and `palm bench step --mesh`
/// print, from the layout and the memory plan (no allocation). Parameters, gradients and the
/// optimizer's two moments (AdamW, and PaLM's unfactored Adafactor) are 1/data of the model shard;
/// with data > 1 the rank also holds the gathered head, one gathered layer, their gradients and
/// one chunk (ShardStorage.swift); activations are the MemoryPlan of the shard config and rows.
///
/// `storage` says how many bytes each kind of element takes and what else is sharded; its default
/// (`.package`) is what this package allocates (fp32 everywhere), and `palm plan` passes others
/// (PaLM's layout on TPU: bf16 activations, the saved block input and the embedding sharded over
/// `model`) to this same accounting:
///
/// ```
/// shard      = layout.shardFloats, less the head chunk's (M-1)/M when the embedding is sharded over model
/// parameters = shard · weight,  gradients = shard · gradient,  optimizer = moments · shard · moment
/// gathered   = (head + layer) · gathered + (head + layer + chunk) · gradient      (data > 1 only)
/// activations: MemoryPlan(local, rows = batch / (pod·data·microBatches)) buffers · activation,
///              layers.*.x divided by M when the saved block input is sharded over model
/// ```
public struct MeshMemory: Sendable, Equatable {
  /// Bytes per element and the sharding choices the accounting applies.
  public struct Storage: Sendable, Equatable, Codable {
    public var weight = 4, gradient = 4, moment = 4, gathered = 4, activation = 4
    /// The head bucket (embedding, final LayerNorm) is split over `model` too (GSPMD's 2-D sharding).
    public var shardEmbeddingOverModel = false
    /// The one activation saved per layer (the block input) is split over `model` (PaLM §4: "one
    /// fully sharded activation tensor is saved per layer").
    public var shardSavedInputOverModel = false
    public init() {}
    /// What this package allocates.
    public static let package = Storage()
  }

  public let parameterBytes: Int, gradientBytes: Int, optimizerBytes: Int, gatheredBytes: Int, activationBytes: Int
  /// Of `activationBytes`: kept from forward to backward (per-layer saved buffers and the head), and
  /// the transient scratch and backward gradient buffers.
  public let savedActivationBytes: Int, scratchActivationBytes: Int
  /// Floats of one rank's parameter shard (what parameters, gradients and each moment hold).
  public let shardFloats: Int
  public var totalBytes: Int { parameterBytes + gradientBytes + optimizerBytes + gatheredBytes + activationBytes }

  /// `microBatches`: gradient-accumulation micro-batches per step; the activations are one micro-batch's.
  /// `headRows`: the head's rows per chunk (MemoryPlan; nil: its default).
  public init(config: PalmConfig, shape: MeshShape, remat: RematPolicy, optimizer moments: Int = 2,
              microBatches: Int = 1, storage s: Storage = .package, headRows: Int? = nil) throws {
    let layout = try ShardedLayout(config: config, shape: shape)
    let m = shape.model
    let headChunk = layout.chunkFloats[ShardedLayout.headBucket]
    let shard = layout.shardFloats - (s.shardEmbeddingOverModel ? headChunk - (headChunk + m - 1) / m : 0)
    shardFloats = shard
    parameterBytes = shard * s.weight
    gradientBytes = shard * s.gradient
    optimizerBytes = moments * shard * s.moment
    if shape.data > 1 {
      let fullHead = layout.gatheredFloats(ShardedLayout.headBucket)
      let head = s.shardEmbeddingOverModel ? (fullHead + m - 1) / m : fullHead
      let weights = head + layout.layerGatherFloats
      gatheredBytes = weights * s.gathered + (weights + (layout.chunkFloats.max() ?? 0)) * s.gradient
    } else {
      gatheredBytes = 0
    }
    let rows = config.batch / (shape.pod * shape.data * max(1, microBatches))
    let plan = MemoryPlan(config: layout.local, policy: remat, batch: max(1, rows),
                          seqLen: config.seqLen, modelParallel: m > 1, headRows: headRows)
    var saved = 0, scratch = 0
    for b in plan.buffers {
      var bytes = b.floats * s.activation
      if s.shardSavedInputOverModel && b.lifetime == .saved && b.name.hasSuffix(".x") { bytes = (bytes + m - 1) / m }
      if b.lifetime == .saved || b.lifetime == .head { saved += bytes } else { scratch += bytes }
    }
    savedActivationBytes = saved
    scratchActivationBytes = scratch
    activationBytes = saved + scratch
  }

  /// "params 1.2 MB, grads 1.2 MB, optimizer 2.4 MB, gathered 0 B, activations 3.4 MB, total 8.2 MB".
  public var summary: String {
    func mb(_ b: Int) -> String { String(format: "%.1f MB", Double(b) / 1e6) }
    return "params \(mb(parameterBytes)), grads \(mb(gradientBytes)), optimizer \(mb(optimizerBytes)), "
      + "gathered \(mb(gatheredBytes)), activations \(mb(activationBytes)), total \(mb(totalBytes))"
  }
}
