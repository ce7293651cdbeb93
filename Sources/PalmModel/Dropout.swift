// Dropout: the optional inverted-dropout rates of a training step and the key its masks come from.
//
// PaLM trained without dropout (both rates 0, the default); small data (tinyshakespeare) over-fits
// without it. Where: on each parallel block's summed branch output, Attn(LN(x)) + MLP(LN(x)) (the
// one output GEMM [ctx | g] · w_out), before the residual add, and optionally on the embedding output.
// Masks are never stored: CKernels/dropout.c (pk_dropout.h) hashes (seed, stream, counter), so the
// backward and every remat policy regenerate exactly the forward's mask. For a step with key
// (seed, tokenOffset), element (row r, column c) of the (B·T, d) activation uses
//   seed = key.seed,  stream = DropoutKey.residualStream(layer) | DropoutKey.embeddingStream,
//   counter = (key.tokenOffset + r) · d + c.
// Evaluation (`Model.forward`) and sampling never apply dropout.

import CKernels

/// Inverted-dropout rates (each in [0, 1); 0 = off, PaLM's setting).
public struct Dropout: Codable, Equatable, Sendable, CustomStringConvertible {
  /// Rate on each block's summed branch output before the residual add.
  public var residual: Float
  /// Rate on the embedding output (the first block's input).
  public var embedding: Float

  public init(residual: Float = 0, embedding: Float = 0) {
    self.residual = residual
    self.embedding = embedding
  }

  /// No dropout anywhere.
  public static let off = Dropout()

  /// Both rates 0.
  public var isOff: Bool { residual == 0 && embedding == 0 }

  /// A rate outside [0, 1).
  public struct Invalid: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
  }

  /// Throws `Invalid` unless both rates are in [0, 1).
  public func validate() throws {
    for (what, p) in [("dropout", residual), ("embedding dropout", embedding)] where !(p >= 0 && p < 1) {
      throw Invalid(message: "\(what) must be in [0, 1) (got \(p))")
    }
  }

  public var description: String {
    embedding == residual ? "\(residual)" : "residual \(residual), embedding \(embedding)"
  }
}

/// Which masks a training step draws: a seed, and where the step's tokens sit in the update (so
/// that micro-batch j of b·T tokens uses counters from j·b·T·d, and k micro-batches of b rows draw
/// exactly the masks of one batch of k·b rows).
public struct DropoutKey: Sendable, Equatable, Hashable {
  public var seed: UInt64
  /// Tokens of the update before this micro-batch (micro-batch j of b·T tokens: j·b·T).
  public var tokenOffset: Int

  public init(seed: UInt64 = 0, tokenOffset: Int = 0) {
    self.seed = seed
    self.tokenOffset = tokenOffset
  }

  /// The key of micro-batch `microBatch` (of `tokensPerMicroBatch` tokens) of training update
  /// `update` (1-based) of a run seeded `runSeed`: seed = pk_dropout_key(runSeed, update | 1 << 63)
  /// (a different stream of the hash than any layer's), offset = microBatch · tokensPerMicroBatch.
  /// Everything it depends on is in a checkpoint, so a resumed run draws the same masks.
  public static func training(runSeed: UInt64, update: Int, microBatch: Int = 0, tokensPerMicroBatch: Int = 0)
    -> DropoutKey
  {
    DropoutKey(seed: pk_dropout_key(runSeed, UInt64(update) | (UInt64(1) << 63)),
               tokenOffset: microBatch * tokensPerMicroBatch)
  }

  /// The mask stream of layer `layer`'s residual branch: 1 << 32 | layer.
  public static func residualStream(layer: Int) -> UInt64 { (UInt64(1) << 32) | UInt64(layer) }
  /// The mask stream of the embedding output: 2 << 32.
  public static let embeddingStream: UInt64 = UInt64(2) << 32
}
