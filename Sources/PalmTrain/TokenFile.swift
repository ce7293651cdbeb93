// TokenFile: a text file encoded once by a SentencePiece tokenizer, stored for memory-mapping by
// TokenDataset. The header names the tokenizer's SHA-256 and the source file's size and SHA-256;
// `prepare` reuses a file whose header matches and otherwise rebuilds it atomically (temp +
// rename: a reader sees the old file or the complete new one). Layout: docs/FORMATS.md ("Token file").

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PalmTensor

/// Why a token file could not be made or read: one line naming the file and the way out.
public struct TokenFileError: Error, Equatable, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

public enum TokenFile {
  public static let magic = Array("PALMTOK1".utf8)
  public static let formatVersion: UInt32 = 1
  public static let headerSize = 128

  /// The 128-byte header (all integers little-endian).
  public struct Header: Equatable, Sendable {
    /// 2 (uint16 ids, vocabulary ≤ 65,536) or 4 (uint32).
    public var bytesPerToken: Int
    public var tokenCount: Int
    public var vocabularySize: Int
    public var sourceSize: Int
    /// SHA-256 of the source text file (32 bytes).
    public var sourceSHA256: [UInt8]
    /// SHA-256 of the tokenizer's .model bytes (32 bytes).
    public var tokenizerSHA256: [UInt8]

    /// The header's bytes.
    public var encoded: [UInt8] {
      var h = TokenFile.magic
      func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { h.append(contentsOf: $0) } }
      put(TokenFile.formatVersion)
      put(UInt32(bytesPerToken))
      put(UInt64(tokenCount))
      put(UInt64(sourceSize))
      h += sourceSHA256
      h += tokenizerSHA256
      put(UInt32(vocabularySize))
      h += [UInt8](repeating: 0, count: TokenFile.headerSize - h.count)
      return h
    }

    /// Parses a header; nil when `bytes` do not start with the magic and a known version.
    public init?(_ bytes: UnsafeRawBufferPointer) {
      guard bytes.count >= TokenFile.headerSize, Array(bytes[0..<8]) == TokenFile.magic else { return nil }
      func get<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T { T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self)) }
      guard get(8, UInt32.self) == TokenFile.formatVersion else { return nil }
      let width = Int(get(12, UInt32.self))
      guard width == 2 || width == 4 else { return nil }
      bytesPerToken = width
      tokenCount = Int(truncatingIfNeeded: get(16, UInt64.self))
      sourceSize = Int(truncatingIfNeeded: get(24, UInt64.self))
      sourceSHA256 = Array(bytes[32..<64])
      tokenizerSHA256 = Array(bytes[64..<96])
      vocabularySize = Int(get(96, UInt32.self))
    }

    public init(bytesPerToken: Int, tokenCount: Int, vocabularySize: Int, sourceSize: Int, sourceSHA256: [UInt8],
                tokenizerSHA256: [UInt8]) {
      self.bytesPerToken = bytesPerToken
      self.tokenCount = tokenCount
      self.vocabularySize = vocabularySize
      self.sourceSize = sourceSize
      self.sourceSHA256 = sourceSHA256
      self.tokenizerSHA256 = tokenizerSHA256
    }

    /// Bytes of the whole file this header describes.
    public var fileSize: Int { TokenFile.headerSize + tokenCount * bytesPerToken }
  }

  /// Bytes per token id for a vocabulary.
  public static func bytesPerToken(vocabularySize: Int) -> Int { vocabularySize <= 65_536 ? 2 : 4 }

  /// What `prepare` did.
  public enum Outcome: Equatable, Sendable {
    case reused
    case built
    /// The file existed but was made from another tokenizer or source, or was cut short.
    case rebuilt(reason: String)
  }

  /// The token file for `source` under `tokenizer` at `path`: reused when its header names this
  /// tokenizer and this source (size and SHA-256), else encoded and written atomically.
  /// - Throws: `TokenFileError` for an unreadable source, a `path` holding something that is not a
  ///   token file (never overwritten), or a failed write (an existing file is left as it was).
  public static func prepare(path: String, source: String, tokenizer: SentencePieceTokenizer) throws -> Outcome {
    let text: MappedFile
    do {
      // Read, not mapped: the whole text is encoded at once, and a truncation meanwhile must not SIGBUS.
      text = try MappedFile(path: source, map: false) { st in
        if (st.st_mode & S_IFMT) != S_IFREG { throw TokenFileError("data \(source) is not a regular file") }
      }
    } catch let e as TokenFileError { throw e } catch {
      throw TokenFileError("cannot read data \(source): \((error as? MappedFile.Failure)?.reason ?? "\(error)")")
    }
    var sha = SHA256()
    sha.update(text.bytes)
    let want = Header(bytesPerToken: bytesPerToken(vocabularySize: tokenizer.vocabularySize), tokenCount: 0,
                      vocabularySize: tokenizer.vocabularySize, sourceSize: text.count, sourceSHA256: sha.finalize(),
                      tokenizerSHA256: hexBytes(tokenizer.sha256))
    var reason: String?
    if access(path, F_OK) == 0 {
      let existing: DataFile
      var head = [UInt8](repeating: 0, count: headerSize)
      do {
        existing = try DataFile(path: path)
        if existing.count >= headerSize { try head.withUnsafeMutableBytes { try existing.read(into: $0, at: 0) } }
      } catch {
        throw TokenFileError("cannot read token file \(path): \((error as? MappedFile.Failure)?.reason ?? "\(error)")")
      }
      guard let have = head.withUnsafeBytes({ Header($0) }) else {
        throw TokenFileError("\(path) exists and is not a palm token file; not overwriting it: remove it or give another --token-file")
      }
      if have.tokenizerSHA256 != want.tokenizerSHA256 {
        reason = "it was built with another tokenizer (SHA-256 \(SHA256.hex(have.tokenizerSHA256).prefix(12))…, this one is \(tokenizer.sha256.prefix(12))…)"
      } else if have.sourceSize != want.sourceSize || have.sourceSHA256 != want.sourceSHA256 {
        reason = "it was built from another version of \(source) (\(have.sourceSize) bytes, SHA-256 \(SHA256.hex(have.sourceSHA256).prefix(12))…; now \(want.sourceSize) bytes, \(SHA256.hex(want.sourceSHA256).prefix(12))…)"
      } else if have.bytesPerToken != want.bytesPerToken || have.vocabularySize != want.vocabularySize
                  || existing.count != have.fileSize {
        reason = "it is \(existing.count) bytes, its header describes \(have.fileSize)"
      } else {
        return .reused
      }
    }
    let ids: [Int32]
    do { ids = try tokenizer.encode(text.bytes) } catch { throw TokenFileError("cannot encode \(source): \(error)") }
    var header = want
    header.tokenCount = ids.count
    var body = [UInt8](repeating: 0, count: ids.count * header.bytesPerToken)
    body.withUnsafeMutableBytes { out in
      if header.bytesPerToken == 2 {
        for (i, id) in ids.enumerated() { out.storeBytes(of: UInt16(truncatingIfNeeded: id).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
      } else {
        for (i, id) in ids.enumerated() { out.storeBytes(of: UInt32(bitPattern: id).littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
      }
    }
    let head = header.encoded
    do {
      try head.withUnsafeBytes { h in try body.withUnsafeBytes { b in try AtomicFile.write(to: path, parts: [h, b]) } }
    } catch {
      throw TokenFileError("cannot write token file \(path): \(error)")
    }
    return reason.map { .rebuilt(reason: $0) } ?? .built
  }

  /// The 32 bytes of a 64-digit hex digest.
  static func hexBytes(_ hex: String) -> [UInt8] {
    let digits = Array(hex.utf8)
    func value(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
    return stride(from: 0, to: digits.count - 1, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
  }
}
