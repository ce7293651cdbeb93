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
  /// Said instead of `strerror` when set (a refusal rather than a failed call).
  public let reason: String?
  public var description: String {
    "\(operation) \(path): \(reason ?? "\(String(cString: strerror(code))) (errno \(code))")"
  }
  public init(_ operation: String, _ path: String, code: Int32 = errno, reason: String? = nil) {
    self.operation = operation
    self.path = path
    self.code = code
    self.reason = reason
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
    let writer = try Writer(path: path)
    do { try produce { try writer.append($0) } } catch {
      writer.abort()
      throw error
    }
    try writer.commit()
  }

  /// A file being written atomically, piece by piece from wherever the bytes come (a download's
  /// callbacks): `append` as often as needed, then `commit()` (fsync, close, rename, fsync of the
  /// directory, each result checked) or `abort()`. Until `commit()` returns, `path` is untouched;
  /// the temporary file (`temporaryPath`, a dot file beside `path`) is removed by `abort()`, by a
  /// failed `commit()`, and in deinit when neither ran.
  public final class Writer: @unchecked Sendable {
    public let path: String
    public let temporaryPath: String
    /// Bytes appended so far.
    public private(set) var count = 0
    private var fd: Int32

    /// Creates the temporary file (O_EXCL) in the directory of `path`, or of the file a symbolic
    /// link at `path` points to (the link stays; its target is replaced).
    /// - Throws: `FileError` ("open ...") when it cannot be created; ("write ...") when `path` is
    ///   something other than a regular file (a device such as /dev/null, a pipe, a directory, a
    ///   dangling link), which a rename would replace and so destroy.
    public init(path given: String) throws {
      let path = try AtomicFile.destination(given)
      let (dir, base) = AtomicFile.split(path)
      self.path = path
      temporaryPath = "\(dir)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
      fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
      if fd < 0 { throw FileError("open", temporaryPath) }
    }

    /// Appends `bytes`. - Throws: `FileError` ("write ...", e.g. no space left); the file is then
    /// to be aborted.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
      guard fd >= 0 else { throw FileError("write", temporaryPath, code: EBADF) }
      try AtomicFile.writeAll(fd, bytes, path: temporaryPath)
      count += bytes.count
    }

    /// Makes the file durable and puts it at `path`. - Throws: `FileError` naming the failing call
    /// (fsync, close, rename, fsync of the directory); the temporary file is then removed and
    /// `path` keeps its previous file (except after a failed directory fsync: renamed, not durable).
    public func commit() throws {
      guard fd >= 0 else { throw FileError("commit", temporaryPath, code: EBADF) }
      let descriptor = fd
      fd = -1
      if fsync(descriptor) != 0 {
        let e = FileError("fsync", temporaryPath)
        close(descriptor)
        unlink(temporaryPath)
        throw e
      }
      if close(descriptor) != 0 {
        let e = FileError("close", temporaryPath)
        unlink(temporaryPath)
        throw e
      }
      if rename(temporaryPath, path) != 0 {
        let e = FileError("rename", "\(temporaryPath) -> \(path)")
        unlink(temporaryPath)
        throw e
      }
      try AtomicFile.syncDirectory(AtomicFile.split(path).0)
    }

    /// Closes and removes the temporary file (nothing at `path` changes). Idempotent.
    public func abort() {
      guard fd >= 0 else { return }
      close(fd)
      fd = -1
      unlink(temporaryPath)
    }

    deinit { abort() }
  }

  /// Where a write to `path` lands: `path` itself when absent or a regular file, a link's target
  /// when that is a regular file. - Throws: `FileError` for anything else.
  static func destination(_ path: String) throws -> String {
    var st = stat()
    if lstat(path, &st) != 0 { return path }  // absent: created by the rename
    var target = path
    if (st.st_mode & S_IFMT) == S_IFLNK {
      guard let resolved = realpath(path, nil) else {
        throw FileError("write", path, code: ENOENT, reason: "a symbolic link to nothing; remove it or give another path")
      }
      target = String(cString: resolved)
      free(resolved)
      if stat(target, &st) != 0 { throw FileError("stat", target) }
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
      let kind = (st.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file (a device, pipe or socket)"
      throw FileError("write", path, code: EINVAL, reason: "\(kind); an atomic write would replace it. Give the path of a file")
    }
    return target
  }

  /// Removes the temporary files of `path` (`.<name>.tmp-<pid>-<n>`) that writers of processes no
  /// longer alive left behind (killed with SIGKILL, or crashed); another live writer's are kept.
  public static func removeStaleTemporaries(of path: String) {
    let (dir, base) = split(path), prefix = ".\(base).tmp-"
    guard let d = opendir(dir) else { return }
    defer { closedir(d) }
    while let e = readdir(d) {
      let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
      guard name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }),
            pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
      unlink("\(dir)/\(name)")
    }
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
