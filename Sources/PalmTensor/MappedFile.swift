// MappedFile: a whole file, read-only, memory-mapped (read into memory when mmap fails), released
// in deinit. The one copy of the open/fstat/mmap/pread-fallback code that SafeTensorsFile and
// TokenDataset share; each turns a `MappedFile.Failure` into its own error type.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of a file (or of an in-memory image), owned: munmap or free in deinit.
public final class MappedFile: @unchecked Sendable {
  /// Why the file could not be opened or read; callers word it in their own errors.
  public enum Failure: Error, Equatable {
    /// `open` failed with this errno.
    case open(code: Int32)
    /// `fstat` failed with this errno.
    case stat(code: Int32)
    /// The read fallback could not allocate `size` bytes.
    case allocate(size: Int)
    /// The read fallback stopped after `got` of `size` bytes.
    case read(got: Int, size: Int)

    /// The reason in words ("No such file or directory", "cannot allocate 12 bytes", ...).
    public var reason: String {
      switch self {
      case .open(let code), .stat(let code): String(cString: strerror(code))
      case .allocate(let size): "cannot allocate \(size) bytes"
      case .read(let got, let size): "read stopped after \(got) of \(size) bytes"
      }
    }
  }

  /// Start of the bytes (never nil, also for an empty image).
  public let base: UnsafeRawPointer
  /// Size in bytes.
  public let count: Int
  /// Whether `base` is an mmap (else malloc'd memory).
  public let isMapped: Bool

  /// The bytes as a buffer.
  public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

  /// Opens `path` and maps it whole (MAP_PRIVATE, PROT_READ), or reads it into memory when mmap fails.
  /// - Parameters:
  ///   - advice: a `madvise` hint applied to the mapping (ignored for the read fallback).
  ///   - check: called with the file's `stat` before anything is mapped or read; what it throws
  ///     is rethrown unchanged (callers reject directories or too-short files here).
  /// - Throws: `Failure`, or what `check` throws.
  public init(path: String, advice: Int32? = nil, check: (stat) throws -> Void = { _ in }) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw Failure.open(code: errno) }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 { throw Failure.stat(code: errno) }
    try check(st)
    let size = Int(st.st_size)
    if let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED {
      if let advice { _ = madvise(p, size, advice) }
      base = UnsafeRawPointer(p)
      count = size
      isMapped = true
      return
    }
    // Fallback: read the whole file.
    guard let buf = malloc(max(size, 1)) else { throw Failure.allocate(size: size) }
    var got = 0
    while got < size {
      let n = pread(fd, buf + got, size - got, off_t(got))
      if n < 0 && errno == EINTR { continue }
      if n <= 0 {
        free(buf)
        throw Failure.read(got: got, size: size)
      }
      got += n
    }
    base = UnsafeRawPointer(buf)
    count = size
    isMapped = false
  }

  /// A copy of `bytes` in memory.
  /// - Throws: `Failure.allocate` when the copy cannot be allocated.
  public init(copying bytes: [UInt8]) throws {
    guard let buf = malloc(max(bytes.count, 1)) else { throw Failure.allocate(size: bytes.count) }
    bytes.withUnsafeBytes { if let s = $0.baseAddress { buf.copyMemory(from: s, byteCount: bytes.count) } }
    base = UnsafeRawPointer(buf)
    count = bytes.count
    isMapped = false
  }

  deinit {
    if isMapped { munmap(UnsafeMutableRawPointer(mutating: base), count) } else { free(UnsafeMutableRawPointer(mutating: base)) }
  }
}
