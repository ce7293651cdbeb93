// MappedFile: a whole file, read-only, memory-mapped (read into memory when mmap fails, or when
// asked to), released in deinit; or an in-memory image. The one copy of the open/fstat/mmap/
// pread-fallback code that the file readers share; each turns a `MappedFile.Failure` into its own
// error type.
// DataFile: a file read with pread at given offsets, for data read during a whole run (TokenDataset)
// and for checkpoints (SafeTensorsFile reads each tensor straight into its destination).
// A memory map is not used there: a file truncated while it is mapped kills the process with SIGBUS
// at the next access of a page past the new end (MAP_PRIVATE does not help: unwritten private pages
// are still the file's), and no Swift code can recover from that signal. pread past the end returns
// short instead, which becomes a thrown `Failure.changed`. A window of a batch is one pread from the
// page cache (a few µs against a step of milliseconds), and nothing is held in memory, so many ranks
// on one machine share the page cache as they shared the map.

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
    /// A read failed with this errno.
    case io(code: Int32)
    /// The file is no longer `size` bytes (it was when opened) but `now` (truncated while in use).
    case changed(size: Int, now: Int)

    /// The reason in words ("No such file or directory", "cannot allocate 12 bytes", ...).
    public var reason: String {
      switch self {
      case .open(let code), .stat(let code), .io(let code): String(cString: strerror(code))
      case .allocate(let size): "cannot allocate \(size) bytes"
      case .read(let got, let size): "read stopped after \(got) of \(size) bytes"
      case .changed(let size, let now): "changed while in use: it is now \(now) bytes, it was \(size) (truncated or rewritten)"
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

  /// Opens `path` and maps it whole (MAP_PRIVATE, PROT_READ), or reads it into memory when mmap fails
  /// or `map` is false (a file that must stay readable if it is truncated meanwhile).
  /// - Parameters:
  ///   - advice: a `madvise` hint applied to the mapping (ignored for the read fallback).
  ///   - check: called with the file's `stat` before anything is mapped or read; what it throws
  ///     is rethrown unchanged (callers reject directories or too-short files here).
  /// - Throws: `Failure`, or what `check` throws.
  public init(path: String, advice: Int32? = nil, map: Bool = true, check: (stat) throws -> Void = { _ in }) throws {
    let (fd, size) = try MappedFile.openChecked(path, check: check)
    defer { close(fd) }
    if map, let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED {
      if let advice { _ = madvise(p, size, advice) }
      base = UnsafeRawPointer(p)
      count = size
      isMapped = true
      return
    }
    // Fallback: read the whole file.
    guard let buf = malloc(max(size, 1)) else { throw Failure.allocate(size: size) }
    let got: Int
    do { got = try MappedFile.readFully(fd, buf, size, at: 0) } catch {
      free(buf)
      throw error
    }
    if got < size {
      free(buf)
      throw Failure.read(got: got, size: size)
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

  /// Reads up to `count` bytes at `offset` into `buffer` with pread, retrying short reads and EINTR;
  /// returns the bytes read (fewer only at the end of the file). The one read loop of this file.
  /// - Throws: `Failure.io` for a failed read.
  static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: Int) throws -> Int {
    var got = 0
    while got < count {
      let n = pread(fd, buffer + got, count - got, off_t(offset + got))
      if n < 0 {
        if errno == EINTR { continue }
        throw Failure.io(code: errno)
      }
      if n == 0 { break }
      got += n
    }
    return got
  }

  /// Opens `path` read-only, runs `check` on its `stat`; returns the descriptor and size (the caller
  /// closes it). - Throws: `Failure.open`, `.stat`, or what `check` throws (the file closed).
  static func openChecked(_ path: String, check: (stat) throws -> Void) throws -> (Int32, Int) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw Failure.open(code: errno) }
    var st = stat()
    if fstat(fd, &st) != 0 {
      let e = Failure.stat(code: errno)
      close(fd)
      throw e
    }
    do { try check(st) } catch {
      close(fd)
      throw error
    }
    return (fd, Int(st.st_size))
  }

  deinit {
    if isMapped { munmap(UnsafeMutableRawPointer(mutating: base), count) } else { free(UnsafeMutableRawPointer(mutating: base)) }
  }
}

/// A file read with pread (see the header: why not a map), its size fixed when opened; closed in deinit.
///
/// ```swift
/// let f = try DataFile(path: "data.txt")
/// var window = [UInt8](repeating: 0, count: 257)
/// try window.withUnsafeMutableBytes { try f.read(into: $0, at: 1000) }
/// ```
public final class DataFile: @unchecked Sendable {
  /// Size in bytes when opened.
  public let count: Int
  private let fd: Int32

  /// Opens `path`; `check` sees its `stat` first (callers reject directories and pipes there).
  /// - Throws: `MappedFile.Failure`, or what `check` throws.
  public init(path: String, check: (stat) throws -> Void = { _ in }) throws {
    let (descriptor, size) = try MappedFile.openChecked(path, check: check)
    fd = descriptor
    count = size
  }

  /// Reads `buffer.count` bytes at `offset` (within the size at open).
  /// - Throws: `MappedFile.Failure.changed` when the file has become shorter, `.io` for a failed read.
  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
    guard let base = buffer.baseAddress else { return }
    let got = try MappedFile.readFully(fd, base, buffer.count, at: offset)
    if got < buffer.count {
      var st = stat()
      throw MappedFile.Failure.changed(size: count, now: fstat(fd, &st) == 0 ? Int(st.st_size) : offset + got)
    }
  }

  deinit { close(fd) }
}
