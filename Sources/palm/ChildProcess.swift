// What `palm bench exchange` needs to start mpirun with PalmBench's ChildProcess besides
// `ChildProcess.cleanEnvironment`: this program's own path.
import Foundation
import PalmBench

extension ChildProcess {
  /// This program's own executable (for a child that runs another subcommand of it).
  static var selfExecutable: String {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
  }
}
