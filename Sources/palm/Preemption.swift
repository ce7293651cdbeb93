// Preemption: SIGTERM or SIGINT during `palm train` (a scheduler preempting the job, or Ctrl-C), as
// orbax and MaxText handle it. The first signal asks the trainer to stop after the update in flight
// (Trainer.stopRequested; it writes a checkpoint when --checkpoint-dir is given) and the command
// then exits 143 / 130, as a shell reports a process ended by the signal. A second signal exits at
// once: checkpoints are written atomically, so the last complete one is intact.
import Dispatch
import Foundation

enum Preemption {
  /// The first SIGTERM or SIGINT received, if any.
  static var signal: Int32? { state.withLock { $0.first } }

  /// A private directory the process removes if a second signal ends it (the trainer's temporary
  /// checkpoints when there is no --checkpoint-dir).
  static var removeOnExit: String? {
    get { state.withLock { $0.removeOnExit } }
    set { state.withLock { $0.removeOnExit = newValue } }
  }

  /// "SIGTERM" or "SIGINT".
  static func name(_ sig: Int32) -> String { sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal \(sig)" }

  /// Routes SIGTERM and SIGINT to `signal` (idempotent). The handlers run on a dispatch queue, not
  /// in signal context, so they may print and remove files.
  static func install() {
    state.withLock { s in
      guard s.sources.isEmpty else { return }
      for sig in [SIGTERM, SIGINT] {
        Foundation.signal(sig, SIG_IGN)  // the dispatch source receives it instead
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { received(sig) }
        source.resume()
        s.sources.append(source)
      }
    }
  }

  /// Fault drill for tests: PALM_FAULT_SIGNAL=STEP:SIGNAL:COUNT makes the process send itself
  /// SIGNAL (15 or 2) COUNT times (1 or 2) right after update STEP, each once the one before has
  /// been received, so the stop point does not depend on timing (Tests/PalmCLITests).
  static func drill(afterStep step: Int) {
    guard let v = ProcessInfo.processInfo.environment["PALM_FAULT_SIGNAL"] else { return }
    let p = v.split(separator: ":").compactMap { Int32($0) }
    guard p.count == 3, Int(p[0]) == step else { return }
    kill(getpid(), p[1])
    while signal == nil { usleep(1000) }  // received (on the dispatch queue) before the next update
    guard p[2] >= 2 else { return }
    kill(getpid(), p[1])
    while true { sleep(60) }  // the second signal ends the process
  }

  private static func received(_ sig: Int32) {
    let (isFirst, remove) = state.withLock { s -> (Bool, String?) in
      if s.first == nil { s.first = sig; return (true, nil) }
      return (false, s.removeOnExit)
    }
    if isFirst {
      FileHandle.standardError.write(Data("palm train: \(name(sig)): stopping after the update in flight (a second signal exits at once)\n".utf8))
      return
    }
    if let remove { try? FileManager.default.removeItem(atPath: remove) }
    FileHandle.standardError.write(Data("palm train: second signal (\(name(sig))): exiting now; the last complete checkpoint is intact\n".utf8))
    _exit(128 + (state.withLock { $0.first } ?? sig))
  }

  private struct State {
    var first: Int32?
    var removeOnExit: String?
    var sources: [any DispatchSourceSignal] = []
  }

  private static let state = Locked(State())
}

/// A value behind a lock.
final class Locked<Value>: @unchecked Sendable {
  private let lock = NSLock()
  private var value: Value
  init(_ value: Value) { self.value = value }
  func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
    lock.lock()
    defer { lock.unlock() }
    return try body(&value)
  }
}
