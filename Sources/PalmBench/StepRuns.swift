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

    public init(config: PalmConfig, remat: RematPolicy, threads: Int, warmup: Int, steps: Int) {
      self.config = config
      self.remat = remat
      self.threads = threads
      self.warmup = warmup
      self.steps = steps
    }

    /// The arguments of `palm` that run this spec and print StepBench.Result as JSON.
    public var arguments: [String] {
      ["bench", "step", "--config", config.name, "--remat", remat.rawValue, "--threads", "\(threads)",
       "--warmup", "\(warmup)", "--steps", "\(steps)", "--batch", "\(config.batch)", "--format", "json"]
    }
  }

  /// Runs one spec.
  public typealias Runner = @Sendable (Spec) throws -> StepBench.Result

  /// In this process (tests, and configs that are not presets). Peak RSS is the process's so far.
  /// The thread count is restored afterwards.
  public static let inProcess: Runner = { spec in
    let saved = Threads.count
    defer { Threads.count = saved }
    return try StepBench.run(config: spec.config, remat: spec.remat, threads: spec.threads, warmup: spec.warmup,
                      steps: spec.steps)
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

  /// The MFU table row of a result, or nil when the peak is unknown.
  public static func row(_ r: StepBench.Result, config: PalmConfig, peakGFLOPs: Double?) -> MeasuredRow? {
    guard let peak = peakGFLOPs, peak > 0 else { return nil }
    return MeasuredRow(config: config, remat: r.remat, threads: r.threads, tokensPerSecond: r.tokensPerSecond,
                       peakFLOPs: peak * 1e9, plannedActivationBytes: r.plannedActivationBytes,
                       peakRSSBytes: r.peakRSSBytes ?? 0)
  }

  /// The standard set of part two: `configs` × none/selective/full × `threads`.
  public static func standardSpecs(configs: [PalmConfig] = [.tiny, .small], threads: [Int] = [1, 2],
                                   warmup: Int = 1, steps: Int = 3) -> [Spec] {
    configs.flatMap { c in
      RematPolicy.allCases.flatMap { r in threads.map { Spec(config: c, remat: r, threads: $0, warmup: warmup, steps: steps) } }
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
        progress("step \(spec.config.name) remat=\(spec.remat.rawValue) threads=\(spec.threads): skipped "
                 + "(time budget: the last such run took \(fixed(last, 1)) s)")
        skipped?(spec)
        continue
      }
      let t0 = Date()
      let (r, foreign) = try Contention.measure { try runner(spec) }
      let p = try peak.gflops(spec.threads)
      let row = Self.row(r, config: spec.config, peakGFLOPs: p)
      let mfu = (row.map { " MFU " + pct($0.mfu, 1) + " HFU " + pct($0.hfu, 1) + " (full T " + pct($0.hfuFullT, 1) + ")" } ?? " (peak unknown: no MFU)")
        + (foreign.map { $0 > 0.05 ? "; other processes used \(pct($0, 0)) of the CPUs" : "" } ?? "")
      progress("step \(spec.config.name) remat=\(spec.remat.rawValue) threads=\(spec.threads): "
               + "\(fixed(r.tokensPerSecond, 0)) tokens/s\(mfu) (\(fixed(Date().timeIntervalSince(t0), 1)) s)")
      lastSeconds[key] = Date().timeIntervalSince(t0)
      out.append(Measured(result: r, peakGFLOPs: p, row: row, foreignCPU: foreign))
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
  /// `peakGFLOPs`, `mfu` and `hfu` (null when the peak is unknown), computed by MeasuredRow.
  public static func jsonLine(_ r: StepBench.Result, config: PalmConfig, peakGFLOPs: Double?) throws -> String {
    let base = try JSONEncoder().encode(r)
    guard var object = try JSONSerialization.jsonObject(with: base) as? [String: Any] else {
      return String(decoding: base, as: UTF8.self)
    }
    let row = Self.row(r, config: config, peakGFLOPs: peakGFLOPs)
    object["peakGFLOPs"] = peakGFLOPs ?? NSNull()
    object["mfu"] = row?.mfu ?? NSNull()
    object["hfu"] = row?.hfu ?? NSNull()
    object["hfuFullT"] = row?.hfuFullT ?? NSNull()
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
  }

  /// "MFU 41.2%, HFU 48.0%" or a note that the peak is unknown.
  public static func utilizationText(_ r: StepBench.Result, config: PalmConfig, peakGFLOPs: Double?) -> String {
    guard let row = Self.row(r, config: config, peakGFLOPs: peakGFLOPs) else {
      return "MFU/HFU — (peak unknown: pass --peak or set \(PeakSource.variable))"
    }
    return "MFU \(pct(row.mfu, 1)), HFU \(pct(row.hfu, 1)), HFU full T \(pct(row.hfuFullT, 1)) (peak \(fixed(row.peakFLOPs / 1e9, 1)) GFLOP/s)"
  }
}
