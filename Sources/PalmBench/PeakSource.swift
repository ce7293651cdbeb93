// PeakSource: where the MFU/HFU denominator and the roofline's compute roof come from, as a value
// the benchmarks receive instead of a global (`BenchDefaults.peak` in Sources/palm/BenchSuite.swift).
//
// `measured` (the default) runs the FMA peak probe (Peak.swift, `PeakProbe`) once per thread count;
// PALM_PEAK_GFLOPS overrides it (`environment`), e.g. to compare runs against one fixed figure.

import Foundation
import Synchronization

/// A way to obtain the peak FP32 GFLOP/s of `threads` cores: the MFU denominator.
///
/// ```swift
/// let peak = try PeakSource.environment.gflops(2)      // nil when PALM_PEAK_GFLOPS is unset
/// let fixed = PeakSource.fixed(perThreadGFLOPs: 270)   // tests
/// ```
public struct PeakSource: Sendable {
  /// Where the figure comes from (shown in reports).
  public var name: String
  /// Peak GFLOP/s of `threads` threads, or nil when unknown.
  public var gflops: @Sendable (_ threads: Int) throws -> Double?

  public init(name: String, gflops: @escaping @Sendable (_ threads: Int) throws -> Double?) {
    self.name = name
    self.gflops = gflops
  }

  /// The environment variable `environment` reads.
  public static let variable = "PALM_PEAK_GFLOPS"

  /// PALM_PEAK_GFLOPS: either one number, the peak of ONE thread (scaled by the thread count), or a
  /// comma-separated list, the peaks of 1, 2, ... threads (beyond the list: the last entry's
  /// per-thread value × threads). Example: `PALM_PEAK_GFLOPS=266,523` (from `palm peak`).
  /// Unset: nil (unknown). Malformed: throws `PeakSource.Invalid`.
  public static let environment = PeakSource(name: variable) { threads in
    guard let text = ProcessInfo.processInfo.environment[variable], !text.isEmpty else { return nil }
    return try parse(text, threads: threads)
  }

  /// PALM_PEAK_GFLOPS when set, else this machine's fp32 FMA peak at `threads` threads measured by
  /// `PeakProbe.fp32` (best of 3 clean runs, ~0.2 s) the first time a thread count is asked for.
  public static let measured: PeakSource = {
    let fromEnvironment = !(ProcessInfo.processInfo.environment[variable] ?? "").isEmpty
    let cache = Mutex<[Int: Double]>([:])
    return PeakSource(name: fromEnvironment ? variable : "measured FMA peak (palm peak)") { threads in
      if fromEnvironment { return try environment.gflops(threads) }
      if let g = cache.withLock({ $0[threads] }) { return g }
      let g = try PeakProbe.fp32(threads: max(1, threads))
      cache.withLock { $0[threads] = g }
      return g
    }
  }()

  /// A fixed per-thread peak (tests, or a figure measured elsewhere).
  public static func fixed(perThreadGFLOPs: Double, name: String = "fixed") -> PeakSource {
    PeakSource(name: name) { Double($0) * perThreadGFLOPs }
  }

  /// A PALM_PEAK_GFLOPS value that is not a positive number or list of them.
  public struct Invalid: Error, CustomStringConvertible {
    public let text: String
    public var description: String {
      "\(PeakSource.variable)=\"\(text)\" is not a positive number or a comma-separated list of them (GFLOP/s at 1, 2, ... threads)"
    }
  }

  /// Parses a PALM_PEAK_GFLOPS value for `threads` threads (>= 1).
  public static func parse(_ text: String, threads: Int) throws -> Double {
    let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite }) else { throw Invalid(text: text) }
    let list = values.map { $0! }
    let t = max(1, threads)
    if list.count == 1 { return list[0] * Double(t) }
    if t <= list.count { return list[t - 1] }
    return list[list.count - 1] / Double(list.count) * Double(t)
  }
}
