// ShardedLayout: where every weight of a PaLM model lives on a pod × data × model mesh (issue #5 item 2),
// and the conversions between a rank's shards and the single-device `Parameters` layout.
//
// Model axis (Megatron-LM, Shoeybi et al. 2019, §3): `w_in` is column-parallel, `w_out` row-parallel.
// Model shard m owns query heads [m·H/M, (m+1)·H/M) and d_ff columns [m·F/M, (m+1)·F/M) of gate and
// up, and the matching rows of `w_out`. Its local `w_in` is (d, H/M·Q + 2Q + 2F/M) =
// [q_local | K | V | gate_local | up_local] and its local `w_out` is (H/M·Q + F/M, d) =
// [attn-out rows_local ; down rows_local], the single-device layouts restricted to its heads/columns.
// Data axis (FSDP / ZeRO-3): each bucket (one per layer: ln | w_in_local | w_out_local; plus one
// "head" bucket: embed | ln_f) is flattened, padded to a multiple of 16·D and cut into D equal chunks.

import PalmModel
import PalmTensor

/// The sizes and offsets of the sharded layout for one config and mesh (the same on every rank).
///
/// Why the single K/V head is REPLICATED on every model shard rather than sharded: PaLM uses
/// multi-query attention, so all H query heads read the same K and V. Sharding K/V across `model`
/// would force a collective inside attention (an all-gather of K and V every layer, forward and
/// backward). Its weight is small (d × 2Q, e.g. 2/(H+2+2F/Q) of `w_in`), so every shard keeps a
/// full copy and computes K/V itself; the shards' partial K/V gradients (each from its own heads)
/// are summed with an all-reduce over `model` before the data-axis reduce-scatter, so the copies stay
/// bit-identical. LayerNorm scales, the embedding and the final LayerNorm are replicated over
/// `model` too; their gradients are computed from replicated inputs and are bit-identical on every
/// model shard without any collective.
public struct ShardedLayout: Sendable, Equatable {
  public let config: PalmConfig
  public let shape: MeshShape
  /// d_model, head dim, heads, d_ff, vocab.
  public let d: Int, q: Int, heads: Int, dFF: Int, vocab: Int
  /// The config one model shard computes a block of: H/M heads and F/M d_ff columns (the rest as
  /// `config`), so its fused projection sizes and offsets are `PalmConfig`'s own properties.
  public let local: PalmConfig
  /// Heads and d_ff columns per model shard.
  public let localHeads: Int, localFF: Int
  /// Columns of the local `w_in`: H/M·Q + 2Q + 2F/M.
  public let localIn: Int
  /// Rows of the local `w_out`: H/M·Q + F/M.
  public let localOut: Int
  /// Offsets (floats) inside a layer bucket of ln.scale, w_in, w_out; and the bucket size (padded).
  public let lnOffset: Int, wInOffset: Int, wOutOffset: Int, layerFloats: Int
  /// Offsets inside the head bucket of embed and ln_f.scale; and the bucket size (padded).
  public let embedOffset: Int, lnFinalOffset: Int, headFloats: Int

  /// Validates config and mesh (throws `MeshError` / `PalmConfig.Invalid` before any work).
  public init(config: PalmConfig, shape: MeshShape, batch: Int) throws {
    try config.validate()
    try shape.validate(config: config, batch: batch)
    self.config = config
    self.shape = shape
    d = config.dModel; q = config.headDim; heads = config.heads; dFF = config.dFF; vocab = config.vocab
    var local = config
    local.heads = heads / shape.model
    local.dFF = dFF / shape.model
    self.local = local
    localHeads = local.heads
    localFF = local.dFF
    localIn = local.inputProjectionColumns
    localOut = local.outputProjectionRows
    let pad = 16 * shape.data
    func padded(_ n: Int) -> Int { (n + pad - 1) / pad * pad }
    lnOffset = 0
    wInOffset = Arena.rounded(d)
    wOutOffset = wInOffset + Arena.rounded(d * localIn)
    layerFloats = padded(wOutOffset + localOut * d)
    embedOffset = 0
    lnFinalOffset = Arena.rounded(vocab * d)
    headFloats = padded(lnFinalOffset + d)
  }

  /// Buckets: 0 ..< layers are the layers, `layers` is the head (embed, ln_f).
  public var bucketCount: Int { config.layers + 1 }
  /// Full (model-local, data-gathered) size of bucket b.
  public func bucketFloats(_ b: Int) -> Int { b < config.layers ? layerFloats : headFloats }
  /// This rank's data-axis chunk of bucket b.
  public func shardFloats(_ b: Int) -> Int { bucketFloats(b) / shape.data }

  /// Column runs of the local `w_in` taken from the full `w_in` on model shard m:
  /// (full column start, local column start, width).
  public func wInColumns(model m: Int) -> [(full: Int, local: Int, count: Int)] {
    let lhq = local.queryColumns
    return [(m * lhq, 0, lhq), (config.keyColumn, local.keyColumn, 2 * q),
            (config.gateColumn + m * localFF, local.gateColumn, localFF),
            (config.upColumn + m * localFF, local.upColumn, localFF)]
  }

  /// Row runs of the local `w_out` taken from the full `w_out` on model shard m.
  public func wOutRows(model m: Int) -> [(full: Int, local: Int, count: Int)] {
    let lhq = local.queryColumns
    return [(m * lhq, 0, lhq), (config.queryColumns + m * localFF, lhq, localFF)]
  }

  /// Copies model shard m's part of layer `i` of `full` into `bucket` (a layer bucket, full size),
  /// or the reverse with `toFull: true`.
  func copyLayer(_ i: Int, full: Parameters, bucket: UnsafeMutablePointer<Float>, model m: Int, toFull: Bool) {
    let W = full.layers[i]
    let fullIn = W.wIn.shape[1]
    func move(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, _ n: Int) {
      if toFull { a.update(from: b, count: n) } else { b.update(from: a, count: n) }
    }
    move(W.lnScale.pointer, bucket + lnOffset, d)
    for r in 0..<d {
      for run in wInColumns(model: m) {
        move(W.wIn.pointer + r * fullIn + run.full, bucket + wInOffset + r * localIn + run.local, run.count)
      }
    }
    for run in wOutRows(model: m) {
      move(W.wOut.pointer + run.full * d, bucket + wOutOffset + run.local * d, run.count * d)
    }
  }

  /// Copies embed and ln_f of `full` into a head bucket, or the reverse.
  func copyHead(full: Parameters, bucket: UnsafeMutablePointer<Float>, toFull: Bool) {
    if toFull {
      full.embed.pointer.update(from: bucket + embedOffset, count: vocab * d)
      full.lnFinalScale.pointer.update(from: bucket + lnFinalOffset, count: d)
    } else {
      (bucket + embedOffset).update(from: full.embed.pointer, count: vocab * d)
      (bucket + lnFinalOffset).update(from: full.lnFinalScale.pointer, count: d)
    }
  }

  /// Ranges (bucket offsets) of elements replicated over `model` in a layer bucket: ln.scale and the
  /// K/V columns of w_in. Used to count them once in the global gradient norm.
  func replicatedLayerRanges() -> [Range<Int>] {
    var r: [Range<Int>] = [lnOffset..<(lnOffset + d)]
    let kv = local.keyColumn
    for row in 0..<d {
      let s = wInOffset + row * localIn + kv
      r.append(s..<(s + 2 * q))
    }
    return r
  }
}
