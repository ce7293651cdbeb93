// CLI: what the tests that run the built `palm` executable share: where it is, and one way to run
// a program with a deadline and a clean MPI environment.
import Foundation
import PalmBench

/// The palm executable built next to this test bundle, if any.
public let palmBinary: String? = {
  var dir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
  for _ in 0..<4 {
    let candidate = dir.appendingPathComponent("palm")
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDir), !isDir.boolValue,
       FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
    dir = dir.deletingLastPathComponent()
  }
  return nil
}()

/// Runs a program with a clean MPI environment and a deadline; returns (exit code, stdout + stderr),
/// or (-2, why) past the deadline.
public func runProgram(_ executable: String, _ arguments: [String], deadline: Double = 120,
                       environment extra: [String: String] = [:]) throws -> (Int32, String) {
  let r = try runProgramSplit(executable, arguments, deadline: deadline, environment: extra)
  return (r.status, r.stdout + r.stderr)
}

/// `runProgram` with stdout and stderr apart.
public func runProgramSplit(_ executable: String, _ arguments: [String], deadline: Double = 120,
                            environment extra: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
  do {
    let r = try ChildProcess.run(executable, arguments, environment: ChildProcess.cleanEnvironment.merging(extra) { $1 },
                                 deadline: deadline)
    return (r.status, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
  } catch let failure as ChildProcess.Failure {
    return (-2, "", failure.description)
  }
}
