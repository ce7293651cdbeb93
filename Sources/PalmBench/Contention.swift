// Contention: how much of the CPUs OTHER processes used while something was measured, so a
// benchmark on a shared machine can say when its figure was disturbed. Busy ticks of all CPUs
// from /proc/stat minus this process's and its children's CPU time (getrusage), over wall time ×
// CPUs. Same method as ../shared/anchors/anchors_util.py (10 ms tick resolution: measure >= 0.3 s).

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Measures other processes' CPU use around a block of work.
///
/// ```swift
/// let (value, foreign) = try Contention.measure { try work() }   // foreign: 0.0 ... 1.0, nil off Linux
/// ```
public enum Contention {
  /// Shortest work the 10 ms tick resolution of /proc/stat can judge.
  public static let minimumSeconds = 0.3

  /// Runs `body` and returns its value and the fraction of all CPUs used by other processes
  /// meanwhile (nil where /proc/stat is unavailable or the work took under `minimumSeconds`).
  public static func measure<T>(_ body: () throws -> T) rethrows -> (T, Double?) {
    let b0 = busyTicks(), own0 = ownSeconds(), t0 = Date()
    let value = try body()
    let wall = Date().timeIntervalSince(t0)
    guard let b0, let b1 = busyTicks(), wall >= minimumSeconds else { return (value, nil) }
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let cpus = Double(ProcessInfo.processInfo.activeProcessorCount)
    let others = max(0, Double(b1 - b0) / hz - (ownSeconds() - own0))
    return (value, min(1, others / (wall * cpus)))
  }

  /// Busy (non-idle, non-iowait) ticks of all CPUs, from the "cpu " line of /proc/stat.
  static func busyTicks() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
    let v = line.split(separator: " ").dropFirst().prefix(8).compactMap { Int($0) }
    guard v.count == 8 else { return nil }
    return v.reduce(0, +) - v[3] - v[4]
  }

  /// CPU seconds (user + system) of this process and its waited-for children.
  static func ownSeconds() -> Double {
    func seconds(_ who: Int32) -> Double {
      var u = rusage()
      getrusage(__rusage_who_t(who), &u)
      return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6
        + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }
    return seconds(RUSAGE_SELF.rawValue) + seconds(RUSAGE_CHILDREN.rawValue)
  }
}
