// SentencePiece: PaLM's kind of vocabulary (Chowdhery et al. 2022, §2: SentencePiece with byte
// fallback, whitespace preserved, digits split), on Debian's libsentencepiece through the C shim
// Sources/CSentencePiece. Lossless for any bytes: decode(encode(x)) == x also for invalid UTF-8,
// NUL and binary data (the shim's header says how). The trainer options are `trainerOptions`, and
// docs/FORMATS.md ("Tokenizer") lists them.

import CSentencePiece
import Foundation
import PalmTensor

/// Why a tokenizer could not be trained, loaded or used: one line.
public struct SentencePieceError: Error, Equatable, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// A loaded SentencePiece model (the bytes of a .model file), with byte fallback.
///
/// ```swift
/// let model = try SentencePieceTokenizer.train(text: corpus, vocabularySize: 2048)
/// try AtomicFile.write(to: "tok.model", bytes: model)
/// let tok = try SentencePieceTokenizer(path: "tok.model")
/// let ids = try tok.encode(bytes: Array("ROMEO: 1599\n".utf8))
/// try tok.decode(ids) == Array("ROMEO: 1599\n".utf8)
/// ```
public final class SentencePieceTokenizer: @unchecked Sendable {
  /// The serialized model, exactly as read (what goes into a checkpoint).
  public let model: [UInt8]
  /// SHA-256 of `model`, lower-case hex.
  public let sha256: String
  public let vocabularySize: Int
  /// The bytes each id stands for in text (docs in palm_sp.h: palm_sp_surface).
  public let surfaces: [[UInt8]]
  private let handle: OpaquePointer  // palm_sp*, immutable after load: safe to share between threads

  /// Loads a model from its bytes; `name` labels errors.
  /// - Throws: `SentencePieceError` when the bytes are not a SentencePiece model or it lacks byte fallback.
  public init(model: [UInt8], name: String) throws {
    var err = [CChar](repeating: 0, count: 512)
    let h = model.withUnsafeBytes { palm_sp_load($0.baseAddress, $0.count, &err, 512) }
    guard let h else {
      throw SentencePieceError("\(name) is not a usable tokenizer: \(message(err)); train one with `palm tokenizer train`")
    }
    handle = h
    self.model = model
    sha256 = SHA256.hex(of: model)
    vocabularySize = Int(palm_sp_vocab_size(h))
    surfaces = (0..<Int32(vocabularySize)).map { id in
      var n = 0
      let p = palm_sp_surface(h, id, &n)!
      return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
  }

  /// Loads the model file at `path`.
  /// - Throws: `SentencePieceError` for an unreadable file or one that is not a model.
  public convenience init(path: String) throws {
    let file: MappedFile
    do {
      // Read, not mapped: a checkpoint's tokenizer.model truncated while it loads must not be a SIGBUS.
      file = try MappedFile(path: path, map: false) { st in
        if (st.st_mode & S_IFMT) != S_IFREG { throw SentencePieceError("tokenizer \(path) is not a regular file") }
      }
    } catch let e as SentencePieceError { throw e } catch {
      throw SentencePieceError("cannot read tokenizer \(path): \((error as? MappedFile.Failure)?.reason ?? "\(error)")")
    }
    try self.init(model: Array(file.bytes), name: path)
  }

  deinit { palm_sp_free(handle) }

  /// The piece as the model spells it (U+2581 for a space; <0x0A> for a byte).
  public func piece(_ id: Int32) -> String {
    precondition(id >= 0 && Int(id) < vocabularySize, "piece id \(id) out of 0..<\(vocabularySize)")
    var n = 0
    let p = palm_sp_piece(handle, id, &n)!
    return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
  }

  /// Token ids of any bytes.
  public func encode(_ bytes: UnsafeRawBufferPointer) throws -> [Int32] {
    var ids: UnsafeMutablePointer<Int32>?
    var count = 0
    var err = [CChar](repeating: 0, count: 512)
    guard palm_sp_encode(handle, bytes.baseAddress, bytes.count, &ids, &count, &err, 512) == 0, let ids else {
      throw SentencePieceError(message(err))
    }
    defer { palm_sp_free_ids(ids) }
    return Array(UnsafeBufferPointer(start: ids, count: count))
  }

  public func encode(bytes: [UInt8]) throws -> [Int32] { try bytes.withUnsafeBytes { try encode($0) } }

  /// The exact bytes of `ids`.
  /// - Throws: `SentencePieceError` for an id outside the vocabulary.
  public func decode(_ ids: [Int32]) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(ids.count * 4)
    for id in ids {
      guard id >= 0 && Int(id) < vocabularySize else {
        throw SentencePieceError("token id \(id) is outside the tokenizer's vocabulary 0..<\(vocabularySize)")
      }
      out.append(contentsOf: surfaces[Int(id)])
    }
    return out
  }

  /// The trainer options of `palm tokenizer train` (SentencePiece TrainerSpec/NormalizerSpec
  /// fields), in the order docs/FORMATS.md lists them. PaLM's properties: byte fallback (every
  /// character outside the vocabulary becomes its UTF-8 bytes), digits split, no normalization and
  /// whitespace kept as it is (no dummy prefix, no collapsing, runs of spaces may be pieces).
  public static func trainerOptions(vocabularySize: Int, threads: Int) -> [(String, String)] {
    [
      ("model_type", "unigram"),
      ("vocab_size", "\(vocabularySize)"),
      ("byte_fallback", "true"),
      ("split_digits", "true"),
      ("normalization_rule_name", "identity"),
      ("remove_extra_whitespaces", "false"),
      ("add_dummy_prefix", "false"),
      ("allow_whitespace_only_pieces", "true"),
      ("split_by_whitespace", "true"),
      ("treat_whitespace_as_suffix", "false"),
      ("character_coverage", "0.9995"),
      ("hard_vocab_limit", "true"),
      ("unk_id", "0"), ("bos_id", "-1"), ("eos_id", "-1"), ("pad_id", "-1"),
      ("input_sentence_size", "0"),
      ("max_sentence_length", "16384"),
      ("num_threads", "\(max(threads, 1))"),
    ]
  }

  /// The trainer's default thread count, the same on every machine (SentencePiece's own default):
  /// the model depends on the thread count (see `train`), so a default of "all cores" would give
  /// another model on another machine.
  public static let defaultTrainerThreads = 16

  /// Trains a model on `text` (one training sentence per line) and returns its bytes.
  ///
  /// Deterministic: the same text, vocabulary size and `threads` give the same bytes (SentencePiece
  /// draws no random numbers with these options: its only draw, the reservoir sample of
  /// `input_sentence_size`, is off). Another thread count gives another model: each E-step thread
  /// sums the expected piece counts of every `threads`-th sentence and the sums are added in thread
  /// order, so the float rounding, hence the scores and sometimes the pieces, differ; and the
  /// model records `num_threads` in its trainer spec.
  /// - Throws: `SentencePieceError` with SentencePiece's reason (e.g. a vocabulary the text cannot fill).
  public static func train(text: UnsafeRawBufferPointer, vocabularySize: Int, threads: Int = defaultTrainerThreads,
                           quiet: Bool = true) throws -> [UInt8] {
    let options = trainerOptions(vocabularySize: vocabularySize, threads: threads)
      .map { "\($0.0)=\($0.1)" }.joined(separator: "\n")
    var model: UnsafeMutableRawPointer?
    var size = 0
    var err = [CChar](repeating: 0, count: 1024)
    guard palm_sp_train(text.baseAddress, text.count, options, quiet ? 1 : 0, &model, &size, &err, 1024) == 0,
          let model else {
      throw SentencePieceError("SentencePiece training failed: \(message(err))")
    }
    defer { palm_sp_free_bytes(model) }
    return Array(UnsafeRawBufferPointer(start: model, count: size))
  }

  public static func train(text: [UInt8], vocabularySize: Int, threads: Int = defaultTrainerThreads,
                           quiet: Bool = true) throws -> [UInt8] {
    try text.withUnsafeBytes { try train(text: $0, vocabularySize: vocabularySize, threads: threads, quiet: quiet) }
  }
}

/// The NUL-terminated message the shim wrote into `buffer`.
private func message(_ buffer: [CChar]) -> String {
  String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The tokenizer of a run: bytes (the default, vocab 256, no file) or a SentencePiece model.
public enum Tokenizer: Sendable {
  case bytes
  case sentencePiece(SentencePieceTokenizer)

  public var vocabularySize: Int {
    switch self {
    case .bytes: ByteTokenizer.vocabularySize
    case .sentencePiece(let sp): sp.vocabularySize
    }
  }

  /// The SentencePiece model, nil for bytes.
  public var sentencePiece: SentencePieceTokenizer? {
    if case .sentencePiece(let sp) = self { return sp }
    return nil
  }

  /// Token ids of any bytes (never fails for `.bytes`).
  public func encode(bytes: [UInt8]) throws -> [Int32] {
    switch self {
    case .bytes: ByteTokenizer.encode(bytes: bytes)
    case .sentencePiece(let sp): try sp.encode(bytes: bytes)
    }
  }

  /// The exact bytes of `ids`; throws for an id outside the vocabulary.
  public func decode(_ ids: [Int32]) throws -> [UInt8] {
    switch self {
    case .bytes: try ByteTokenizer.decode(ids)
    case .sentencePiece(let sp): try sp.decode(ids)
    }
  }

  /// Bytes of text that token `id` stands for (1 for every byte token).
  public func byteLength(_ id: Int32) -> Int {
    switch self {
    case .bytes: 1
    case .sentencePiece(let sp): sp.surfaces[Int(id)].count
    }
  }
}
