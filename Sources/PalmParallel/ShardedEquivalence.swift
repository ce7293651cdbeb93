// ShardedEquivalence: the same few training steps run on one device (Model + Optimizer + clipping)
// and on a mesh (ShardedTrainer), for the proof that sharding changes nothing but rounding
// (issue #5 item 5). Used by Tests/PalmParallelTests/ShardedModelTests.swift (LocalCluster) and by
// palm-mpi-check --sharded (Tests/MPICheck/ShardedCheck.swift, under mpirun).

import PalmModel
import PalmTensor
import PalmTrain

/// A reproducible small training run and the comparison of its single-device and sharded results.
public struct ShardedEquivalence: Sendable {
  public var config: PalmConfig
  public var batch: Int
  public var steps: Int
  public var seed: UInt64
  public var lr: Float
  public var clipNorm: Double?
  public var adamW: AdamWSettings

  /// A debug-speed config: d 64, 2 layers, 4 heads × 16, d_ff 128, vocab 64, T 16, global batch 4.
  public static let debugConfig = PalmConfig(name: "debug", dModel: 64, layers: 2, heads: 4, headDim: 16,
                                             dFF: 128, vocab: 64, seqLen: 16, batch: 4)

  public init(config: PalmConfig = ShardedEquivalence.debugConfig, batch: Int = 4, steps: Int = 3,
              seed: UInt64 = 7, lr: Float = 1e-2, clipNorm: Double? = 1.0, adamW: AdamWSettings = AdamWSettings()) {
    self.config = config
    self.batch = batch
    self.steps = steps
    self.seed = seed
    self.lr = lr
    self.clipNorm = clipNorm
    self.adamW = adamW
  }

  /// The global batch of step `k`: (tokens, targets), B·T ids each, deterministic.
  public func batch(step k: Int) -> (tokens: [Int32], targets: [Int32]) {
    let n = batch * config.seqLen
    var state = seed &+ UInt64(k + 1) &* 0x9E37_79B9_7F4A_7C15
    func next() -> Int32 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Int32(truncatingIfNeeded: (state >> 33) % UInt64(config.vocab))
    }
    let tokens = (0..<n).map { _ in next() }
    let targets = (0..<n).map { _ in next() }
    return (tokens, targets)
  }

  /// The single-device run: losses of every step and the final parameters.
  public func runSingleDevice() throws -> (losses: [StepLoss], parameters: Parameters) {
    let model = try Model(config: config, remat: .none, batch: batch, seed: seed)
    let opt = try Optimizer(.adamW(adamW), parameters: model.parameters.entries.map { ($0.name, $0.shape) })
    let plan = try opt.bind(params: model.parameters.named, grads: model.gradients.named)
    let gradients = GradientClipping.Table(model.gradients.named.map(\.tensor))
    var losses: [StepLoss] = []
    for k in 0..<steps {
      let (x, y) = batch(step: k)
      model.gradients.zero()
      losses.append(try model.forwardBackward(tokens: x, targets: y))
      if let clipNorm { try GradientClipping.clip(gradients, maxNorm: clipNorm) }
      try opt.step(plan, lr: lr)
    }
    return (losses, model.parameters)
  }

  /// The sharded run on `mesh` (collective: every rank calls it): losses, final parameters gathered
  /// to the single-device layout, and the exchange statistics of every step.
  public func runSharded(mesh: Mesh) throws -> (losses: [StepLoss], parameters: Parameters, results: [ShardedStepResult]) {
    let trainer = try ShardedTrainer(config: config, mesh: mesh, batch: batch, optimizer: .adamW(adamW),
                                     clipNorm: clipNorm)
    var c = config
    c.batch = batch
    let initial = try Parameters(config: c)
    initial.initialize(seed: seed)
    try trainer.load(from: initial)
    var results: [ShardedStepResult] = []
    for k in 0..<steps {
      let (x, y) = batch(step: k)
      results.append(try trainer.step(tokens: x, targets: y, lr: lr))
    }
    return (results.map(\.loss), try trainer.gatherParameters(), results)
  }

  /// Largest relative loss difference |a − b| / |b| over steps (total loss).
  public static func lossDifference(_ a: [StepLoss], _ b: [StepLoss]) -> Double {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).map { Double(abs($0.total - $1.total)) / max(Double(abs($1.total)), 1e-30) }.max() ?? 0
  }

  /// Largest per-tensor relative difference ‖a − b‖₂ / ‖b‖₂, and the tensor where it occurs.
  public static func parameterDifference(_ a: Parameters, _ b: Parameters) -> (value: Double, tensor: String) {
    var worst = (0.0, "")
    for ((name, ta), (_, tb)) in zip(a.named, b.named) {
      var diff = 0.0, scale = 0.0
      for i in 0..<ta.count {
        let e = Double(ta.pointer[i]) - Double(tb.pointer[i]), r = Double(tb.pointer[i])
        diff += e * e
        scale += r * r
      }
      let rel = scale > 0 ? (diff / scale).squareRoot() : diff.squareRoot()
      if rel > worst.0 || rel.isNaN { worst = (rel, name) }
    }
    return worst
  }

  /// Largest per-tensor element-wise difference max|a − b| / max|b| (stricter than the norm-wise
  /// `parameterDifference`: AdamW divides by √v, so elements with near-zero gradients amplify rounding).
  public static func maxElementDifference(_ a: Parameters, _ b: Parameters) -> (value: Double, tensor: String) {
    var worst = (0.0, "")
    for ((name, ta), (_, tb)) in zip(a.named, b.named) {
      var diff = 0.0, scale = 0.0
      for i in 0..<ta.count {
        diff = max(diff, Double(abs(ta.pointer[i] - tb.pointer[i])))
        scale = max(scale, Double(abs(tb.pointer[i])))
      }
      let rel = scale > 0 ? diff / scale : diff
      if rel > worst.0 || rel.isNaN { worst = (rel, name) }
    }
    return worst
  }
}
