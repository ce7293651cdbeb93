// palm bench step: time the training step (forward + backward, no optimizer) of a preset.
import ArgumentParser
import Foundation
import PalmBench
import PalmModel

struct BenchStep: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "step",
    abstract: "Time the training step (forward + backward, no optimizer) and report tokens/s and MFU.")

  @OptionGroup var compute: ComputeOptions

  @Option(help: "Model preset: tiny or small.")
  var config = "tiny"

  @Option(help: "Rematerialization policy: none, selective or full.")
  var remat = "none"

  @Option(help: "Sequences per step (default: the preset's).")
  var batch: Int?

  @Option(help: "Untimed warm-up steps.")
  var warmup = 2

  @Option(help: "Timed steps.")
  var steps = 5

  @Option(help: "Peak FLOP/s of the cores used, in GFLOP/s, for MFU (e.g. from `palm peak`).")
  var peak: Double?

  @Option(help: "Output format: text or json.")
  var format: OutputFormat = .text

  func validate() throws {
    guard let c = PalmConfig.presets[config], c.parameterCount < 1 << 30 else {
      throw ValidationError("--config must be tiny or small (got \(config))")
    }
    guard RematPolicy(rawValue: remat) != nil else {
      throw ValidationError("--remat must be none, selective or full (got \(remat))")
    }
    if steps < 1 || warmup < 0 { throw ValidationError("--steps must be >= 1 and --warmup >= 0") }
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
  }

  func run() throws {
    try compute.apply()
    var c = PalmConfig.presets[config]!
    if let batch { c.batch = batch }
    let r = try StepBench.run(config: c, remat: RematPolicy(rawValue: remat)!, warmup: warmup, steps: steps)
    if format == .json {
      print(try StepRuns.jsonLine(r, config: c, peakGFLOPs: try peak ?? BenchDefaults.peak.gflops(r.threads)))
      return
    }
    let mfu = StepRuns.utilizationText(r, config: c, peakGFLOPs: try peak ?? BenchDefaults.peak.gflops(r.threads))
    print("""
      step \(r.config) remat=\(r.remat.rawValue) threads=\(r.threads) batch=\(r.batch)×\(r.seqLen)
        step seconds: best \(String(format: "%.4f", r.bestSeconds)) median \(String(format: "%.4f", r.medianSeconds)) (\(r.steps) steps)
        tokens/s: median \(String(format: "%.0f", r.tokensPerSecond)) best \(String(format: "%.0f", r.bestTokensPerSecond))
        model FLOPs/token \(String(format: "%.2f", r.modelFLOPsPerToken / 1e6)) M, hardware \(String(format: "%.2f", r.hardwareFLOPsPerToken / 1e6)) M
        model GFLOP/s \(String(format: "%.1f", r.modelFLOPsPerSecond / 1e9)), \(mfu)
        activations planned \(r.plannedActivationBytes) B (saved \(r.plannedSavedBytes), scratch \(r.plannedScratchBytes)), parameters \(r.parameterBytes) B
        peak RSS \(r.peakRSSBytes.map(String.init) ?? "?") B, last loss \(r.lastLoss)
      """)
  }
}
