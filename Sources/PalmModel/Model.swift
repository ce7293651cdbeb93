// Model: the PaLM decoder (parallel blocks, multi-query rotary attention, SwiGLU, shared embedding)
// as explicit kernel calls over one parameter buffer and one activation arena.
//
// Per layer (PaLM §2, the parallel formulation with ONE LayerNorm):
//   h = LN(x);  [qkv | gate_up] = h · w_in;  ctx = Attn(qkv);  g = SwiGLU(gate_up)
//   x ← x + [ctx | g] · w_out            (one GEMM with beta = 1 into the residual)
//   with dropout p > 0 (Dropout.swift):   x ← x + mask ⊙ ([ctx | g] · w_out) / (1 − p)
//                                         (the GEMM with beta = 0, then pk_dropout_add)
// then logits = LN_f(x) · embedᵀ / √d and softmax cross-entropy + z-loss (1e-4 · lse²), mean over
// tokens. The backward is in Model+Backward.swift; what it recomputes depends on RematPolicy.
// Reference: llm.c train_gpt2.c (explicit forward/backward, malloc_and_point).

import CKernels
import PalmTensor

/// The losses of one step, means over the B·T tokens.
public struct StepLoss: Sendable, Equatable {
  /// Cross-entropy + z-loss: the quantity the gradients are taken of.
  public let total: Float
  /// Mean cross-entropy (natural log).
  public let crossEntropy: Float
  /// Mean z-loss, `1e-4 · lse²`.
  public let zLoss: Float

  public init(total: Float, crossEntropy: Float, zLoss: Float) {
    self.total = total
    self.crossEntropy = crossEntropy
    self.zLoss = zLoss
  }
}

/// A PaLM model ready to train, or one rank's shard of it on a device mesh: parameters, gradients
/// and an activation arena sized by its plan.
///
/// ```swift
/// let model = try Model(config: .tiny, remat: .selective, seed: 1)
/// model.gradients.zero()                                   // gradients accumulate
/// let loss = try model.forwardBackward(tokens: x, targets: y)   // x, y: B·T Int32 ids each
/// print(loss.total, model.gradients["layers.0.w_in"]!.shape)
/// print(model.plan.totalBytes)                              // activation bytes of the step
/// ```
///
/// **One model for every mesh.** With `mesh:` (pod × data × model, Mesh.swift) the same code computes
/// this rank's shard: its blocks are sized by the shard config (`layout.local`: H/M heads, F/M d_ff),
/// its rows are its slice of the global batch, and the communication is four hooks (see "Mesh
/// hooks" below), each skipped on an axis of size 1. The single device is the mesh (1,1,1): no
/// collective runs and no weight is copied, and the shard storage is `Parameters(config:)` itself.
///
/// Not thread-safe: one step at a time per model (the kernels themselves use `Threads.count`).
public final class Model: @unchecked Sendable {
  /// The whole model's config; `batch` is the GLOBAL batch (all pods and data ranks).
  public let config: PalmConfig
  public let remat: RematPolicy
  /// The mesh this rank belongs to (`Mesh.single()` for one device) and the shard layout on it.
  public let mesh: Mesh
  public let layout: ShardedLayout
  /// Sequences per step on this rank (global batch / (pod·data)).
  public let batch: Int
  /// Tokens per sequence.
  public let seqLen: Int
  /// This rank's parameters: chunk `data` of every bucket of its model shard (ShardedLayout.swift).
  public let shard: Tensor
  /// Same layout as `shard`. Every step ADDS to it (zero it before a step unless you accumulate).
  public let gradientShard: Tensor
  /// The activation buffers of a step and their sizes.
  public let plan: MemoryPlan
  /// The activation arena, exactly `plan.totalFloats` floats, carved once at init.
  public let arena: Arena
  /// Dropout of `forwardBackward` (never of `forward`); `.off` by default. Needs no memory: the
  /// backward regenerates the masks (Dropout.swift).
  public private(set) var dropout: Dropout
  /// Built by `init(sharing:)`: `forward` only (the gradients are another model's).
  public let forwardOnly: Bool
  /// The multiplications of every GEMM and of attention's tile products of later steps (mixed
  /// precision, PaLM's bf16): `.bf16` rounds the GEMM inputs (activations, weights, output
  /// gradients) to bf16 as they are packed, and attention's product operands inside the fused kernel
  /// (pk_attention.h, "Precision"), with fp32 accumulation and fp32 outputs; the weights, gradients,
  /// optimizer state, LayerNorm, RoPE, the softmax, SwiGLU's elementwise part and the loss stay fp32
  /// (docs/ARCHITECTURE.md, "Mixed precision").
  public var precision: GEMMPrecision
  /// The pod exchange of the last `forwardBackward(exchange: true)`, as seen by this rank.
  public private(set) var lastExchange = ExchangeStats()

  /// z-loss coefficient (PaLM §5).
  public static let zLossCoefficient: Float = PK_XENT_ZLOSS

  struct LayerBuffers {
    let x: Tensor, xNext: Tensor      // (N, d) block input and output (next block's input)
    let mean: Tensor, rstd: Tensor    // (N)
    let h: Tensor                     // (N, d)
    let proj: Tensor                  // (N, C_in) [qkv | gate_up]
    /// [ctx | g] (N, C_out): the attention context (columns [0, H·Q)) and the SwiGLU output.
    let cg: Tensor
    /// selective only: the saved copy of the context (N, H·Q) (`cg` is shared scratch there).
    let savedContext: Tensor?
    let lse: Tensor                   // (B, H, T)
  }
  var layerBuffers: [LayerBuffers] = []
  let headX: Tensor, headMean: Tensor, headRstd: Tensor, headH: Tensor  // (N, d), (N), (N), (N, d)
  let logits: Tensor                  // (N, V)
  let lossRows: Tensor, lseRows: Tensor  // (N)
  let dx: Tensor, dcg: Tensor, dqkv: Tensor  // (N, d), (N, C_out), (N, H·Q + 2Q)
  /// model > 1: [dh (N, d) | dK/dV (d, 2Q)], the backward's one model all-reduce per layer.
  let dhkv: Tensor?
  /// Where the weights and gradients are read and written (ShardStorage below).
  let store: ShardStorage

  /// Builds a model with PaLM-initialized parameters (`Parameters.initialize(seed:)`), zero
  /// gradients and an arena for `batch` × `seqLen` tokens (the config's by default).
  /// On a mesh (collective: every rank builds its model), `batch` is the global batch, and the
  /// shard holds this rank's part of the same initialization a single device draws.
  /// - Throws: `PalmConfig.Invalid` for a bad config or batch/sequence size, `MeshError` for a mesh
  ///   that does not divide the model or the batch, `Dropout.Invalid` for a rate outside [0, 1).
  public convenience init(config: PalmConfig, remat: RematPolicy = .none, batch: Int? = nil, seqLen: Int? = nil,
                          seed: UInt64 = 0, dropout: Dropout = .off, mesh: Mesh = .single(),
                          precision: GEMMPrecision = .fp32, headRows: Int? = nil) throws {
    var c = config
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    try c.validate()
    try dropout.validate()
    let layout = try ShardedLayout(config: c, shape: mesh.shape)
    let store = try ShardStorage(layout: layout, mesh: mesh)
    try self.init(validated: c, layout: layout, remat: remat, mesh: mesh, store: store, dropout: dropout,
                  precision: precision, headRows: headRows)
    try initialize(seed: seed)
  }

  /// A forward-only model over `other`'s parameters (the same storage: no copy, no second set of
  /// weights) with its own activation arena for `batch` × `seqLen` tokens (`other`'s by default;
  /// on a mesh the global batch), e.g. an evaluation model of another batch size or remat policy.
  /// It sees every update of `other` at once and computes in `other`'s precision at its creation
  /// (its own `precision` after that). Its `forwardBackward` throws: it would add into `other`'s
  /// gradients.
  /// - Throws: `PalmConfig.Invalid` / `MeshError` for a bad batch/sequence size.
  public convenience init(sharing other: Model, remat: RematPolicy = .none, batch: Int? = nil,
                          seqLen: Int? = nil) throws {
    var c = other.config
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    try c.validate()
    let layout = try ShardedLayout(config: c, shape: other.mesh.shape)
    try self.init(validated: c, layout: layout, remat: remat, mesh: other.mesh, store: other.store,
                  dropout: .off, precision: other.precision, forwardOnly: true)
  }

  /// `config` and `dropout` validated; `store` in `layout`'s shard layout.
  private init(validated c: PalmConfig, layout: ShardedLayout, remat: RematPolicy, mesh: Mesh,
               store: ShardStorage, dropout: Dropout, precision: GEMMPrecision, forwardOnly: Bool = false,
               headRows: Int? = nil) throws {
    self.forwardOnly = forwardOnly
    self.precision = precision
    self.dropout = dropout
    self.config = c
    self.remat = remat
    self.mesh = mesh
    self.layout = layout
    self.store = store
    self.batch = c.batch / (mesh.shape.pod * mesh.shape.data)
    self.seqLen = c.seqLen
    shard = store.params
    gradientShard = store.grads
    plan = MemoryPlan(config: layout.local, policy: remat, batch: batch, seqLen: c.seqLen,
                      modelParallel: mesh.shape.model > 1, headRows: headRows)
    arena = Arena(capacity: plan.totalFloats)
    var t: [String: Tensor] = [:]
    for b in plan.buffers { t[b.name] = try arena.allocate(b.shape) }
    func buf(_ layer: Int, _ name: String) -> Tensor {
      t["layers.\(layer).\(name)"] ?? t["scratch.\(name)"]!
    }
    headX = t["head.x"]!; headMean = t["head.mean"]!; headRstd = t["head.rstd"]!; headH = t["head.h"]!
    logits = t["head.logits"]!; lossRows = t["head.loss"]!; lseRows = t["head.lse"]!
    dx = t["grad.dx"]!; dcg = t["grad.dcg"]!; dqkv = t["grad.dqkv"]!
    dhkv = t["grad.dhkv"]
    for i in 0..<c.layers {
      let xNext = i + 1 < c.layers ? buf(i + 1, "x") : headX
      layerBuffers.append(LayerBuffers(
        x: buf(i, "x"), xNext: xNext, mean: buf(i, "mean"), rstd: buf(i, "rstd"), h: buf(i, "h"),
        proj: buf(i, "proj"), cg: buf(i, "cg"), savedContext: t["layers.\(i).context"],
        lse: buf(i, "lse")))
    }
  }

  /// Changes the dropout rates of later steps. - Throws: `Dropout.Invalid` (nothing changed).
  public func setDropout(_ dropout: Dropout) throws {
    try dropout.validate()
    self.dropout = dropout
  }

  // MARK: - Parameters in the single-device layout

  /// The parameters as named tensors of the shard config, views into `shard` (no copy), when this
  /// rank's shard is its whole model shard (data axis 1; at (1,1,1) the whole model). Sharded over
  /// data, the weights exist in one piece nowhere: use `forEachFullTensor` / `loadFull`.
  public var localParameters: Parameters? { store.localParams }
  /// `localParameters`'s gradients (views into `gradientShard`).
  public var localGradients: Parameters? { store.localGrads }

  /// The parameters of a model whose data axis is 1, views into `shard`: for one device, the
  /// model's weights in `Parameters`' layout. Calling it on a data-sharded model is a programming
  /// error (use `localParameters` to ask).
  public var parameters: Parameters {
    guard let p = store.localParams else { preconditionFailure("parameters of a model sharded over data=\(mesh.shape.data): use forEachFullTensor") }
    return p
  }
  /// The gradients in `parameters`' layout (same precondition).
  public var gradients: Parameters {
    guard let g = store.localGrads else { preconditionFailure("gradients of a model sharded over data=\(mesh.shape.data)") }
    return g
  }

  /// PaLM initialization (`Parameters.initialize(seed:)`) of the whole model, of which this rank
  /// keeps its shard: every mesh holds the same weights as the single device for one seed.
  /// On one device it initializes `parameters` in place; on a mesh every rank draws the full model
  /// one tensor at a time (local work, no communication; never the whole model at once).
  public func initialize(seed: UInt64) throws {
    if mesh.isSingle { parameters.initialize(seed: seed); return }
    try loadFull { name, t in Parameters.initialize(name, t, config: config, seed: seed) }
  }

  /// Writes every tensor of the single-device layout into this rank's shard of `into` (`shard`,
  /// `gradientShard` or an optimizer moment in the same layout): `fill(name, t)` fills `t` with
  /// the full tensor `name`, one tensor at a time. Local, no communication.
  public func loadFull(into target: Tensor? = nil, _ fill: (String, Tensor) throws -> Void) throws {
    let dst = target ?? shard
    guard dst.count == layout.shardFloats else { throw MeshError("a shard buffer of \(dst.count) floats, the layout has \(layout.shardFloats)") }
    let fullEntries = Parameters.layout(for: config).entries
    for (e, le) in zip(fullEntries, layout.localEntries) {
      let full = Tensor(shape: e.shape)
      try fill(e.name, full)
      for run in layout.runs(of: e.name, model: mesh.model) {
        copyRun(from: full.pointer + run.full, localStart: le.offset + run.local, count: run.count, into: dst)
      }
    }
  }

  /// Copies `count` floats of the local layout starting at `localStart` from `src` into the part
  /// of `dst` (a shard buffer) that this data rank holds.
  private func copyRun(from src: UnsafePointer<Float>, localStart: Int, count: Int, into dst: Tensor) {
    guard let r = layout.shardRange(of: localStart..<(localStart + count), data: mesh.data) else { return }
    let b = layout.buckets.firstIndex { $0.contains(localStart) }!
    let chunkStartLocal = layout.buckets[b].lowerBound + mesh.data * layout.chunkFloats[b]
    let firstLocal = chunkStartLocal + (r.lowerBound - layout.chunkOffsets[b])
    (dst.pointer + r.lowerBound).update(from: src + (firstLocal - localStart), count: r.count)
  }

  /// Calls `body` with every tensor of the single-device layout, in `Parameters`' order, assembled
  /// from the shards `source` (`shard` by default, or a buffer in its layout: gradients, optimizer
  /// moments) of every rank: collective over `data` and `model` (every rank of the mesh calls it,
  /// with the same buffers); one bucket is gathered at a time and each tensor is handed to `body` on
  /// every rank, so no rank needs more than one bucket and the tensor in hand. At (1,1,1), the
  /// tensors are views into `source` (no copy).
  public func forEachFullTensor(of source: Tensor? = nil, _ body: (String, Tensor) throws -> Void) throws {
    let cursor = FullTensorCursor(model: self, sources: [source ?? shard])
    while let (name, t) = try cursor.next() { try body(name, t) }
  }
}

/// The tensors of the single-device layout, one at a time, assembled from one or more shard buffers
/// of a model (e.g. the parameters, then the two optimizer moments): `Model.forEachFullTensor` as a
/// cursor, for a writer that pulls. Collective: every rank calls `next()` the same number of times
/// (`drain()` finishes the sequence on a rank that stops early, so the others are not left waiting).
public final class FullTensorCursor {
  let model: Model
  let sources: [Tensor]
  let entries: [ParameterEntry]
  private var index = 0
  private var bucket = -1
  private var gathered = Tensor(shape: [1]), bucketSize = 0

  public init(model: Model, sources: [Tensor]) {
    self.model = model
    self.sources = sources
    entries = Parameters.layout(for: model.config).entries
  }

  /// Tensors in the whole sequence (entries × sources).
  public var count: Int { entries.count * sources.count }

  /// The next (name, tensor), or nil at the end.
  public func next() throws -> (String, Tensor)? {
    guard index < count else { return nil }
    let s = index / entries.count, e = entries[index % entries.count], le = model.layout.localEntries[index % entries.count]
    index += 1
    let src = sources[s], layout = model.layout, mesh = model.mesh
    if mesh.isSingle { return (e.name, Tensor(storage: src.storage, offset: src.offset + e.offset, shape: e.shape)) }
    let b = layout.buckets.firstIndex { $0.contains(le.offset) }!
    let key = s * layout.bucketCount + b
    if key != bucket {  // gather the next bucket over data, then over model
      bucket = key
      let chunk = Tensor(storage: src.storage, offset: src.offset + layout.chunkOffsets[b], shape: [layout.chunkFloats[b]])
      let full = Tensor(shape: [layout.chunkFloats[b] * mesh.shape.data])
      try mesh.dataComm.allGather(chunk, into: full)
      bucketSize = full.count
      gathered = Tensor(shape: [full.count * mesh.shape.model])
      try mesh.modelComm.allGather(full, into: gathered)
    }
    let t = Tensor(shape: e.shape)
    let base = le.offset - layout.buckets[b].lowerBound
    for m in 0..<mesh.shape.model {
      for run in layout.runs(of: e.name, model: m) {
        (t.pointer + run.full).update(from: gathered.pointer + m * bucketSize + base + run.local, count: run.count)
      }
    }
    return (e.name, t)
  }

  /// Runs the rest of the sequence (its collectives), discarding the tensors.
  public func drain() throws { while try next() != nil {} }
}

extension Model {
  // MARK: - Sizes (of this rank's shard: on one device, the model's)

  /// This rank's rows (tokens) of a step, and the global batch's.
  var n: Int { batch * seqLen }
  var nGlobal: Int { config.batch * seqLen }
  /// First global row of this rank's slice: pods, then data ranks, split the batch in order.
  var rowOffset: Int { (mesh.pod * mesh.shape.data + mesh.data) * batch }
  var d: Int { config.dModel }
  var local: PalmConfig { layout.local }
  var hq: Int { local.queryColumns }
  /// Columns of qkv: H·Q + 2Q (also the first SwiGLU gate column of proj).
  var pqkv: Int { local.qkvColumns }
  var cin: Int { local.inputProjectionColumns }
  var cout: Int { local.outputProjectionRows }

  // MARK: - Steps

  /// Forward and backward over `tokens` and `targets` (each B·T ids in [0, V), row-major (B, T),
  /// B the GLOBAL batch: on a mesh every rank passes the same batch and computes its own rows);
  /// ADDS the gradient of the global mean (cross-entropy + z-loss) to the gradients.
  /// - Parameter dropoutKey: which masks `dropout` draws: required when dropout is on (nil throws),
  ///   ignored when it is off; the same key gives the same masks, so a training loop passes a new
  ///   one each update (`DropoutKey.training(runSeed:update:microBatch:tokensPerMicroBatch:)`).
  ///   Masks are keyed by the global token, so they do not depend on the mesh.
  /// - Parameter exchange: on a mesh with pods, start each layer's pod all-reduce as soon as its
  ///   gradient is final (the last micro-batch of an update); `finishExchange()` waits for them.
  /// - Returns: the step's losses (means over the global batch's tokens).
  /// - Throws: `Model.InputError` for wrong counts or ids, `KernelError` from a kernel,
  ///   `CommError` from a collective.
  public func forwardBackward(tokens: [Int32], targets: [Int32], dropoutKey: DropoutKey? = nil,
                              exchange: Bool = true) throws -> StepLoss {
    try forwardBackward(tokens: tokens[...], targets: targets[...], dropoutKey: dropoutKey, exchange: exchange)
  }

  /// `forwardBackward(tokens:targets:dropoutKey:exchange:)` on views (e.g. one micro-batch's rows of
  /// a larger batch), read in place without copying.
  public func forwardBackward(tokens: ArraySlice<Int32>, targets: ArraySlice<Int32>,
                              dropoutKey: DropoutKey? = nil, exchange: Bool = true) throws -> StepLoss {
    if forwardOnly { throw InputError(description: "forwardBackward on a model built with init(sharing:) (forward only: its gradients are another model's)") }
    // A default key would draw the same masks on every call: with dropout on, the caller says which.
    if !dropout.isOff && dropoutKey == nil { throw InputError(description: "dropout is on: pass a dropoutKey (a new one each update)") }
    try check(tokens: tokens, targets: targets)
    var key: DropoutKey? = dropout.isOff ? nil : dropoutKey
    key?.tokenOffset += rowOffset * seqLen
    let start = tokens.startIndex + rowOffset * seqLen, tstart = targets.startIndex + rowOffset * seqLen
    let sums = try tokens[start..<(start + n)].withUnsafeBufferPointer { tok in
      try targets[tstart..<(tstart + n)].withUnsafeBufferPointer { tgt in
        try store.beginStep(backward: true)
        try forwardLayers(tokens: tok.baseAddress!, dropout: key)
        let sums = try head(targets: tgt.baseAddress!, backward: true)
        try backwardLayers(tokens: tok.baseAddress!, dropout: key, exchange: exchange)
        return sums
      }
    }
    return try globalLoss(sums)
  }

  /// Waits for the pod exchange started by `forwardBackward(exchange: true)` (nothing to wait for
  /// without pods) and returns what it cost this rank.
  @discardableResult
  public func finishExchange() throws -> ExchangeStats {
    lastExchange = try store.finishExchange()
    return lastExchange
  }

  /// The forward pass only (evaluation): losses, no gradients, never dropout. The logits stay in
  /// the arena. On a mesh: the global batch, collective like `forwardBackward`.
  public func forward(tokens: [Int32], targets: [Int32]) throws -> StepLoss {
    try check(tokens: tokens, targets: targets)
    let start = rowOffset * seqLen
    let sums = try tokens[start..<(start + n)].withUnsafeBufferPointer { tok in
      try targets[start..<(start + n)].withUnsafeBufferPointer { tgt in
        try store.beginStep(backward: false)
        try forwardLayers(tokens: tok.baseAddress!, dropout: nil)
        return try head(targets: tgt.baseAddress!, backward: false)
      }
    }
    return try globalLoss(sums)
  }

  /// A wrong input to a step.
  public struct InputError: Error, CustomStringConvertible {
    public let description: String
  }

  func check<C: Collection<Int32>>(tokens: C, targets: C) throws {
    guard tokens.count == nGlobal, targets.count == nGlobal else {
      throw InputError(description: "expected \(nGlobal) tokens and targets (batch \(config.batch) × seq \(seqLen)), got \(tokens.count) and \(targets.count)")
    }
    let v = Int32(config.vocab)
    if let bad = tokens.first(where: { $0 < 0 || $0 >= v }) ?? targets.first(where: { $0 < 0 || $0 >= v }) {
      throw InputError(description: "token id \(bad) outside [0, \(v))")
    }
  }

  /// The global means from this rank's sums of the per-row loss and of lse² (the model shards of a
  /// (pod, data) slice hold the same rows: summed over data and pod only), in double precision.
  func globalLoss(_ local: [Double]) throws -> StepLoss {
    var sums = local
    if mesh.shape.data > 1 { try mesh.dataComm.allReduce(&sums) }
    if mesh.shape.pod > 1 { try mesh.podComm.allReduce(&sums) }
    let mean = sums[0] / Double(nGlobal), zmean = Double(Model.zLossCoefficient) * sums[1] / Double(nGlobal)
    return StepLoss(total: Float(mean), crossEntropy: Float(mean - zmean), zLoss: Float(zmean))
  }

  // MARK: - Forward

  /// The embedding and every block; with a `dropout` key, the active rates of `self.dropout`.
  func forwardLayers(tokens: UnsafePointer<Int32>, dropout key: DropoutKey?) throws {
    let head = store.headWeights
    try KernelError.check(
      pk_embedding_forward(layerBuffers[0].x.pointer, Int64(d), tokens, head.embed.pointer, 1,
                           Int64(n), Int64(config.vocab), Int64(d)), "embedding_forward")
    if let key, dropout.embedding > 0 {
      let x0 = layerBuffers[0].x.pointer
      try KernelError.check(
        pk_dropout_forward(x0, x0, Int64(n * d), dropout.embedding, key.seed, DropoutKey.embeddingStream,
                           Int64(key.tokenOffset * d)), "dropout_forward")
    }
    let M = mesh.shape.model
    for i in 0..<config.layers {
      let L = layerBuffers[i], W = try store.layerWeights(i)  // hook: all-gather over data
      try blockForward(L, W, attention: true)
      // The branches' sum y = [ctx | g] · w_out (row-parallel: a partial sum per model shard);
      // with model > 1 ONE all-reduce per layer completes it (the parallel block's single
      // collective) before x is added: adding x to one shard's partial first would round at x's
      // magnitude twice (measured: 4.5× the parameter difference from one device after 3 AdamW updates).
      let dropped = key != nil && dropout.residual > 0
      let addInGEMM = !dropped && M == 1
      if addInGEMM { L.xNext.copy(from: L.x) }
      try Kernels.gemm(precision, .nn, n, d, cout, 1, L.cg.pointer, cout, W.wOut.pointer, d, addInGEMM ? 1 : 0, L.xNext.pointer, d)
      if M > 1 {
        try mesh.modelComm.allReduce(L.xNext)
        if !dropped {
          let y = L.xNext.pointer, x = L.x.pointer
          for k in 0..<(n * d) { y[k] += x[k] }
        }
      }
      if let key, dropped {
        // x_next = x + mask ⊙ y / (1 − p)
        try KernelError.check(
          pk_dropout_add(L.xNext.pointer, L.x.pointer, L.xNext.pointer, Int64(n * d), dropout.residual, key.seed,
                         DropoutKey.residualStream(layer: i), Int64(key.tokenOffset * d)), "dropout_add")
      }
    }
  }

  /// h = LN(x); proj = h · w_in; ctx, lse = Attn(qkv); g = SwiGLU(gate_up), into `L`'s buffers.
  /// `attention: false` (selective recompute) skips the projection and attention and restores the
  /// saved context into `cg` instead; with `attention: true` a selective layer saves its context.
  func blockForward(_ L: LayerBuffers, _ W: LayerParameters, attention: Bool) throws {
    try KernelError.check(
      pk_layernorm_forward(L.h.pointer, Int64(d), L.mean.pointer, L.rstd.pointer, L.x.pointer,
                           Int64(d), W.lnScale.pointer, Int64(n), Int64(d)), "layernorm_forward")
    if attention {
      try Kernels.gemm(precision, .nn, n, cin, d, 1, L.h.pointer, d, W.wIn.pointer, cin, 0, L.proj.pointer, cin)
      try Kernels.attentionForward(precision, out: L.cg.pointer, ldo: cout, lse: L.lse.pointer, qkv: L.proj.pointer,
                                   ldqkv: cin, batch: batch, seqLen: seqLen, heads: local.heads,
                                   headDim: config.headDim)
      if let saved = L.savedContext { copyRows(saved.pointer, hq, L.cg.pointer, cout, cols: hq) }
    } else if let saved = L.savedContext {
      copyRows(L.cg.pointer, cout, saved.pointer, hq, cols: hq)
    }
    try KernelError.check(
      pk_swiglu_forward(L.cg.pointer + hq, Int64(cout), L.proj.pointer + pqkv, Int64(cin), Int64(n),
                        Int64(local.dFF)), "swiglu_forward")
  }

  /// Copies `cols` columns of N rows between buffers of different row strides (one memcpy a row).
  func copyRows(_ dst: UnsafeMutablePointer<Float>, _ ldd: Int, _ src: UnsafePointer<Float>, _ lds: Int,
                cols: Int) {
    for r in 0..<n { (dst + r * ldd).update(from: src + r * lds, count: cols) }
  }

  /// Final LN, logits, loss; with `backward` also the head's backward: d embed += the logits'
  /// gradient · h_f, and d h_f (written over h_f in `headH`) for the blocks' backward. The logits
  /// are computed `plan.headRows` rows at a time (the head's memory does not grow with N·V: each
  /// chunk's logits, loss and, backward, gradient products are done before the next chunk's).
  /// The head is replicated over `model` (every model shard computes the same logits). Returns this
  /// rank's sums of the per-row loss and of lse².
  func head(targets: UnsafePointer<Int32>, backward: Bool) throws -> [Double] {
    let v = config.vocab, W = store.headWeights
    try KernelError.check(
      pk_layernorm_forward(headH.pointer, Int64(d), headMean.pointer, headRstd.pointer, headX.pointer,
                           Int64(d), W.lnFinal.pointer, Int64(n), Int64(d)),
      "layernorm_forward")
    let scale = 1 / Float(d).squareRoot()
    let z = Model.zLossCoefficient
    for r0 in stride(from: 0, to: n, by: plan.headRows) {
      let rows = min(plan.headRows, n - r0)
      let h = headH.pointer + r0 * d, loss = lossRows.pointer + r0, lse = lseRows.pointer + r0, tgt = targets + r0
      // logits = h_f · embedᵀ · s
      try Kernels.gemm(precision, .nt, rows, v, d, scale, h, d, W.embed.pointer, d, 0, logits.pointer, v)
      guard backward else {
        try KernelError.check(
          pk_xent_forward(loss, lse, logits.pointer, Int64(v), tgt, Int64(rows), Int64(v), z), "xent_forward")
        continue
      }
      try KernelError.check(
        pk_xent_forward_backward(loss, lse, logits.pointer, Int64(v), logits.pointer, Int64(v), tgt,
                                 1 / Float(nGlobal), Int64(rows), Int64(v), z),
        "xent_forward_backward")
      // d embed += s · dlogitsᵀ · h_f;  d h_f = s · dlogits · embed, over these rows of h_f (dead
      // once d embed has read them; the next chunks read their own rows)
      try Kernels.gemm(precision, .tn, v, d, rows, scale, logits.pointer, v, h, d, 1, store.headGradients.embed.pointer, d)
      try Kernels.gemm(precision, .nn, rows, d, v, scale, logits.pointer, v, W.embed.pointer, d, 0, h, d)
    }
    // Sums in double (N values: negligible next to the step).
    var total = 0.0, zsum = 0.0
    let lp = lossRows.pointer, sp = lseRows.pointer
    for i in 0..<n {
      total += Double(lp[i])
      let s = Double(sp[i])
      zsum += s * s
    }
    return [total, zsum]
  }

  /// The logits of the last `forward`: (N, V) when the head ran in one chunk (`plan.headRows` ==
  /// N), else the last chunk's rows; after `forwardBackward` they hold their gradient.
  public var lastLogits: Tensor { logits }
}
