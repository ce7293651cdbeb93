// Optimizer: AdamW or PaLM's unfactored Adafactor over a table of named parameters, on the C
// kernels of CKernels/optim.c (formulas and sources in CKernels/include/pk_optim.h), plus global
// gradient-norm clipping (PaLM §5: clip at 1.0 for all models).
//
// Model-agnostic: it sees a list of (name, parameter, gradient) tensors. Moments live in one
// allocation mirroring the parameter table (one region per tensor, 64-byte aligned) and are exposed
// as named tensors ("m.<name>", "v.<name>") for checkpoints. Not a learning-rate schedule (see
// Schedule.swift): the caller passes the step's learning rate.

import CKernels
import Foundation
import PalmTensor

/// AdamW hyper-parameters (learning rate excluded: it comes from the schedule each step).
public struct AdamWSettings: Codable, Equatable, Sendable {
  public var beta1: Float
  public var beta2: Float
  public var eps: Float
  /// Decoupled weight decay λ: each step multiplies parameters by (1 − lr·λ).
  public var weightDecay: Float
  public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
    self.beta1 = beta1
    self.beta2 = beta2
    self.eps = eps
    self.weightDecay = weightDecay
  }
}

/// Unfactored Adafactor hyper-parameters; the defaults are PaLM's (§5) in T5X's spelling.
public struct AdafactorSettings: Codable, Equatable, Sendable {
  /// Momentum (PaLM: 0.9; 0 turns momentum off).
  public var beta1: Float
  /// β2 at step k is 1 − k^(−decayExponent) (PaLM: 0.8).
  public var decayExponent: Float
  /// Added to g² in the second moment (Adafactor ε1).
  public var eps1: Float
  /// Floor of the parameter scale RMS(p) (Adafactor ε2).
  public var eps2: Float
  /// Update clipping threshold d: the update is divided by max(1, RMS(update)/d); ≤ 0 disables.
  public var clippingThreshold: Float
  /// Weight decay = weightDecayRate · lr^exponent when set (PaLM: lr², i.e. exponent 2, rate 1).
  public var weightDecayLRExponent: Float?
  /// A constant decay rate (or the factor on lr^exponent); nil = 1 with an exponent, 0 without.
  public var weightDecayRate: Float?

  public init(beta1: Float = 0.9, decayExponent: Float = 0.8, eps1: Float = 1e-30, eps2: Float = 1e-3,
              clippingThreshold: Float = 1.0, weightDecayLRExponent: Float? = 2.0, weightDecayRate: Float? = nil) {
    self.beta1 = beta1
    self.decayExponent = decayExponent
    self.eps1 = eps1
    self.eps2 = eps2
    self.clippingThreshold = clippingThreshold
    self.weightDecayLRExponent = weightDecayLRExponent
    self.weightDecayRate = weightDecayRate
  }

  /// The decay coefficient for learning rate `lr` (T5X: rate · lr^exponent).
  public func weightDecay(lr: Float) -> Float {
    if let e = weightDecayLRExponent { return (weightDecayRate ?? 1) * Float(pow(Double(lr), Double(e))) }
    return weightDecayRate ?? 0
  }
}

/// Which optimizer, with its hyper-parameters.
public enum OptimizerSettings: Codable, Equatable, Sendable {
  case adamW(AdamWSettings)
  case adafactor(AdafactorSettings)

  /// "adamw" or "adafactor".
  public var kind: String {
    switch self {
    case .adamW: "adamw"
    case .adafactor: "adafactor"
    }
  }

  // JSON: {"adamw": {...}} or {"adafactor": {...}}.
  private enum CodingKeys: String, CodingKey { case adamW = "adamw", adafactor }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    if let s = try c.decodeIfPresent(AdamWSettings.self, forKey: .adamW) {
      self = .adamW(s)
    } else if let s = try c.decodeIfPresent(AdafactorSettings.self, forKey: .adafactor) {
      self = .adafactor(s)
    } else {
      throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "expected an \"adamw\" or \"adafactor\" key"))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    switch self {
    case .adamW(let s): try c.encode(s, forKey: .adamW)
    case .adafactor(let s): try c.encode(s, forKey: .adafactor)
    }
  }
}

/// A parameter table or step input that does not fit the optimizer.
public struct OptimizerError: Error, Equatable, CustomStringConvertible {
  public let message: String
  public var description: String { "optimizer: \(message)" }
  public init(_ message: String) { self.message = message }
}

/// Updates named parameters from their gradients, holding the moments.
///
/// ```swift
/// let opt = try Optimizer(.adafactor(AdafactorSettings()), parameters: params.entries.map { ($0.name, $0.shape) })
/// let (norm, _) = try GradientClipping.clip(grads.map(\.tensor), maxNorm: 1.0)
/// try opt.step(params: params.named, grads: grads.named, lr: schedule.lr(step: opt.step + 1))
/// ```
public final class Optimizer: @unchecked Sendable {
  public let settings: OptimizerSettings
  /// The parameter table the moments mirror, in order.
  public let table: [(name: String, shape: [Int])]
  /// Updates applied so far (the next update is step + 1, the bias-correction/β2 count).
  public private(set) var step: Int = 0
  private let storage: TensorStorage
  private let m: [Tensor]
  private let v: [Tensor]
  private let index: [String: Int]

  /// Zeroed moments for `parameters` (names must be unique).
  public init(_ settings: OptimizerSettings, parameters: [(name: String, shape: [Int])]) throws {
    self.settings = settings
    self.table = parameters
    var index: [String: Int] = [:]
    var offsets: [Int] = []
    var total = 0
    for (i, p) in parameters.enumerated() {
      if index.updateValue(i, forKey: p.name) != nil { throw OptimizerError("parameter \(p.name) appears twice") }
      if p.shape.contains(where: { $0 < 0 }) { throw OptimizerError("parameter \(p.name) has shape \(p.shape)") }
      offsets.append(total)
      total += (p.shape.reduce(1, *) + 15) / 16 * 16  // 64-byte aligned regions
    }
    self.index = index
    let storage = TensorStorage(count: 2 * total)
    self.storage = storage
    m = zip(parameters, offsets).map { Tensor(storage: storage, offset: $1, shape: $0.shape) }
    v = zip(parameters, offsets).map { Tensor(storage: storage, offset: total + $1, shape: $0.shape) }
  }

  /// Applies one update to every parameter of the table.
  ///
  /// `items` must hold each table name exactly once (any order), with parameter and gradient of the
  /// table's shape. Gradients are read, not changed (clip them first with `GradientClipping`).
  /// - Throws: `OptimizerError` for a missing, unknown, repeated or mis-shaped entry or a non-finite
  ///   learning rate (nothing is updated then); `KernelError` from a kernel.
  public func step(_ items: [(name: String, param: Tensor, grad: Tensor)], lr: Float) throws {
    if !lr.isFinite || lr < 0 { throw OptimizerError("learning rate \(lr) is not a finite non-negative number") }
    if items.count != table.count {
      throw OptimizerError("got \(items.count) parameters, the table has \(table.count)")
    }
    var slots: [Int] = []
    var seen = Set<Int>()
    for item in items {
      guard let i = index[item.name] else { throw OptimizerError("unknown parameter \(item.name)") }
      if !seen.insert(i).inserted { throw OptimizerError("parameter \(item.name) given twice") }
      if item.param.shape != table[i].shape || item.grad.shape != table[i].shape {
        throw OptimizerError("parameter \(item.name): param \(item.param.shape), grad \(item.grad.shape), expected \(table[i].shape)")
      }
      slots.append(i)
    }
    let k = Int64(step + 1)
    for (item, i) in zip(items, slots) {
      let n = Int64(table[i].shape.reduce(1, *))
      switch settings {
      case .adamW(let h):
        try KernelError.check(pk_adamw_update(item.param.pointer, m[i].pointer, v[i].pointer, item.grad.pointer, n,
                                              lr, h.beta1, h.beta2, h.eps, h.weightDecay, k), "adamw_update \(item.name)")
      case .adafactor(let h):
        try KernelError.check(pk_adafactor_update(item.param.pointer, m[i].pointer, v[i].pointer, item.grad.pointer, n,
                                                  lr, h.beta1, h.decayExponent, h.eps1, h.eps2, h.clippingThreshold,
                                                  h.weightDecay(lr: lr), k), "adafactor_update \(item.name)")
      }
    }
    step += 1
  }

  /// `step(_:lr:)` from parallel lists of named parameters and named gradients (same names, same order).
  public func step(params: [(name: String, tensor: Tensor)], grads: [(name: String, tensor: Tensor)], lr: Float) throws {
    guard params.count == grads.count else {
      throw OptimizerError("\(params.count) parameters but \(grads.count) gradients")
    }
    var items: [(name: String, param: Tensor, grad: Tensor)] = []
    for (p, g) in zip(params, grads) {
      if p.name != g.name { throw OptimizerError("parameter \(p.name) paired with gradient \(g.name)") }
      items.append((p.name, p.tensor, g.tensor))
    }
    try step(items, lr: lr)
  }

  /// The moments as named tensors (views, not copies): "m.<name>" then "v.<name>" in table order.
  public var stateTensors: [(name: String, tensor: Tensor)] {
    zip(table, m).map { ("m.\($0.name)", $1) } + zip(table, v).map { ("v.\($0.name)", $1) }
  }

  /// Names and shapes that `stateTensors` has (for checking a checkpoint file).
  public var stateTable: [(name: String, shape: [Int])] { stateTensors.map { ($0.name, $0.tensor.shape) } }

  /// Restores moments from `file` (checked against `stateTable`) and the update count.
  public func restore(from file: SafeTensorsFile, step: Int) throws {
    if step < 0 { throw OptimizerError("negative step \(step)") }
    try file.load(into: stateTensors)
    self.step = step
  }

  /// Sets the update count, keeping the moments (a sharded run rebuilding a single-device
  /// optimizer from gathered moments). - Throws: `OptimizerError` for a negative step.
  public func setStep(_ step: Int) throws {
    if step < 0 { throw OptimizerError("negative step \(step)") }
    self.step = step
  }

  /// Zeroes the moments and the step count.
  public func reset() {
    storage.base.update(repeating: 0, count: storage.count)
    step = 0
  }
}

/// Global-norm gradient clipping (Pascanu et al. 2013; PaLM §5 clips at 1.0).
public enum GradientClipping {
  /// sqrt(Σ g²) over all tensors, accumulated in fp64 in a fixed order.
  public static func globalNorm(_ grads: [Tensor]) throws -> Double {
    var pointers: [UnsafePointer<Float>?] = grads.map { UnsafePointer($0.pointer) }
    var counts: [Int64] = grads.map { Int64($0.count) }
    var out = 0.0
    try KernelError.check(pk_global_norm_squared(&out, &pointers, &counts, Int64(grads.count)), "global_norm_squared")
    return out.squareRoot()
  }

  /// Scales every gradient by min(1, maxNorm / norm) in place.
  ///
  /// - Returns: the norm before clipping and the scale applied (1 when not clipped). A non-finite
  ///   norm leaves the gradients unchanged (scale 1) so the caller can skip the step and log it.
  @discardableResult
  public static func clip(_ grads: [Tensor], maxNorm: Double = 1.0) throws -> (norm: Double, scale: Float) {
    let norm = try globalNorm(grads)
    guard norm.isFinite, norm > maxNorm, maxNorm > 0 else { return (norm, 1) }
    let scale = Float(maxNorm / norm)
    for g in grads { try KernelError.check(pk_scale_inplace(g.pointer, Int64(g.count), scale), "scale_inplace") }
    return (norm, scale)
  }
}
