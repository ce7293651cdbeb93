// AtomicFile: write a file so that readers see either the old file or the complete new one.
//
// The bytes go to a temporary file in the same directory, which is fsynced, renamed over the
// destination, and the directory is fsynced so the rename survives a power loss (the pattern of
// SQLite/LevelDB and of tmp + os.replace in Python trainers). Not a lock: two writers of the same
// path race, and the last rename wins.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Musl)
private let systemWrite = Musl.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif

/// A failed file-system call: which call, on which path, and the `strerror` text.
public struct FileError: Error, CustomStringConvertible, Equatable {
  public let operation: String
  public let path: String
  public let code: Int32
  public var description: String {
    "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
  }
  public init(_ operation: String, _ path: String, code: Int32 = errno) {
    self.operation = operation
    self.path = path
    self.code = code
  }
}

/// Crash-safe file replacement (temporary file, fsync, rename, fsync of the directory).
public enum AtomicFile {
  /// Writes the concatenation of `parts` to `path` atomically.
  ///
  /// ```swift
  /// try AtomicFile.write(to: "run/manifest.json", parts: [bytes])
  /// ```
  /// - Throws: `FileError` naming the failing call (open, write, fsync, rename); the temporary file
  ///   is removed and any previous file at `path` is left untouched.
  public static func write(to path: String, parts: [UnsafeRawBufferPointer]) throws {
    try write(to: path) { put in for part in parts { try put(part) } }
  }

  /// Writes what `produce` hands to `put`, in order, to `path` atomically: for a file assembled
  /// piece by piece (a checkpoint streamed tensor by tensor). Errors as `write(to:parts:)`; an
  /// error thrown by `produce` also leaves the previous file untouched.
  public static func write(to path: String,
                           produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
    let (dir, base) = split(path)
    let tmp = "\(dir)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError("open", tmp) }
    do {
      try produce { part in try writeAll(fd, part, path: tmp) }
      if fsync(fd) != 0 { throw FileError("fsync", tmp) }
    } catch {
      close(fd)
      unlink(tmp)
      throw error
    }
    if close(fd) != 0 {
      let e = FileError("close", tmp)
      unlink(tmp)
      throw e
    }
    if rename(tmp, path) != 0 {
      let e = FileError("rename", "\(tmp) -> \(path)")
      unlink(tmp)
      throw e
    }
    try syncDirectory(dir)
  }

  /// Writes `bytes` to `path` atomically.
  public static func write(to path: String, bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try write(to: path, parts: [$0]) }
  }

  /// fsyncs a directory so that renames and new entries in it are durable.
  public static func syncDirectory(_ dir: String) throws {
    let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd < 0 { throw FileError("open directory", dir) }
    defer { close(dfd) }
    if fsync(dfd) != 0 { throw FileError("fsync directory", dir) }
  }

  /// Writes every byte of `buffer` to `fd`, retrying short writes and EINTR.
  public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
    guard var p = buffer.baseAddress else { return }
    var left = buffer.count
    while left > 0 {
      let n = systemWrite(fd, p, min(left, 1 << 30))
      if n < 0 {
        if errno == EINTR { continue }
        throw FileError("write", path)
      }
      if n == 0 { throw FileError("write", path, code: EIO) }
      p += n
      left -= n
    }
  }

  /// (directory, last component) of a path; "." for a bare name.
  static func split(_ path: String) -> (String, String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let dir = String(path[..<slash])
    return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
  }
}
