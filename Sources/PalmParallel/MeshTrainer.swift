// MeshTrainer: the training loop of `palm train --mesh` (issue #5 item 4). A ShardedTrainer on a
// pod × data × model mesh, fed exactly like the single-device Trainer (PalmTrain/Trainer.swift): the
// same counter-based sampler over the GLOBAL batch, the same learning-rate driver and clipping, the
// same checkpoint store. Checkpoints are GATHERED to the single-device layout (model.safetensors,
// optimizer.safetensors with "m.<name>"/"v.<name>", manifest.json) and written by rank 0 alone, so
// `palm sample`, a single-device `--resume` and a mesh of any other shape read them.
//
// Differences from the single-device Trainer (stated in `palm train --help`):
// - AdamW only, no micro-batches (the global batch is config.batch, split over pod·data), no
//   rematerialization (the sharded step keeps its activations);
// - no loss-spike rollback: the sharded step applies its update before the loss is known on every
//   rank, so a non-finite loss or gradient norm stops the run with an error (checkpoints on disk
//   are untouched and `--resume` continues from the last one);
// - rank 0 decides: each update, rank 0 broadcasts "go on" and the learning rate, because the time
//   budget and the time-cosine schedule read a clock that differs between ranks;
// - every rank reads the data file and, on --resume, the checkpoint directory, so both must be on a
//   filesystem every rank sees; only rank 0 writes; validation runs on rank 0 (gathered parameters).

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// Trains one rank of a mesh; every rank of the world constructs one and calls the same methods.
///
/// ```swift
/// let cluster = try LocalCluster(size: 4)
/// _ = try cluster.run { comm in
///   let t = try MeshTrainer(options: opts, dataset: data, world: comm, shape: MeshShape(parsing: "data=2,model=2"))
///   return try t.run()
/// }
/// ```
public final class MeshTrainer: @unchecked Sendable {
  public let options: TrainOptions
  public let mesh: Mesh
  public let sharded: ShardedTrainer
  public let dataset: TokenDataset
  public private(set) var sampler: BatchSampler
  /// The checkpoint directory (nil without `options.checkpointDirectory`); rank 0 writes it.
  public let store: CheckpointStore?
  /// Updates applied.
  public private(set) var step = 0
  public private(set) var tokens = 0
  public private(set) var lastValidationLoss: Double?
  /// Every record this rank emitted, in order.
  public private(set) var history: [MetricsRecord] = []
  /// Called on every rank with each record (the losses are global; step time and exchange are this rank's).
  public var onRecord: ((MetricsRecord) -> Void)?
  public let modelFLOPsPerToken: Double

  private var recentLosses: [Double] = []
  private var secondsBefore = 0.0
  private var startTime = pk_now_seconds()
  private var lastCheckpointStep: Int?
  private let evalWindows: Int
  private let evalModel: Model?      // rank 0 only
  private let evalBatches: [Batch]   // rank 0 only

  public var rank: Int { mesh.world.rank }
  /// Seconds since the run started, including time before a resume.
  public var seconds: Double { secondsBefore + (pk_now_seconds() - startTime) }

  /// Checks options and mesh together, with no communication and no allocation: the CLI calls it
  /// before MPI starts. Throws `TrainError.badOptions` naming the first problem.
  public static func validate(options: TrainOptions, shape: MeshShape) throws {
    try options.validate()
    if options.microBatches != 1 {
      throw TrainError.badOptions("--micro-batches is not available with --mesh (the global batch --batch is split over pod×data instead)")
    }
    if case .adafactor = options.optimizer {
      throw TrainError.badOptions("--optimizer adafactor is not available with --mesh: the sharded trainer supports AdamW only (Adafactor's RMS over a whole tensor would need a cross-shard reduction)")
    }
    do { try shape.validate(config: options.config, batch: options.config.batch) } catch let e as MeshError {
      throw TrainError.badOptions(e.message)
    }
  }

  /// Collective: builds the mesh (axis communicators), this rank's shards of the parameters
  /// initialized from `options.seed` exactly as the single-device Trainer initializes them, and
  /// the sampler. Throws before any communication when options or mesh are unusable.
  public init(options: TrainOptions, dataset: TokenDataset, world: any Communicator, shape: MeshShape) throws {
    try MeshTrainer.validate(options: options, shape: shape)
    let c = options.config
    guard dataset.sequenceLength == c.seqLen else {
      throw TrainError.data("dataset windows are \(dataset.sequenceLength) tokens, the model's sequence is \(c.seqLen)")
    }
    self.options = options
    self.dataset = dataset
    mesh = try Mesh(shape: shape, world: world)
    sharded = try ShardedTrainer(config: c, mesh: mesh, batch: c.batch, optimizer: options.optimizer,
                                 clipNorm: options.clipNorm > 0 ? options.clipNorm : nil,
                                 dropout: options.dropout ?? .off)
    let initial = try Parameters(config: c)
    initial.initialize(seed: options.seed)
    try sharded.load(from: initial)
    sampler = BatchSampler(dataset: dataset, batchSize: c.batch, seed: options.seed)
    store = options.checkpointDirectory.map { CheckpointStore(directory: $0, keepLast: options.keepLast) }
    evalWindows = min(options.evalWindows, dataset.validationWindowCount)
    if world.rank == 0 && evalWindows > 0 {
      let eb = min(c.batch, evalWindows)
      evalModel = try Model(config: c, remat: .full, batch: eb, seed: options.seed)
      evalBatches = BatchSampler(dataset: dataset, batchSize: eb, seed: 0).spreadValidationBatches(windows: evalWindows / eb * eb)
    } else {
      evalModel = nil
      evalBatches = []
    }
    modelFLOPsPerToken = FLOPs.modelPerToken(c)
  }

  // MARK: - Checkpoints

  /// Continues from the newest complete checkpoint of the checkpoint directory, which may come from
  /// a single-device run or a mesh of any shape (parameters, AdamW moments, step, data position).
  /// Collective. - Returns: the step resumed from, or nil when the directory holds no checkpoint.
  @discardableResult
  public func resume() throws -> Int? {
    guard let store else { throw TrainError.checkpoint("--resume needs --checkpoint-dir") }
    let quiet = CheckpointStore(directory: store.directory, keepLast: store.keepLast, warn: { _ in })
    var found: LoadedCheckpoint?
    var problem: String?
    if let newest = store.stepDirectories().first {
      found = quiet.latest()
      if found == nil {
        var why = "unreadable"
        do { _ = try CheckpointStore.load(path: newest.path) } catch { why = "\(error)" }
        problem = "cannot resume: no usable checkpoint in \(store.directory) (newest: \(why))"
      }
    }
    // Every rank reads the directory itself; they must agree before any of them loads.
    let mine: Float = found.map { Float($0.manifest.step) } ?? (problem == nil ? -1 : -2)
    let all = try mesh.world.allGather([mine])
    guard all.allSatisfy({ $0 == all[0] }) else {
      throw TrainError.checkpoint("ranks see different checkpoints in \(store.directory) (steps \(all.map { Int($0) })): "
                                  + "--resume needs the checkpoint directory on a filesystem every rank sees")
    }
    if let problem { throw TrainError.checkpoint(problem) }
    guard let ck = found else { return nil }
    let c = options.config
    let full = try Parameters(config: c)
    let single = try Optimizer(options.optimizer, parameters: full.entries.map { ($0.name, $0.shape) })
    let s = try ck.restoreForTraining(config: c, parameters: full.named, optimizer: single)
    try sharded.load(from: full, optimizer: single)
    let m = CheckpointMetrics(decoding: ck.manifest.metrics)
    sampler.state = s
    step = ck.manifest.step
    tokens = m.tokens
    recentLosses = m.recentLosses
    lastCheckpointStep = step
    secondsBefore = m.seconds
    startTime = pk_now_seconds()
    lastValidationLoss = m.validationLoss
    return step
  }

  /// Gathers parameters and AdamW moments (collective) and has rank 0 write them in the
  /// single-device layout. Every rank learns whether the write succeeded and throws if not.
  /// - Returns: the step directory, or nil without a checkpoint directory.
  @discardableResult
  public func saveCheckpoint() throws -> String? {
    guard let store else { return nil }
    let full = try sharded.gatherParameters()
    let opt = try sharded.gatherOptimizer()
    var failure: String?
    if rank == 0 {
      // The same metrics as Trainer.saveCheckpoint (one encoder), so a single-device resume reads them.
      let m = CheckpointMetrics(tokens: tokens, seconds: seconds, rollbacks: 0, recentLosses: recentLosses,
                                validationLoss: lastValidationLoss).encoded
      var schedule: LearningRateSchedule?
      if case .steps(let s) = options.learningRate { schedule = s }
      do {
        try store.save(CheckpointContents(
          step: step, config: full.config, parameters: full.named, optimizer: opt, schedule: schedule,
          sampler: sampler.state, rngSeed: options.seed, metrics: m))
      } catch {
        failure = "\(error)"
      }
    }
    var ok: [Float] = [failure == nil ? 1 : 0]
    try mesh.world.broadcast(&ok, root: 0)
    if let failure { throw TrainError.checkpoint(failure) }
    if ok[0] == 0 { throw TrainError.checkpoint("rank 0 could not write the checkpoint of step \(step)") }
    lastCheckpointStep = step
    return "\(store.directory)/\(CheckpointStore.directoryName(step: step))"
  }

  // MARK: - Evaluation

  /// Mean validation cross-entropy over the fixed validation windows, computed on rank 0 from the
  /// gathered parameters and broadcast (collective); nil without a validation part.
  public func evaluate() throws -> Double? {
    guard evalWindows > 0 else { return nil }
    // Rank 0 gathers straight into the evaluation model's weights (no second set, no copy).
    if let evalModel { try sharded.gatherParameters(into: evalModel.parameters) } else { _ = try sharded.gatherParameters() }
    var value = 0.0
    if let evalModel, !evalBatches.isEmpty {
      var sum = 0.0
      for b in evalBatches { sum += Double(try evalModel.forward(tokens: b.inputs, targets: b.targets).crossEntropy) }
      value = sum / Double(evalBatches.count)
    }
    // Rank 0's value on every rank (as hi/lo floats, so no rank rounds it differently).
    var parts = [value]
    try mesh.world.broadcast(&parts, root: 0)
    return parts[0]
  }

  // MARK: - Steps

  /// Runs updates until `maxSteps` or the time budget (rank 0's clock decides), evaluates,
  /// checkpoints, and returns the "end" record. Collective.
  public func run() throws -> MetricsRecord {
    let runStart = pk_now_seconds()
    var lastStepSeconds = 0.0
    while true {
      var plan: [Float] = [0, 0]  // [go on, learning rate], decided by rank 0
      if rank == 0 {
        let now = pk_now_seconds() - runStart
        var go = true
        if let n = options.maxSteps, step >= n { go = false }
        if let b = options.timeBudget, now + lastStepSeconds > b { go = false }
        plan = [go ? 1 : 0, options.learningRate.lr(step: sharded.optimizer.step + 1, seconds: now)]
      }
      try mesh.world.broadcast(&plan, root: 0)
      if plan[0] == 0 { break }
      let t0 = pk_now_seconds()
      try trainStep(lr: plan[1])
      lastStepSeconds = pk_now_seconds() - t0
    }
    if history.last?.valLoss == nil || history.last?.type != "step", let v = try evaluate() {
      lastValidationLoss = v
    }
    var end = MetricsRecord(type: "end", step: step, tokens: tokens, seconds: seconds, rollbacks: 0)
    end.valLoss = lastValidationLoss
    end.valBitsPerByte = lastValidationLoss.map { $0 / M_LN2 }
    end.loss = recentLosses.last
    if store != nil {
      if lastCheckpointStep != step { try saveCheckpoint() }
      end.checkpoint = "\(store!.directory)/\(CheckpointStore.directoryName(step: step))"
    }
    emit(end)
    return end
  }

  /// One update at learning rate `lr` (every rank passes the same value). Collective.
  public func trainStep(lr: Float) throws {
    let c = options.config
    let position = sampler.state.step
    let batch = sampler.next()[0]
    let t0 = pk_now_seconds()
    let r = try sharded.step(tokens: batch.inputs, targets: batch.targets, lr: lr)
    let dt = pk_now_seconds() - t0
    let loss = Double(r.loss.total)
    guard loss.isFinite && r.gradientNorm.isFinite else {
      throw TrainError.diverged("update \(step + 1): loss \(loss), gradient norm \(r.gradientNorm); loss-spike rollback is not available with --mesh (checkpoints are untouched: --resume continues from the last one)")
    }
    step += 1
    tokens += c.batch * c.seqLen
    recentLosses.append(loss)
    if recentLosses.count > options.spikes.window { recentLosses.removeFirst(recentLosses.count - options.spikes.window) }
    var rec = MetricsRecord(type: "step", step: step, tokens: tokens, seconds: 0, rollbacks: 0)
    rec.loss = loss
    rec.crossEntropy = Double(r.loss.crossEntropy)
    rec.lr = Double(lr)
    rec.gradNorm = r.gradientNorm
    rec.stepSeconds = dt
    let tps = Double(c.batch * c.seqLen) / dt
    rec.tokensPerS = tps
    if let peak = options.peakFLOPS, peak > 0 { rec.mfu = modelFLOPsPerToken * tps / peak }
    rec.dataPosition = position
    rec.exchangeBytes = r.exchange.bytes
    rec.exchangeSeconds = r.exchange.transferSeconds
    rec.exchangeHidden = r.exchange.hiddenFraction
    if options.evalEvery > 0 && step % options.evalEvery == 0, let v = try evaluate() {
      lastValidationLoss = v
      rec.valLoss = v
      rec.valBitsPerByte = v / M_LN2
    }
    if options.checkpointEvery > 0 && step % options.checkpointEvery == 0 {
      rec.checkpoint = try saveCheckpoint()
    }
    rec.seconds = seconds
    emit(rec)
  }

  private func emit(_ r: MetricsRecord) {
    history.append(r)
    onRecord?(r)
  }
}
