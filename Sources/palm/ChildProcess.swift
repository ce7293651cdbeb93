// ChildProcess: runs another program (mpirun) for `palm bench exchange`, stdout captured in a
// temporary file (a pipe could fill and block the child), stderr passed through (its progress
// lines), with a deadline. It polls for exit rather than calling Process.waitUntilExit, which was
// seen to hang when the parent runs inside a test runner.
import Foundation

enum ChildProcess {
  /// The first executable `name` on $PATH.
  static func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
      let path = "\(dir)/\(name)"
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
  }

  /// This program's own executable (for a child that runs another subcommand of it).
  static var selfExecutable: String {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
  }

  /// This environment without Open MPI's job variables (a child mpirun must start a job of its own;
  /// the run-as-root permission is kept), with idle OpenMP workers sleeping at once.
  static var cleanEnvironment: [String: String] {
    var env = ProcessInfo.processInfo.environment.filter {
      ($0.key.hasPrefix("OMPI_ALLOW_RUN_AS_ROOT") || !$0.key.hasPrefix("OMPI_"))
        && !$0.key.hasPrefix("PMIX_") && !$0.key.hasPrefix("OPAL_")
    }
    env["KMP_BLOCKTIME"] = env["KMP_BLOCKTIME"] ?? "0"
    return env
  }

  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// Runs `executable` with `arguments`; returns its exit status and standard output.
  /// - Throws: `Failure` when it cannot start or runs past `deadline` seconds (it is then killed).
  static func run(_ executable: String, _ arguments: [String], deadline: Double) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = cleanEnvironment
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("palm-child-\(getpid())-\(UUID().uuidString).out")
    _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: log) }
    let handle = try FileHandle(forWritingTo: log)
    process.standardOutput = handle
    process.standardError = FileHandle.standardError
    do { try process.run() } catch { throw Failure(description: "cannot start \(executable): \(error)") }
    let end = Date(timeIntervalSinceNow: deadline)
    while process.isRunning && Date() < end { Thread.sleep(forTimeInterval: 0.02) }
    if process.isRunning {
      process.terminate()
      Thread.sleep(forTimeInterval: 1)
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      throw Failure(description: "\(([executable] + arguments).joined(separator: " ")) did not finish within \(Int(deadline)) s")
    }
    try? handle.close()
    return (process.terminationStatus, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
  }
}
