// ChildProcess: the one way this package runs another program (the step-run children of
// StepRuns, `git rev-parse HEAD` for Suite, mpirun for `palm bench exchange`). It uses
// posix_spawn and waitpid, not Foundation's Process, whose waitUntilExit was seen to hang when the
// parent runs inside a test runner; captured output is read from the pipes while waiting for the
// exit, so a child that fills a pipe can never block.
import Foundation

/// Runs a program and waits for it.
///
/// ```swift
/// let r = try ChildProcess.run("/usr/bin/git", ["rev-parse", "HEAD"], stderr: .discard)
/// if r.status == 0 { print(String(decoding: r.stdout, as: UTF8.self)) }
/// ```
public enum ChildProcess {
  /// Where one of the child's output streams goes.
  public enum Stream: Sendable {
    /// Read into the result.
    case capture
    /// Shared with this process (the child writes where this process writes).
    case inherit
    /// /dev/null.
    case discard
  }

  /// How a child ended: its exit status (the signal number if a signal ended it) and what was
  /// captured (empty for a stream not captured).
  public struct Result: Sendable {
    public var status: Int32
    public var stdout: Data
    public var stderr: Data
  }

  /// The child could not start, or ran past its deadline (it was then killed).
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  /// This environment without Open MPI's job variables (a child mpirun must start a job of its own;
  /// the run-as-root permission is kept), with idle OpenMP workers sleeping at once.
  public static var cleanEnvironment: [String: String] {
    var env = ProcessInfo.processInfo.environment.filter {
      ($0.key.hasPrefix("OMPI_ALLOW_RUN_AS_ROOT") || !$0.key.hasPrefix("OMPI_"))
        && !$0.key.hasPrefix("PMIX_") && !$0.key.hasPrefix("OPAL_")
    }
    env["KMP_BLOCKTIME"] = env["KMP_BLOCKTIME"] ?? "0"
    return env
  }

  /// The first executable `name` on $PATH.
  public static func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
      let path = "\(dir)/\(name)"
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
  }

  /// Runs `executable` (a path) with `arguments` and `environment` (nil: this process's) and waits
  /// for it to exit.
  /// - Parameter deadline: seconds; past it the child gets SIGTERM, a second later SIGKILL.
  /// - Throws: `Failure` when it cannot start or runs past `deadline`.
  public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                         stdout: Stream = .capture, stderr: Stream = .capture,
                         deadline: Double? = nil) throws -> Result {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    // Read ends of the captured streams (nonblocking, in the parent), by child descriptor.
    var readEnds: [(target: Int32, fd: Int32)] = []
    var writeEnds: [Int32] = []
    defer { for fd in writeEnds { close(fd) } }
    for (stream, target) in [(stdout, Int32(1)), (stderr, Int32(2))] {
      switch stream {
      case .inherit: break
      case .discard: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
      case .capture:
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
          for r in readEnds { close(r.fd) }
          throw Failure(description: "cannot start \(executable): pipe: \(String(cString: strerror(errno)))")
        }
        // Neither end may leak into other children (dup2 clears the flag on the child's copy).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        posix_spawn_file_actions_adddup2(&actions, fds[1], target)
        readEnds.append((target, fds[0]))
        writeEnds.append(fds[1])
      }
    }
    let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
    var argv = ([executable] + arguments).map { strdup($0) } + [nil]
    var envp = env.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) }; for p in envp { free(p) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, executable, &actions, nil, &argv, &envp)
    for fd in writeEnds { close(fd) }
    writeEnds = []
    guard rc == 0 else {
      for r in readEnds { close(r.fd) }
      throw Failure(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
    }

    var captured: [Int32: Data] = [1: Data(), 2: Data()]
    var open = readEnds
    /// Reads what `fd` has now; false at its end (or on an error).
    func drain(_ target: Int32, _ fd: Int32) -> Bool {
      var buffer = [UInt8](repeating: 0, count: 65536)
      while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { captured[target, default: Data()].append(contentsOf: buffer[0..<n]); continue }
        if n < 0 && errno == EINTR { continue }
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
      }
    }
    func closeOpen() { for r in open { close(r.fd) }; open = [] }

    let end = deadline.map { Date(timeIntervalSinceNow: $0) }
    var status: Int32 = 0
    while true {
      if open.isEmpty {
        usleep(20_000)
      } else {
        var pfds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&pfds, nfds_t(pfds.count), 20)
        var still: [(target: Int32, fd: Int32)] = []
        for r in open {
          if drain(r.target, r.fd) { still.append(r) } else { close(r.fd) }
        }
        open = still
      }
      let w = waitpid(pid, &status, WNOHANG)
      if w == pid { break }
      if w < 0 && errno != EINTR {
        closeOpen()
        throw Failure(description: "waiting for \(executable): \(String(cString: strerror(errno)))")
      }
      if let end, Date() >= end {
        kill(pid, SIGTERM)
        Thread.sleep(forTimeInterval: 1)
        if waitpid(pid, &status, WNOHANG) != pid {
          kill(pid, SIGKILL)
          while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        closeOpen()
        throw Failure(description: "\(([executable] + arguments).joined(separator: " ")) did not finish within \(Int(deadline ?? 0)) s")
      }
    }
    // The child has exited: what it wrote is in the pipes (a descendant still holding one open is
    // not waited for).
    for r in open { _ = drain(r.target, r.fd) }
    closeOpen()
    let signal = status & 0x7f
    return Result(status: signal == 0 ? (status >> 8) & 0xff : signal, stdout: captured[1] ?? Data(),
                  stderr: captured[2] ?? Data())
  }
}
