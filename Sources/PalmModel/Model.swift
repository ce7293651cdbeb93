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

/// A PaLM model ready to train: parameters, gradients and an activation arena sized by its plan.
///
/// ```swift
/// let model = try Model(config: .tiny, remat: .selective, seed: 1)
/// model.gradients.zero()                                   // gradients accumulate
/// let loss = try model.forwardBackward(tokens: x, targets: y)   // x, y: B·T Int32 ids each
/// print(loss.total, model.gradients["layers.0.w_in"]!.shape)
/// print(model.plan.totalBytes)                              // activation bytes of the step
/// ```
///
/// Not thread-safe: one step at a time per model (the kernels themselves use `Threads.count`).
public final class Model: @unchecked Sendable {
  public let config: PalmConfig
  public let remat: RematPolicy
  /// Sequences per step.
  public let batch: Int
  /// Tokens per sequence.
  public let seqLen: Int
  public let parameters: Parameters
  /// Same layout as `parameters`. Every step ADDS to them: zero them (`gradients.zero()`) before
  /// a step unless you accumulate micro-batches.
  public let gradients: Parameters
  /// The activation buffers of a step and their sizes.
  public let plan: MemoryPlan
  /// The activation arena, exactly `plan.totalFloats` floats, carved once at init.
  public let arena: Arena
  /// Dropout of `forwardBackward` (never of `forward`); `.off` by default. Needs no memory: the
  /// backward regenerates the masks (Dropout.swift).
  public private(set) var dropout: Dropout
  /// Built by `init(sharing:)`: `forward` only (the gradients are another model's).
  public let forwardOnly: Bool

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

  /// Builds a model with PaLM-initialized parameters (`Parameters.initialize(seed:)`), zero
  /// gradients and an arena for `batch` × `seqLen` tokens (the config's by default).
  /// - Throws: `PalmConfig.Invalid` for a bad config or batch/sequence size, `Dropout.Invalid`
  ///   for a rate outside [0, 1).
  public convenience init(config: PalmConfig, remat: RematPolicy = .none, batch: Int? = nil, seqLen: Int? = nil,
                          seed: UInt64 = 0, dropout: Dropout = .off) throws {
    var c = config
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    try c.validate()
    try dropout.validate()
    let parameters = try Parameters(config: c)
    parameters.initialize(seed: seed)
    try self.init(validated: c, remat: remat, parameters: parameters, gradients: try Parameters(config: c),
              dropout: dropout)
  }

  /// A forward-only model over `other`'s parameters (the same storage: no copy, no second set of
  /// weights) with its own activation arena for `batch` × `seqLen` tokens (`other`'s by default),
  /// e.g. an evaluation model of another batch size or remat policy. It sees every update of
  /// `other` at once. Its `forwardBackward` throws: it would add into `other`'s gradients.
  /// - Throws: `PalmConfig.Invalid` for a bad batch/sequence size.
  public convenience init(sharing other: Model, remat: RematPolicy = .none, batch: Int? = nil,
                          seqLen: Int? = nil) throws {
    var c = other.config
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    try c.validate()
    try self.init(validated: c, remat: remat, parameters: other.parameters, gradients: other.gradients,
                  dropout: .off, forwardOnly: true)
  }

  /// `config` and `dropout` validated; `parameters` and `gradients` in `config`'s layout.
  private init(validated c: PalmConfig, remat: RematPolicy, parameters: Parameters, gradients: Parameters,
               dropout: Dropout, forwardOnly: Bool = false) throws {
    self.forwardOnly = forwardOnly
    self.dropout = dropout
    self.config = c
    self.remat = remat
    self.batch = c.batch
    self.seqLen = c.seqLen
    self.parameters = parameters
    self.gradients = gradients
    plan = MemoryPlan(config: c, policy: remat)
    arena = Arena(capacity: plan.totalFloats)
    var t: [String: Tensor] = [:]
    for b in plan.buffers { t[b.name] = try arena.allocate(b.shape) }
    func buf(_ layer: Int, _ name: String) -> Tensor {
      t["layers.\(layer).\(name)"] ?? t["scratch.\(name)"]!
    }
    headX = t["head.x"]!; headMean = t["head.mean"]!; headRstd = t["head.rstd"]!; headH = t["head.h"]!
    logits = t["head.logits"]!; lossRows = t["head.loss"]!; lseRows = t["head.lse"]!
    dx = t["grad.dx"]!; dcg = t["grad.dcg"]!; dqkv = t["grad.dqkv"]!
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

  // MARK: - Sizes

  var n: Int { batch * seqLen }
  var d: Int { config.dModel }
  var hq: Int { config.queryColumns }
  /// Columns of qkv: H·Q + 2Q (also the first SwiGLU gate column of proj).
  var pqkv: Int { config.qkvColumns }
  var cin: Int { config.inputProjectionColumns }
  var cout: Int { config.outputProjectionRows }

  // MARK: - Steps

  /// Forward and backward over `tokens` and `targets` (each B·T ids in [0, V), row-major (B, T));
  /// ADDS the gradient of the mean (cross-entropy + z-loss) to `gradients`.
  /// - Parameter dropoutKey: which masks `dropout` draws: required when dropout is on (nil throws), ignored when it is off; the same key
  ///   gives the same masks, so a training loop passes a new one each update
  ///   (`DropoutKey.training(runSeed:update:microBatch:tokensPerMicroBatch:)`).
  /// - Returns: the step's losses (means over tokens).
  /// - Throws: `Model.InputError` for wrong counts or ids, `KernelError` from a kernel.
  public func forwardBackward(tokens: [Int32], targets: [Int32],
                              dropoutKey: DropoutKey? = nil) throws -> StepLoss {
    try forwardBackward(tokens: tokens[...], targets: targets[...], dropoutKey: dropoutKey)
  }

  /// `forwardBackward(tokens:targets:dropoutKey:)` on views (e.g. one micro-batch's rows of a larger
  /// batch), read in place without copying.
  public func forwardBackward(tokens: ArraySlice<Int32>, targets: ArraySlice<Int32>,
                              dropoutKey: DropoutKey? = nil) throws -> StepLoss {
    if forwardOnly { throw InputError(description: "forwardBackward on a model built with init(sharing:) (forward only: its gradients are another model's)") }
    // A default key would draw the same masks on every call: with dropout on, the caller says which.
    if !dropout.isOff && dropoutKey == nil { throw InputError(description: "dropout is on: pass a dropoutKey (a new one each update)") }
    try check(tokens: tokens, targets: targets)
    let key: DropoutKey? = dropout.isOff ? nil : dropoutKey
    return try tokens.withUnsafeBufferPointer { tok in
      try targets.withUnsafeBufferPointer { tgt in
        try forwardLayers(tokens: tok.baseAddress!, dropout: key)
        let loss = try head(targets: tgt.baseAddress!, backward: true)
        try backwardLayers(tokens: tok.baseAddress!, dropout: key)
        return loss
      }
    }
  }

  /// The forward pass only (evaluation): losses, no gradients, never dropout. The logits stay in
  /// the arena.
  public func forward(tokens: [Int32], targets: [Int32]) throws -> StepLoss {
    try check(tokens: tokens, targets: targets)
    return try tokens.withUnsafeBufferPointer { tok in
      try targets.withUnsafeBufferPointer { tgt in
        try forwardLayers(tokens: tok.baseAddress!, dropout: nil)
        return try head(targets: tgt.baseAddress!, backward: false)
      }
    }
  }

  /// A wrong input to a step.
  public struct InputError: Error, CustomStringConvertible {
    public let description: String
  }

  func check<C: Collection<Int32>>(tokens: C, targets: C) throws {
    guard tokens.count == n, targets.count == n else {
      throw InputError(description: "expected \(n) tokens and targets (batch \(batch) × seq \(seqLen)), got \(tokens.count) and \(targets.count)")
    }
    let v = Int32(config.vocab)
    if let bad = tokens.first(where: { $0 < 0 || $0 >= v }) ?? targets.first(where: { $0 < 0 || $0 >= v }) {
      throw InputError(description: "token id \(bad) outside [0, \(v))")
    }
  }

  // MARK: - Forward

  /// The embedding and every block; with a `dropout` key, the active rates of `self.dropout`.
  func forwardLayers(tokens: UnsafePointer<Int32>, dropout key: DropoutKey?) throws {
    try KernelError.check(
      pk_embedding_forward(layerBuffers[0].x.pointer, Int64(d), tokens, parameters.embed.pointer, 1,
                           Int64(n), Int64(config.vocab), Int64(d)), "embedding_forward")
    if let key, dropout.embedding > 0 {
      let x0 = layerBuffers[0].x.pointer
      try KernelError.check(
        pk_dropout_forward(x0, x0, Int64(n * d), dropout.embedding, key.seed, DropoutKey.embeddingStream,
                           Int64(key.tokenOffset * d)), "dropout_forward")
    }
    for i in 0..<config.layers {
      let L = layerBuffers[i], W = parameters.layers[i]
      try blockForward(L, W, attention: true)
      if let key, dropout.residual > 0 {
        // x_next = x + mask ⊙ ([ctx | g] · w_out) / (1 − p)
        try Kernels.gemm(.nn, n, d, cout, 1, L.cg.pointer, cout, W.wOut.pointer, d, 0, L.xNext.pointer, d)
        try KernelError.check(
          pk_dropout_add(L.xNext.pointer, L.x.pointer, L.xNext.pointer, Int64(n * d), dropout.residual, key.seed,
                         DropoutKey.residualStream(layer: i), Int64(key.tokenOffset * d)), "dropout_add")
      } else {
        // x_next = x + [ctx | g] · w_out
        L.xNext.copy(from: L.x)
        try Kernels.gemm(.nn, n, d, cout, 1, L.cg.pointer, cout, W.wOut.pointer, d, 1, L.xNext.pointer, d)
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
      try Kernels.gemm(.nn, n, cin, d, 1, L.h.pointer, d, W.wIn.pointer, cin, 0, L.proj.pointer, cin)
      try KernelError.check(
        pk_attention_forward(L.cg.pointer, Int64(cout), L.lse.pointer, L.proj.pointer, Int64(cin),
                             Int64(batch), Int64(seqLen), Int64(config.heads), Int64(config.headDim)),
        "attention_forward")
      if let saved = L.savedContext { copyRows(saved.pointer, hq, L.cg.pointer, cout, cols: hq) }
    } else if let saved = L.savedContext {
      copyRows(L.cg.pointer, cout, saved.pointer, hq, cols: hq)
    }
    try KernelError.check(
      pk_swiglu_forward(L.cg.pointer + hq, Int64(cout), L.proj.pointer + pqkv, Int64(cin), Int64(n),
                        Int64(config.dFF)), "swiglu_forward")
  }

  /// Copies `cols` columns of N rows between buffers of different row strides (one memcpy a row).
  func copyRows(_ dst: UnsafeMutablePointer<Float>, _ ldd: Int, _ src: UnsafePointer<Float>, _ lds: Int,
                cols: Int) {
    for r in 0..<n { (dst + r * ldd).update(from: src + r * lds, count: cols) }
  }

  /// Final LN, logits, loss; with `backward`, the logits are replaced by d(mean loss)/d logits.
  func head(targets: UnsafePointer<Int32>, backward: Bool) throws -> StepLoss {
    let v = config.vocab
    try KernelError.check(
      pk_layernorm_forward(headH.pointer, Int64(d), headMean.pointer, headRstd.pointer, headX.pointer,
                           Int64(d), parameters.lnFinalScale.pointer, Int64(n), Int64(d)),
      "layernorm_forward")
    let scale = 1 / Float(d).squareRoot()
    try Kernels.gemm(.nt, n, v, d, scale, headH.pointer, d, parameters.embed.pointer, d, 0, logits.pointer, v)
    let z = Model.zLossCoefficient
    if backward {
      try KernelError.check(
        pk_xent_forward_backward(lossRows.pointer, lseRows.pointer, logits.pointer, Int64(v),
                                 logits.pointer, Int64(v), targets, 1 / Float(n), Int64(n), Int64(v), z),
        "xent_forward_backward")
    } else {
      try KernelError.check(
        pk_xent_forward(lossRows.pointer, lseRows.pointer, logits.pointer, Int64(v), targets, Int64(n),
                        Int64(v), z), "xent_forward")
    }
    // Means in double (N values: negligible next to the step).
    var total = 0.0, zsum = 0.0
    let lp = lossRows.pointer, sp = lseRows.pointer
    for i in 0..<n {
      total += Double(lp[i])
      let s = Double(sp[i])
      zsum += s * s
    }
    let mean = total / Double(n), zmean = Double(z) * zsum / Double(n)
    return StepLoss(total: Float(mean), crossEntropy: Float(mean - zmean), zLoss: Float(zmean))
  }

  /// The logits of the last `forward` (N, V) (after `forwardBackward` they hold their gradient).
  public var lastLogits: Tensor { logits }

}
