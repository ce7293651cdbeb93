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

  /// Throws `OptimizerError` naming the first hyper-parameter outside its range (betas in [0, 1),
  /// eps > 0, weight decay >= 0, everything finite).
  public func validate() throws {
    func check(_ name: String, _ x: Float, _ ok: (Float) -> Bool, _ range: String) throws {
      if !(x.isFinite && ok(x)) { throw OptimizerError("\(name) \(x) must be \(range)") }
    }
    switch self {
    case .adamW(let s):
      try check("beta1", s.beta1, { (0..<1).contains($0) }, "in [0, 1)")
      try check("beta2", s.beta2, { (0..<1).contains($0) }, "in [0, 1)")
      try check("eps", s.eps, { $0 > 0 }, "> 0")
      try check("weight decay", s.weightDecay, { $0 >= 0 }, ">= 0")
    case .adafactor(let s):
      try check("beta1", s.beta1, { (0..<1).contains($0) }, "in [0, 1)")
      try check("decay exponent", s.decayExponent, { $0 > 0 && $0 <= 1 }, "in (0, 1]")
      try check("eps1", s.eps1, { $0 > 0 }, "> 0")
      try check("eps2", s.eps2, { $0 > 0 }, "> 0")
      try check("clipping threshold", s.clippingThreshold, { _ in true }, "finite")
      if let e = s.weightDecayLRExponent { try check("weight decay exponent", e, { $0 >= 0 }, ">= 0") }
      if let r = s.weightDecayRate { try check("weight decay rate", r, { $0 >= 0 }, ">= 0") }
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
/// // A loop over the same tensors validates once and reuses the table every update:
/// let plan = try opt.bind(params: params.named, grads: grads.named)
/// try opt.step(plan, lr: schedule.lr(step: opt.step + 1))
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

  /// One update's worth of (parameter, gradient, moments) bookkeeping, validated once by `bind` and
  /// reused by `step(_:lr:)` for every update: the per-update path then builds no arrays, sets or
  /// name lookups. Holds the tensors (views), so the parameter and gradient storage stays alive.
  public final class UpdatePlan: @unchecked Sendable {
    struct Entry {
      let name: String
      let param: Tensor
      let grad: Tensor
      let m: Tensor
      let v: Tensor
      let count: Int64
      /// The whole tensor this entry is (a part of), for Adafactor's RMS terms; whether this
      /// part's sums count (false for a copy another rank counts: replicated on a mesh).
      var group = 0
      var counted = true
    }
    /// In update order (the order of the items given to `bind`).
    let entries: [Entry]
    /// The optimizer whose moments `entries` point into.
    let owner: ObjectIdentifier
    /// Sharded plans: elements of each whole tensor (group), and the sum over the mesh of the
    /// per-group sums (nil: every entry is a whole tensor, updated on its own).
    let groupCounts: [Int]
    let reduce: ((inout [Double]) throws -> Void)?
    init(entries: [Entry], owner: ObjectIdentifier, groupCounts: [Int] = [],
         reduce: ((inout [Double]) throws -> Void)? = nil) {
      self.entries = entries
      self.owner = owner
      self.groupCounts = groupCounts
      self.reduce = reduce
    }
  }

  /// Validates `items` against the table and returns the plan that `step(_:lr:)` applies.
  ///
  /// `items` must hold each table name exactly once (any order; updates follow it), with parameter
  /// and gradient of the table's shape.
  /// - Throws: `OptimizerError` for a missing, unknown, repeated or mis-shaped entry.
  public func bind(_ items: [(name: String, param: Tensor, grad: Tensor)]) throws -> UpdatePlan {
    if items.count != table.count {
      throw OptimizerError("got \(items.count) parameters, the table has \(table.count)")
    }
    var entries: [UpdatePlan.Entry] = []
    entries.reserveCapacity(items.count)
    var seen = Set<Int>()
    for item in items {
      guard let i = index[item.name] else { throw OptimizerError("unknown parameter \(item.name)") }
      if !seen.insert(i).inserted { throw OptimizerError("parameter \(item.name) given twice") }
      if item.param.shape != table[i].shape || item.grad.shape != table[i].shape {
        throw OptimizerError("parameter \(item.name): param \(item.param.shape), grad \(item.grad.shape), expected \(table[i].shape)")
      }
      entries.append(.init(name: item.name, param: item.param, grad: item.grad, m: m[i], v: v[i],
                           count: Int64(table[i].shape.reduce(1, *))))
    }
    return UpdatePlan(entries: entries, owner: ObjectIdentifier(self))
  }

  /// `bind(_:)` from parallel lists of named parameters and named gradients (same names, same order).
  public func bind(params: [(name: String, tensor: Tensor)], grads: [(name: String, tensor: Tensor)]) throws -> UpdatePlan {
    guard params.count == grads.count else {
      throw OptimizerError("\(params.count) parameters but \(grads.count) gradients")
    }
    var items: [(name: String, param: Tensor, grad: Tensor)] = []
    for (p, g) in zip(params, grads) {
      if p.name != g.name { throw OptimizerError("parameter \(p.name) paired with gradient \(g.name)") }
      items.append((p.name, p.tensor, g.tensor))
    }
    return try bind(items)
  }

  /// Applies one update to every parameter of `plan` (from this optimizer's `bind`), in its order.
  ///
  /// Gradients are read, not changed (clip them first with `GradientClipping`).
  /// - Throws: `OptimizerError` for a non-finite learning rate or another optimizer's plan (nothing
  ///   is updated then); `KernelError` from a kernel.
  /// The plan of a mesh rank whose optimizer has ONE table entry over its whole shard (`param`,
  /// `grad` and the moments all in the shard layout): `parts` are ranges of the shard, each a part
  /// of the whole tensor `group` (of `groupCounts[group]` elements over the mesh); `counted: false`
  /// marks a copy that another rank counts. AdamW updates every part on its own; Adafactor takes
  /// its RMS terms over the whole tensor: per-part sums, added per group, `reduce` (the sum over
  /// the mesh), then the update of every part with its group's RMS values.
  public func bind(shard param: Tensor, grad: Tensor, parts: [(range: Range<Int>, group: Int, counted: Bool)],
                   groupCounts: [Int], reduce: @escaping (inout [Double]) throws -> Void) throws -> UpdatePlan {
    guard table.count == 1, param.count == table[0].shape.reduce(1, *), grad.count == param.count else {
      throw OptimizerError("a shard plan needs one table entry of the shard's size (\(param.count))")
    }
    let entries = try parts.map { p -> UpdatePlan.Entry in
      guard p.range.lowerBound >= 0, p.range.upperBound <= param.count, groupCounts.indices.contains(p.group) else {
        throw OptimizerError("part \(p.range) of group \(p.group) is outside the shard")
      }
      func view(_ t: Tensor) -> Tensor { Tensor(storage: t.storage, offset: t.offset + p.range.lowerBound, shape: [p.range.count]) }
      var e = UpdatePlan.Entry(name: "\(table[0].name)[\(p.range)]", param: view(param), grad: view(grad), m: view(m[0]),
                               v: view(v[0]), count: Int64(p.range.count))
      e.group = p.group
      e.counted = p.counted
      return e
    }
    return UpdatePlan(entries: entries, owner: ObjectIdentifier(self), groupCounts: groupCounts, reduce: reduce)
  }

  /// The moments as two flat buffers in the table's layout (each entry 16-float aligned, in order):
  /// for a table of `Parameters` entries that is the parameters' own layout.
  public var flatMoments: (m: Tensor, v: Tensor) {
    let total = storage.count / 2
    return (Tensor(storage: storage, offset: 0, shape: [total]), Tensor(storage: storage, offset: total, shape: [total]))
  }

  public func step(_ plan: UpdatePlan, lr: Float) throws {
    try Optimizer.check(lr: lr)
    guard plan.owner == ObjectIdentifier(self) else { throw OptimizerError("update plan bound to another optimizer") }
    let k = Int64(step + 1)
    switch settings {
    case .adamW(let h):
      for e in plan.entries {
        try KernelError.check(pk_adamw_update(e.param.pointer, e.m.pointer, e.v.pointer, e.grad.pointer, e.count,
                                              lr, h.beta1, h.beta2, h.eps, h.weightDecay, k), "adamw_update \(e.name)")
      }
    case .adafactor(let h) where plan.reduce != nil:
      let decay = h.weightDecay(lr: lr)
      var sums = [Double](repeating: 0, count: 2 * plan.groupCounts.count)
      for e in plan.entries {
        var sp = 0.0, sy = 0.0
        try KernelError.check(pk_adafactor_sums(&sp, &sy, e.param.pointer, e.v.pointer, e.grad.pointer, e.count,
                                                h.decayExponent, h.eps1, k), "adafactor_sums \(e.name)")
        if e.counted { sums[2 * e.group] += sp; sums[2 * e.group + 1] += sy }
      }
      try plan.reduce!(&sums)
      for e in plan.entries {
        let n = Double(max(plan.groupCounts[e.group], 1))
        try KernelError.check(pk_adafactor_apply(e.param.pointer, e.m.pointer, e.v.pointer, e.grad.pointer, e.count,
                                                 lr, h.beta1, h.eps2, h.clippingThreshold, decay,
                                                 (max(sums[2 * e.group], 0) / n).squareRoot(),
                                                 (max(sums[2 * e.group + 1], 0) / n).squareRoot()),
                              "adafactor_apply \(e.name)")
      }
    case .adafactor(let h):
      let decay = h.weightDecay(lr: lr)
      for e in plan.entries {
        try KernelError.check(pk_adafactor_update(e.param.pointer, e.m.pointer, e.v.pointer, e.grad.pointer, e.count,
                                                  lr, h.beta1, h.decayExponent, h.eps1, h.eps2, h.clippingThreshold,
                                                  decay, k), "adafactor_update \(e.name)")
      }
    }
    step += 1
  }

  private static func check(lr: Float) throws {
    if !lr.isFinite || lr < 0 { throw OptimizerError("learning rate \(lr) is not a finite non-negative number") }
  }

  /// Applies one update to every parameter of the table (validates `items` each call; a loop that
  /// updates the same tensors every step should `bind` once and call `step(_:lr:)` with the plan).
  ///
  /// `items` must hold each table name exactly once (any order), with parameter and gradient of the
  /// table's shape. Gradients are read, not changed (clip them first with `GradientClipping`).
  /// - Throws: `OptimizerError` for a missing, unknown, repeated or mis-shaped entry or a non-finite
  ///   learning rate (nothing is updated then); `KernelError` from a kernel.
  public func step(_ items: [(name: String, param: Tensor, grad: Tensor)], lr: Float) throws {
    try Optimizer.check(lr: lr)
    try step(bind(items), lr: lr)
  }

  /// `step(_:lr:)` from parallel lists of named parameters and named gradients (same names, same order).
  public func step(params: [(name: String, tensor: Tensor)], grads: [(name: String, tensor: Tensor)], lr: Float) throws {
    try step(bind(params: params, grads: grads), lr: lr)
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
  /// The pointer and length lists of a fixed set of gradient tensors, built once for
  /// `globalNorm(_:)` / `clip(_:maxNorm:)` on every step. Holds the tensors (views).
  public final class Table: @unchecked Sendable {
    public let tensors: [Tensor]
    let pointers: [UnsafePointer<Float>?]
    let counts: [Int64]
    public init(_ tensors: [Tensor]) {
      self.tensors = tensors
      pointers = tensors.map { UnsafePointer($0.pointer) }
      counts = tensors.map { Int64($0.count) }
    }
  }

  /// sqrt(Σ g²) over all tensors, accumulated in fp64 in a fixed order.
  public static func globalNorm(_ grads: [Tensor]) throws -> Double { try globalNorm(Table(grads)) }

  /// sqrt(Σ g²) over the table's tensors, accumulated in fp64 in table order.
  public static func globalNorm(_ table: Table) throws -> Double {
    var out = 0.0
    try KernelError.check(pk_global_norm_squared(&out, table.pointers, table.counts, Int64(table.counts.count)),
                          "global_norm_squared")
    return out.squareRoot()
  }

  /// Scales every gradient by min(1, maxNorm / norm) in place.
  ///
  /// - Returns: the norm before clipping and the scale applied (1 when not clipped). A non-finite
  ///   norm leaves the gradients unchanged (scale 1) so the caller can skip the step and log it.
  @discardableResult
  public static func clip(_ grads: [Tensor], maxNorm: Double = 1.0) throws -> (norm: Double, scale: Float) {
    try clip(Table(grads), maxNorm: maxNorm)
  }

  /// `clip(_:maxNorm:)` over a prebuilt table.
  @discardableResult
  public static func clip(_ table: Table, maxNorm: Double = 1.0) throws -> (norm: Double, scale: Float) {
    let norm = try globalNorm(table)
    guard norm.isFinite, norm > maxNorm, maxNorm > 0 else { return (norm, 1) }
    let scale = Float(maxNorm / norm)
    for g in table.tensors { try KernelError.check(pk_scale_inplace(g.pointer, Int64(g.count), scale), "scale_inplace") }
    return (norm, scale)
  }
}
