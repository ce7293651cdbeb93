// Sampler: incremental decoding with a KV cache, and next-token sampling (temperature, top-k).
//
// One token at a time through the same weights as Model.swift: h = LN(x); proj = h · w_in (a GEMV);
// pk_decode_attention appends the token's rotated K and its V to the layer's cache (one K/V
// head: multi-query, so the cache is 2·L·S·Q floats) and attends over it; g = SwiGLU(gate_up);
// x += [ctx | g] · w_out. Logits = LN_f(x) · embedᵀ / √d. The whole token is ONE kernel call,
// pk_decode_token (CKernels/gemv.c): one OpenMP region whose threads split every GEMV's columns,
// the attention's heads and SwiGLU's columns, and stay awake between the kernels, so decoding
// runs at the weights' bandwidth; the logits are the same bits on any thread count. Rotary positions
// are 0-based within the cached window, as in training (each training window starts at position 0).
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
  private let kCache: Tensor, vCache: Tensor   // K (L, S rounded up to 16 · Q) in 16-position blocks (pk_decode.h), V (L, S, Q)
  private let x: Tensor, h: Tensor              // (d)
  private let proj: Tensor                      // (C_in)
  private let cg: Tensor                        // (H·Q + F)
  private let logits: Tensor                    // (V)
  /// The layers' weight pointers for pk_decode_token (views into `parameters`, which never move).
  private let layerTable: [pk_decode_layer]

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
    kCache = Tensor(shape: [c.layers, Int(pk_decode_kcache_floats(Int64(self.capacity), Int64(c.headDim)))])
    vCache = Tensor(shape: [c.layers, self.capacity, c.headDim])
    x = Tensor(shape: [c.dModel]); h = Tensor(shape: [c.dModel])
    proj = Tensor(shape: [c.inputProjectionColumns])
    cg = Tensor(shape: [c.outputProjectionRows])
    logits = Tensor(shape: [c.vocab])
    layerTable = parameters.layers.map {
      pk_decode_layer(ln_scale: UnsafePointer($0.lnScale.pointer), w_in: UnsafePointer($0.wIn.pointer),
                      w_out: UnsafePointer($0.wOut.pointer))
    }
  }

  /// Empties the cache (the next token is at position 0).
  public func reset() { position = 0 }

  /// Feeds `token` at the next position and returns the next-token logits (V floats).
  /// - Throws: `Model.InputError` when the cache is full or the id is outside [0, V);
  ///   `KernelError` from a kernel.
  @discardableResult
  public func step(token: Int32) throws -> [Float] {
    let c = config
    guard position < capacity else {
      throw Model.InputError(description: "KV cache full (\(capacity) tokens): reset() or use sampling windows")
    }
    guard token >= 0 && Int(token) < c.vocab else {
      throw Model.InputError(description: "token id \(token) outside [0, \(c.vocab))")
    }
    try layerTable.withUnsafeBufferPointer { layers in
      try KernelError.check(
        pk_decode_token(logits.pointer, x.pointer, h.pointer, proj.pointer, cg.pointer, kCache.pointer, vCache.pointer,
                        Int64(capacity), Int64(position), layers.baseAddress, Int64(c.layers),
                        parameters.lnFinalScale.pointer, parameters.embed.pointer, Int64(token), Int64(c.dModel),
                        Int64(c.heads), Int64(c.headDim), Int64(c.dFF), Int64(c.vocab)), "decode_token")
    }
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
