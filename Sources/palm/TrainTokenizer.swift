// palm train --tokenizer: the data as a token file of a SentencePiece model (PalmTrain/TokenFile.swift),
// encoded once and reused while the tokenizer and the text are the same, and the model's vocab set
// to the tokenizer's.
import Foundation
import PalmModel
import PalmTrain

extension Train {
  /// The --tokenizer model, or nil for bytes.
  func runTokenizer() throws -> SentencePieceTokenizer? {
    try tokenizer.map { try loadTokenizer($0) }
  }

  /// `cfg` with the tokenizer's vocabulary: a preset's is replaced (said on stdout); a config file
  /// that names another is an error.
  func applyTokenizer(to cfg: PalmConfig) throws -> PalmConfig {
    guard let tok = try runTokenizer() else { return cfg }
    var c = cfg
    if configFile != nil && cfg.vocab != tok.vocabularySize {
      throw CLIError("config file \(configFile!) has vocab \(cfg.vocab), the tokenizer \(tokenizer!) has \(tok.vocabularySize): set \"vocab\": \(tok.vocabularySize) in it")
    }
    c.vocab = tok.vocabularySize
    do { try c.validate() } catch { throw CLIError("\(error)") }
    return c
  }

  /// The token file of --data under --tokenizer (--token-file, default in the cache directory),
  /// built or rebuilt when needed, opened as the dataset.
  func openTokenDataset(_ cfg: PalmConfig, data dataPath: String, tokenizer tok: SentencePieceTokenizer) throws -> TokenDataset {
    let path = tokenFile ?? Train.defaultTokenFile(data: dataPath, tokenizer: tok)
    if tokenFile == nil {
      try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    }
    let outcome: TokenFile.Outcome
    do { outcome = try TokenFile.prepare(path: path, source: dataPath, tokenizer: tok) } catch { throw CLIError("\(error)") }
    switch outcome {
    case .reused: Train.say("token file \(path): reused (same tokenizer and text)")
    case .built: Train.say("token file \(path): encoded \(dataPath)")
    case .rebuilt(let reason): Train.say("token file \(path): rebuilt, \(reason)")
    }
    do { return try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: cfg.seqLen) } catch { throw CLIError("\(error)") }
  }

  /// <cache>/tokens/<data file name>.<tokenizer SHA-256, 16 digits>.tokens
  static func defaultTokenFile(data: String, tokenizer: SentencePieceTokenizer) -> String {
    let name = (data as NSString).lastPathComponent
    return DataFetch.defaultCacheDirectory.appendingPathComponent("tokens/\(name).\(tokenizer.sha256.prefix(16)).tokens").path
  }
}
