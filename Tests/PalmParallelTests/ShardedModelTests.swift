// ShardedModelTests: the 2-D sharded (pod × data × model) PaLM replica equals the single-device model
// + AdamW (+ global-norm clipping) over a few steps, on the in-process LocalCluster backend; layout
// round trips; mesh validation errors before any work. (MPI: palm-mpi-check --sharded, CollectiveTests.)

import Foundation
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain
import Testing

/// Runs `body` on every rank of a `shape` mesh over a LocalCluster (one OpenMP thread per rank).
private func onMesh<R: Sendable>(_ shape: MeshShape, _ body: @escaping @Sendable (Mesh) throws -> R) throws -> [R] {
  let cluster = try LocalCluster(size: shape.count, timeout: 120)
  return try cluster.run { comm in
    Threads.count = 1  // this rank thread's OpenMP team (a per-thread setting)
    return try body(try Mesh(shape: shape, world: comm))
  }
}

/// One case of the equivalence matrix: a mesh and the training recipe run on it.
struct RecipeCase: Sendable, CustomTestStringConvertible {
  let mesh: (Int, Int, Int)
  let remat: RematPolicy
  let adafactor: Bool
  let microBatches: Int
  let dropout: Float
  var testDescription: String {
    "mesh \(mesh) remat \(remat) \(adafactor ? "adafactor" : "adamw") k=\(microBatches) dropout \(dropout)"
  }
  var run: ShardedEquivalence {
    // AdamW at palm train's default peak (2e-3): at 1e-2 its first updates (≈ lr·sign(g)) turn the
    // rounding of near-zero gradient entries into 5e-5 relative parameter differences.
    ShardedEquivalence(steps: 3, lr: adafactor ? 1e-2 : 2e-3, remat: remat,
                       optimizer: adafactor ? .adafactor(AdafactorSettings()) : .adamW(AdamWSettings()),
                       microBatches: microBatches, dropout: dropout > 0 ? Dropout(residual: dropout, embedding: dropout) : nil)
  }
}

@Suite("One trainer on every mesh (pod × data × model)")
struct ShardedModelTests {
  static let meshes: [(Int, Int, Int)] = [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (2, 2, 2), (1, 1, 4)]

  /// A covering subset of meshes × remat × optimizer × micro-batches × dropout (each mesh sees
  /// both optimizers, every remat policy appears on a sharded mesh, micro-batches and dropout on
  /// every axis); bench/mesh_matrix.sh runs the whole product.
  static let cases: [RecipeCase] = [
    RecipeCase(mesh: (1, 1, 2), remat: .none, adafactor: false, microBatches: 1, dropout: 0),
    RecipeCase(mesh: (1, 1, 2), remat: .selective, adafactor: false, microBatches: 1, dropout: 0),
    RecipeCase(mesh: (1, 2, 1), remat: .none, adafactor: false, microBatches: 1, dropout: 0),
    RecipeCase(mesh: (1, 1, 2), remat: .selective, adafactor: true, microBatches: 2, dropout: 0.1),
    RecipeCase(mesh: (1, 2, 1), remat: .full, adafactor: false, microBatches: 2, dropout: 0),
    RecipeCase(mesh: (1, 2, 1), remat: .none, adafactor: true, microBatches: 1, dropout: 0.1),
    RecipeCase(mesh: (2, 1, 1), remat: .selective, adafactor: false, microBatches: 1, dropout: 0.1),
    RecipeCase(mesh: (2, 1, 1), remat: .full, adafactor: true, microBatches: 2, dropout: 0),
    RecipeCase(mesh: (2, 2, 2), remat: .full, adafactor: true, microBatches: 2, dropout: 0.1),
    RecipeCase(mesh: (2, 2, 2), remat: .none, adafactor: false, microBatches: 1, dropout: 0),
    RecipeCase(mesh: (1, 1, 4), remat: .selective, adafactor: true, microBatches: 1, dropout: 0),
    RecipeCase(mesh: (1, 1, 4), remat: .full, adafactor: false, microBatches: 2, dropout: 0.1),
  ]

  @Test("every mesh trains like (1,1,1): losses and parameters within 1e-5 relative", arguments: cases)
  func equivalence(_ c: RecipeCase) throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let run = c.run
    let shape = try MeshShape(pod: c.mesh.0, data: c.mesh.1, model: c.mesh.2)
    let reference = try run.run()
    let results = try onMesh(shape) { mesh in try run.run(mesh: mesh) }
    for (rank, r) in results.enumerated() {
      let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
      let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
      #expect(dl <= 1e-5, "\(c.testDescription) rank \(rank): loss differs by \(dl): \(r.losses) vs \(reference.losses)")
      #expect(dp.value <= 1e-5, "\(c.testDescription) rank \(rank): parameters differ by \(dp.value) in \(dp.tensor)")
      #expect(ShardedEquivalence.lossDifference(r.norms, reference.norms) <= 1e-4, "norms \(r.norms) vs \(reference.norms)")
      if c.mesh.0 > 1 { #expect(r.exchangeBytes.allSatisfy { $0 > 0 }) } else { #expect(r.exchangeBytes.allSatisfy { $0 == 0 }) }
      if rank == 0 { print("\(c.testDescription): rel loss diff \(dl), rel param diff \(dp.value) (\(dp.tensor))") }
    }
    // The reference really trains (a test that cannot fail is a defect): parameters moved.
    let initial = try ShardedEquivalence(steps: 0, optimizer: run.optimizer).run()
    #expect(ShardedEquivalence.parameterDifference(initial.parameters, reference.parameters).value > 1e-3)
  }

  /// The head in row chunks (5 rows at a time: fewer than a rank's 32 or 64 rows and not dividing
  /// them, so the last chunk is short) on meshes that split the batch, the heads and both: the
  /// same training as (1,1,1) with the head in one chunk.
  @Test("the head in row chunks trains like (1,1,1) in one chunk, on (1,1,1), model=2, data=2 and both",
        arguments: [(1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2)])
  func chunkedHead(pod: Int, data: Int, model: Int) throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let whole = ShardedEquivalence(steps: 3, remat: .selective)
    let reference = try whole.run()
    #expect(reference.headRows == reference.rows, "the reference runs the head in one chunk")
    var chunked = whole
    chunked.headRows = 5
    let run = chunked
    let results = try onMesh(try MeshShape(pod: pod, data: data, model: model)) { mesh in try run.run(mesh: mesh) }
    for (rank, r) in results.enumerated() {
      #expect(r.headRows == 5 && r.rows > 5 && r.rows % 5 != 0, "rank \(rank): \(r.headRows) of \(r.rows) rows at a time")
      let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
      let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
      #expect(dl <= 1e-5, "rank \(rank): loss differs by \(dl): \(r.losses) vs \(reference.losses)")
      #expect(dp.value <= 1e-5, "rank \(rank): parameters differ by \(dp.value) in \(dp.tensor)")
      // The optimizers' updates are blind to a gradient's scale (AdamW's m/√v, Adafactor's g/√v):
      // the gradient norms are what catch a wrong factor (lossDifference: ∞ when either is empty).
      #expect(ShardedEquivalence.lossDifference(r.norms, reference.norms) <= 1e-4, "norms \(r.norms) vs \(reference.norms)")
      if rank == 0 { print("chunked head on (\(pod),\(data),\(model)): rel loss diff \(dl), rel param diff \(dp.value) (\(dp.tensor))") }
    }
  }

  /// The whole matrix (opt-in: PALM_MESH_MATRIX=1; bench/mesh_matrix.sh): every mesh × remat ×
  /// optimizer × micro-batches 1, 2 × dropout 0, 0.1 against (1,1,1), one line per case.
  @Test("the whole matrix of meshes × recipes equals (1,1,1) (PALM_MESH_MATRIX=1)",
        .enabled(if: ProcessInfo.processInfo.environment["PALM_MESH_MATRIX"] != nil, "set PALM_MESH_MATRIX=1"))
  func fullMatrix() throws {
    var worst = (loss: 0.0, params: 0.0), count = 0
    for mesh in Self.meshes.dropFirst() {
      for remat in [RematPolicy.none, .selective, .full] {
        for adafactor in [false, true] {
          for k in [1, 2] {
            for p: Float in [0, 0.1] {
              let c = RecipeCase(mesh: mesh, remat: remat, adafactor: adafactor, microBatches: k, dropout: p)
              let shape = try MeshShape(pod: mesh.0, data: mesh.1, model: mesh.2)
              let reference = try c.run.run()
              let r = try onMesh(shape) { m in try c.run.run(mesh: m) }[0]
              let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
              let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters).value
              worst = (max(worst.loss, dl), max(worst.params, dp))
              count += 1
              print(String(format: "matrix %@: loss %.2e params %.2e %@", c.testDescription, dl, dp, dl <= 1e-5 && dp <= 1e-5 ? "ok" : "OVER"))
              #expect(dl <= 1e-5 && dp <= 1e-5, "\(c.testDescription): loss \(dl), params \(dp)")
            }
          }
        }
      }
    }
    print(String(format: "matrix: %d cases, worst relative loss difference %.2e, worst parameter difference %.2e", count, worst.loss, worst.params))
  }

  @Test("at (1,1,1) a step issues no collective and copies no weights")
  func singleDeviceHasNoCommunication() throws {
    let comm = CountingComm(SoloCommunicator())
    let mesh = try Mesh(shape: MeshShape(), world: comm)
    let run = ShardedEquivalence(steps: 2, remat: .full, optimizer: .adafactor(AdafactorSettings()), microBatches: 2)
    let trainer = try Trainer(options: run.options, dataset: try run.dataset, mesh: mesh)
    // The shard IS the parameters (no second copy), and the single-device mesh splits nothing.
    #expect(trainer.model.parameters.flat.pointer == trainer.model.shard.pointer)
    #expect(trainer.model.layout.shardFloats == Parameters.layout(for: run.config).floats)
    comm.calls.removeAll()
    try trainer.trainStep()
    try trainer.trainStep()
    #expect(comm.calls.isEmpty, "\(comm.calls)")
  }

  @Test("model=2: exactly one model-axis collective per layer in the forward and one in the backward")
  func modelCollectiveCount() throws {
    let run = ShardedEquivalence(steps: 1)
    let shape = try MeshShape(model: 2)
    let counts = try LocalCluster(size: 2).run { comm in
      Threads.count = 1
      let mesh = try Mesh(shape: shape, world: CountingComm(comm))
      let trainer = try Trainer(options: run.options, dataset: try run.dataset, mesh: mesh)
      let model = mesh.modelComm as! CountingComm
      model.calls.removeAll()
      try trainer.trainStep()
      return model.calls
    }
    // Per layer: one all-reduce in the forward and one in the backward; the only other call on
    // `model` in an AdamW update is the gradient-norm all-reduce.
    for calls in counts {
      #expect(calls == Array(repeating: "allReduce", count: 2 * run.config.layers + 1), "\(calls)")
    }
  }

  @Test("load then assemble gives back the single-device parameters, on every mesh shape", arguments: meshes)
  func roundTrip(pod: Int, data: Int, model: Int) throws {
    let run = ShardedEquivalence()
    let shape = try MeshShape(pod: pod, data: data, model: model)
    let full = try Parameters(config: run.config)
    full.initialize(seed: 11)
    let wanted = full.named.map { ($0.name, $0.tensor.array) }
    let assembled = try onMesh(shape) { mesh in
      let m = try Model(config: run.config, seed: 3, mesh: mesh)
      try m.loadFull { name, t in t.copy(from: full[name]!) }
      var out: [(String, [Float])] = []
      try m.forEachFullTensor { name, t in out.append((name, t.array)) }
      return out
    }
    for a in assembled {
      #expect(a.map(\.0) == wanted.map(\.0))
      for (x, y) in zip(a, wanted) { #expect(x.1 == y.1, "\(x.0)") }
    }
  }

  @Test("a run moves between mesh shapes through a checkpoint: 2 updates on (1,2,2), 1 more on (2,1,1)")
  func checkpointMovesBetweenMeshes() throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let run = ShardedEquivalence(steps: 3, optimizer: .adafactor(AdafactorSettings()))
    let reference = try run.run()
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-mesh-move-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var withDir = run.options
    withDir.checkpointDirectory = dir
    let o = withDir
    let data = try run.dataset
    _ = try onMesh(try MeshShape(pod: 1, data: 2, model: 2)) { mesh in
      let t = try Trainer(options: o, dataset: data, mesh: mesh)
      try t.trainStep(); try t.trainStep()
      return try t.saveCheckpoint()
    }
    let second = try onMesh(try MeshShape(pod: 2, data: 1, model: 1)) { mesh in
      let t = try Trainer(options: o, dataset: data, mesh: mesh)
      #expect(try t.resume() == 2)
      try t.trainStep()
      var params: [(name: String, values: [Float])] = []
      try t.model.forEachFullTensor { name, x in params.append((name, x.array)) }
      let last = try #require(t.history.last)
      return (try #require(last.loss), try #require(last.gradNorm), params)
    }
    for (loss, norm, p) in second {
      #expect(ShardedEquivalence.lossDifference([loss], [reference.losses[2]]) <= 1e-5, "loss \(loss) vs \(reference.losses[2])")
      #expect(ShardedEquivalence.lossDifference([norm], [reference.norms[2]]) <= 1e-4, "gradient norm \(norm) vs \(reference.norms[2])")
      let dp = ShardedEquivalence.parameterDifference(p, reference.parameters)
      #expect(dp.value <= 1e-5, "parameters differ by \(dp.value) in \(dp.tensor)")
    }
  }

  @Test("planned memory shards: a data=2 rank plans half the parameters, gradients and optimizer state of data=1")
  func memoryShards() throws {
    let one = try MeshMemory(config: .tiny, shape: MeshShape(), remat: .full)
    let two = try MeshMemory(config: .tiny, shape: MeshShape(data: 2), remat: .full)
    #expect(two.optimizerBytes * 2 == one.optimizerBytes)
    #expect(two.parameterBytes * 2 == one.parameterBytes && two.gradientBytes * 2 == one.gradientBytes)
    #expect(two.gatheredBytes > 0 && one.gatheredBytes == 0)
    // (1,1,1) plans exactly the single-device model and its activations.
    #expect(one.parameterBytes == Parameters.layout(for: .tiny).floats * 4)
    #expect(one.activationBytes == MemoryPlan(config: .tiny, policy: .full).totalBytes)
  }

  @Test("ShardedBench: pods=2 × 1 thread and pods=1 × 1 thread run and report step times and the exchange")
  func bench() throws {
    let c = ShardedEquivalence.debugConfig
    let two = try ShardedBench.runLocal(config: c, shape: try MeshShape(pod: 2), batch: 4, steps: 2, threadsPerRank: 1)
    let one = try ShardedBench.runLocal(config: c, shape: try MeshShape(), batch: 4, steps: 2, threadsPerRank: 1)
    #expect(two.stepSeconds.count == 2 && two.tokensPerSecond > 0 && one.tokensPerSecond > 0)
    #expect(two.exchange.allSatisfy { $0.bytes > 0 && $0.transferSeconds > 0 && (0...1).contains($0.hiddenFraction) })
    #expect(one.exchange.allSatisfy { $0.bytes == 0 })
    // Same seed and batches: the two meshes train the same model (losses equal up to rounding).
    #expect(two.losses.count == 2 && one.losses.count == 2, "\(two.losses) vs \(one.losses)")
    for (a, b) in zip(two.losses, one.losses) { #expect(a.isFinite && abs(a - b) <= 1e-5 * abs(b), "\(a) vs \(b)") }
  }

  /// The proof on the `tiny` preset itself: losses and every parameter tensor within 1e-5 relative
  /// (norm-wise) of the (1,1,1) run after 2 updates with full remat and Adafactor.
  @Test("tiny: every mesh equals (1,1,1), 2 updates, remat full, Adafactor", arguments: [(2, 2, 2), (1, 1, 4)])
  func tinyEquivalence(pod: Int, data: Int, model: Int) throws {
    let run = ShardedEquivalence(config: .tiny, steps: 2, lr: 1e-2, remat: .full, optimizer: .adafactor(AdafactorSettings()))
    let shape = try MeshShape(pod: pod, data: data, model: model)
    let reference = try run.run()
    let r = try onMesh(shape) { mesh in try run.run(mesh: mesh) }[0]
    let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
    let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
    print("tiny mesh \(shape): losses \(r.losses) vs \(reference.losses); rel loss diff \(dl), param diff \(dp.value) (\(dp.tensor))")
    #expect(dl <= 1e-5)
    #expect(dp.value <= 1e-5)
    // Adafactor's update is blind to a gradient's scale: the gradient norms catch a wrong factor.
    #expect(ShardedEquivalence.lossDifference(r.norms, reference.norms) <= 1e-4,
            "norms \(r.norms) vs \(reference.norms)")
  }

  /// bf16 lands once, on every mesh. Over data and pods every GEMM sees the same rounded inputs as
  /// on (1,1,1): equal to 1e-5 (measured 8e-9). Over model the forward is equal to fp32 accumulation
  /// order, but the backward rounds each shard's PARTIAL dK/dV (its heads' share, summed only by the
  /// all-reduce after the GEMMs) to bf16, where (1,1,1) rounds the sum: a different, equally accurate
  /// rounding, so the gradients differ at bf16 level (measured on the debug config: norm 2e-4,
  /// parameters 1e-3 after one AdamW update, half of bf16 against fp32; with attention's products
  /// in bf16 too, native on Zen 4: loss 2.6e-6, norm 1.4e-4, parameters 1.1e-3 against 1.9e-3 for
  /// bf16 against fp32: attention rounds each head's operands alike on every shard, the tiles
  /// only change the order of the fp32 sums). docs/ARCHITECTURE.md, "Mixed precision".
  @Test("bf16: every mesh trains like (1,1,1) in bf16", arguments: [(1, 1, 2), (1, 2, 1), (2, 1, 1), (2, 2, 2)])
  func bf16Equivalence(pod: Int, data: Int, model: Int) throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let run = ShardedEquivalence(steps: 1, remat: .selective, optimizer: .adamW(AdamWSettings()), precision: .bf16)
    let reference = try run.run()
    let shape = try MeshShape(pod: pod, data: data, model: model)
    let r = try onMesh(shape) { mesh in try run.run(mesh: mesh) }[0]
    let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
    let dn = ShardedEquivalence.lossDifference(r.norms, reference.norms)
    let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
    var fp32Run = run
    fp32Run.precision = .fp32
    let fp32 = try fp32Run.run()
    let d32 = ShardedEquivalence.parameterDifference(fp32.parameters, reference.parameters)
    let dl32 = ShardedEquivalence.lossDifference(fp32.losses, reference.losses)
    print("bf16 mesh \(shape): rel loss diff \(dl), norm diff \(dn), param diff \(dp.value) (\(dp.tensor)); bf16 vs fp32 at (1,1,1): loss \(dl32), parameters \(d32.value)")
    if model == 1 {
      #expect(dl <= 1e-6, "losses \(r.losses) vs \(reference.losses)")
      #expect(dn <= 1e-6 && dp.value <= 1e-5, "norm differs by \(dn), parameters by \(dp.value) in \(dp.tensor)")
      #expect(d32.value > 1e3 * dp.value, "bf16 and fp32 runs differ by \(d32.value): the bf16 GEMMs did not run")
    } else {
      // The model axis sums W_out's partial products after the GEMMs, so the next layer's inputs
      // differ from (1,1,1)'s at fp32 level, and an element near a bf16 rounding midpoint can round
      // the other way. With native vdpbf16ps (Zen 5) that moved the first loss by 3.0e-6 relative
      // (emulated, Zen 3: <= 1e-6), against 6.6e-5 between bf16 and fp32: bound it by a tenth of that.
      #expect(dl <= 0.1 * dl32, "losses \(r.losses) vs \(reference.losses) (bf16 against fp32: \(dl32))")
      #expect(dn <= 1e-3 && dp.value < 0.75 * d32.value,
              "norm differs by \(dn), parameters by \(dp.value) in \(dp.tensor) (bf16 against fp32: \(d32.value))")
    }
  }

  @Test("a mesh that does not divide heads, d_ff, d_model or the batch fails before any work",
        arguments: [((1, 1, 3), "heads"), ((1, 3, 1), "batch"), ((3, 1, 1), "batch")])
  func badMesh(axes: (Int, Int, Int), fragment: String) throws {
    let run = ShardedEquivalence()
    let shape = try MeshShape(pod: axes.0, data: axes.1, model: axes.2)
    #expect(throws: TrainError.self) { try Trainer.validate(options: run.options, shape: shape) }
    let started = Date()
    let outcomes = try LocalCluster(size: shape.count, timeout: 30).runCollectingResults { comm in
      _ = try Model(config: run.config, mesh: try Mesh(shape: shape, world: comm))
    }
    #expect(Date().timeIntervalSince(started) < 10)
    for outcome in outcomes {
      guard case .failure(let error) = outcome else { Issue.record("mesh \(shape) was accepted"); continue }
      #expect("\(error)".contains(fragment), "\(error)")
    }
  }

  @Test("d_ff not divisible by model is refused with a clear error")
  func otherRefusals() throws {
    var c = ShardedEquivalence.debugConfig
    c.heads = 2; c.dModel = 64; c.dFF = 129
    do {
      _ = try ShardedLayout(config: c, shape: try MeshShape(model: 2))
      Issue.record("accepted")
    } catch {
      #expect(error is MeshError && "\(error)".contains("d_ff"), "\(error)")
    }
  }
}

/// A communicator that records the collectives called on it (and on the communicators it splits).
private final class CountingComm: Communicator, @unchecked Sendable {
  let inner: any Communicator
  var calls: [String] = []
  init(_ inner: any Communicator) { self.inner = inner }
  var rank: Int { inner.rank }
  var size: Int { inner.size }
  var name: String { inner.name }
  func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
    calls.append("allReduce"); try inner.allReduce(buffer)
  }
  func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    calls.append("allGather"); try inner.allGather(send, into: receive)
  }
  func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    calls.append("reduceScatter"); try inner.reduceScatter(send, into: receive)
  }
  func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
    calls.append("broadcast"); try inner.broadcast(buffer, root: root)
  }
  func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws {
    calls.append("send"); try inner.send(buffer, to: destination, tag: tag)
  }
  func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws {
    calls.append("receive"); try inner.receive(into: buffer, from: source, tag: tag)
  }
  func barrier() throws { calls.append("barrier"); try inner.barrier() }
  func iAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any CommRequest {
    calls.append("iAllReduce"); return try inner.iAllReduce(buffer)
  }
  func split(color: Int, key: Int) throws -> any Communicator {
    CountingComm(try inner.split(color: color, key: key))
  }
}
