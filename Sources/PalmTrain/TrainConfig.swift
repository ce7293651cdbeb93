// TrainConfig: everything a training run is configured with (the CLI fills it), the learning-rate
// driver (a step schedule, or a cosine over a wall-clock budget like the PyTorch peer's), and the
// loss-spike rule. See Trainer.swift for the loop and docs/FORMATS.md "metrics.jsonl" for the log.

import PalmModel
import PalmTensor

/// How the learning rate of each update is chosen.
public enum LearningRateDriver: Codable, Equatable, Sendable {
  /// A function of the optimizer step (Schedule.swift): PaLM's constant then 1/√k, warm-up +
  /// cosine over a known step count, or constant. Bit-exact on resume.
  case steps(LearningRateSchedule)
  /// Linear warm-up over `warmupSteps` updates, then cosine from `peak` to `floor` over the fraction
  /// of the wall-clock `budget` seconds used (the schedule of ../shared/anchors/torch_train_text.py
  /// for `--time-budget` runs). Depends on timing, so not reproducible bit for bit.
  case timeCosine(peak: Float, warmupSteps: Int, floor: Float, budget: Double)

  /// The learning rate of update `step` (1-based) after `seconds` of training.
  public func lr(step: Int, seconds: Double) -> Float {
    switch self {
    case .steps(let s): return s.lr(step: step)
    case .timeCosine(let peak, let warmup, let floor, let budget):
      if step <= warmup { return peak * Float(step) / Float(max(warmup, 1)) }
      let f = min(1, max(0, seconds / max(budget, 1e-9)))
      return floor + (peak - floor) * Float(0.5 * (1 + _cosine(Double.pi * f)))
    }
  }
}

/// PaLM's loss-spike remedy (§5.1: restart ~100 steps before the spike, skip 200-500 batches),
/// scaled down for small runs.
///
/// Rule: an update is a spike when its loss (cross-entropy + z-loss) or gradient norm is NaN/Inf,
/// or when at least `minHistory` accepted losses exist and the loss exceeds `factor` × the median
/// of the last `window` accepted losses. A spike's update is NOT applied; the run restores the most
/// recent checkpoint (from disk with a checkpoint directory, else an in-memory copy taken at the same
/// moments) and moves the data position to max(checkpoint's position + `skipBatches`, spike's
/// position + 1): the batches seen between the checkpoint and the spike are never replayed.
public struct SpikePolicy: Codable, Equatable, Sendable {
  public var window: Int
  public var factor: Double
  public var minHistory: Int
  public var skipBatches: Int
  /// Rollbacks allowed in one run before giving up with an error.
  public var maxRollbacks: Int
  public var enabled: Bool

  public init(window: Int = 50, factor: Double = 1.5, minHistory: Int = 20, skipBatches: Int = 20,
              maxRollbacks: Int = 20, enabled: Bool = true) {
    self.window = window
    self.factor = factor
    self.minHistory = minHistory
    self.skipBatches = skipBatches
    self.maxRollbacks = maxRollbacks
    self.enabled = enabled
  }

  /// Why `loss` (with gradient norm `norm`) is a spike given the recent accepted losses, or nil.
  public func spikeReason(loss: Double, norm: Double, recent: [Double]) -> String? {
    guard enabled else { return nil }
    if !loss.isFinite { return "non-finite loss" }
    if !norm.isFinite { return "non-finite gradient norm" }
    guard recent.count >= minHistory else { return nil }
    let m = SpikePolicy.median(recent.suffix(window))
    if loss > factor * m { return "loss \(loss) > \(factor) x running median \(m)" }
    return nil
  }

  static func median<C: Collection>(_ xs: C) -> Double where C.Element == Double {
    PalmTrain.median(xs) ?? .nan
  }
}

/// The median (the mean of the two middle values for an even count); nil when empty. The one
/// median of the training loop and the benchmarks.
public func median<C: Collection>(_ xs: C) -> Double? where C.Element == Double {
  let s = xs.sorted()
  if s.isEmpty { return nil }
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// A training run's settings.
public struct TrainOptions: Sendable {
  /// Model shape; `config.batch` is the micro-batch size b.
  public var config: PalmConfig
  public var remat: RematPolicy = .selective
  /// Gradient accumulation: each update sums `microBatches` micro-batches of `config.batch` rows
  /// (the same update as one batch of microBatches · batch rows, up to float rounding).
  public var microBatches: Int = 1
  /// Stop after this many updates (nil: only the time budget stops the run).
  public var maxSteps: Int?
  /// Stop before an update that would end after this many seconds of this process's training.
  public var timeBudget: Double?
  public var optimizer: OptimizerSettings = .adamW(AdamWSettings())
  public var learningRate: LearningRateDriver = .steps(.constant(2e-3))
  /// Global gradient-norm clip (PaLM: 1.0); <= 0 disables.
  public var clipNorm: Double = 1.0
  /// Parameter initialization and data-order seed (and, with the update number, the dropout masks').
  public var seed: UInt64 = 0
  /// Inverted-dropout rates (Model.swift, Dropout.swift). nil: none on a new run, and on `resume()`
  /// the rates recorded in the checkpoint; given: a resume from a checkpoint with other rates fails.
  public var dropout: Dropout?
  /// Validation every N updates (0: only at the end).
  public var evalEvery: Int = 50
  /// At most this many fixed validation windows of T tokens per evaluation.
  public var evalWindows: Int = 64
  public var validationFraction: Double = 0.1
  public var checkpointDirectory: String?
  /// Checkpoint every N updates (0: only at the end); also the spike-rollback granularity.
  public var checkpointEvery: Int = 100
  public var keepLast: Int = 3
  public var spikes = SpikePolicy()
  /// The GEMMs' precision (Model.precision). nil: fp32 on a new run, and on `resume()` the
  /// checkpoint's; given: it applies from the resumed update on (switching is allowed).
  public var precision: GEMMPrecision?
  /// MFU/HFU denominators in FLOP/s (nil: not reported): the fp32 FMA peak, and the bf16 dot-product
  /// peak (nil without a bf16 unit). A bf16 run divides by the bf16 peak (the fp32 one where there is
  /// none: bf16 is then emulated with fp32 FMAs); an fp32 run by the fp32 peak, and reports its MFU
  /// against the bf16 peak too (`MetricsRecord.mfuOfBF16Peak`).
  public var peakFLOPS: Double?
  public var bf16PeakFLOPS: Double?
  /// On `resume()`: continue even when the seed, optimizer, schedule, batch, micro-batches or clip
  /// differ from the checkpoint's (they are listed on stderr); otherwise such a resume is refused.
  public var allowChangedSettings = false
  /// Rows of the head (logits, cross-entropy and their gradients) computed at a time
  /// (`MemoryPlan.headRows`; nil: the plan's default, bounded by `MemoryPlan.logitsBudgetFloats`).
  /// A memory setting: the losses and gradients are the same up to rounding whatever it is.
  public var headRows: Int?

  public init(config: PalmConfig) { self.config = config }

  /// The most micro-batches an update may accumulate.
  public static let maxMicroBatches = 1 << 20
  /// The longest --time-budget: 1e10 s (three centuries; the benchmarks' "no limit" is 1e9), a
  /// bound that keeps inf and 1e300 out of the ETA arithmetic.
  public static let maxTimeBudget: Double = 1e10

  /// Bytes one rank of `shape` plans to hold: parameters, gradients, optimizer moments, gathered
  /// weights and activations (MeshMemory), the evaluation model's activations and the update's
  /// token rows. Call after `validate()` (the sizes are then bounded).
  public func plannedBytes(shape: MeshShape) throws -> Int {
    let split = shape.pod * shape.data
    let training = try MeshMemory(config: config, shape: shape, remat: remat, headRows: headRows)
    var eval = config
    eval.heads /= shape.model
    eval.dFF /= shape.model
    let evalRows = max(min(config.batch, evalWindows) / split, 1)
    let evalBytes = MemoryPlan(config: eval, policy: .full, batch: evalRows, seqLen: config.seqLen,
                               modelParallel: shape.model > 1).totalBytes
    let rowBytes = microBatches * config.batch * (config.seqLen + 1) * 4 * 2  // inputs + targets, Int32
    return training.totalBytes + evalBytes + rowBytes
  }

  /// Tokens of one update.
  public var tokensPerStep: Int { microBatches * config.batch * config.seqLen }

  /// Throws `TrainError.badOptions` naming the first unusable setting.
  public func validate() throws {
    do { try config.validate() } catch let e as PalmConfig.Invalid { throw TrainError.badOptions(e.description) }
    if !(1...Self.maxMicroBatches).contains(microBatches) {
      throw TrainError.badOptions("micro-batches must be in 1...\(Self.maxMicroBatches) (got \(microBatches))")
    }
    if let r = headRows, r < 1 { throw TrainError.badOptions("head rows per chunk must be at least 1 (got \(r))") }
    let (updateTokens, overflow) = microBatches.multipliedReportingOverflow(by: config.batch * config.seqLen)
    if overflow || updateTokens > 1 << 40 {
      throw TrainError.badOptions("an update of \(microBatches) x \(config.batch) x \(config.seqLen) tokens is more than 2^40 tokens")
    }
    if let s = maxSteps, s < 0 { throw TrainError.badOptions("steps must be >= 0 (got \(s))") }
    // A bound on typos (inf, 1e300) that would otherwise reach the ETA as a number no Int holds.
    if let t = timeBudget, !(t > 0 && t <= Self.maxTimeBudget) {
      throw TrainError.badOptions("time budget must be in (0, 1e10] seconds (got \(t))")
    }
    if maxSteps == nil && timeBudget == nil { throw TrainError.badOptions("give a step count or a time budget") }
    if evalEvery < 0 || checkpointEvery < 0 { throw TrainError.badOptions("--eval-every and --checkpoint-every must be >= 0") }
    if evalWindows < 1 { throw TrainError.badOptions("eval windows must be at least 1") }
    if let d = dropout {
      do { try d.validate() } catch let e as Dropout.Invalid { throw TrainError.badOptions(e.message) }
    }
    do { try optimizer.validate() } catch let e as OptimizerError { throw TrainError.badOptions(e.message) }
    if keepLast < 1 { throw TrainError.badOptions("--keep must be at least 1 (got \(keepLast))") }
    if case .steps(let s) = learningRate {
      do { try s.validate() } catch let e as OptimizerError { throw TrainError.badOptions(e.message) }
    }
    // The skip is added to a data position (a batch count): 2^40 batches is past any data set.
    if spikes.window < 1 || !(spikes.factor > 1) || !(0...(1 << 40)).contains(spikes.skipBatches) {
      throw TrainError.badOptions("spike rule needs window >= 1, factor > 1, skip in 0...\(1 << 40) batches")
    }
  }
}

/// Why a run could not start or continue: one line for the user.
public enum TrainError: Error, Equatable, CustomStringConvertible {
  case badOptions(String)
  case data(String)
  case checkpoint(String)
  case diverged(String)

  public var description: String {
    switch self {
    case .badOptions(let m): m
    case .data(let m): m
    case .checkpoint(let m): m
    case .diverged(let m): m
    }
  }
}

#if canImport(Glibc)
import Glibc
private func _cosine(_ x: Double) -> Double { Glibc.cos(x) }
#elseif canImport(Darwin)
import Darwin
private func _cosine(_ x: Double) -> Double { Darwin.cos(x) }
#endif
