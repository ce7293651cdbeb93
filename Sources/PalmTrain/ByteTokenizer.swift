// ByteTokenizer: the lossless byte-level tokenizer (vocabulary 256: token = one byte of the UTF-8
// text, or of any binary file). Encoding never fails and decoding the tokens of any input gives back
// its exact bytes; `display` decodes for people, replacing invalid UTF-8 with U+FFFD.
// Not BPE: one token per byte, so bits per byte = loss / ln 2.

/// Byte-level tokenizer: token ids are the bytes 0...255.
///
/// ```swift
/// let ids = ByteTokenizer.encode("héllo")      // 6 tokens: é is 2 bytes
/// ByteTokenizer.decode(ids) == Array("héllo".utf8)
/// ByteTokenizer.display(ids) == "héllo"
/// ```
public enum ByteTokenizer {
  /// Number of distinct tokens.
  public static let vocabularySize = 256

  /// The UTF-8 bytes of `text` as token ids.
  public static func encode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }

  /// Bytes as token ids.
  public static func encode(bytes: [UInt8]) -> [Int32] { bytes.map { Int32($0) } }

  /// The exact bytes of `tokens`.
  /// - Throws: `TokenizerError.outOfRange` for an id outside 0...255.
  public static func decode(_ tokens: [Int32]) throws -> [UInt8] {
    try tokens.map { t in
      guard t >= 0 && t < 256 else { throw TokenizerError.outOfRange(t) }
      return UInt8(t)
    }
  }

  /// Text for display: invalid UTF-8 (a split multi-byte character, binary data) becomes U+FFFD,
  /// out-of-range ids too. Never fails.
  public static func display(_ tokens: [Int32]) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(tokens.count)
    for t in tokens {
      if t >= 0 && t < 256 { bytes.append(UInt8(t)) } else { bytes.append(contentsOf: [0xEF, 0xBF, 0xBD]) }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// A token id that is not a byte.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
  case outOfRange(Int32)
  public var description: String {
    switch self {
    case .outOfRange(let t): "token id \(t) is outside the byte vocabulary 0...255"
    }
  }
}
