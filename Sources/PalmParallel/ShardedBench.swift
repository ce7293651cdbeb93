// ShardedBench: timed training updates of the one Trainer on a mesh, for `palm bench step --mesh …`
// (issue #5 item 7: two pods of one thread each against one pod of two threads, same global batch;
// the exchange's cost is the difference). Runs on any communicator (MPI under mpirun) or in-process
// on a LocalCluster. Reports min/median step time, tokens/s and the pod exchange statistics.

import CKernels
import PalmModel
import PalmTensor
import PalmTrain

/// Step timings of the sharded trainer on one mesh.
public struct ShardedBenchResult: Sendable, Equatable {
  public let shape: MeshShape
  /// OpenMP threads per rank.
  public let threadsPerRank: Int
  public let globalBatch: Int, seqLen: Int
  /// Timed steps (after warm-up).
  public let steps: Int
  /// Step times on rank 0, seconds (each step is collective, so the ranks agree closely).
  public let stepSeconds: [Double]
  public var minSeconds: Double { stepSeconds.min() ?? 0 }
  public var medianSeconds: Double { median(stepSeconds) ?? 0 }
  /// Global tokens per second at the median step time.
  public var tokensPerSecond: Double { medianSeconds > 0 ? Double(globalBatch * seqLen) / medianSeconds : 0 }
  /// Pod exchange of each timed step as seen by THIS rank (bytes, transfer, wait, hidden fraction).
  public let exchange: [ExchangeStats]
  /// Losses of the timed steps (a sanity check that training runs).
  public let losses: [Float]
}

public enum ShardedBench {
  /// Runs `warmup + steps` training updates (the one Trainer: forward, backward, exchange, clipping
  /// and the optimizer update; lr 1e-4 on a random byte text from `seed`) of `config` on `shape` over
  /// `world` (collective: every rank calls it). Sets this thread's OpenMP thread count to
  /// `threadsPerRank`. Step times are rank 0's on every rank; `exchange` is this rank's.
  public static func run(config: PalmConfig, shape: MeshShape, world: any Communicator, batch: Int,
                         steps: Int, warmup: Int = 1, threadsPerRank: Int, seed: UInt64 = 1,
                         remat: RematPolicy = .none, optimizer: OptimizerSettings = .adamW(AdamWSettings()),
                         precision: GEMMPrecision = .fp32) throws -> ShardedBenchResult {
    guard steps >= 1, warmup >= 0 else { throw MeshError("bench needs steps ≥ 1 and warmup ≥ 0 (got \(steps), \(warmup))") }
    var c = config
    c.batch = batch
    _ = try ShardedLayout(config: c, shape: shape)  // errors before any work
    Threads.count = threadsPerRank
    let mesh = try Mesh(shape: shape, world: world)
    let run = ShardedEquivalence(config: c, steps: warmup + steps, seed: seed, lr: 1e-4, remat: remat, optimizer: optimizer,
                                 precision: precision)
    var o = run.options
    o.maxSteps = nil
    o.timeBudget = 1e9
    let trainer = try Trainer(options: o, dataset: try run.dataset, mesh: mesh)
    var times: [Double] = [], stats: [ExchangeStats] = [], losses: [Float] = []
    for k in 0..<(warmup + steps) {
      try world.barrier()
      let t0 = pk_now_seconds()
      try trainer.trainStep()
      let dt = pk_now_seconds() - t0
      if k >= warmup {
        times.append(dt)
        stats.append(trainer.model.lastExchange)
        losses.append(Float(trainer.history.last?.loss ?? .nan))
      }
    }
    // Rank 0's timings everywhere (the step is collective).
    var shared = times.map(Float.init)
    try world.broadcast(&shared, root: 0)
    return ShardedBenchResult(shape: shape, threadsPerRank: threadsPerRank, globalBatch: batch, seqLen: c.seqLen,
                              steps: steps, stepSeconds: shared.map(Double.init), exchange: stats, losses: losses)
  }

  /// `run` in-process: a LocalCluster of `shape.count` threads, each a rank with `threadsPerRank`
  /// OpenMP threads. The bench `pods=2 × 1 thread` vs `pods=1 × 2 threads` is
  /// `runLocal(shape: pod=2, threadsPerRank: 1)` vs `runLocal(shape: pod=1, threadsPerRank: 2)`.
  public static func runLocal(config: PalmConfig, shape: MeshShape, batch: Int, steps: Int, warmup: Int = 1,
                              threadsPerRank: Int, seed: UInt64 = 1, timeout: Double = 600, remat: RematPolicy = .none,
                              optimizer: OptimizerSettings = .adamW(AdamWSettings()),
                              precision: GEMMPrecision = .fp32) throws -> ShardedBenchResult {
    var c = config
    c.batch = batch
    _ = try ShardedLayout(config: c, shape: shape)  // errors before starting threads
    let cluster = try LocalCluster(size: shape.count, timeout: timeout)
    return try cluster.run { comm in
      try run(config: config, shape: shape, world: comm, batch: batch, steps: steps, warmup: warmup,
              threadsPerRank: threadsPerRank, seed: seed, remat: remat, optimizer: optimizer, precision: precision)
    }[0]
  }
}
