// What `palm bench exchange` needs to start mpirun with PalmBench's ChildProcess: this program's
// own path and an environment in which the child mpirun starts a job of its own.
import Foundation
import PalmBench

extension ChildProcess {
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
}
