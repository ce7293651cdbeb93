// KernelBench: times the model's non-GEMM kernels (attention, SwiGLU, LayerNorm, cross-entropy,
// embedding, AdamW) at the shapes a training step of a config gives them, and places each on the
// roofline (Roofline.swift) with the STREAM bandwidth (CKernels/stream.c) as the memory roof.
//
// FLOPs and bytes are analytic, per call. Bytes are the compulsory traffic: every operand read
// once and every result written once (4 bytes a float), nothing for caches or write-allocate.
// FLOPs: attention counts its matmul-class products as the kernel executes them (pk_attention.h,
// FLOPs.AttentionSpan.kernel); element-wise kernels count the arithmetic per element listed in
// `Kernel.perElement` (an exp, sqrt or division counts 1). Reference: Williams et al. 2009.

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// Microbenchmarks of the kernels, with GFLOP/s, GB/s, intensity and roofline placement.
///
/// ```swift
/// let bw = try KernelBench.bandwidth(threads: 2)            // STREAM triad GB/s
/// let rs = try KernelBench.run(config: .tiny, threads: 2, repeats: 5)
/// ```
public enum KernelBench {
  /// The kernels measured, in report order.
  public enum Kernel: String, Codable, CaseIterable, Sendable {
    case attentionForward = "attention.forward"
    case attentionBackward = "attention.backward"
    case swigluForward = "swiglu.forward"
    case swigluBackward = "swiglu.backward"
    case layernormForward = "layernorm.forward"
    case layernormBackward = "layernorm.backward"
    case xentForwardBackward = "xent.forward_backward"
    case embeddingForward = "embedding.forward"
    case embeddingBackward = "embedding.backward"
    case adamw = "adamw.update"

    /// Element-wise FLOPs per element of the kernel's main loop (nil: matmul-class, counted by span).
    ///
    /// ```
    /// swiglu.forward      4  per (N, F) element: exp, 1+, divide, × up
    /// swiglu.backward     10 per (N, F) element: sigmoid (3), swish, gate and up gradients
    /// layernorm.forward   7  per (N, D) element: mean (1), variance (2), (x−m)·r·s (3), +1 rounding
    /// layernorm.backward  10 per (N, D) element: xhat, g, two row means, dx, dscale
    /// xent.forward_backward 6 per (N, V) element: max, exp, sum, softmax scale, z term, gradient
    /// embedding.forward   1  per (N, D) element: the scale
    /// embedding.backward  2  per (N, D) element: scale and add
    /// adamw.update        15 per parameter: moments (7), bias corrections (2), sqrt, divide, decay
    /// ```
    public var perElement: Double? {
      switch self {
      case .attentionForward, .attentionBackward: nil
      case .swigluForward: 4
      case .swigluBackward: 10
      case .layernormForward: 7
      case .layernormBackward: 10
      case .xentForwardBackward: 6
      case .embeddingForward: 1
      case .embeddingBackward: 2
      case .adamw: 15
      }
    }
  }

  /// The sizes a training step of `config` hands the kernels.
  public struct Shape: Codable, Equatable, Sendable {
    public var name: String
    public var batch: Int, seqLen: Int, heads: Int, headDim: Int
    public var dModel: Int, dFF: Int, vocab: Int, parameters: Int
    public var tokens: Int { batch * seqLen }

    public init(_ c: PalmConfig) {
      name = c.name
      batch = c.batch; seqLen = c.seqLen; heads = c.heads; headDim = c.headDim
      dModel = c.dModel; dFF = c.dFF; vocab = c.vocab; parameters = c.parameterCount
    }

    enum CodingKeys: String, CodingKey {
      case name, batch, heads, parameters
      case seqLen = "seq_len", headDim = "head_dim", dModel = "d_model", dFF = "d_ff", vocab
    }
  }

  /// Analytic FLOPs and compulsory bytes of one call of `kernel` at `shape`.
  ///
  /// ```
  /// kernel              bytes (floats × 4)
  /// attention.forward   read qkv N·(HQ+2Q); write out N·HQ, lse B·H·T
  /// attention.backward  read qkv, out, dout, lse; write dqkv N·(HQ+2Q)
  /// swiglu.forward      read h N·2F; write out N·F
  /// swiglu.backward     read dout N·F, h N·2F; write dh N·2F
  /// layernorm.forward   read x N·D, scale D; write y N·D, mean, rstd 2N
  /// layernorm.backward  read dy, x N·D each, mean, rstd, scale; read+write dx N·D, dscale D
  /// xent.forward_backward read logits N·V, targets N; write dlogits N·V, loss, lse 2N
  /// embedding.forward   read tokens N, rows N·D; write out N·D
  /// embedding.backward  read tokens N, dout N·D; read+write dtable V·D
  /// adamw.update        read p, m, v, g; write p, m, v (7 floats per parameter)
  /// ```
  /// N = B·T tokens. Attention FLOPs: 4·B·H·Q·T·K̄ forward (Q·Kᵀ and P·V), 2.5× that backward,
  /// K̄ = keys per query the kernel executes (`FLOPs.AttentionSpan.kernel`).
  public static func cost(_ kernel: Kernel, _ s: Shape) -> (flops: Double, bytes: Double) {
    let n = Double(s.tokens), h = Double(s.heads), q = Double(s.headDim)
    let d = Double(s.dModel), f = Double(s.dFF), v = Double(s.vocab)
    let qkv = n * (h * q + 2 * q), out = n * h * q, lse = Double(s.batch) * h * Double(s.seqLen)
    let e = kernel.perElement ?? 0
    switch kernel {
    case .attentionForward:
      let keys = FLOPs.AttentionSpan.kernel(heads: s.heads).keysPerQuery(seqLen: s.seqLen)
      return (4 * n * h * q * keys, 4 * (qkv + out + lse))
    case .attentionBackward:
      let keys = FLOPs.AttentionSpan.kernel(heads: s.heads).keysPerQuery(seqLen: s.seqLen)
      return (10 * n * h * q * keys, 4 * (2 * qkv + 2 * out + lse))
    case .swigluForward: return (e * n * f, 4 * (3 * n * f))
    case .swigluBackward: return (e * n * f, 4 * (5 * n * f))
    case .layernormForward: return (e * n * d, 4 * (2 * n * d + d + 2 * n))
    case .layernormBackward: return (e * n * d, 4 * (4 * n * d + 2 * n + 3 * d))
    case .xentForwardBackward: return (e * n * v, 4 * (2 * n * v + 3 * n))
    case .embeddingForward: return (e * n * d, 4 * (2 * n * d + n))
    case .embeddingBackward: return (e * n * d, 4 * (n * d + n + 2 * v * d))
    case .adamw:
      let p = Double(s.parameters)
      return (e * p, 4 * 7 * p)
    }
  }

  /// One kernel timed at one shape and thread count.
  public struct Result: Codable, Equatable, Sendable {
    public var kernel: Kernel
    public var shape: Shape
    public var threads: Int
    /// Timed samples; each sample runs the kernel `callsPerSample` times.
    public var samples: Int
    public var callsPerSample: Int
    /// Seconds per call: median and fastest sample.
    public var medianSeconds: Double
    public var minSeconds: Double
    /// Analytic, per call.
    public var flops: Double
    public var bytes: Double
    /// FLOPs per byte.
    public var intensity: Double
    /// At the median sample.
    public var gflops: Double
    public var gbs: Double
    /// Placement under this machine's roofs; nil when the peak is unknown.
    public var roofline: Roofline.Placement?
    /// Precision of the tile products (attention kernels); nil for kernels it does not change.
    public var precision: GEMMPrecision? = nil

    enum CodingKeys: String, CodingKey {
      case kernel, shape, threads, samples, precision
      case callsPerSample = "calls_per_sample"
      case medianSeconds = "median_seconds", minSeconds = "min_seconds"
      case flops, bytes, intensity, gflops, gbs, roofline
    }
  }

  /// STREAM bandwidth (best of `repeats`) at `threads` threads over arrays of `floats` floats.
  public static func bandwidth(threads: Int, kind: pk_stream_kind = PK_STREAM_TRIAD,
                               floats: Int = 16 << 20, repeats: Int = 5) throws -> Double {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = threads
    var gbs = 0.0
    try KernelError.check(pk_stream_bandwidth(&gbs, kind, Int64(floats), Int32(repeats)), "stream")
    return gbs
  }

  /// Times every kernel in `kernels` at the shapes of `config` with `threads` threads.
  /// - Parameters:
  ///   - repeats: timed samples (median and min are reported); >= 1.
  ///   - minSampleSeconds: a sample repeats the call until it lasts this long (0: one call).
  ///   - roofline: this thread count's roofs, or nil (no placement).
  ///   - precision: of attention's tile products (the other kernels have none).
  /// - Throws: a kernel error.
  public static func run(config: PalmConfig, threads: Int, repeats: Int = 5, minSampleSeconds: Double = 0.005,
                         roofline: Roofline? = nil, kernels: [Kernel] = Kernel.allCases,
                         precision: GEMMPrecision = .fp32) throws -> [Result] {
    precondition(repeats >= 1)
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = threads
    let s = Shape(config)
    let bufs = Buffers(s)
    var results: [Result] = []
    for k in kernels {
      let call = try bufs.call(k, precision: precision)
      try call()  // warm-up and first touch
      var calls = 1
      if minSampleSeconds > 0 {
        let t0 = pk_now_seconds()
        try call()
        let once = max(pk_now_seconds() - t0, 1e-7)
        calls = max(1, min(10_000, Int((minSampleSeconds / once).rounded(.up))))
      }
      var times: [Double] = []
      for _ in 0..<repeats {
        let t0 = pk_now_seconds()
        for _ in 0..<calls { try call() }
        times.append((pk_now_seconds() - t0) / Double(calls))
      }
      times.sort()
      let median = PalmTrain.median(times) ?? times[0]
      let (flops, bytes) = cost(k, s)
      let gflops = flops / median / 1e9
      let intensity = bytes > 0 ? flops / bytes : 0
      results.append(Result(
        kernel: k, shape: s, threads: threads, samples: repeats, callsPerSample: calls,
        medianSeconds: median, minSeconds: times[0], flops: flops, bytes: bytes, intensity: intensity,
        gflops: gflops, gbs: bytes / median / 1e9,
        roofline: roofline?.classify(intensity: intensity, gflops: gflops),
        precision: k == .attentionForward || k == .attentionBackward ? precision : nil))
    }
    return results
  }

  /// The buffers of every kernel at one shape, filled with small random values.
  final class Buffers {
    let s: Shape
    var owned: [UnsafeMutablePointer<Float>] = []
    var tokens: [Int32]
    let qkv, out, lse, dout, dqkv: UnsafeMutablePointer<Float>
    let h, g, dg, dh: UnsafeMutablePointer<Float>
    let x, y, mean, rstd, scale, dy, dx, dscale: UnsafeMutablePointer<Float>
    let logits, dlogits, loss, xlse: UnsafeMutablePointer<Float>
    let table, dtable, emb, demb: UnsafeMutablePointer<Float>
    let p, m, v, grad: UnsafeMutablePointer<Float>

    init(_ s: Shape) {
      self.s = s
      var rng = NormalGenerator(seed: 3, stream: 11)
      var owned: [UnsafeMutablePointer<Float>] = []
      func alloc(_ count: Int, _ std: Float = 0.5, positive: Bool = false) -> UnsafeMutablePointer<Float> {
        let raw = pk_aligned_alloc(max(count, 1) * 4)!
        let ptr = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        for i in 0..<max(count, 1) {
          let z = Float(rng.nextNormal()) * std
          ptr[i] = positive ? abs(z) + 0.1 : z
        }
        owned.append(ptr)
        return ptr
      }
      let n = s.tokens, hq = s.heads * s.headDim, cq = hq + 2 * s.headDim
      qkv = alloc(n * cq); out = alloc(n * hq); lse = alloc(s.batch * s.heads * s.seqLen)
      dout = alloc(n * hq, 0.01); dqkv = alloc(n * cq)
      h = alloc(n * 2 * s.dFF); g = alloc(n * s.dFF); dg = alloc(n * s.dFF, 0.01); dh = alloc(n * 2 * s.dFF)
      x = alloc(n * s.dModel); y = alloc(n * s.dModel); mean = alloc(n); rstd = alloc(n)
      scale = alloc(s.dModel, 1, positive: true); dy = alloc(n * s.dModel, 0.01)
      dx = alloc(n * s.dModel, 0); dscale = alloc(s.dModel, 0)
      logits = alloc(n * s.vocab, 2); dlogits = alloc(n * s.vocab); loss = alloc(n); xlse = alloc(n)
      table = alloc(s.vocab * s.dModel); dtable = alloc(s.vocab * s.dModel, 0)
      emb = alloc(n * s.dModel); demb = alloc(n * s.dModel, 0.01)
      p = alloc(s.parameters, 0.02); m = alloc(s.parameters, 0); v = alloc(s.parameters, 0)
      grad = alloc(s.parameters, 0.01)
      tokens = (0..<n).map { _ in Int32(rng.nextUInt64() % UInt64(max(s.vocab, 1))) }
      self.owned = owned
    }

    deinit { for ptr in owned { pk_aligned_free(ptr) } }

    /// A closure that makes one call of `kernel` (inputs it needs, e.g. the forward's lse for the
    /// attention backward, are prepared here).
    func call(_ kernel: Kernel, precision: GEMMPrecision) throws -> () throws -> Void {
      let s = self.s
      let n = Int64(s.tokens), d = Int64(s.dModel), f = Int64(s.dFF), v = Int64(s.vocab)
      let hq = s.heads * s.headDim, cq = hq + 2 * s.headDim
      let forward = { [self] in
        try Kernels.attentionForward(precision, out: out, ldo: hq, lse: lse, qkv: qkv,
                                     ldqkv: cq, batch: s.batch, seqLen: s.seqLen,
                                     heads: s.heads, headDim: s.headDim)
      }
      switch kernel {
      case .attentionForward:
        return forward
      case .attentionBackward:
        try forward()
        return { [self] in
          try Kernels.attentionBackward(precision, dqkv: dqkv, lddqkv: cq, dout: dout,
                                        lddout: hq, qkv: qkv, ldqkv: cq,
                                        out: out, ldo: hq, lse: lse, batch: s.batch,
                                        seqLen: s.seqLen, heads: s.heads, headDim: s.headDim)
        }
      case .swigluForward:
        return { [self] in try KernelError.check(pk_swiglu_forward(g, f, h, 2 * f, n, f), "swiglu.forward") }
      case .swigluBackward:
        return { [self] in
          try KernelError.check(pk_swiglu_backward(dh, 2 * f, dg, f, h, 2 * f, n, f), "swiglu.backward")
        }
      case .layernormForward:
        return { [self] in
          try KernelError.check(pk_layernorm_forward(y, d, mean, rstd, x, d, scale, n, d), "layernorm.forward")
        }
      case .layernormBackward:
        try KernelError.check(pk_layernorm_forward(y, d, mean, rstd, x, d, scale, n, d), "layernorm.forward")
        return { [self] in
          try KernelError.check(pk_layernorm_backward(dx, d, dscale, dy, d, x, d, mean, rstd, scale, n, d),
                                "layernorm.backward")
        }
      case .xentForwardBackward:
        return { [self] in
          try tokens.withUnsafeBufferPointer { tk in
            try KernelError.check(pk_xent_forward_backward(loss, xlse, dlogits, v, logits, v, tk.baseAddress,
                                                           1 / Float(max(n, 1)), n, v, PK_XENT_ZLOSS),
                                  "xent.forward_backward")
          }
        }
      case .embeddingForward:
        return { [self] in
          try tokens.withUnsafeBufferPointer { tk in
            try KernelError.check(pk_embedding_forward(emb, d, tk.baseAddress, table, 1, n, v, d), "embedding.forward")
          }
        }
      case .embeddingBackward:
        return { [self] in
          try tokens.withUnsafeBufferPointer { tk in
            try KernelError.check(pk_embedding_backward(dtable, demb, d, tk.baseAddress, 1, n, v, d),
                                  "embedding.backward")
          }
        }
      case .adamw:
        let count = Int64(s.parameters)
        return { [self] in
          try KernelError.check(pk_adamw_update(p, m, self.v, grad, count, 1e-4, 0.9, 0.95, 1e-8, 0.1, 1),
                                "adamw.update")
        }
      }
    }
  }
}
