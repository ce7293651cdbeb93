// palm bench (no subcommand): the whole suite, the README's main job. Peak, STREAM, a reduced GEMM
// set, kernel microbenchmarks and roofline, a short training-step run per config × remat × threads
// (each in a child process: `palm bench step ... --format json`), then PaLM's MFU table with the
// measured rows. Results: a folder of JSON lines + report.md + mfu.svg + roofline.svg.
// Reference: PalmBench/Suite.swift.

import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmTensor

/// Defaults the benchmark commands share.
enum BenchDefaults {
  /// The MFU denominator: the FMA peak measured by the probe, unless PALM_PEAK_GFLOPS overrides it.
  static let peak: PeakSource = .measured
}

struct BenchSuite: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "suite",
    abstract: "The whole suite (what `palm bench` runs): peak, bandwidth, GEMM, kernels, steps, MFU table.",
    discussion: """
      Synthetic tokens, no data file. About 5 minutes on 2 cores. Progress goes to standard error, \
      one line per stage; the MFU table goes to standard output; everything is written to --out.
      """)

  @Option(help: "Output folder (default: ./palm-bench-<UTC date and time>).")
  var out: String?

  @Option(help: "Thread counts, comma-separated (default: 1 and 2, at most the cores).")
  var threadList: String?

  @Option(help: "Timed training steps per run, after one warm-up (default 3).")
  var steps: Int?

  @Option(help: "Seconds the run may take: step runs that would end later are skipped and listed (0: no limit; default \(Int(Suite.Options.defaultTimeBudgetSeconds))).")
  var timeBudget: Double?

  @Option(help: "GEMM precisions of the step and mesh rows, comma-separated: fp32, bf16 (default fp32; bf16 rows divide by the bf16 peak). The GEMM stage times fp32 SGEMM either way (palm bench matmul --dtype bf16 times pk_bgemm).")
  var precision: String = "fp32"

  @Flag(help: "A seconds-long run on a micro config (checks the pipeline, measures nothing useful).")
  var smoke = false

  @Flag(help: "Run the step benchmarks in this process (peak RSS is then the maximum so far).")
  var inProcess = false

  func threads() throws -> [Int]? {
    guard let threadList else { return nil }
    return try ThreadCounts.parseOption(threadList)
  }

  func validate() throws {
    _ = try threads()
    _ = try PrecisionList.parseOption(precision)
    if let steps, !(1...BenchStep.maxSteps).contains(steps) { throw ValidationError("--steps must be 1...\(BenchStep.maxSteps) (got \(steps))") }
    if let timeBudget, timeBudget < 0 || !timeBudget.isFinite { throw ValidationError("--time-budget must be >= 0 seconds") }
    if let out, out.isEmpty { throw ValidationError("--out must not be empty") }
    // --smoke runs its own micro config, threads and steps: these would be ignored.
    let fixedBySmoke = [("--steps", steps != nil), ("--thread-list", threadList != nil), ("--time-budget", timeBudget != nil)]
    if smoke, let (flag, _) = fixedBySmoke.first(where: \.1) {
      throw ValidationError("\(flag) does not apply to --smoke (a fixed seconds-long pipeline check): drop it, or drop --smoke")
    }
  }

  func run() throws {
    Threads.setBlocktime(milliseconds: 0)
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyyMMdd-HHmmss"
    formatter.timeZone = TimeZone(identifier: "UTC")
    let dir = out ?? "palm-bench-" + formatter.string(from: Date())
    do { try Suite.prepareOutDir(dir) } catch let e as Suite.OutDirError { throw BenchError(e.description) }  // before any stage
    let runner = inProcess ? StepRuns.inProcess : StepRuns.childProcess(executable: StepRuns.currentExecutable())
    var options = smoke
      ? Suite.Options.smoke(outDir: dir, peak: BenchDefaults.peak, stepRunner: StepRuns.inProcess)
      : Suite.Options.standard(outDir: dir, peak: BenchDefaults.peak, stepRunner: runner, threads: try threads())
    options.precisions = try PrecisionList.parseOption(precision)
    if options.precisions.contains(.bf16) && !ISA.bf16Native { BenchStep.noteEmulatedBF16() }
    if !smoke {
      options.steps = steps ?? options.steps
      let budget = timeBudget ?? Suite.Options.defaultTimeBudgetSeconds
      options.timeBudgetSeconds = budget > 0 ? budget : nil
    }
    options.reproduce = [
      "swift build -c release",
      "KMP_BLOCKTIME=0 "
        + [false, true].compactMap { PeakSource.environmentSetting(bf16: $0).map { "\($0.variable)=\($0.value) " } }.joined()
        + ".build/release/palm bench " + CommandLine.arguments.dropFirst(2).joined(separator: " "),
    ]
    options.progress = { line in
      FileHandle.standardError.write(Data((line + "\n").utf8))
    }
    let outcome = try Suite.run(options)
    print(outcome.mfuMarkdown, terminator: "")
    if let w = outcome.warning {
      print("\n" + w)
      FileHandle.standardError.write(Data((w + "\n").utf8))
    }
    FileHandle.standardError.write(Data("wrote \(outcome.files.count) files to \(dir)\n".utf8))
  }
}

/// A benchmark command that cannot run as asked (printed as "Error: <message>", exit status 1).
struct BenchError: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}

/// A comma-separated list of GEMM precisions ("fp32,bf16"), for the commands that run several.
enum PrecisionList {
  static func parseOption(_ text: String) throws -> [GEMMPrecision] {
    let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    var out: [GEMMPrecision] = []
    for item in items {
      guard let p = GEMMPrecision(rawValue: item) else {
        throw ValidationError("--precision: \"\(item)\" is not fp32 or bf16 (give a comma-separated list, e.g. fp32,bf16)")
      }
      if !out.contains(p) { out.append(p) }
    }
    if out.isEmpty { throw ValidationError("--precision needs fp32, bf16 or both (comma-separated)") }
    return out
  }
}

extension ThreadCounts {
  /// `parse` for a command's option: a bad list is a usage error (exit code 64, with the help hint).
  static func parseOption(_ text: String) throws -> [Int] {
    do { return try parse(text) } catch let e as ParseError { throw ValidationError(e.description) }
  }
}
