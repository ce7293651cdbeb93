// Optimizer (Swift layer), GradientClipping and LearningRateSchedule: the table/step API, state
// tensors, errors, clipping against fp64, and the schedules at their key steps.
import Foundation
import Testing
import PalmTensor
import _PalmTestSupport
@testable import PalmTrain

private func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
  var s = seed
  let n = shape.reduce(1, *)
  let values = (0..<n).map { _ -> Float in
    s = s &* 6364136223846793005 &+ 1442695040888963407
    return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
  }
  return Tensor(shape: shape, values: values)
}

private let table: [(name: String, shape: [Int])] = [("embed", [7, 5]), ("layers.0.w_in", [5, 3]), ("ln_f.scale", [5])]

@Suite("Optimizer")
struct OptimizerTests {
  private func model(seed: UInt64) -> (params: [(name: String, tensor: Tensor)], grads: [(name: String, tensor: Tensor)]) {
    let params = table.enumerated().map { ($1.name, randomTensor($1.shape, seed: seed + UInt64($0), scale: 0.1)) }
    let grads = table.enumerated().map { ($1.name, randomTensor($1.shape, seed: seed + 100 + UInt64($0))) }
    return (params, grads)
  }

  @Test("AdamW step through the Swift API equals a hand-computed first step")
  func adamwFirstStep() throws {
    // First step: m̂ = g, v̂ = g², so p' = p(1 − lr·λ) − lr·g/(|g| + eps).
    let h = AdamWSettings(beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1)
    let opt = try Optimizer(.adamW(h), parameters: table)
    let (params, grads) = model(seed: 1)
    let before = params.map { $0.tensor.array }
    try opt.step(params: params, grads: grads, lr: 0.01)
    #expect(opt.step == 1)
    for (i, (p, g)) in zip(params, grads).enumerated() {
      for j in 0..<p.tensor.count {
        let gj = Double(g.tensor.array[j]), pj = Double(before[i][j])
        let expected = pj * (1 - 0.01 * 0.1) - 0.01 * gj / (abs(gj) + 1e-8)
        #expect(abs(Double(p.tensor.array[j]) - expected) < 1e-6, "\(p.name)[\(j)]")
      }
    }
  }

  @Test("Adafactor updates each tensor with its own parameter scale; state is named and restorable")
  func adafactorStateRoundTrip() throws {
    let opt = try Optimizer(.adafactor(AdafactorSettings()), parameters: table)
    let (params, grads) = model(seed: 2)
    try opt.step(params: params, grads: grads, lr: 0.01)
    try opt.step(params: params, grads: grads, lr: 0.01)
    #expect(opt.stateTensors.map(\.name) == table.map { "m.\($0.name)" } + table.map { "v.\($0.name)" })
    #expect(opt.stateTensors.allSatisfy { t in t.tensor.array.contains { $0 != 0 } })
    // Moments live in one allocation, 64-byte aligned per tensor.
    #expect(Set(opt.stateTensors.map { ObjectIdentifier($0.tensor.storage) }).count == 1)
    #expect(opt.stateTensors.allSatisfy { Int(bitPattern: $0.tensor.pointer) % 64 == 0 })

    // Save the state, continue one step; a restored copy continuing the same step matches bit for bit.
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-opt-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try SafeTensors.write(opt.stateTensors, to: "\(dir)/o.safetensors")
    let paramsCopy: [(name: String, tensor: Tensor)] = params.map { ($0.name, Tensor(shape: $0.tensor.shape, values: $0.tensor.array)) }
    let other = try Optimizer(.adafactor(AdafactorSettings()), parameters: table)
    try other.restore(from: SafeTensorsFile(path: "\(dir)/o.safetensors"), step: 2)
    try withKernelLock {  // both continuations must run on the same ISA path
      try opt.step(params: params, grads: grads, lr: 0.005)
      try other.step(params: paramsCopy, grads: grads, lr: 0.005)
    }
    for (a, b) in zip(params, paramsCopy) {
      #expect(a.tensor.array.map(\.bitPattern) == b.tensor.array.map(\.bitPattern), "\(a.name)")
    }
    // A state file for another table is refused with the tensor's name.
    let wrong = try Optimizer(.adafactor(AdafactorSettings()), parameters: [("embed", [7, 6])])
    do { try wrong.restore(from: SafeTensorsFile(path: "\(dir)/o.safetensors"), step: 2); Issue.record("accepted") } catch {
      #expect("\(error)".contains("m.embed has shape [7, 5], expected [7, 6]"), "\(error)")
    }
  }

  @Test("Weight decay of Adafactor is lr² (PaLM) unless configured otherwise")
  func adafactorWeightDecay() {
    #expect(AdafactorSettings().weightDecay(lr: 0.01) == Float(0.01 * 0.01))
    #expect(AdafactorSettings(weightDecayLRExponent: nil, weightDecayRate: 0.5).weightDecay(lr: 0.01) == 0.5)
    #expect(AdafactorSettings(weightDecayLRExponent: nil).weightDecay(lr: 0.01) == 0)
    #expect(abs(AdafactorSettings(weightDecayRate: 2).weightDecay(lr: 0.1) - 0.02) < 1e-8)
  }

  @Test("Bad calls throw before touching anything")
  func errors() throws {
    #expect(throws: OptimizerError.self) { try Optimizer(.adamW(AdamWSettings()), parameters: [("a", [1]), ("a", [2])]) }
    let opt = try Optimizer(.adamW(AdamWSettings()), parameters: table)
    let (params, grads) = model(seed: 3)
    let before = params.map { $0.tensor.array }
    #expect(throws: OptimizerError.self) { try opt.step(params: Array(params.prefix(2)), grads: Array(grads.prefix(2)), lr: 0.1) }
    #expect(throws: OptimizerError.self) { try opt.step(params: params, grads: grads.reversed(), lr: 0.1) }
    #expect(throws: OptimizerError.self) { try opt.step(params: params, grads: grads, lr: .nan) }
    var bad = params
    bad[1] = ("layers.0.w_in", Tensor(shape: [3, 5]))
    #expect(throws: OptimizerError.self) { try opt.step(params: bad, grads: grads, lr: 0.1) }
    #expect(throws: KernelError.self) {
      try Optimizer(.adamW(AdamWSettings(beta1: 1)), parameters: table).step(params: params, grads: grads, lr: 0.1)
    }
    #expect(opt.step == 0)
    #expect(params.map { $0.tensor.array } == before)
    // Any order of items is accepted.
    try opt.step(params.indices.reversed().map { (params[$0].name, params[$0].tensor, grads[$0].tensor) }, lr: 0.1)
    #expect(opt.step == 1)
  }

  @Test("A plan bound once updates bit for bit as per-call steps, for both optimizers; another optimizer's plan is refused")
  func boundPlanMatchesPerCall() throws {
    for settings in [OptimizerSettings.adamW(AdamWSettings()), .adafactor(AdafactorSettings())] {
      let a = try Optimizer(settings, parameters: table), b = try Optimizer(settings, parameters: table)
      let (pa, grads) = model(seed: 5)
      let pb = pa.map { ($0.name, Tensor(shape: $0.tensor.shape, values: $0.tensor.array)) }
      let plan = try b.bind(params: pb, grads: grads)
      let gradTable = GradientClipping.Table(grads.map(\.tensor))
      for step in 1...3 {
        let lr = 0.01 / Float(step)
        try a.step(params: pa, grads: grads, lr: lr)
        try b.step(plan, lr: lr)
      }
      #expect(pa.map { $0.tensor.array } == pb.map { $0.1.array })
      #expect(a.stateTensors.map { $0.tensor.array } == b.stateTensors.map { $0.tensor.array })
      // The table's norm against a plain fp64 sum of squares (the array form calls the table's).
      let plain = grads.flatMap { $0.tensor.array }.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      let tableNorm = try GradientClipping.globalNorm(gradTable)
      #expect(abs(Double(tableNorm) - plain) <= 1e-6 * plain, "\(tableNorm) vs \(plain)")
      #expect(throws: OptimizerError.self) { try a.step(plan, lr: 0.01) }
      #expect(throws: OptimizerError.self) { try b.step(plan, lr: .infinity) }
      #expect(a.step == 3 && b.step == 3)
    }
  }

  @Test("Settings and schedules survive JSON (they go into manifest.json)")
  func codable() throws {
    let all: [OptimizerSettings] = [.adamW(AdamWSettings()), .adafactor(AdafactorSettings())]
    for s in all { #expect(try JSONDecoder().decode(OptimizerSettings.self, from: JSONEncoder().encode(s)) == s) }
    let schedules: [LearningRateSchedule] = [.constant(1e-3), .palm(peak: 1e-2, constantSteps: 10_000),
                                             .warmupCosine(peak: 6e-4, warmupSteps: 100, totalSteps: 5000, floor: 6e-5)]
    for s in schedules { #expect(try JSONDecoder().decode(LearningRateSchedule.self, from: JSONEncoder().encode(s)) == s) }
  }
}

@Suite("GradientClipping")
struct GradientClippingTests {
  @Test("Global norm and clipping at 1.0 against fp64")
  func clipping() throws {
    let grads = [randomTensor([1], seed: 1), randomTensor([17], seed: 2), randomTensor([1000], seed: 3),
                 randomTensor([0], seed: 4), randomTensor([40_003], seed: 5)]
    let ref = grads.flatMap(\.array).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    let norm = try GradientClipping.globalNorm(grads)
    #expect(abs(norm - ref) <= 1e-12 * ref, "\(norm) vs \(ref)")
    let before = grads.map(\.array)
    let (n, scale) = try GradientClipping.clip(grads, maxNorm: 1.0)
    #expect(n == norm && abs(Double(scale) - 1 / ref) < 1e-7 / ref)
    #expect(abs(try GradientClipping.globalNorm(grads) - 1) < 1e-5)
    for (g, b) in zip(grads, before) { #expect(zip(g.array, b).allSatisfy { $0 == $1 * scale }) }
    // Under the threshold: untouched.
    let small = [Tensor(shape: [2], values: [0.3, 0.4])]
    let (n2, s2) = try GradientClipping.clip(small, maxNorm: 1.0)
    #expect(abs(n2 - 0.5) < 1e-7 && s2 == 1 && small[0].array == [0.3, 0.4])
    // Non-finite norm: reported, gradients untouched.
    let inf = [Tensor(shape: [2], values: [.infinity, 1])]
    let (n3, s3) = try GradientClipping.clip(inf)
    #expect(!n3.isFinite && s3 == 1 && inf[0].array[1] == 1)
  }
}

@Suite("LearningRateSchedule")
struct ScheduleTests {
  @Test("PaLM: constant for k0 steps, then peak·√(k0/k)")
  func palm() throws {
    let s = LearningRateSchedule.palm(peak: 1e-2, constantSteps: 10_000)
    #expect(s.lr(step: 1) == 1e-2 && s.lr(step: 10_000) == 1e-2)
    #expect(abs(s.lr(step: 40_000) - 5e-3) < 1e-9)
    #expect(abs(s.lr(step: 10_001) - Float(1e-2 * (10_000.0 / 10_001).squareRoot())) < 1e-9)
    #expect(abs(s.lr(step: 250_000) - 2e-3) < 1e-9)
    #expect(throws: OptimizerError.self) { try LearningRateSchedule.palm(peak: 1e-2, constantSteps: 0).validate() }
  }

  @Test("Warm-up then cosine to the floor")
  func cosine() throws {
    let s = LearningRateSchedule.warmupCosine(peak: 1e-3, warmupSteps: 100, totalSteps: 1100, floor: 1e-4)
    #expect(abs(s.lr(step: 1) - 1e-5) < 1e-10)
    #expect(abs(s.lr(step: 50) - 5e-4) < 1e-9)
    #expect(s.lr(step: 100) == 1e-3)
    #expect(abs(s.lr(step: 600) - 5.5e-4) < 1e-8)  // halfway: floor + (peak − floor)/2
    #expect(s.lr(step: 1100) == 1e-4 && s.lr(step: 5000) == 1e-4)
    #expect(s.lr(step: 101) < 1e-3 && s.lr(step: 101) > 0.99e-3)
    try s.validate()
    #expect(throws: OptimizerError.self) {
      try LearningRateSchedule.warmupCosine(peak: 1e-3, warmupSteps: 10, totalSteps: 10, floor: 0).validate()
    }
    #expect(LearningRateSchedule.constant(3e-4).lr(step: 77) == 3e-4)
  }
}
