// StepRuns: the training-step runs behind part two of the MFU table: each (config, remat,
// threads) measured by StepBench, ideally in a child process of its own (`palm bench step ...
// --format json`), so that the peak RSS (VmHWM) of one run is not the maximum over every run the
// process made. MFU and HFU come from MeasuredRow (MFUTable.swift), the published rows' function.

import Foundation
import PalmModel
import PalmTensor

/// What to measure and how: a list of step runs and a runner for one.
///
/// ```swift
/// let runner = StepRuns.childProcess(executable: "/proc/self/exe")  // honest per-run peak RSS
/// let r = try runner(.init(config: .tiny, remat: .full, threads: 2, warmup: 1, steps: 3))
/// ```
public enum StepRuns {
  /// One step benchmark run.
  public struct Spec: Codable, Equatable, Sendable {
    public var config: PalmConfig
    public var remat: RematPolicy
    public var threads: Int
    public var warmup: Int
    public var steps: Int
    public var precision: GEMMPrecision

    public init(config: PalmConfig, remat: RematPolicy, threads: Int, warmup: Int, steps: Int,
                precision: GEMMPrecision = .fp32) {
      self.config = config
      self.remat = remat
      self.threads = threads
      self.warmup = warmup
      self.steps = steps
      self.precision = precision
    }

    /// The arguments of `palm` that run this spec and print StepBench.Result as JSON.
    public var arguments: [String] {
      ["bench", "step", "--config", config.name, "--remat", remat.rawValue, "--threads", "\(threads)",
       "--warmup", "\(warmup)", "--steps", "\(steps)", "--batch", "\(config.batch)",
       "--precision", precision.rawValue, "--format", "json"]
    }

    /// "small bf16 remat=none threads=2" (progress lines).
    public var label: String { "\(config.name) \(precision.rawValue) remat=\(remat.rawValue) threads=\(threads)" }
  }

  /// Runs one spec.
  public typealias Runner = @Sendable (Spec) throws -> StepBench.Result

  /// In this process (tests, and configs that are not presets). Peak RSS is the process's so far.
  /// The thread count is restored afterwards.
  public static let inProcess: Runner = { spec in
    let saved = Threads.count
    defer { Threads.count = saved }
    return try StepBench.run(config: spec.config, remat: spec.remat, threads: spec.threads, warmup: spec.warmup,
                             steps: spec.steps, precision: spec.precision)
  }

  /// A failed child run: the command, its exit status and the end of its standard error.
  public struct ChildFailure: Error, CustomStringConvertible {
    public let command: String
    public let status: Int32
    public let stderr: String
    public var description: String { "`\(command)` failed with status \(status): \(stderr)" }
  }

  /// In a child process: `executable bench step ... --format json` (the spec's config must be a
  /// preset). The child inherits the environment, with KMP_BLOCKTIME=0 added.
  public static func childProcess(executable: String) -> Runner {
    { spec in
      var env = ProcessInfo.processInfo.environment
      env["KMP_BLOCKTIME"] = "0"
      let r = try ChildProcess.run(executable, spec.arguments, environment: env)
      let command = ([executable] + spec.arguments).joined(separator: " ")
      guard r.status == 0 else {
        let text = String(decoding: r.stderr.suffix(2000), as: UTF8.self)
        throw ChildFailure(command: command, status: r.status, stderr: text)
      }
      do {
        return try JSONDecoder().decode(StepBench.Result.self, from: r.stdout)
      } catch {
        throw ChildFailure(command: command, status: 0,
                           stderr: "output is not a StepBench result (\(error)): "
                             + String(decoding: r.stdout.prefix(500), as: UTF8.self))
      }
    }
  }

  /// Path of the running executable (/proc/self/exe resolved), for re-executing it.
  public static func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? CommandLine.arguments[0]
  }

  /// The peaks a result's utilization divides by: its precision's (`PeakSource.gflops(_:precision:)`),
  /// which one that is, and for an fp32 run the bf16 peak too (a second, labelled figure).
  public struct Peaks: Codable, Equatable, Sendable {
    public var gflops: Double?
    public var precision: GEMMPrecision
    public var bf16GFLOPs: Double?

    public init(gflops: Double?, precision: GEMMPrecision = .fp32, bf16GFLOPs: Double? = nil) {
      self.gflops = gflops
      self.precision = precision
      self.bf16GFLOPs = bf16GFLOPs
    }

    /// The peaks of a run of `precision` on `threads` threads from `source`.
    public static func of(_ source: PeakSource, threads: Int, precision: GEMMPrecision) throws -> Peaks {
      let (g, which) = try source.gflops(threads, precision: precision)
      return Peaks(gflops: g, precision: which, bf16GFLOPs: which == .fp32 ? try source.bf16Gflops(threads) : nil)
    }
  }

  /// The MFU table row of a result, or nil when the peak is unknown.
  public static func row(_ r: StepBench.Result, config: PalmConfig, peaks: Peaks) -> MeasuredRow? {
    guard let peak = peaks.gflops, peak > 0 else { return nil }
    return MeasuredRow(config: config, remat: r.remat, threads: r.threads, tokensPerSecond: r.tokensPerSecond,
                       peakFLOPs: peak * 1e9, plannedActivationBytes: r.plannedActivationBytes,
                       peakRSSBytes: r.peakRSSBytes ?? 0, precision: r.precision ?? .fp32,
                       peakPrecision: peaks.precision, bf16PeakFLOPs: peaks.bf16GFLOPs.map { $0 * 1e9 })
  }

  /// The standard set of part two: `configs` × none/selective/full × `threads`.
  public static func standardSpecs(configs: [PalmConfig] = [.tiny, .small], threads: [Int] = [1, 2],
                                   warmup: Int = 1, steps: Int = 3, precisions: [GEMMPrecision] = [.fp32]) -> [Spec] {
    configs.flatMap { c in
      RematPolicy.allCases.flatMap { r in
        threads.flatMap { t in precisions.map { Spec(config: c, remat: r, threads: t, warmup: warmup, steps: steps, precision: $0) } }
      }
    }
  }

  /// Runs `specs` in order and returns (result, row) pairs; `progress` gets one line per run.
  /// With a `deadline`, a run is skipped (and named in `skipped`) when the last run of the same
  /// config and thread count would no longer fit before it; the first run of each always starts.
  public static func measure(_ specs: [Spec], runner: Runner, peak: PeakSource, deadline: Date? = nil,
                             skipped: ((Spec) -> Void)? = nil,
                             progress: (String) -> Void = { _ in }) throws -> [Measured] {
    var out: [Measured] = []
    var lastSeconds: [String: Double] = [:]
    for spec in specs {
      let key = "\(spec.config.name)/\(spec.threads)"
      if let deadline, let last = lastSeconds[key], Date().addingTimeInterval(last) > deadline {
        progress("step \(spec.label): skipped "
                 + "(time budget: the last such run took \(fixed(last, 1)) s)")
        skipped?(spec)
        continue
      }
      let t0 = Date()
      let (r, foreign) = try Contention.measure { try runner(spec) }
      let p = try Peaks.of(peak, threads: spec.threads, precision: spec.precision)
      let row = Self.row(r, config: spec.config, peaks: p)
      let mfu = (row.map { " MFU " + pct($0.mfu, 1) + " HFU " + pct($0.hfu, 1) + " (full T " + pct($0.hfuFullT, 1) + ") of the \(p.precision.rawValue) peak" } ?? " (peak unknown: no MFU)")
        + (foreign.map { $0 > 0.05 ? "; other processes used \(pct($0, 0)) of the CPUs" : "" } ?? "")
      progress("step \(spec.label): "
               + "\(fixed(r.tokensPerSecond, 0)) tokens/s\(mfu) (\(fixed(Date().timeIntervalSince(t0), 1)) s)")
      lastSeconds[key] = Date().timeIntervalSince(t0)
      out.append(Measured(result: r, peakGFLOPs: p.gflops, row: row, foreignCPU: foreign))
    }
    return out
  }

  /// One measured run: the raw result, the peak used and the table row (nil without a peak).
  public struct Measured: Codable, Sendable {
    public var result: StepBench.Result
    public var peakGFLOPs: Double?
    public var row: MeasuredRow?
    /// Fraction of all CPUs other processes used during the run (Contention); nil if unknown.
    public var foreignCPU: Double?

    enum CodingKeys: String, CodingKey {
      case result
      case peakGFLOPs = "peak_gflops"
      case row
      case foreignCPU = "foreign_cpu"
    }
  }
}

extension StepRuns {
  /// `palm bench step --format json`: the StepBench result as ONE line of JSON (its own keys) plus
  /// `peakGFLOPs`, `peakPrecision`, `mfu` and `hfu` (null when the peak is unknown), computed by
  /// MeasuredRow, and for an fp32 run `mfuOfBF16Peak` / `hfuOfBF16Peak`.
  public static func jsonLine(_ r: StepBench.Result, config: PalmConfig, peaks: Peaks) throws -> String {
    let base = try JSONEncoder().encode(r)
    guard var object = try JSONSerialization.jsonObject(with: base) as? [String: Any] else {
      return String(decoding: base, as: UTF8.self)
    }
    let row = Self.row(r, config: config, peaks: peaks)
    object["peakGFLOPs"] = peaks.gflops ?? NSNull()
    object["peakPrecision"] = peaks.precision.rawValue
    object["mfuOfBF16Peak"] = row?.mfuOfBF16Peak ?? NSNull()
    object["hfuOfBF16Peak"] = row?.hfuOfBF16Peak ?? NSNull()
    object["mfu"] = row?.mfu ?? NSNull()
    object["hfu"] = row?.hfu ?? NSNull()
    object["hfuFullT"] = row?.hfuFullT ?? NSNull()
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
  }

  /// "MFU 41.2%, HFU 48.0%, ... of the fp32 peak (...); of the bf16 peak MFU 20.6%" or a note that
  /// the peak is unknown.
  public static func utilizationText(_ r: StepBench.Result, config: PalmConfig, peaks: Peaks) -> String {
    guard let row = Self.row(r, config: config, peaks: peaks) else {
      return "MFU/HFU — (peak unknown: pass --peak or set \(PeakSource.variable))"
    }
    var s = "MFU \(pct(row.mfu, 1)), HFU \(pct(row.hfu, 1)), HFU full T \(pct(row.hfuFullT, 1)) of the "
      + "\(row.peakPrecision.rawValue) peak (\(fixed(row.peakFLOPs / 1e9, 1)) GFLOP/s)"
    if let m = row.mfuOfBF16Peak, let h = row.hfuOfBF16Peak, let b = peaks.bf16GFLOPs {
      s += "; of the bf16 peak (\(fixed(b, 1)) GFLOP/s) MFU \(pct(m, 1)), HFU \(pct(h, 1))"
    }
    if (r.precision ?? .fp32) == .bf16 && row.peakPrecision == .fp32 { s += " (bf16 emulated: no bf16 unit)" }
    return s
  }
}
