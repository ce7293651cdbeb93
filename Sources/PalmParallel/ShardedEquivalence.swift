// ShardedEquivalence: the same few training updates of the ONE Trainer on the mesh (1,1,1) and on
// any other mesh, for the proof that sharding changes nothing but rounding. Used by
// Tests/PalmParallelTests/ShardedModelTests.swift (LocalCluster) and by palm-mpi-check --sharded
// (Tests/MPICheck/ShardedCheck.swift, under mpirun).

import PalmModel
import PalmTensor
import PalmTrain

/// A reproducible small training run on an in-memory byte dataset, and the comparison of runs.
public struct ShardedEquivalence: Sendable {
  public var config: PalmConfig
  public var steps: Int
  public var seed: UInt64
  public var lr: Float
  public var remat: RematPolicy
  public var optimizer: OptimizerSettings
  public var microBatches: Int
  public var dropout: Dropout?
  public var precision: GEMMPrecision
  /// The head's rows per chunk on every rank (TrainOptions.headRows; nil: the plan's default, one
  /// chunk at these sizes).
  public var headRows: Int?

  /// A debug-speed config: d 64, 2 layers, 4 heads × 16, d_ff 128, bytes (vocab 256), T 16, global batch 4.
  public static let debugConfig = PalmConfig(name: "debug", dModel: 64, layers: 2, heads: 4, headDim: 16,
                                             dFF: 128, vocab: 256, seqLen: 16, batch: 4)

  public init(config: PalmConfig = ShardedEquivalence.debugConfig, steps: Int = 3, seed: UInt64 = 7,
              lr: Float = 2e-3, remat: RematPolicy = .none, optimizer: OptimizerSettings = .adamW(AdamWSettings()),
              microBatches: Int = 1, dropout: Dropout? = nil, precision: GEMMPrecision = .fp32,
              headRows: Int? = nil) {
    self.config = config
    self.steps = steps
    self.seed = seed
    self.lr = lr
    self.remat = remat
    self.optimizer = optimizer
    self.microBatches = microBatches
    self.dropout = dropout
    self.precision = precision
    self.headRows = headRows
  }

  /// What one rank's run returns: per-update losses and gradient norms (global), this rank's pod
  /// exchange, and the final parameters in the single-device layout (assembled on every rank).
  public struct Outcome: Sendable {
    public let losses: [Double]
    public let norms: [Double]
    public let exchangeBytes: [Int]
    public let exchangeHidden: [Double]
    public let parameters: [(name: String, values: [Float])]
    /// This rank's head: rows per chunk, and rows in all (its share of the batch × T).
    public let headRows: Int, rows: Int
  }

  /// The options of the run (no evaluation, no checkpoints: the updates only).
  public var options: TrainOptions {
    var o = TrainOptions(config: config)
    o.remat = remat
    o.optimizer = optimizer
    o.microBatches = microBatches
    o.maxSteps = steps
    o.seed = seed
    o.learningRate = .steps(.constant(lr))
    o.dropout = dropout
    o.precision = precision
    o.headRows = headRows
    o.evalEvery = 0
    o.checkpointEvery = 0
    o.spikes.enabled = false
    return o
  }

  /// A deterministic byte text of ~16 KiB (the same on every rank), every byte below the vocabulary.
  public var dataset: TokenDataset {
    get throws {
      var state = seed &+ 0x9E37_79B9_7F4A_7C15
      let v = UInt64(min(max(config.vocab, 1), 256))
      let bytes = (0..<16_384).map { _ -> UInt8 in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: (state >> 32) % v)
      }
      return try TokenDataset(bytes: bytes, sequenceLength: config.seqLen)
    }
  }

  /// `steps` updates of the one Trainer on `mesh` (collective: every rank calls it).
  public func run(mesh: Mesh = .single()) throws -> Outcome {
    let trainer = try Trainer(options: options, dataset: try dataset, mesh: mesh)
    for _ in 0..<steps { try trainer.trainStep() }
    let records = trainer.history.filter { $0.type == "step" }
    var parameters: [(name: String, values: [Float])] = []
    try trainer.model.forEachFullTensor { name, t in parameters.append((name, t.array)) }
    return Outcome(losses: records.compactMap(\.loss), norms: records.compactMap(\.gradNorm),
                   exchangeBytes: records.map { $0.exchangeBytes ?? 0 },
                   exchangeHidden: records.map { $0.exchangeHidden ?? 1 }, parameters: parameters,
                   headRows: trainer.model.plan.headRows, rows: trainer.model.batch * trainer.model.seqLen)
  }

  /// Largest relative loss difference |a − b| / |b| over updates.
  public static func lossDifference(_ a: [Double], _ b: [Double]) -> Double {
    guard a.count == b.count, !a.isEmpty else { return .infinity }
    return zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-30) }.max() ?? 0
  }

  /// Largest per-tensor relative difference ‖a − b‖₂ / ‖b‖₂, and the tensor where it occurs.
  public static func parameterDifference(_ a: [(name: String, values: [Float])],
                                         _ b: [(name: String, values: [Float])]) -> (value: Double, tensor: String) {
    guard a.count == b.count else { return (.infinity, "tensor count") }
    var worst = (0.0, "")
    for (ta, tb) in zip(a, b) {
      guard ta.name == tb.name, ta.values.count == tb.values.count else { return (.infinity, ta.name) }
      var diff = 0.0, scale = 0.0
      for (x, y) in zip(ta.values, tb.values) {
        let e = Double(x) - Double(y)
        diff += e * e
        scale += Double(y) * Double(y)
      }
      let rel = scale > 0 ? (diff / scale).squareRoot() : diff.squareRoot()
      if rel > worst.0 || rel.isNaN { worst = (rel, ta.name) }
    }
    return worst
  }
}
