// DropoutModelTests: the model with dropout on the residual branches and the embedding output,
// judged by the fp64 ReferenceModel with the same masks (whose backward is judged by central
// finite differences), a directional finite difference of the fast model itself, the three remat
// policies (bit-identical), dropout 0 = no dropout, evaluation without dropout, bad rates.

import Testing
import CKernels
import PalmTensor
@testable import PalmModel
import _PalmTestSupport

private let testRates = Dropout(residual: 0.3, embedding: 0.2)
private let testKey = DropoutKey(seed: 0xD1CE, tokenOffset: 5)

/// The reference's dropout multipliers for `key` (what the model's kernels draw).
private func masks(_ c: PalmConfig, _ rates: Dropout, _ key: DropoutKey)
  -> (embedding: [Double], residual: [[Double]])
{
  let n = c.batch * c.seqLen * c.dModel, off = key.tokenOffset * c.dModel
  let e = DropoutReference.multipliers(count: n, p: rates.embedding, seed: key.seed,
                                       stream: DropoutKey.embeddingStream, offset: off).map(Double.init)
  let r = (0..<c.layers).map { l in
    DropoutReference.multipliers(count: n, p: rates.residual, seed: key.seed,
                                 stream: DropoutKey.residualStream(layer: l), offset: off).map(Double.init)
  }
  return (e, r)
}

private func ids(_ c: PalmConfig) -> (tokens: [Int32], targets: [Int32]) {
  let n = c.batch * c.seqLen
  return (randomIds(n, vocab: c.vocab, seed: 21), randomIds(n, vocab: c.vocab, seed: 22))
}

/// A fresh model's loss and gradients for one step with dropout.
private func dropoutStep(_ remat: RematPolicy, dropout: Dropout = testRates, key: DropoutKey = testKey)
  throws -> (StepLoss, [String: [Double]], Model)
{
  Threads.count = 2
  let m = try Model(config: awkward, remat: remat, seed: 7, dropout: dropout)
  let (x, y) = ids(awkward)
  m.gradients.zero()
  let loss = try m.forwardBackward(tokens: x, targets: y, dropoutKey: key)
  return (loss, gradients(m), m)
}

/// In the (serialized) ModelTests suite: its tests change the thread count, and these compare bits.
extension ModelTests {
  @Test func referenceWithDropoutMatchesFiniteDifferences() throws {
    let params = try Parameters(config: awkward)
    params.initialize(seed: 3)
    var ref = ReferenceModel(params)
    let (x, y) = ids(awkward)
    let (em, rm) = masks(awkward, testRates, testKey)
    #expect(em.contains(0) && rm[1].contains(0) && em.contains { $0 > 1 }, "masks drop and scale")
    func loss(_ r: ReferenceModel) -> Double {
      r.run(tokens: x, targets: y, batch: awkward.batch, seqLen: awkward.seqLen, gradients: false,
            embeddingMask: em, residualMasks: rm).loss
    }
    let out = ref.run(tokens: x, targets: y, batch: awkward.batch, seqLen: awkward.seqLen,
                      embeddingMask: em, residualMasks: rm)
    var g = NormalGenerator(seed: 6)
    let h = 1e-5
    for name in ["embed", "layers.0.ln.scale", "layers.0.w_in", "layers.1.w_in", "layers.0.w_out",
                 "layers.1.w_out", "ln_f.scale"] {
      let count = ref.weights[name]!.count
      for _ in 0..<3 {
        let i = Int(g.nextUInt64() % UInt64(count))
        let saved = ref.weights[name]![i]
        ref.weights[name]![i] = saved + h
        let lp = loss(ref)
        ref.weights[name]![i] = saved - h
        let lm = loss(ref)
        ref.weights[name]![i] = saved
        let fd = (lp - lm) / (2 * h), an = out.gradients[name]![i]
        #expect(abs(fd - an) <= 1e-7 + 1e-5 * abs(an), "\(name)[\(i)]: finite difference \(fd), analytic \(an)")
      }
    }
  }

  @Test func fastModelWithDropoutMatchesReference() throws {
    let (loss, grads, m) = try dropoutStep(.none)
    let (em, rm) = masks(awkward, testRates, testKey)
    let (x, y) = ids(awkward)
    let out = ReferenceModel(m.parameters).run(tokens: x, targets: y, batch: awkward.batch, seqLen: awkward.seqLen,
                                               embeddingMask: em, residualMasks: rm)
    #expect(abs(Double(loss.total) - out.loss) <= 1e-5 * out.loss, "loss \(loss.total) vs reference \(out.loss)")
    for (name, r) in out.gradients {
      let e = relativeError(grads[name]!, r)
      #expect(e < 1e-4, "\(name): max error relative to max |grad| = \(e)")
    }
    // Not vacuous: without the masks the reference differs.
    let plain = ReferenceModel(m.parameters).run(tokens: x, targets: y, batch: awkward.batch,
                                                 seqLen: awkward.seqLen, gradients: false)
    #expect(abs(plain.loss - out.loss) > 1e-3, "dropout did not change the loss")
  }

  /// Central difference of the fast model's own loss along its gradient: (L(w + εu) − L(w − εu)) / 2ε
  /// = |g| for u = g/|g| (fp32, so a loose tolerance; the mask is a fixed function of the key).
  @Test func fastModelDirectionalFiniteDifference() throws {
    let (_, grads, m) = try dropoutStep(.full)
    let flat = m.gradients.flat.array.map(Double.init)
    let norm = flat.reduce(0) { $0 + $1 * $1 }.squareRoot()
    #expect(norm > 0)
    let w0 = m.parameters.flat.array
    let (x, y) = ids(awkward)
    func loss(_ sign: Double, _ eps: Double) throws -> Double {
      for i in 0..<w0.count { m.parameters.flat.pointer[i] = Float(Double(w0[i]) + sign * eps * flat[i] / norm) }
      return Double(try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey).total)
    }
    let eps = 1e-2
    let fd = (try loss(1, eps) - loss(-1, eps)) / (2 * eps)
    #expect(abs(fd - norm) <= 2e-3 * norm, "directional derivative \(fd) vs |g| \(norm)")
    _ = grads
  }

  @Test(arguments: [RematPolicy.selective, .full])
  func rematPoliciesBitIdenticalWithDropout(_ policy: RematPolicy) throws {
    // Under the kernel-settings lock: other suites change the ISA and thread count meanwhile
    // (reductions such as LayerNorm's dscale depend on the thread count).
    let ((l0, g0, _), (l1, g1, _)) = try withKernelLock { (try dropoutStep(.none), try dropoutStep(policy)) }
    #expect(l0 == l1, "\(policy): loss \(l0.total) vs \(l1.total)")
    #expect(g0 == g1, "\(policy): gradients differ")
  }

  @Test func sameKeySameMasksOtherKeyOtherMasks() throws {
    try withKernelLock {  // bit-for-bit comparisons: no other suite may change the ISA or threads meanwhile
      let (l0, g0, m) = try dropoutStep(.selective)
      let (x, y) = ids(awkward)
      m.gradients.zero()
      #expect(try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey) == l0)
      #expect(gradients(m) == g0)
      m.gradients.zero()
      let other = try m.forwardBackward(tokens: x, targets: y, dropoutKey: DropoutKey(seed: testKey.seed + 1, tokenOffset: 5))
      #expect(other != l0)
      let shifted = try m.forwardBackward(tokens: x, targets: y, dropoutKey: DropoutKey(seed: testKey.seed, tokenOffset: 6))
      #expect(shifted != l0)
    }
  }

  @Test func dropoutWithoutAKeyThrows() throws {
    let m = try Model(config: awkward, seed: 7, dropout: testRates)
    let n = awkward.batch * awkward.seqLen
    let x = randomIds(n, vocab: awkward.vocab, seed: 8), y = randomIds(n, vocab: awkward.vocab, seed: 9)
    #expect(throws: Model.InputError.self) { try m.forwardBackward(tokens: x, targets: y) }
    _ = try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey)
  }

  @Test func zeroRatesAreTheModelWithoutDropout() throws {
    try withKernelLock {  // bit-for-bit comparisons: no other suite may change the ISA or threads meanwhile
      let (l0, g0, _) = try step(awkward, .selective, threads: 2)
      // Rates 0 (any key) and rates set back to 0 give the old model bit for bit.
      let m = try Model(config: awkward, remat: .selective, seed: 7, dropout: Dropout(residual: 0, embedding: 0))
      let n = awkward.batch * awkward.seqLen
      let x = randomIds(n, vocab: awkward.vocab, seed: 8), y = randomIds(n, vocab: awkward.vocab, seed: 9)
      m.gradients.zero()
      #expect(try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey) == l0)
      #expect(gradients(m) == g0)
      try m.setDropout(testRates)
      m.gradients.zero()
      #expect(try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey) != l0)
      try m.setDropout(.off)
      m.gradients.zero()
      #expect(try m.forwardBackward(tokens: x, targets: y, dropoutKey: testKey) == l0)
      #expect(gradients(m) == g0)
    }
  }

  @Test func onlyEmbeddingOrOnlyResidualDropout() throws {
    for d in [Dropout(residual: 0.25), Dropout(embedding: 0.4)] {
      let (loss, grads, m) = try dropoutStep(.full, dropout: d)
      let (em, rm) = masks(awkward, d, testKey)
      let (x, y) = ids(awkward)
      let out = ReferenceModel(m.parameters).run(tokens: x, targets: y, batch: awkward.batch, seqLen: awkward.seqLen,
                                                 embeddingMask: em, residualMasks: rm)
      #expect(abs(Double(loss.total) - out.loss) <= 1e-5 * out.loss, "\(d): loss")
      for (name, r) in out.gradients { #expect(relativeError(grads[name]!, r) < 1e-4, "\(d) \(name)") }
    }
  }

  @Test func evaluationNeverDropsOut() throws {
    let (x, y) = ids(awkward)
    let plain = try Model(config: awkward, remat: .none, seed: 7)
    let dropped = try Model(config: awkward, remat: .none, seed: 7, dropout: Dropout(residual: 0.5, embedding: 0.5))
    let a = try plain.forward(tokens: x, targets: y)
    let b = try dropped.forward(tokens: x, targets: y)
    #expect(a == b)
    #expect(plain.lastLogits.array.map(\.bitPattern) == dropped.lastLogits.array.map(\.bitPattern))
    // A training step of the dropout model does see dropout.
    #expect(try dropped.forwardBackward(tokens: x, targets: y, dropoutKey: testKey) != a)
    #expect(try dropped.forward(tokens: x, targets: y) == a)
  }

  @Test func badDropoutRatesThrow() throws {
    for d in [Dropout(residual: 1), Dropout(residual: -0.1), Dropout(embedding: .nan), Dropout(embedding: 1.5)] {
      #expect(throws: Dropout.Invalid.self) { try Model(config: awkward, dropout: d) }
    }
    let m = try Model(config: awkward, seed: 1)
    #expect(throws: Dropout.Invalid.self) { try m.setDropout(Dropout(residual: 1)) }
    #expect(m.dropout == .off)
  }
}
