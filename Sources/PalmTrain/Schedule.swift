// Schedule: learning rate as a function of the optimizer step k (1-based: the first update is k = 1).
//
// PaLM (§5): a constant 1e-2 for the first 10,000 steps, then decayed as 1/√k, i.e.
// lr(k) = peak · √(k0 / k) for k > k0 (continuous at k0). Also the common alternative: linear
// warm-up to a peak, then cosine decay to a floor (GPT-3 / nanoGPT style).

import Foundation

/// A learning-rate schedule.
///
/// ```swift
/// let s = LearningRateSchedule.palm(peak: 1e-2, constantSteps: 10_000)
/// s.lr(step: 40_000)   // 5e-3
/// ```
public enum LearningRateSchedule: Codable, Equatable, Sendable {
  /// The same rate at every step.
  case constant(Float)
  /// PaLM: `peak` for k ≤ constantSteps, then peak · √(constantSteps / k).
  case palm(peak: Float, constantSteps: Int)
  /// Linear warm-up over warmupSteps (peak·k/warmupSteps), then cosine decay from peak to `floor` at
  /// totalSteps; `floor` after that.
  /// ```
  /// lr(k) = floor + (peak − floor) · ½ (1 + cos(π · (k − warmup) / (total − warmup)))
  /// ```
  case warmupCosine(peak: Float, warmupSteps: Int, totalSteps: Int, floor: Float)

  /// The learning rate of update `step` (1-based; steps < 1 are treated as 1).
  public func lr(step: Int) -> Float {
    let k = max(step, 1)
    switch self {
    case .constant(let lr):
      return lr
    case .palm(let peak, let k0):
      if k <= k0 { return peak }
      return Float(Double(peak) * (Double(max(k0, 0)) / Double(k)).squareRoot())
    case .warmupCosine(let peak, let warmup, let total, let floor):
      if k <= warmup { return Float(Double(peak) * Double(k) / Double(warmup)) }
      if k >= total { return floor }
      let progress = Double(k - warmup) / Double(total - warmup)
      let cosine = 0.5 * (1 + cos(Double.pi * progress))
      return Float(Double(floor) + (Double(peak) - Double(floor)) * cosine)
    }
  }

  /// Throws a message for a schedule that cannot run (negative rates, bad step counts).
  public func validate() throws {
    switch self {
    case .constant(let lr):
      if !(lr >= 0 && lr.isFinite) { throw OptimizerError("learning rate \(lr) must be finite and >= 0") }
    case .palm(let peak, let k0):
      if !(peak >= 0 && peak.isFinite) { throw OptimizerError("peak learning rate \(peak) must be finite and >= 0") }
      if k0 < 1 { throw OptimizerError("PaLM schedule needs constantSteps >= 1 (got \(k0))") }
    case .warmupCosine(let peak, let warmup, let total, let floor):
      if !(peak >= 0 && peak.isFinite && floor >= 0 && floor.isFinite) {
        throw OptimizerError("learning rates must be finite and >= 0 (peak \(peak), floor \(floor))")
      }
      if warmup < 0 || total <= warmup {
        throw OptimizerError("warm-up cosine needs 0 <= warmupSteps < totalSteps (got \(warmup), \(total))")
      }
    }
  }
}
