// SHA256: a Swift face for the C SHA-256 (CKernels/sha256.c), used to verify downloaded data sets
// and checkpoint files.

import CKernels

/// An incremental SHA-256 hasher.
public struct SHA256 {
  private var ctx = pk_sha256_ctx()

  public init() { pk_sha256_init(&ctx) }

  /// Adds `bytes` to the message.
  public mutating func update(_ bytes: UnsafeRawBufferPointer) {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return }
    _ = pk_sha256_update(&ctx, base, bytes.count)
  }

  /// Adds `bytes` to the message.
  public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
    let array = Array(bytes)
    array.withUnsafeBytes { update($0) }
  }

  /// The 32-byte digest (the hasher must not be used afterwards).
  public mutating func finalize() -> [UInt8] {
    var digest = [UInt8](repeating: 0, count: 32)
    digest.withUnsafeMutableBufferPointer { pk_sha256_final(&ctx, $0.baseAddress!) }
    return digest
  }

  /// Lower-case hex, as `sha256sum` prints it.
  public static func hex(_ digest: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    for b in digest { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
  }

  /// The hex digest of `bytes`.
  public static func hex<C: Collection>(of bytes: C) -> String where C.Element == UInt8 {
    var h = SHA256()
    h.update(bytes)
    return hex(h.finalize())
  }
}
