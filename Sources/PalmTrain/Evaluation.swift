// Evaluation: a model's loss over a whole file, every token after the first scored exactly once
// (`palm eval`). The file is encoded with the run's tokenizer (bytes: one token per byte; a
// SentencePiece model: its ids) and the tokens cut into consecutive windows of T targets (window i
// reads tokens [iT, iT + T) and predicts [iT + 1, iT + T + 1)); full windows run B at a time, the
// last few one at a time, and the final partial window at its own length, on forward-only models
// that share the weights (Model(sharing:)). Bits per byte = summed cross-entropy (nats) over the
// scored tokens ÷ the bytes those tokens cover (the file's bytes but the first token's) ÷ ln 2: with
// the byte vocabulary a token is a byte, so it equals nats per token / ln 2.

import Foundation
import PalmModel
import PalmTensor

/// The result of evaluating a file.
public struct FileEvaluation: Codable, Equatable, Sendable {
  /// Tokens scored (the file's tokens but the first: it has no context to be predicted from).
  public var tokens: Int
  /// Bytes those tokens cover (the file's size less the first token's bytes).
  public var bytes: Int
  /// Windows run (full ones, plus the final partial one when there is one).
  public var windows: Int
  /// Mean cross-entropy per scored token, nats (z-loss not included).
  public var natsPerToken: Double
  /// Summed cross-entropy ÷ `bytes` ÷ ln 2.
  public var bitsPerByte: Double
  public var seconds: Double
  /// The GEMM precision of the forward passes.
  public var precision: GEMMPrecision

  enum CodingKeys: String, CodingKey {
    case tokens, bytes, windows, seconds, precision
    case natsPerToken = "nats_per_token", bitsPerByte = "bits_per_byte"
  }

  public init(tokens: Int, bytes: Int, windows: Int, natsPerToken: Double, bitsPerByte: Double, seconds: Double,
              precision: GEMMPrecision) {
    self.tokens = tokens; self.bytes = bytes; self.windows = windows
    self.natsPerToken = natsPerToken; self.bitsPerByte = bitsPerByte; self.seconds = seconds; self.precision = precision
  }

  /// Output written before `precision` existed reads as fp32 (the only precision palm eval had).
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    self.init(tokens: try c.decode(Int.self, forKey: .tokens), bytes: try c.decode(Int.self, forKey: .bytes),
              windows: try c.decode(Int.self, forKey: .windows), natsPerToken: try c.decode(Double.self, forKey: .natsPerToken),
              bitsPerByte: try c.decode(Double.self, forKey: .bitsPerByte), seconds: try c.decode(Double.self, forKey: .seconds),
              precision: try c.decodeIfPresent(GEMMPrecision.self, forKey: .precision) ?? .fp32)
  }
}

public enum Evaluation {
  /// Cross-entropy of `model`'s weights over `data` encoded with `tokenizer` (the checkpoint's).
  /// `model` fixes the batch B and window length T; it is only read (forward passes on models
  /// sharing its weights). `progress(done, total)` is called after each batch with windows done
  /// and in all.
  /// - Throws: `TrainError.data` for fewer than 2 tokens, or a text the tokenizer cannot encode;
  ///   kernel errors.
  public static func evaluate(model: Model, data: UnsafeRawBufferPointer, tokenizer: Tokenizer = .bytes,
                              progress: (Int, Int) -> Void = { _, _ in }) throws -> FileEvaluation {
    switch tokenizer {
    case .bytes:
      guard data.count >= 2 else { throw TrainError.data("the file has \(data.count) byte(s): evaluation needs at least 2 (one to predict from, one to predict)") }
      return try evaluate(model: model, tokens: data.lazy.map { Int32($0) }, byteLength: tokenizer.byteLength, progress: progress)
    case .sentencePiece(let sp):
      let ids: [Int32]
      do { ids = try sp.encode(data) } catch { throw TrainError.data("the tokenizer cannot encode the file: \(error)") }
      guard ids.count >= 2 else {
        throw TrainError.data("the file has \(data.count) byte(s), \(ids.count) token(s): evaluation needs at least 2 tokens (one to predict from, one to predict)")
      }
      return try evaluate(model: model, tokens: ids, byteLength: tokenizer.byteLength, progress: progress)
    }
  }

  /// The same over token ids; `byteLength(id)` is the bytes of text token `id` stands for.
  /// - Precondition: at least 2 tokens, every id inside the model's vocabulary.
  public static func evaluate<Tokens: RandomAccessCollection>(
    model: Model, tokens: Tokens, byteLength: (Int32) -> Int, progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> FileEvaluation where Tokens.Element == Int32, Tokens.Index == Int {
    let t0 = Date()
    precondition(tokens.count >= 2, "evaluation needs at least 2 tokens")
    let base = tokens.startIndex
    let T = model.seqLen, B = model.batch, scored = tokens.count - 1
    let full = scored / T, rest = scored % T
    let total = full + (rest > 0 ? 1 : 0)
    var sum = 0.0, done = 0
    func run(_ m: Model, first: Int, count: Int, length: Int) throws {
      var x = [Int32](repeating: 0, count: count * length), y = x
      for w in 0..<count {
        let start = base + (first + w) * T
        for i in 0..<length {
          x[w * length + i] = tokens[start + i]
          y[w * length + i] = tokens[start + i + 1]
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
    var bytes = 0
    for i in (base + 1)..<tokens.endIndex { bytes += byteLength(tokens[i]) }
    return FileEvaluation(tokens: scored, bytes: bytes, windows: total, natsPerToken: sum / Double(scored),
                          bitsPerByte: sum / Double(max(bytes, 1)) / M_LN2, seconds: Date().timeIntervalSince(t0),
                          precision: model.precision)
  }
}
