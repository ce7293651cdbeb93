// Evaluation: a model's loss over a whole byte file, every byte after the first scored exactly
// once (`palm eval`). The file is cut into consecutive windows of T targets (window i reads bytes
// [iT, iT + T) and predicts [iT + 1, iT + T + 1)); full windows run B at a time, the last few one
// at a time, and the final partial window at its own length, on forward-only models that share
// the weights (Model(sharing:)). Bits per byte = summed cross-entropy (nats) ÷ bytes scored ÷ ln 2:
// with the byte vocabulary a token is a byte, so it equals nats per token / ln 2.

import Foundation
import PalmModel
import PalmTensor

/// The result of evaluating a file.
public struct FileEvaluation: Codable, Equatable, Sendable {
  /// Tokens scored (the file's bytes but the first: it has no context to be predicted from).
  public var tokens: Int
  /// Bytes those tokens cover.
  public var bytes: Int
  /// Windows run (full ones, plus the final partial one when there is one).
  public var windows: Int
  /// Mean cross-entropy per token, nats (z-loss not included).
  public var natsPerToken: Double
  public var bitsPerByte: Double
  public var seconds: Double

  enum CodingKeys: String, CodingKey {
    case tokens, bytes, windows, seconds
    case natsPerToken = "nats_per_token", bitsPerByte = "bits_per_byte"
  }
}

public enum Evaluation {
  /// Cross-entropy of `model`'s weights over `data` (byte tokens). `model` fixes the batch B and
  /// window length T; it is only read (forward passes on models sharing its weights).
  /// `progress(done, total)` is called after each batch with windows done and in all.
  /// - Throws: `TrainError.data` for fewer than 2 bytes; kernel errors.
  public static func evaluate(model: Model, data: UnsafeRawBufferPointer,
                              progress: (Int, Int) -> Void = { _, _ in }) throws -> FileEvaluation {
    let t0 = Date()
    guard data.count >= 2 else { throw TrainError.data("the file has \(data.count) byte(s): evaluation needs at least 2 (one to predict from, one to predict)") }
    let T = model.seqLen, B = model.batch, scored = data.count - 1
    let full = scored / T, rest = scored % T
    let total = full + (rest > 0 ? 1 : 0)
    var sum = 0.0, done = 0
    func run(_ m: Model, first: Int, count: Int, length: Int) throws {
      var x = [Int32](repeating: 0, count: count * length), y = x
      for w in 0..<count {
        let start = (first + w) * T
        for i in 0..<length {
          x[w * length + i] = Int32(data[start + i])
          y[w * length + i] = Int32(data[start + i + 1])
        }
      }
      sum += Double(try m.forward(tokens: x, targets: y).crossEntropy) * Double(count * length)
      done += count
      progress(done, total)
    }
    var w = 0
    while w + B <= full { try run(model, first: w, count: B, length: T); w += B }
    if w < full {
      let one = try Model(sharing: model, batch: 1)
      while w < full { try run(one, first: w, count: 1, length: T); w += 1 }
    }
    if rest > 0 { try run(try Model(sharing: model, batch: 1, seqLen: rest), first: full, count: 1, length: rest) }
    let nats = sum / Double(scored)
    return FileEvaluation(tokens: scored, bytes: scored, windows: total, natsPerToken: nats, bitsPerByte: nats / M_LN2,
                          seconds: Date().timeIntervalSince(t0))
  }
}
