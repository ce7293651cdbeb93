// ShardedModel: one rank of a pod × data × model mesh training PaLM (issue #5 items 2-3).
//
// Per layer, on model shard m with its pod/data slice of the batch (N_l = B/(P·D) · T rows):
//   forward:  all-gather the layer's weights over `data` (one reusable buffer);  h = LN(x);
//             proj = h · w_in_m;  ctx_m = Attn(q_m, K, V);  g_m = SwiGLU(gate_m, up_m);
//             y = [ctx_m | g_m] · w_out_m  (+ x on shard 0);  x' = all-reduce_model(y)   ← ONE per layer
//   backward: re-gather the weights;  d[ctx_m | g_m] = dx · w_out_mᵀ;  attention/SwiGLU backward;
//             [dh | dW_kv] = all-reduce_model([dproj_m · w_in_mᵀ | K/V columns of dw_in])  ← ONE per layer
//             (dproj_m's K/V columns hold shard m's partial dK/dV, so the dh sum is exact, and the
//             replicated K/V weight's (d × 2Q) gradient rides in the same buffer); dx += LN_bwd(dh);
//             reduce-scatter_data of the layer gradient into this rank's shard;
//             iAllReduce_pod of that shard starts at once (bucket per layer) and overlaps the layers left.
// The head (final LN, logits on the shared embedding, cross-entropy + z-loss) is replicated over
// `model` (every model shard computes the same logits: simple, not vocab-parallel). The head bucket
// (embed, ln_f) is gathered once per step and kept to the end (the embedding is used at both ends);
// its gradient is complete only after the embedding backward, so its pod exchange starts last and is
// not hidden. Gradient norm: every element once (replicated ones from model shard 0), all-reduced
// over data and model after the exchange. Everything is stored (no rematerialization). Memory per
// rank: 1/(D·M) of weights, gradients and AdamW moments (+ replicated K/V/LN/head), one gathered
// layer, one layer gradient, the head. References: Megatron-LM (Shoeybi et al.
// 2019) §3; ZeRO (Rajbhandari et al. 2020) stage 3; PaLM §4 (two pods, Pathways gradient transfer).

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// The two-pod gradient exchange of one step, as measured on this rank.
public struct ExchangeStats: Sendable, Equatable {
  /// Bytes of gradient this rank put into pod all-reduces (its shard of every bucket); 0 for P = 1.
  /// (Buffer bytes; a ring all-reduce moves 2·(P−1)/P of that over the wire each way.)
  public var bytes: Int = 0
  /// Buckets exchanged (layers + head).
  public var buckets: Int = 0
  /// From the first bucket's start to the last bucket's observed completion, seconds. Completions
  /// are observed (`test()`) after each layer's backward, so this is an upper bound of the transfer.
  public var transferSeconds: Double = 0
  /// Time spent waiting for the exchange after the backward pass finished, seconds.
  public var waitSeconds: Double = 0
  /// 1 − wait / transfer: the share of the exchange hidden behind the backward (1 when nothing to exchange).
  public var hiddenFraction: Double { transferSeconds > 0 ? max(0, 1 - waitSeconds / transferSeconds) : 1 }
}

/// What one sharded training step returns (identical on every rank except `exchange` and `seconds`).
public struct ShardedStepResult: Sendable {
  /// Losses over the GLOBAL batch (means over all B·T tokens of every pod and data shard).
  public let loss: StepLoss
  /// Global gradient norm before clipping.
  public let gradientNorm: Double
  public let exchange: ExchangeStats
  /// Wall time of the whole step on this rank.
  public let seconds: Double
  /// Wall time of forward + backward (to the end of the last layer's backward), before the final wait.
  public let computeSeconds: Double
}

/// A PaLM model replica for one rank of a `pod × data × model` mesh, with its optimizer shard.
///
/// Every rank of the mesh constructs one (collectively), loads the same full parameters, then calls
/// `step` with the same GLOBAL batch; each rank uses its own slice (pod-major, then data).
/// ```swift
/// let mesh = try Mesh(shape: MeshShape(parsing: "pod=2,data=1,model=2"), world: comm)
/// let trainer = try ShardedTrainer(config: cfg, mesh: mesh, batch: 8, optimizer: .adamW(AdamWSettings()))
/// try trainer.load(from: fullParameters)        // e.g. Parameters initialized with the same seed
/// let r = try trainer.step(tokens: x, targets: y, lr: 1e-3)   // x, y: B·T ids (global batch)
/// print(r.loss.total, r.exchange.bytes, r.exchange.hiddenFraction)
/// let full = try trainer.gatherParameters()      // single-device layout, on every rank
/// ```
/// Optimizer: AdamW only. Adafactor's parameter-scale RMS and update-clipping RMS are over a whole
/// tensor, which a shard does not hold (they would need an all-reduce inside the update), so
/// `.adafactor` is refused with an `OptimizerError`.
public final class ShardedTrainer: @unchecked Sendable {
  public let layout: ShardedLayout
  public let mesh: Mesh
  /// Global batch (sequences per step over all pods and data shards) and this rank's share.
  public let globalBatch: Int, localBatch: Int
  public let seqLen: Int
  /// Global-norm clipping threshold (nil: no clipping).
  public let clipNorm: Double?
  /// This rank's optimizer over its shards (one entry per bucket, "bucket.<b>").
  public let optimizer: Optimizer
  /// The optimizer's (shard, gradient shard, moments) table, bound once at init.
  private let updatePlan: Optimizer.UpdatePlan

  // This rank's shards: parameters and gradients, one aligned region per bucket.
  let paramShards: [Tensor]
  let gradShards: [Tensor]
  // Reusable gathered buffers.
  let layerWeights: Tensor   // one layer, gathered over data
  let layerGrads: Tensor     // one layer's gradient before the reduce-scatter
  let headWeights: Tensor    // embed | ln_f, gathered for the whole step
  let headGrads: Tensor
  let dhPack: Tensor         // [dh (N_l, d) | dK/dV (d, 2Q)]: the backward's one model all-reduce
  let kvPack: Tensor         // view: the (d, 2Q) K/V gradient columns of w_in, packed
  // Activations (N_l rows).
  let xs: [Tensor]           // layers + 1 of (N_l, d): block inputs, then the head input
  let means: [Tensor], rstds: [Tensor], hs: [Tensor], projs: [Tensor], cgs: [Tensor], lses: [Tensor]
  let headMean: Tensor, headRstd: Tensor, headH: Tensor, logits: Tensor, lossRows: Tensor, lseRows: Tensor
  let dx: Tensor, dcg: Tensor, dproj: Tensor, dh: Tensor, partial: Tensor
  let replicatedRanges: [Range<Int>]
  // gradientNorm()'s pointer and length lists over `gradShards`, built once (see `normTable`).
  let normPointers: [UnsafePointer<Float>?]
  let normCounts: [Int64]

  /// A wrong input to a step (counts or token ids).
  public struct InputError: Error, CustomStringConvertible {
    public let description: String
  }

  var n: Int { localBatch * seqLen }
  var d: Int { layout.d }

  /// Checks everything (mesh divides heads, d_ff, d_model and the batch; AdamW; no dropout) BEFORE
  /// any allocation or communication, then allocates this rank's shards, buffers and optimizer state.
  /// - Throws: `MeshError`, `PalmConfig.Invalid`, `OptimizerError`.
  public init(config: PalmConfig, mesh: Mesh, batch: Int, seqLen: Int? = nil,
              optimizer settings: OptimizerSettings, clipNorm: Double? = 1.0, dropout: Dropout = .off) throws {
    if !dropout.isOff {
      throw MeshError("the sharded trainer does not support dropout (got \(dropout)); train without --dropout or on one process")
    }
    var c = config
    c.batch = batch
    if let seqLen { c.seqLen = seqLen }
    let layout = try ShardedLayout(config: c, shape: mesh.shape, batch: batch)
    if case .adafactor = settings {
      throw OptimizerError("the sharded trainer supports AdamW only: Adafactor's RMS over a whole tensor needs a cross-shard reduction that is not implemented")
    }
    self.layout = layout
    self.mesh = mesh
    self.globalBatch = batch
    self.localBatch = batch / (mesh.shape.pod * mesh.shape.data)
    self.seqLen = c.seqLen
    self.clipNorm = clipNorm
    let B = layout.bucketCount
    var offsets: [Int] = [], total = 0
    for b in 0..<B { offsets.append(total); total += Arena.rounded(layout.shardFloats(b)) }
    let ps = TensorStorage(count: max(total, 16)), gs = TensorStorage(count: max(total, 16))
    paramShards = (0..<B).map { Tensor(storage: ps, offset: offsets[$0], shape: [layout.shardFloats($0)]) }
    gradShards = (0..<B).map { Tensor(storage: gs, offset: offsets[$0], shape: [layout.shardFloats($0)]) }
    paramShards.forEach { $0.fill(0) }
    gradShards.forEach { $0.fill(0) }
    optimizer = try Optimizer(settings, parameters: (0..<B).map { ("bucket.\($0)", [layout.shardFloats($0)]) })
    updatePlan = try optimizer.bind(zip(paramShards, gradShards).enumerated().map {
      ("bucket.\($0.offset)", $0.element.0, $0.element.1)
    })
    layerWeights = Tensor(shape: [layout.layerFloats])
    layerGrads = Tensor(shape: [layout.layerFloats])
    headWeights = Tensor(shape: [layout.headFloats])
    headGrads = Tensor(shape: [layout.headFloats])
    let nb = batch / (mesh.shape.pod * mesh.shape.data)
    let n = nb * c.seqLen, d = layout.d, L = c.layers
    xs = (0...L).map { _ in Tensor(shape: [n, d]) }
    means = (0..<L).map { _ in Tensor(shape: [n]) }
    rstds = (0..<L).map { _ in Tensor(shape: [n]) }
    hs = (0..<L).map { _ in Tensor(shape: [n, d]) }
    projs = (0..<L).map { _ in Tensor(shape: [n, layout.localIn]) }
    cgs = (0..<L).map { _ in Tensor(shape: [n, layout.localOut]) }
    lses = (0..<L).map { _ in Tensor(shape: [nb, layout.localHeads, c.seqLen]) }
    headMean = Tensor(shape: [n]); headRstd = Tensor(shape: [n]); headH = Tensor(shape: [n, d])
    logits = Tensor(shape: [n, layout.vocab]); lossRows = Tensor(shape: [n]); lseRows = Tensor(shape: [n])
    dx = Tensor(shape: [n, d]); dcg = Tensor(shape: [n, layout.localOut])
    dproj = Tensor(shape: [n, layout.localIn]); partial = Tensor(shape: [n, d])
    let pack = Tensor(shape: [n * d + d * 2 * layout.q])
    dhPack = pack
    dh = Tensor(storage: pack.storage, offset: pack.offset, shape: [n, d])
    kvPack = Tensor(storage: pack.storage, offset: pack.offset + n * d, shape: [d, 2 * layout.q])
    replicatedRanges = layout.replicatedLayerRanges()
    (normPointers, normCounts) = ShardedTrainer.normTable(
      gradShards: gradShards, layout: layout, dataIndex: mesh.data, countReplicated: mesh.model == 0,
      replicatedRanges: replicatedRanges)
  }

  // MARK: - Single-device layout

  /// Takes this rank's shards of `full` (the same full parameters on every rank, e.g. initialized
  /// with one seed or read from a single-device checkpoint). Local, no communication.
  /// With `optimizerState` (single-device AdamW moments in the parameter layout and the update
  /// count, as `gatherOptimizerState` returns or a single-device checkpoint holds) the optimizer
  /// resumes too; otherwise its moments are zero.
  public func load(from full: Parameters, optimizerState: (m: Parameters, v: Parameters, step: Int)? = nil) throws {
    try scatter(full, into: paramShards)
    guard let state = optimizerState else { optimizer.reset(); return }
    let st = optimizer.stateTensors, B = layout.bucketCount
    try scatter(state.m, into: Array(st[0..<B].map(\.tensor)))
    try scatter(state.v, into: Array(st[B..<(2 * B)].map(\.tensor)))
    try optimizer.setStep(state.step)
  }

  /// `load(from:optimizerState:)` with the moments of a single-device `Optimizer` (e.g. restored
  /// from a single-device checkpoint by `LoadedCheckpoint.restore`).
  public func load(from full: Parameters, optimizer single: Optimizer) throws {
    guard single.settings == optimizer.settings else {
      throw OptimizerError("checkpoint optimizer \(single.settings.kind) differs from the sharded trainer's \(optimizer.settings.kind)")
    }
    let m = try Parameters(config: full.config), v = try Parameters(config: full.config)
    for (name, t) in single.stateTensors {
      let key = String(name.dropFirst(2))
      guard let dst = (name.hasPrefix("m.") ? m : v)[key], dst.shape == t.shape else {
        throw OptimizerError("optimizer state \(name) \(t.shape) does not fit the parameter layout")
      }
      dst.copy(from: t)
    }
    try load(from: full, optimizerState: (m, v, single.step))
  }

  /// A single-device `Optimizer` holding the gathered moments and update count (collective), ready
  /// for a rank-0 checkpoint in the single-device layout (`CheckpointContents(optimizer:)`).
  public func gatherOptimizer() throws -> Optimizer {
    let (m, v, step) = try gatherOptimizerState()
    let opt = try Optimizer(optimizer.settings, parameters: m.entries.map { ($0.name, $0.shape) })
    for (name, t) in opt.stateTensors { t.copy(from: (name.hasPrefix("m.") ? m : v)[String(name.dropFirst(2))]!) }
    try opt.setStep(step)
    return opt
  }

  /// Gathers the full parameters in the single-device layout (collective over `data` and `model`:
  /// every rank of the mesh must call it). Returns them on every rank; rank 0 writes checkpoints,
  /// which are then the same safetensors layout as a single-device run's.
  public func gatherParameters() throws -> Parameters { try gather(paramShards) }

  /// `gatherParameters()` written into `destination` (e.g. an evaluation model's parameters) instead
  /// of a new set: no allocation, no later copy. Collective. - Throws: `MeshError` when
  /// `destination`'s shapes are not the sharded config's.
  public func gatherParameters(into destination: Parameters) throws { _ = try gather(paramShards, into: destination) }

  /// Gathers the AdamW moments in the single-device parameter layout (same names and shapes as a
  /// single-device `Optimizer`'s "m.<name>" / "v.<name>") and the update count. Collective.
  public func gatherOptimizerState() throws -> (m: Parameters, v: Parameters, step: Int) {
    let st = optimizer.stateTensors, B = layout.bucketCount
    return (try gather(st[0..<B].map(\.tensor)), try gather(st[B..<(2 * B)].map(\.tensor)), optimizer.step)
  }

  func checkMatches(_ full: Parameters) throws {
    guard full.config.dModel == layout.d, full.config.layers == layout.config.layers,
          full.config.heads == layout.heads, full.config.headDim == layout.q,
          full.config.dFF == layout.dFF, full.config.vocab == layout.vocab else {
      throw MeshError("parameters of \(full.config.name) do not match the sharded config \(layout.config.name)")
    }
  }

  /// This rank's data chunk of its model shard of every bucket of `full`, into `shards`.
  func scatter(_ full: Parameters, into shards: [Tensor]) throws {
    try checkMatches(full)
    for b in 0..<layout.bucketCount {
      let buf = Tensor(shape: [layout.bucketFloats(b)])
      buf.fill(0)
      if b < layout.config.layers {
        layout.copyLayer(b, full: full, bucket: buf.pointer, model: mesh.model, toFull: false)
      } else {
        layout.copyHead(full: full, bucket: buf.pointer, toFull: false)
      }
      let s = shards[b]
      s.pointer.update(from: buf.pointer + mesh.data * s.count, count: s.count)
    }
  }

  /// The single-device layout from every rank's `shards` (all-gather over data, then over model).
  func gather(_ shards: [Tensor], into destination: Parameters? = nil) throws -> Parameters {
    let full: Parameters
    if let destination {
      try checkMatches(destination)
      full = destination
    } else {
      var c = layout.config
      c.batch = globalBatch
      full = try Parameters(config: c)
    }
    let M = mesh.shape.model
    for b in 0..<layout.bucketCount {
      let bucket = Tensor(shape: [layout.bucketFloats(b)])
      try mesh.dataComm.allGather(shards[b], into: bucket)
      if b < layout.config.layers {
        let all = Tensor(shape: [bucket.count * M])
        try mesh.modelComm.allGather(bucket, into: all)
        for m in 0..<M {
          layout.copyLayer(b, full: full, bucket: all.pointer + m * bucket.count, model: m, toFull: true)
        }
      } else {
        layout.copyHead(full: full, bucket: bucket.pointer, toFull: true)
      }
    }
    return full
  }

  /// This rank's parameter shards as named tensors ("bucket.<b>"), e.g. for a sharded checkpoint.
  public var shardTensors: [(name: String, tensor: Tensor)] {
    paramShards.enumerated().map { ("bucket.\($0.offset)", $0.element) }
  }

  // MARK: - Step

  /// One training step on the GLOBAL batch `tokens`/`targets` (each B·T ids, row-major (B, T)):
  /// forward, backward, gradient reduction (model, data), pod exchange overlapped with the backward,
  /// global-norm clipping, and the AdamW update of this rank's shards. Collective: every rank calls
  /// it with the same global batch.
  public func step(tokens: [Int32], targets: [Int32], lr: Float) throws -> ShardedStepResult {
    let t0 = pk_now_seconds()
    let nGlobal = globalBatch * seqLen
    guard tokens.count == nGlobal, targets.count == nGlobal else {
      throw InputError(description: "expected \(nGlobal) tokens and targets (global batch \(globalBatch) × seq \(seqLen)), got \(tokens.count) and \(targets.count)")
    }
    let v = Int32(layout.vocab)
    if let bad = tokens.first(where: { $0 < 0 || $0 >= v }) ?? targets.first(where: { $0 < 0 || $0 >= v }) {
      throw InputError(description: "token id \(bad) outside [0, \(v))")
    }
    let slice = (mesh.pod * mesh.shape.data + mesh.data) * n
    let tok = Array(tokens[slice..<(slice + n)]), tgt = Array(targets[slice..<(slice + n)])
    var stats = ExchangeStats()
    var lossSums = [Double](repeating: 0, count: 2)
    var computeEnd = 0.0
    try tok.withUnsafeBufferPointer { tk in
      try tgt.withUnsafeBufferPointer { tg in
        try mesh.dataComm.allGather(paramShards[layout.config.layers], into: headWeights)
        try forward(tokens: tk.baseAddress!)
        lossSums = try head(targets: tg.baseAddress!, nGlobal: nGlobal)
        try backward(tokens: tk.baseAddress!, stats: &stats, computeEnd: &computeEnd)
      }
    }
    // Global losses: sum over data shards and pods (model shards hold identical values), in
    // double precision like the single-device sum.
    var sums = lossSums
    try mesh.dataComm.allReduce(&sums)
    try mesh.podComm.allReduce(&sums)
    let total = sums[0] / Double(nGlobal)
    let zmean = Double(Model.zLossCoefficient) * sums[1] / Double(nGlobal)
    let loss = StepLoss(total: Float(total), crossEntropy: Float(total - zmean), zLoss: Float(zmean))
    // Global gradient norm: every element once (replicated ones counted on model shard 0 only).
    let norm = try gradientNorm()
    if let clipNorm, norm.isFinite, norm > clipNorm, clipNorm > 0 {
      let s = Float(clipNorm / norm)
      for g in gradShards { try KernelError.check(pk_scale_inplace(g.pointer, Int64(g.count), s), "scale_inplace") }
    }
    try optimizer.step(updatePlan, lr: lr)
    return ShardedStepResult(loss: loss, gradientNorm: norm, exchange: stats,
                             seconds: pk_now_seconds() - t0, computeSeconds: computeEnd - t0)
  }

  /// The pointer and length lists `gradientNorm()` sums, built once: every gradient element once
  /// over the mesh (replicated ones counted on model shard 0 only), from this rank's gradient shards.
  static func normTable(gradShards: [Tensor], layout: ShardedLayout, dataIndex: Int, countReplicated: Bool,
                        replicatedRanges: [Range<Int>]) -> (pointers: [UnsafePointer<Float>?], counts: [Int64]) {
    var pointers: [UnsafePointer<Float>?] = []
    var counts: [Int64] = []
    for b in 0..<layout.bucketCount {
      let g = gradShards[b]
      let start = dataIndex * g.count, end = start + g.count
      if b == layout.config.layers {
        if countReplicated { pointers.append(UnsafePointer(g.pointer)); counts.append(Int64(g.count)) }
        continue
      }
      // Counted = the shard minus the replicated ranges (unless this is model shard 0).
      var cursor = start
      let skips = countReplicated ? [] : replicatedRanges
      for r in skips where r.upperBound > start && r.lowerBound < end {
        let lo = max(r.lowerBound, start)
        if lo > cursor { pointers.append(UnsafePointer(g.pointer + (cursor - start))); counts.append(Int64(lo - cursor)) }
        cursor = max(cursor, min(r.upperBound, end))
      }
      if end > cursor { pointers.append(UnsafePointer(g.pointer + (cursor - start))); counts.append(Int64(end - cursor)) }
    }
    return (pointers, counts)
  }

  /// sqrt(Σ g²) over the whole model, from this rank's gradient shards (after the pod exchange).
  func gradientNorm() throws -> Double {
    var local = 0.0
    try KernelError.check(pk_global_norm_squared(&local, normPointers, normCounts, Int64(normCounts.count)),
                          "global_norm_squared")
    // Summed in double precision (hi/lo float pairs) so the norm does not lose digits.
    var parts = [local]
    try mesh.dataComm.allReduce(&parts)
    try mesh.modelComm.allReduce(&parts)
    return parts[0].squareRoot()
  }

  // MARK: - Forward

  func forward(tokens: UnsafePointer<Int32>) throws {
    let L = layout, V = L.vocab
    try KernelError.check(
      pk_embedding_forward(xs[0].pointer, Int64(d), tokens, headWeights.pointer + L.embedOffset, 1,
                           Int64(n), Int64(V), Int64(d)), "embedding_forward")
    for i in 0..<L.config.layers {
      try mesh.dataComm.allGather(paramShards[i], into: layerWeights)
      try blockForward(i)
      // y = [ctx | g] · w_out_m (+ x on model shard 0); x' = Σ_model y: one all-reduce per layer.
      let W = layerWeights.pointer
      if mesh.model == 0 { partial.copy(from: xs[i]) }
      try Kernels.gemm(.nn, n, d, L.localOut, 1, cgs[i].pointer, L.localOut, W + L.wOutOffset, d,
               mesh.model == 0 ? 1 : 0, partial.pointer, d)
      if mesh.shape.model > 1 { try mesh.modelComm.allReduce(partial) }
      xs[i + 1].copy(from: partial)
    }
  }

  /// h = LN(x); proj = h · w_in_m; ctx_m = Attn; g_m = SwiGLU (weights in `layerWeights`).
  func blockForward(_ i: Int) throws {
    let L = layout, W = layerWeights.pointer
    let lhq = L.local.queryColumns, lpqkv = L.local.gateColumn
    try KernelError.check(
      pk_layernorm_forward(hs[i].pointer, Int64(d), means[i].pointer, rstds[i].pointer, xs[i].pointer,
                           Int64(d), W + L.lnOffset, Int64(n), Int64(d)), "layernorm_forward")
    try Kernels.gemm(.nn, n, L.localIn, d, 1, hs[i].pointer, d, W + L.wInOffset, L.localIn, 0, projs[i].pointer, L.localIn)
    try KernelError.check(
      pk_attention_forward(cgs[i].pointer, Int64(L.localOut), lses[i].pointer, projs[i].pointer,
                           Int64(L.localIn), Int64(localBatch), Int64(seqLen), Int64(L.localHeads),
                           Int64(L.q)), "attention_forward")
    try KernelError.check(
      pk_swiglu_forward(cgs[i].pointer + lhq, Int64(L.localOut), projs[i].pointer + lpqkv, Int64(L.localIn),
                        Int64(n), Int64(L.localFF)), "swiglu_forward")
  }

  /// Final LN, logits, xent + z-loss forward and backward (dlogits replace logits, scaled by
  /// 1/N_global). Returns the local sums of the per-row loss and of lse².
  func head(targets: UnsafePointer<Int32>, nGlobal: Int) throws -> [Double] {
    let L = layout, V = L.vocab, H = headWeights.pointer
    try KernelError.check(
      pk_layernorm_forward(headH.pointer, Int64(d), headMean.pointer, headRstd.pointer, xs[L.config.layers].pointer,
                           Int64(d), H + L.lnFinalOffset, Int64(n), Int64(d)), "layernorm_forward")
    let scale = 1 / Float(d).squareRoot()
    try Kernels.gemm(.nt, n, V, d, scale, headH.pointer, d, H + L.embedOffset, d, 0, logits.pointer, V)
    try KernelError.check(
      pk_xent_forward_backward(lossRows.pointer, lseRows.pointer, logits.pointer, Int64(V), logits.pointer,
                               Int64(V), targets, 1 / Float(nGlobal), Int64(n), Int64(V), Model.zLossCoefficient),
      "xent_forward_backward")
    var total = 0.0, zsum = 0.0
    for r in 0..<n {
      total += Double(lossRows.pointer[r])
      let s = Double(lseRows.pointer[r])
      zsum += s * s
    }
    return [total, zsum]
  }

  // MARK: - Backward

  func backward(tokens: UnsafePointer<Int32>, stats: inout ExchangeStats, computeEnd: inout Double) throws {
    let L = layout, V = L.vocab, H = headWeights.pointer, G = headGrads.pointer
    let lhq = L.local.queryColumns, lpqkv = L.local.gateColumn
    let P = mesh.shape.pod
    var pending: [(request: any CommRequest, done: Double?)] = []
    var firstStart = 0.0
    func exchange(_ b: Int) throws {
      guard P > 1 else { return }
      if pending.isEmpty { firstStart = pk_now_seconds() }
      pending.append((try mesh.podComm.iAllReduce(gradShards[b]), nil))
      stats.bytes += gradShards[b].count * MemoryLayout<Float>.size
      stats.buckets += 1
    }
    func poll() throws {
      for k in pending.indices where pending[k].done == nil {
        if try pending[k].request.test() { pending[k].done = pk_now_seconds() }
      }
    }
    // The gradient buffers are overwritten, not accumulated (no micro-batches here): the GEMMs
    // write with beta 0 and only the LayerNorm scales, which pk_layernorm_backward adds into, are
    // zeroed. Padding between the regions stays zero from allocation.
    (G + L.lnFinalOffset).update(repeating: 0, count: d)
    let scale = 1 / Float(d).squareRoot()
    try Kernels.gemm(.tn, V, d, n, scale, logits.pointer, V, headH.pointer, d, 0, G + L.embedOffset, d)
    try Kernels.gemm(.nn, n, d, V, scale, logits.pointer, V, H + L.embedOffset, d, 0, dh.pointer, d)
    dx.fill(0)
    try KernelError.check(
      pk_layernorm_backward(dx.pointer, Int64(d), G + L.lnFinalOffset, dh.pointer, Int64(d),
                            xs[L.config.layers].pointer, Int64(d), headMean.pointer, headRstd.pointer,
                            H + L.lnFinalOffset, Int64(n), Int64(d)), "layernorm_backward")
    for i in stride(from: L.config.layers - 1, through: 0, by: -1) {
      try mesh.dataComm.allGather(paramShards[i], into: layerWeights)
      let W = layerWeights.pointer, dW = layerGrads.pointer
      (dW + L.lnOffset).update(repeating: 0, count: d)  // the GEMMs below overwrite the rest (beta 0)
      // d[ctx | g] = dx · w_outᵀ;  d w_out = [ctx | g]ᵀ · dx
      try Kernels.gemm(.nt, n, L.localOut, d, 1, dx.pointer, d, W + L.wOutOffset, d, 0, dcg.pointer, L.localOut)
      try Kernels.gemm(.tn, L.localOut, d, n, 1, cgs[i].pointer, L.localOut, dx.pointer, d, 0, dW + L.wOutOffset, d)
      try KernelError.check(
        pk_attention_backward(dproj.pointer, Int64(L.localIn), dcg.pointer, Int64(L.localOut),
                              projs[i].pointer, Int64(L.localIn), cgs[i].pointer, Int64(L.localOut),
                              lses[i].pointer, Int64(localBatch), Int64(seqLen), Int64(L.localHeads),
                              Int64(L.q)), "attention_backward")
      try KernelError.check(
        pk_swiglu_backward(dproj.pointer + lpqkv, Int64(L.localIn), dcg.pointer + lhq, Int64(L.localOut),
                           projs[i].pointer + lpqkv, Int64(L.localIn), Int64(n), Int64(L.localFF)),
        "swiglu_backward")
      // d w_in = hᵀ · dproj;  dh = dproj_m · w_in_mᵀ
      try Kernels.gemm(.tn, d, L.localIn, n, 1, hs[i].pointer, d, dproj.pointer, L.localIn, 0, dW + L.wInOffset, L.localIn)
      try Kernels.gemm(.nt, n, d, L.localIn, 1, dproj.pointer, L.localIn, W + L.wInOffset, L.localIn, 0, dh.pointer, d)
      // The one model collective of the backward sums, in one buffer, dh (the input gradient of
      // LN(x)·W_in) and the shards' partial gradients of the replicated K/V columns of w_in.
      let q2 = 2 * L.q
      if mesh.shape.model > 1 {
        let kv = kvPack.pointer
        for r in 0..<d { (kv + r * q2).update(from: dW + L.wInOffset + r * L.localIn + L.local.keyColumn, count: q2) }
        try mesh.modelComm.allReduce(dhPack)
        for r in 0..<d { (dW + L.wInOffset + r * L.localIn + L.local.keyColumn).update(from: kv + r * q2, count: q2) }
      }
      try KernelError.check(
        pk_layernorm_backward(dx.pointer, Int64(d), dW + L.lnOffset, dh.pointer, Int64(d), xs[i].pointer,
                              Int64(d), means[i].pointer, rstds[i].pointer, W + L.lnOffset, Int64(n), Int64(d)),
        "layernorm_backward")
      try mesh.dataComm.reduceScatter(layerGrads, into: gradShards[i])
      try exchange(i)
      try poll()
    }
    try KernelError.check(
      pk_embedding_backward(G + L.embedOffset, dx.pointer, Int64(d), tokens, 1, Int64(n), Int64(V), Int64(d)),
      "embedding_backward")
    try mesh.dataComm.reduceScatter(headGrads, into: gradShards[L.config.layers])
    try exchange(L.config.layers)
    try poll()
    computeEnd = pk_now_seconds()
    for k in pending.indices where pending[k].done == nil {
      try pending[k].request.wait()
      pending[k].done = pk_now_seconds()
    }
    let end = pk_now_seconds()
    if !pending.isEmpty {
      stats.waitSeconds = end - computeEnd
      stats.transferSeconds = (pending.compactMap(\.done).max() ?? end) - firstStart
    }
  }

}
