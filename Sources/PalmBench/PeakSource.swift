// PeakSource: where the MFU/HFU denominator and the roofline's compute roof come from, as a value
// the benchmarks receive instead of a global (`BenchDefaults.peak` in Sources/palm/BenchSuite.swift).
//
// `measured` (the default) runs the FMA peak probe (Peak.swift, `PeakProbe`) once per thread count;
// PALM_PEAK_GFLOPS overrides it (`environment`), e.g. to compare runs against one fixed figure.
// Every source also gives the bf16 dot-product peak (vdpbf16ps; PALM_PEAK_BF16_GFLOPS overrides it),
// the denominator of a bf16 run: `gflops(_:precision:)` picks the one a run's precision divides by.

import Foundation
import PalmTensor
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
  /// Peak fp32 GFLOP/s of `threads` threads, or nil when unknown.
  public var gflops: @Sendable (_ threads: Int) throws -> Double?
  /// Peak bf16 GFLOP/s of `threads` threads, or nil when unknown or the CPU has no bf16 unit.
  public var bf16Gflops: @Sendable (_ threads: Int) throws -> Double?

  public init(name: String, gflops: @escaping @Sendable (_ threads: Int) throws -> Double?,
              bf16Gflops: @escaping @Sendable (_ threads: Int) throws -> Double? = { _ in nil }) {
    self.name = name
    self.gflops = gflops
    self.bf16Gflops = bf16Gflops
  }

  /// The peak a run of `precision` divides its MFU and HFU by, and which one it is: the bf16 peak
  /// for bf16 where the CPU has one; else the fp32 peak (bf16 is then emulated with fp32 FMAs, whose
  /// peak is the real roof), labelled `.fp32`.
  public func gflops(_ threads: Int, precision: GEMMPrecision) throws -> (gflops: Double?, peak: GEMMPrecision) {
    if precision == .bf16, let g = try bf16Gflops(threads) { return (g, .bf16) }
    return (try gflops(threads), .fp32)
  }

  /// The environment variable `environment` reads (the fp32 peak).
  public static let variable = "PALM_PEAK_GFLOPS"
  /// The environment variable of the bf16 peak, in the same format.
  public static let bf16Variable = "PALM_PEAK_BF16_GFLOPS"

  /// PALM_PEAK_GFLOPS: either one number, the peak of ONE thread (scaled by the thread count), or a
  /// comma-separated list, the peaks of 1, 2, ... threads (beyond the list: the last entry's
  /// per-thread value × threads). Example: `PALM_PEAK_GFLOPS=266,523` (from `palm peak`).
  /// Unset: nil (unknown). Malformed: throws `PeakSource.Invalid`.
  public static let environment = PeakSource(name: variable, gflops: { threads in
    try parseEnvironment(variable, threads: threads)
  }, bf16Gflops: { threads in
    try parseEnvironment(bf16Variable, threads: threads)
  })

  /// The variable of a precision's peak and its value, when it is set (for messages that name
  /// where a peak came from).
  public static func environmentSetting(bf16: Bool) -> (variable: String, value: String)? {
    let name = bf16 ? bf16Variable : variable
    guard let text = ProcessInfo.processInfo.environment[name], !text.isEmpty else { return nil }
    return (name, text)
  }

  static func parseEnvironment(_ name: String, threads: Int) throws -> Double? {
    guard let text = ProcessInfo.processInfo.environment[name], !text.isEmpty else { return nil }
    return try parse(text, threads: threads, variable: name)
  }

  /// PALM_PEAK_GFLOPS when set, else this machine's fp32 FMA peak at `threads` threads measured by
  /// `PeakProbe.fp32` (best of 3 clean runs, ~0.2 s) the first time a thread count is asked for;
  /// likewise the bf16 peak (PALM_PEAK_BF16_GFLOPS, else `PeakProbe.bf16`, nil without AVX512_BF16).
  public static let measured: PeakSource = {
    let env = ProcessInfo.processInfo.environment
    let fp32FromEnvironment = !(env[variable] ?? "").isEmpty
    // One memo per precision: the environment's figure when its variable is set, else the probe's
    // (run once per thread count; nil is remembered too, e.g. no bf16 unit).
    func memo(_ variable: String, _ fromEnvironment: @escaping @Sendable (Int) throws -> Double?,
              _ probe: @escaping @Sendable (Int) throws -> Double?) -> @Sendable (Int) throws -> Double? {
      if !(env[variable] ?? "").isEmpty { return fromEnvironment }
      let cache = Mutex<[Int: Double?]>([:])
      return { threads in
        if let g = cache.withLock({ $0[threads] }) { return g }
        let g = try probe(max(1, threads))
        cache.withLock { $0[threads] = g }
        return g
      }
    }
    return PeakSource(name: fp32FromEnvironment ? variable : "measured FMA peak (palm peak)",
                      gflops: memo(variable, { try environment.gflops($0) }, { try PeakProbe.fp32(threads: $0) }),
                      bf16Gflops: memo(bf16Variable, { try environment.bf16Gflops($0) }, { try PeakProbe.bf16(threads: $0) }))
  }()

  /// A fixed per-thread peak (tests, or a figure measured elsewhere); bf16 only when given.
  public static func fixed(perThreadGFLOPs: Double, bf16PerThreadGFLOPs: Double? = nil, name: String = "fixed") -> PeakSource {
    PeakSource(name: name, gflops: { Double($0) * perThreadGFLOPs },
               bf16Gflops: { t in bf16PerThreadGFLOPs.map { Double(t) * $0 } })
  }

  /// A PALM_PEAK_GFLOPS (or PALM_PEAK_BF16_GFLOPS) value that is not a positive number or list of them.
  public struct Invalid: Error, CustomStringConvertible {
    public let text: String
    public var variable: String = PeakSource.variable
    public var description: String {
      "\(variable)=\"\(text)\" is not a positive number or a comma-separated list of them (GFLOP/s at 1, 2, ... threads)"
    }
  }

  /// Parses a PALM_PEAK_GFLOPS value for `threads` threads (>= 1).
  public static func parse(_ text: String, threads: Int, variable: String = PeakSource.variable) throws -> Double {
    let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite }) else { throw Invalid(text: text, variable: variable) }
    let list = values.map { $0! }
    let t = max(1, threads)
    if list.count == 1 { return list[0] * Double(t) }
    if t <= list.count { return list[t - 1] }
    return list[list.count - 1] / Double(list.count) * Double(t)
  }
}
