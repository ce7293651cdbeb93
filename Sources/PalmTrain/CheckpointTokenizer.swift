// CheckpointTokenizer: the manifest's record of a run's SentencePiece tokenizer, stored in every
// step directory as tokenizer.model (its size and SHA-256 are also in the manifest's `files`, so
// CheckpointStore.load verifies it), so `palm sample` needs nothing but the checkpoint.

import PalmTensor

/// manifest.json "tokenizer": which file holds the model, its vocabulary and SHA-256.
public struct CheckpointTokenizer: Codable, Equatable, Sendable {
  public static let fileName = "tokenizer.model"
  /// "sentencepiece".
  public var kind: String
  public var file: String
  public var vocab: Int
  public var sha256: String

  public init(tokenizer: SentencePieceTokenizer) {
    kind = "sentencepiece"
    file = CheckpointTokenizer.fileName
    vocab = tokenizer.vocabularySize
    sha256 = tokenizer.sha256
  }
}

extension LoadedCheckpoint {
  /// The tokenizer the checkpoint was trained with: its tokenizer.model, or bytes when the
  /// manifest names none.
  /// - Throws: `CheckpointError` when the model file is missing or is not a usable tokenizer, or
  ///   its vocabulary is not the model's.
  public func tokenizer() throws -> Tokenizer {
    guard let t = manifest.tokenizer else { return .bytes }
    let file = "\(path)/\(t.file)"
    let sp: SentencePieceTokenizer
    do { sp = try SentencePieceTokenizer(path: file) } catch {
      throw CheckpointError.incomplete(path: path, reason: "its tokenizer \(t.file) cannot be used (\(error)); put the run's tokenizer model back as \(file)")
    }
    if sp.sha256 != t.sha256 || sp.vocabularySize != manifest.config.vocab {
      throw CheckpointError.corrupt(path: path, reason: "\(t.file) has SHA-256 \(sp.sha256) and vocab \(sp.vocabularySize); the manifest says \(t.sha256) and vocab \(manifest.config.vocab)")
    }
    return .sentencePiece(sp)
  }
}
