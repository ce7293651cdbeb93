// Sampler: incremental decoding with a KV cache, and next-token sampling (temperature, top-k).
//
// One token at a time through the same weights as Model.swift: h = LN(x); proj = h · w_in (pk_sgemm,
// m = 1); pk_decode_attention appends the token's rotated K and its V to the layer's cache (one K/V
// head: multi-query, so the cache is 2·L·S·Q floats) and attends over it; g = SwiGLU(gate_up);
// x += [ctx | g] · w_out. Logits = LN_f(x) · embedᵀ / √d. Rotary positions are 0-based within the
// cached window, as in training (each training window starts at position 0).
// Reference: llama2.c run.c (forward() with a KV cache, sample_topp/argmax), Model.swift.

import CKernels
import PalmTensor

/// A KV-cache decoder over a model's parameters.
///
/// ```swift
/// let dec = try KVCacheDecoder(parameters: model.parameters)
/// var logits: [Float] = []
/// for t in ByteTokenizer.encode("ROMEO:") { logits = try dec.step(token: t) }   // prefill
/// ```
public final class KVCacheDecoder: @unchecked Sendable {
  public let config: PalmConfig
  public let parameters: Parameters
  /// Tokens the cache holds at most (the config's sequence length by default).
  public let capacity: Int
  /// Tokens in the cache now (the next token's rotary position).
  public private(set) var position = 0
  private let kCache: Tensor, vCache: Tensor   // (L, S, Q) each
  private let x: Tensor, h: Tensor              // (d)
  private let proj: Tensor                      // (C_in)
  private let cg: Tensor                        // (H·Q + F)
  private let logits: Tensor                    // (V)
  private let stat: Tensor                      // (2): mean, rstd

  /// - Parameters:
  ///   - capacity: the most tokens kept (default `config.seqLen`); see `step(token:)` for what
  ///     happens when it is full.
  /// - Throws: `Model.InputError` for a capacity below 1.
  public init(parameters: Parameters, capacity: Int? = nil) throws {
    let c = parameters.config
    self.config = c
    self.parameters = parameters
    self.capacity = capacity ?? c.seqLen
    guard self.capacity >= 1 else { throw Model.InputError(description: "decoder capacity must be at least 1") }
    kCache = Tensor(shape: [c.layers, self.capacity, c.headDim])
    vCache = Tensor(shape: [c.layers, self.capacity, c.headDim])
    x = Tensor(shape: [c.dModel]); h = Tensor(shape: [c.dModel])
    proj = Tensor(shape: [c.inputProjectionColumns])
    cg = Tensor(shape: [c.outputProjectionRows])
    logits = Tensor(shape: [c.vocab])
    stat = Tensor(shape: [2])
  }

  /// Empties the cache (the next token is at position 0).
  public func reset() { position = 0 }

  /// Feeds `token` at the next position and returns the next-token logits (V floats).
  /// - Throws: `Model.InputError` when the cache is full or the id is outside [0, V);
  ///   `KernelError` from a kernel.
  @discardableResult
  public func step(token: Int32) throws -> [Float] {
    let c = config, d = c.dModel, q = c.headDim, hq = c.queryColumns
    let cin = c.inputProjectionColumns, cout = c.outputProjectionRows
    guard position < capacity else {
      throw Model.InputError(description: "KV cache full (\(capacity) tokens): reset() or use sampling windows")
    }
    guard token >= 0 && Int(token) < c.vocab else {
      throw Model.InputError(description: "token id \(token) outside [0, \(c.vocab))")
    }
    x.pointer.update(from: parameters.embed.pointer + Int(token) * d, count: d)
    for i in 0..<c.layers {
      let W = parameters.layers[i]
      try KernelError.check(pk_layernorm_forward(h.pointer, Int64(d), stat.pointer, stat.pointer + 1, x.pointer,
                                                 Int64(d), W.lnScale.pointer, 1, Int64(d)), "layernorm_forward")
      try Kernels.sgemm(.nn, m: 1, n: cin, k: d, alpha: 1, a: h.pointer, lda: d, b: W.wIn.pointer, ldb: cin,
                        beta: 0, c: proj.pointer, ldc: cin)
      let cacheOffset = i * capacity * q
      try KernelError.check(pk_decode_attention(cg.pointer, kCache.pointer + cacheOffset, vCache.pointer + cacheOffset,
                                                proj.pointer, Int64(position), Int64(capacity), Int64(c.heads),
                                                Int64(q)), "decode_attention")
      try KernelError.check(pk_swiglu_forward(cg.pointer + hq, Int64(c.dFF), proj.pointer + c.gateColumn, Int64(2 * c.dFF),
                                              1, Int64(c.dFF)), "swiglu_forward")
      try Kernels.sgemm(.nn, m: 1, n: d, k: cout, alpha: 1, a: cg.pointer, lda: cout, b: W.wOut.pointer, ldb: d,
                        beta: 1, c: x.pointer, ldc: d)
    }
    try KernelError.check(pk_layernorm_forward(h.pointer, Int64(d), stat.pointer, stat.pointer + 1, x.pointer,
                                               Int64(d), parameters.lnFinalScale.pointer, 1, Int64(d)),
                          "layernorm_forward")
    try Kernels.sgemm(.nt, m: 1, n: c.vocab, k: d, alpha: 1 / Float(d).squareRoot(), a: h.pointer, lda: d,
                      b: parameters.embed.pointer, ldb: d, beta: 0, c: logits.pointer, ldc: c.vocab)
    position += 1
    return logits.array
  }
}

/// Picks the next token from logits: greedy at temperature 0, else softmax(logits / T) restricted to
/// the `topK` largest (0 = all), drawn with a seeded splitmix64 generator (reproducible per seed).
public struct TokenPicker: Sendable {
  public var temperature: Float
  public var topK: Int
  private var rng: NormalGenerator

  public init(temperature: Float, topK: Int = 0, seed: UInt64 = 0) {
    self.temperature = temperature
    self.topK = topK
    self.rng = NormalGenerator(seed: seed, stream: 0x5A4D_504C)
  }

  /// The next token id.
  public mutating func pick(_ logits: [Float]) -> Int32 {
    precondition(!logits.isEmpty, "no logits")
    if temperature <= 0 || !temperature.isFinite {
      var best = 0
      for i in 1..<logits.count where logits[i] > logits[best] { best = i }  // first maximum wins
      return Int32(best)
    }
    var order = Array(logits.indices)
    if topK > 0 && topK < logits.count {
      order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
      order = Array(order.prefix(topK))
    }
    let mx = order.map { logits[$0] }.max()!
    let weights = order.map { exp(Double(logits[$0] - mx) / Double(temperature)) }
    let total = weights.reduce(0, +)
    var u = rng.nextUniform() * total
    for (i, w) in zip(order, weights) {
      u -= w
      if u <= 0 { return Int32(i) }
    }
    return Int32(order.last!)
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
