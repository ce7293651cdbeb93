// MemoryPlan: the activation buffers of one training step under a remat policy, sized before the step.
//
// The plan is a table of named buffers in arena order (llm.c's `fill_in_activation_sizes`); Model
// carves exactly these buffers from one Arena of `totalFloats`, once, so the step never allocates.
// Saved buffers live from the forward to the backward of their layer; scratch buffers are shared by
// all layers (the forward writes them layer by layer, the backward recomputes into them).
// Saved names follow MaxText/praxis: `qkv_proj` + `mlpwi` are one fused buffer here (`proj`), the
// attention output is `context`.

import PalmTensor

/// The activation memory of a training step: every buffer, its size and its lifetime.
///
/// With N = B·T tokens, P = H·Q + 2Q, C_in = P + 2F, C_out = H·Q + F, each layer `i` has
///
/// ```
/// x       (N, d)      block input                      saved by every policy
/// mean    (N)         LayerNorm statistics             none
/// rstd    (N)                                          none
/// h       (N, d)      LN(x)                            none
/// proj    (N, C_in)   [qkv | gate_up] = h · w_in       none, selective   (qkv_proj, mlpwi)
/// cg      (N, C_out)  [context | swiglu]               none
/// context (N, H·Q)    attention output                 selective         (context)
/// lse     (B, H, T)   attention log-sum-exp            none, selective
/// ```
///
/// A buffer a policy does not save lives in one `scratch.*` region shared by all layers. For
/// `selective`, `scratch.cg` holds [context | swiglu] so that the output projection stays ONE GEMM:
/// the forward copies the context out to the layer's saved `context`, the backward copies it back
/// (N·H·Q floats each way) and recomputes the SwiGLU half. The head (`head.*`: final residual,
/// final LayerNorm, logits, per-row loss and lse) is always kept; the backward adds
/// `grad.dx` (N, d), `grad.dcg` (N, C_out) and `grad.dqkv` (N, H·Q + 2Q); the gradient of the
/// fused projection is built in the layer's proj buffer and dh in its h buffer (both dead by then,
/// see Model+Backward.swift), so no (N, C_in) gradient buffer exists.
/// Every buffer is rounded up to 16 floats (64 bytes), as `Arena` does.
public struct MemoryPlan: Sendable, Equatable {
  /// How long a buffer lives.
  public enum Lifetime: String, Sendable, Equatable {
    /// Written in the forward, read in the backward of the same layer (one per layer).
    case saved
    /// The head of the model (final LN, logits, loss rows): kept from forward to backward.
    case head
    /// Shared by all layers: forward temporaries and what the backward recomputes.
    case scratch
    /// Backward-only gradient buffers, shared by all layers.
    case gradient
  }

  /// One buffer of the plan.
  public struct Buffer: Sendable, Equatable {
    /// `layers.3.proj`, `scratch.h`, `head.logits`, `grad.dx`, ...
    public let name: String
    public let shape: [Int]
    public let lifetime: Lifetime
    /// Floats the buffer takes in the arena (its element count rounded up to 16).
    public var floats: Int { Arena.rounded(shape.reduce(1, *)) }
  }

  public let config: PalmConfig
  public let policy: RematPolicy
  public let batch: Int
  public let seqLen: Int
  /// Every buffer, in arena order.
  public let buffers: [Buffer]
  /// Rows of logits the head computes at a time (`head.logits` is (headRows, V)): all N when they
  /// fit `logitsBudgetFloats`, else chunks of rows, so the head's memory is bounded independently
  /// of the vocabulary (a 256k vocabulary at N = 4096 would need 4 GiB of logits at once).
  public let headRows: Int

  /// Floats of logits held at once by default: 32 MiB.
  public static let logitsBudgetFloats = 8 << 20

  /// The head's rows at a time for N rows and V columns within `budget` floats (at least 1 row).
  public static func headRows(n: Int, vocab: Int, budget: Int = logitsBudgetFloats) -> Int {
    let fit = max(1, budget / max(vocab, 1))
    return n <= fit ? n : fit >= 16 ? fit / 16 * 16 : fit  // whole 16-row groups when possible (GEMM tiles)
  }

  /// The plan for `config` with `batch` sequences of `seqLen` tokens (the preset's by default).
  /// On a mesh, `config` is a model shard's (`ShardedLayout.local`) and `batch` the rank's rows;
  /// `modelParallel` (model axis > 1) adds `grad.dhkv` (N·d + 2·(d·2Q)): the input gradient and the
  /// partial K/V weight gradient packed for the backward's one model all-reduce per layer, and the
  /// K/V gradient of earlier micro-batches set aside meanwhile.
  /// `headRows`: rows of logits at a time (default `MemoryPlan.headRows(n:vocab:)`).
  public init(config: PalmConfig, policy: RematPolicy, batch: Int? = nil, seqLen: Int? = nil,
              modelParallel: Bool = false, headRows: Int? = nil) {
    let b = batch ?? config.batch, t = seqLen ?? config.seqLen
    self.config = config
    self.policy = policy
    self.batch = b
    self.seqLen = t
    let n = b * t, d = config.dModel, hq = config.queryColumns
    let rows = min(max(headRows ?? MemoryPlan.headRows(n: n, vocab: config.vocab), 1), max(n, 1))
    self.headRows = rows
    let cin = config.inputProjectionColumns, cout = config.outputProjectionRows
    var saved: [Buffer] = [], scratch: [Buffer] = []
    let lse = [b, config.heads, t]
    for i in 0..<config.layers {
      func keep(_ name: String, _ shape: [Int]) { saved.append(Buffer(name: "layers.\(i).\(name)", shape: shape, lifetime: .saved)) }
      keep("x", [n, d])
      switch policy {
      case .none:
        keep("mean", [n]); keep("rstd", [n]); keep("h", [n, d]); keep("proj", [n, cin])
        keep("cg", [n, cout]); keep("lse", lse)
      case .selective:
        keep("proj", [n, cin]); keep("context", [n, hq]); keep("lse", lse)
      case .full:
        break
      }
    }
    func temp(_ name: String, _ shape: [Int]) { scratch.append(Buffer(name: "scratch.\(name)", shape: shape, lifetime: .scratch)) }
    switch policy {
    case .none: break
    case .selective:
      temp("mean", [n]); temp("rstd", [n]); temp("h", [n, d]); temp("cg", [n, cout])
    case .full:
      temp("mean", [n]); temp("rstd", [n]); temp("h", [n, d]); temp("proj", [n, cin])
      temp("cg", [n, cout]); temp("lse", lse)
    }
    let head: [Buffer] = [
      Buffer(name: "head.x", shape: [n, d], lifetime: .head),
      Buffer(name: "head.mean", shape: [n], lifetime: .head),
      Buffer(name: "head.rstd", shape: [n], lifetime: .head),
      Buffer(name: "head.h", shape: [n, d], lifetime: .head),
      Buffer(name: "head.logits", shape: [rows, config.vocab], lifetime: .head),
      Buffer(name: "head.loss", shape: [n], lifetime: .head),
      Buffer(name: "head.lse", shape: [n], lifetime: .head),
    ]
    let grads: [Buffer] = [
      Buffer(name: "grad.dx", shape: [n, d], lifetime: .gradient),
      Buffer(name: "grad.dcg", shape: [n, cout], lifetime: .gradient),
      Buffer(name: "grad.dqkv", shape: [n, config.qkvColumns], lifetime: .gradient),
    ] + (modelParallel ? [Buffer(name: "grad.dhkv", shape: [n * d + 2 * d * 2 * config.headDim], lifetime: .gradient)] : [])
    buffers = saved + head + scratch + grads
  }

  /// Floats of all buffers of `lifetime`.
  public func floats(_ lifetime: Lifetime) -> Int {
    buffers.filter { $0.lifetime == lifetime }.reduce(0) { $0 + $1.floats }
  }

  /// Arena size in floats: everything at once (the scratch is reused by every layer, so the peak
  /// is the sum; nothing else is allocated during a step).
  public var totalFloats: Int { buffers.reduce(0) { $0 + $1.floats } }

  /// Bytes kept from forward to backward: per-layer saved activations plus the head.
  public var savedBytes: Int { (floats(.saved) + floats(.head)) * 4 }
  /// Bytes of the transient regions: layer scratch plus backward gradient buffers.
  public var scratchBytes: Int { (floats(.scratch) + floats(.gradient)) * 4 }
  /// The activation arena's size in bytes (`savedBytes + scratchBytes`).
  public var totalBytes: Int { totalFloats * 4 }
}
