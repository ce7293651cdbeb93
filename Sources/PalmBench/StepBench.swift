// StepBench: time the training step (forward + backward; with `update`, the optimizer update too)
// of a PaLM model, in fp32 or bf16 mixed precision (Model.precision).
//
// Builds a Model for a config / remat policy / thread count, runs warm-up steps, then times N steps
// with pk_now_seconds and reports tokens/s (best and median), the model FLOPs per token of PaLM
// Appendix B (6N + 12·L·H·Q·T, N = all parameters, the shared embedding included: FLOPs.modelPerToken), the planned
// activation bytes, and the process's peak resident memory (VmHWM of /proc/self/status).

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// Timing of the training step.
public enum StepBench {
  /// What one benchmark run measured.
  public struct Result: Codable, Sendable {
    public var config: String
    public var remat: RematPolicy
    /// The GEMMs' precision (absent in results written before bf16: fp32).
    public var precision: GEMMPrecision?
    /// The optimizer whose update each timed step includes ("adamw", "adafactor"), or nil: forward
    /// and backward only.
    public var update: String?
    public var threads: Int
    public var batch: Int
    public var seqLen: Int
    public var steps: Int
    /// Seconds per step: every timed step, fastest, median.
    public var stepSeconds: [Double]
    public var bestSeconds: Double
    public var medianSeconds: Double
    /// Tokens per second at the median and at the best step.
    public var tokensPerSecond: Double
    public var bestTokensPerSecond: Double
    /// 6N + 12·L·H·Q·T (PaLM Appendix B).
    public var modelFLOPsPerToken: Double
    /// Model FLOP/s at the median step (divide by the peak for MFU).
    public var modelFLOPsPerSecond: Double
    /// What this package's step executes per token (`FLOPs.hardwarePerToken`, with remat).
    public var hardwareFLOPsPerToken: Double
    /// Activation arena bytes of the memory plan (saved + scratch).
    public var plannedActivationBytes: Int
    public var plannedSavedBytes: Int
    public var plannedScratchBytes: Int
    /// Parameter bytes (weights; the gradients take as much again).
    public var parameterBytes: Int
    /// VmHWM of the process after the run (nil where /proc is missing).
    public var peakRSSBytes: Int?
    /// Loss of the last step (a sanity check: near ln V at initialization).
    public var lastLoss: Float
  }

  /// Builds a model and times `steps` steps after `warmup` untimed ones.
  /// - Parameters:
  ///   - config: model and batch shape (`config.batch` sequences of `config.seqLen` tokens).
  ///   - threads: OpenMP threads for the kernels (nil: leave `Threads.count` as it is).
  ///   - precision: the GEMMs' (`Model.precision`).
  ///   - update: when given, every step ends with this optimizer's update (learning rate 1e-4, no
  ///     clipping), as a peer's timed `opt.step()` does.
  /// - Throws: config, input or kernel errors.
  public static func run(config: PalmConfig, remat: RematPolicy, threads: Int? = nil, warmup: Int = 2,
                         steps: Int = 5, seed: UInt64 = 1, precision: GEMMPrecision = .fp32,
                         update: OptimizerSettings? = nil) throws -> Result {
    precondition(steps >= 1 && warmup >= 0)
    if let threads { Threads.count = threads }
    let model = try Model(config: config, remat: remat, seed: seed, precision: precision)
    let optimizer = try update.map { try Optimizer($0, parameters: model.parameters.entries.map { ($0.name, $0.shape) }) }
    let plan = try optimizer?.bind(params: model.parameters.named, grads: model.gradients.named)
    let n = config.batch * config.seqLen
    var g = NormalGenerator(seed: seed, stream: 7)
    let tokens = (0..<n).map { _ in Int32(g.nextUInt64() % UInt64(config.vocab)) }
    let targets = (0..<n).map { _ in Int32(g.nextUInt64() % UInt64(config.vocab)) }
    var last = StepLoss(total: 0, crossEntropy: 0, zLoss: 0)
    func step() throws {
      model.gradients.zero()
      last = try model.forwardBackward(tokens: tokens, targets: targets)
      if let optimizer, let plan { try optimizer.step(plan, lr: 1e-4) }
    }
    for _ in 0..<warmup { try step() }
    var times: [Double] = []
    for _ in 0..<steps {
      let t0 = pk_now_seconds()
      try step()
      times.append(pk_now_seconds() - t0)
    }
    let best = times.min()!  // steps >= 1
    let median = PalmTrain.median(times)!  // the mean of the two middle steps for an even count
    let fpt = FLOPs.modelPerToken(config)
    let hw = FLOPs.hardwarePerToken(config, remat: remat)
    return Result(
      config: config.name, remat: remat, precision: precision, update: update?.kind, threads: Threads.count, batch: config.batch,
      seqLen: config.seqLen, steps: steps, stepSeconds: times, bestSeconds: best,
      medianSeconds: median, tokensPerSecond: Double(n) / median,
      bestTokensPerSecond: Double(n) / best, modelFLOPsPerToken: fpt,
      modelFLOPsPerSecond: Double(n) / median * fpt, hardwareFLOPsPerToken: hw,
      plannedActivationBytes: model.plan.totalBytes,
      plannedSavedBytes: model.plan.savedBytes, plannedScratchBytes: model.plan.scratchBytes,
      parameterBytes: model.parameters.flat.count * 4, peakRSSBytes: peakRSSBytes(),
      lastLoss: last.total)
  }

  /// The process's peak resident set size (VmHWM in /proc/self/status), in bytes.
  public static func peakRSSBytes() -> Int? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
      let parts = line.split(separator: " ", omittingEmptySubsequences: true)
      if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
    }
    return nil
  }
}
