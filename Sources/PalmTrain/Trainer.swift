// Trainer: the training loop. Data -> Model.forwardBackward over micro-batches -> global-norm clip ->
// optimizer update at the scheduled rate; validation every N updates on fixed windows; checkpoints
// (parameters, optimizer moments and step, data position, loss history) every N updates and at the
// end; PaLM's loss-spike remedy (§5.1; rule in TrainConfig.swift SpikePolicy); metrics records
// (Metrics.swift, docs/FORMATS.md). Bit-exact on resume at a fixed thread count and ISA: every
// input of an update (parameters, moments, optimizer step, sampler position) is in the checkpoint.
// Optional dropout (off by default, as PaLM trained): the masks of update k, micro-batch j come from
// DropoutKey.training(runSeed: seed, update: k, microBatch: j, ...) (PalmModel/Dropout.swift), so
// they depend only on checkpointed state; the rates are recorded in the manifest; evaluation never
// drops out.
// Reference: llm.c train_gpt2.c main loop; nanoGPT train.py (accumulation, eval, checkpoints).

import CKernels
import Foundation
import PalmModel
import PalmTensor

/// Runs training updates on a model over a token dataset.
///
/// ```swift
/// var opts = TrainOptions(config: .tiny); opts.maxSteps = 100
/// let data = try TokenDataset(path: "tinyshakespeare.txt", sequenceLength: opts.config.seqLen)
/// let trainer = try Trainer(options: opts, dataset: data)
/// trainer.onRecord = { print($0.jsonLine()) }
/// let end = try trainer.run()
/// ```
public final class Trainer: @unchecked Sendable {
  public let options: TrainOptions
  public let model: Model
  /// The dropout rates of the updates: `options.dropout`, or after `resume()` the checkpoint's.
  public var dropout: Dropout { model.dropout }
  public let dataset: TokenDataset
  public let optimizer: Optimizer
  /// Draws microBatches · batch rows per update (split into micro-batches in order).
  public private(set) var sampler: BatchSampler
  /// Where checkpoints go: the configured directory, or a private temporary one (for spike rollback),
  /// removed when the trainer is released.
  public let store: CheckpointStore
  private let privateStore: Bool
  /// Updates applied.
  public private(set) var step = 0
  public private(set) var tokens = 0
  public private(set) var rollbacks = 0
  /// Accepted losses of the most recent updates (the spike rule's window).
  public private(set) var recentLosses: [Double] = []
  /// Every record emitted by this process, in order.
  public private(set) var history: [MetricsRecord] = []
  public private(set) var lastValidationLoss: Double?
  /// Called with each record as it is made (progress line, metrics log).
  public var onRecord: ((MetricsRecord) -> Void)?
  /// Test hook: when it returns true for a data position, that update's loss is replaced by NaN
  /// (an injected bad batch).
  public var poison: ((Int) -> Bool)?
  /// Model FLOPs and hardware FLOPs per trained token (FLOPs.swift).
  public let modelFLOPsPerToken: Double
  public let hardwareFLOPsPerToken: Double

  /// The optimizer's (parameter, gradient, moments) table and the gradients' norm table, built once
  /// here: the model's tensors never move, so no update rebuilds them.
  private let updatePlan: Optimizer.UpdatePlan
  private let gradientTable: GradientClipping.Table
  private let evalModel: Model?
  private let evalBatches: [Batch]
  private var secondsBefore = 0.0
  private var startTime = pk_now_seconds()
  private var lastCheckpointStep: Int?

  /// Builds the model (PaLM init from `options.seed`), optimizer and sampler.
  /// - Throws: `TrainError` for bad options, or a dataset whose sequence length is not the config's.
  public init(options: TrainOptions, dataset: TokenDataset) throws {
    try options.validate()
    guard dataset.sequenceLength == options.config.seqLen else {
      throw TrainError.data("dataset windows are \(dataset.sequenceLength) tokens, the model's sequence is \(options.config.seqLen)")
    }
    self.options = options
    self.dataset = dataset
    let c = options.config
    model = try Model(config: c, remat: options.remat, seed: options.seed, dropout: options.dropout ?? .off)
    optimizer = try Optimizer(options.optimizer, parameters: model.parameters.entries.map { ($0.name, $0.shape) })
    updatePlan = try optimizer.bind(params: model.parameters.named, grads: model.gradients.named)
    gradientTable = GradientClipping.Table(model.gradients.named.map(\.tensor))
    sampler = BatchSampler(dataset: dataset, batchSize: options.microBatches * c.batch, seed: options.seed)
    if let dir = options.checkpointDirectory {
      store = CheckpointStore(directory: dir, keepLast: options.keepLast)
      privateStore = false
    } else {
      let dir = NSTemporaryDirectory() + "palm-train-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
      store = CheckpointStore(directory: dir, keepLast: 1)
      privateStore = true
    }
    let windows = min(options.evalWindows, dataset.validationWindowCount)
    if windows > 0 {
      let eb = min(c.batch, windows)
      // Shares the training model's weights (no copy, no second set): only its arena is its own.
      evalModel = try Model(sharing: model, remat: .full, batch: eb)
      evalBatches = BatchSampler(dataset: dataset, batchSize: eb, seed: 0).spreadValidationBatches(windows: windows / eb * eb)
    } else {
      evalModel = nil
      evalBatches = []
    }
    modelFLOPsPerToken = FLOPs.modelPerToken(c)
    hardwareFLOPsPerToken = FLOPs.hardwarePerToken(c, remat: options.remat)
  }

  deinit {
    if privateStore { try? FileManager.default.removeItem(atPath: store.directory) }
  }

  /// Seconds since the run started, including time before a resume.
  public var seconds: Double { secondsBefore + (pk_now_seconds() - startTime) }

  // MARK: - Resume

  /// Continues from the newest complete checkpoint of the checkpoint directory.
  /// - Returns: the step resumed from, or nil when the directory holds no checkpoint at all.
  /// - Throws: `TrainError.checkpoint` when checkpoints exist but none verifies (truncated,
  ///   corrupt), or the newest is from another model shape or optimizer. Nothing on disk is changed.
  @discardableResult
  public func resume() throws -> Int? {
    guard !privateStore else { throw TrainError.checkpoint("--resume needs --checkpoint-dir") }
    let dirs = store.stepDirectories()
    if dirs.isEmpty { return nil }
    var firstError: String?
    let quiet = CheckpointStore(directory: store.directory, keepLast: store.keepLast, warn: { _ in })
    guard let ck = quiet.latest() else {
      do { _ = try CheckpointStore.load(path: dirs[0].path) } catch { firstError = "\(error)" }
      throw TrainError.checkpoint("cannot resume: no usable checkpoint in \(store.directory) (newest: \(firstError ?? "unreadable"))")
    }
    if ck.path != dirs[0].path {
      var why = "unreadable"
      do { _ = try CheckpointStore.load(path: dirs[0].path) } catch { why = "\(error)" }
      store.warn("skipping \(why)")
    }
    try restore(ck, resetClock: true)
    return step
  }

  private func restore(_ ck: LoadedCheckpoint, resetClock: Bool) throws {
    // Dropout rates: the checkpoint's, unless the options ask for others (then nothing is changed).
    let saved = ck.manifest.dropout ?? .off
    if let wanted = options.dropout, wanted != saved {
      throw TrainError.checkpoint("checkpoint \(ck.path) was trained with dropout \(saved), this run asks for \(wanted) (omit --dropout to continue with the checkpoint's)")
    }
    do { try saved.validate() } catch { throw TrainError.checkpoint("checkpoint \(ck.path): \(error)") }
    let s = try ck.restoreForTraining(config: model.config, parameters: model.parameters.named, optimizer: optimizer)
    if saved != model.dropout { try model.setDropout(saved) }  // validated above
    let m = CheckpointMetrics(decoding: ck.manifest.metrics)
    sampler.state = s
    step = ck.manifest.step
    tokens = m.tokens
    recentLosses = m.recentLosses
    lastCheckpointStep = step
    if resetClock {
      rollbacks = m.rollbacks
      secondsBefore = m.seconds
      startTime = pk_now_seconds()
      lastValidationLoss = m.validationLoss
    }
  }

  // MARK: - Checkpoints

  /// Writes a checkpoint of the current state. - Returns: its directory.
  @discardableResult
  public func saveCheckpoint() throws -> String {
    let m = CheckpointMetrics(tokens: tokens, seconds: seconds, rollbacks: rollbacks, recentLosses: recentLosses,
                              validationLoss: lastValidationLoss).encoded
    var schedule: LearningRateSchedule?
    if case .steps(let s) = options.learningRate { schedule = s }
    do {
      let path = try store.save(CheckpointContents(
        step: step, config: model.config, parameters: model.parameters.named, optimizer: optimizer,
        schedule: schedule, sampler: sampler.state, rngSeed: options.seed, dropout: model.dropout, metrics: m))
      lastCheckpointStep = step
      return path
    } catch let e as CheckpointError {
      throw TrainError.checkpoint(e.description)
    }
  }

  // MARK: - Evaluation

  /// Mean validation cross-entropy (nats per byte) over the fixed validation windows (spread evenly
  /// over the split); nil without a validation part.
  public func evaluate() throws -> Double? {
    try evaluate(evalBatches)
  }

  /// Mean validation cross-entropy over the whole validation split: every full batch of
  /// non-overlapping windows (at most batch − 1 windows at the end are left out). Run once, at the
  /// end of `run()`.
  public func evaluateFullSplit() throws -> Double? {
    guard let evalModel else { return nil }
    let eb = evalModel.batch
    let windows = dataset.validationWindowCount / eb * eb
    return try evaluate(BatchSampler(dataset: dataset, batchSize: eb, seed: 0).validationBatches(maxWindows: windows))
  }

  private func evaluate(_ batches: [Batch]) throws -> Double? {
    guard let evalModel, !batches.isEmpty else { return nil }
    var sum = 0.0
    for b in batches { sum += Double(try evalModel.forward(tokens: b.inputs, targets: b.targets).crossEntropy) }
    return sum / Double(batches.count)
  }

  // MARK: - Steps

  /// Runs updates until `maxSteps` or the time budget, then evaluates, checkpoints and returns the
  /// "end" record.
  public func run() throws -> MetricsRecord {
    let runStart = pk_now_seconds()
    if lastCheckpointStep == nil { try saveCheckpoint() }  // the rollback target before the first interval
    var lastStepSeconds = 0.0
    while true {
      if let n = options.maxSteps, step >= n { break }
      if let b = options.timeBudget, pk_now_seconds() - runStart + lastStepSeconds > b { break }
      let t0 = pk_now_seconds()
      try trainStep(runSeconds: t0 - runStart)
      lastStepSeconds = pk_now_seconds() - t0
    }
    if history.last?.valLoss == nil || history.last?.type != "step", let v = try evaluate() {
      lastValidationLoss = v
    }
    var end = MetricsRecord(type: "end", step: step, tokens: tokens, seconds: seconds, rollbacks: rollbacks)
    end.valLoss = lastValidationLoss
    end.valBitsPerByte = lastValidationLoss.map { $0 / M_LN2 }
    end.valLossFull = try evaluateFullSplit()
    end.loss = recentLosses.last
    if lastCheckpointStep != step { try saveCheckpoint() }
    if !privateStore { end.checkpoint = "\(store.directory)/\(CheckpointStore.directoryName(step: step))" }
    emit(end)
    return end
  }

  /// One update (or one rejected spike and its rollback).
  /// - Parameter runSeconds: seconds since this process's run started (the time-cosine schedule).
  public func trainStep(runSeconds: Double = 0) throws {
    let c = model.config
    let k = options.microBatches, rowTokens = c.batch * c.seqLen
    let position = sampler.state.step
    let batch = sampler.next()[0]
    let t0 = pk_now_seconds()
    model.gradients.zero()
    var lossSum = 0.0, ceSum = 0.0
    for j in 0..<k {
      let key = DropoutKey.training(runSeed: options.seed, update: step + 1, microBatch: j,
                                    tokensPerMicroBatch: rowTokens)
      let r = j * rowTokens..<(j + 1) * rowTokens  // micro-batch j's rows, read in place
      let l = try model.forwardBackward(tokens: batch.inputs[r], targets: batch.targets[r], dropoutKey: key)
      lossSum += Double(l.total)
      ceSum += Double(l.crossEntropy)
    }
    var loss = lossSum / Double(k), ce = ceSum / Double(k)
    if poison?(position) == true { loss = .nan; ce = .nan }
    // Each micro-batch added the gradient of ITS mean; the update wants the mean over all k.
    if k > 1 {
      try KernelError.check(pk_scale_inplace(model.gradients.flat.pointer, Int64(model.gradients.flat.count),
                                             1 / Float(k)), "scale_inplace")
    }
    let norm = options.clipNorm > 0 ? try GradientClipping.clip(gradientTable, maxNorm: options.clipNorm).norm
                                     : try GradientClipping.globalNorm(gradientTable)
    if let reason = options.spikes.spikeReason(loss: loss, norm: norm, recent: recentLosses) {
      try rollback(reason: reason, position: position, loss: loss, norm: norm)
      return
    }
    if !loss.isFinite || !norm.isFinite {
      throw TrainError.diverged("update \(step + 1): loss \(loss), gradient norm \(norm) (spike handling is off)")
    }
    let lr = options.learningRate.lr(step: optimizer.step + 1, seconds: runSeconds)
    try optimizer.step(updatePlan, lr: lr)
    let dt = pk_now_seconds() - t0
    step += 1
    tokens += options.tokensPerStep
    recentLosses.append(loss)
    if recentLosses.count > options.spikes.window { recentLosses.removeFirst(recentLosses.count - options.spikes.window) }

    var r = MetricsRecord(type: "step", step: step, tokens: tokens, seconds: 0, rollbacks: rollbacks)
    r.loss = loss
    r.crossEntropy = ce
    r.lr = Double(lr)
    r.gradNorm = norm
    r.stepSeconds = dt
    let tps = Double(options.tokensPerStep) / dt
    r.tokensPerS = tps
    if let peak = options.peakFLOPS, peak > 0 {
      r.mfu = modelFLOPsPerToken * tps / peak
      r.hfu = hardwareFLOPsPerToken * tps / peak
    }
    r.dataPosition = position
    if options.evalEvery > 0 && step % options.evalEvery == 0, let v = try evaluate() {
      lastValidationLoss = v
      r.valLoss = v
      r.valBitsPerByte = v / M_LN2
    }
    if options.checkpointEvery > 0 && step % options.checkpointEvery == 0 {
      let path = try saveCheckpoint()
      if !privateStore { r.checkpoint = path }
    }
    r.seconds = seconds
    emit(r)
  }

  private func rollback(reason: String, position: Int, loss: Double, norm: Double) throws {
    rollbacks += 1
    var r = MetricsRecord(type: "spike", step: step + 1, tokens: tokens, seconds: seconds, rollbacks: rollbacks)
    r.loss = loss
    r.gradNorm = norm
    r.reason = reason
    r.dataPosition = position
    if rollbacks > options.spikes.maxRollbacks {
      emit(r)
      throw TrainError.diverged("giving up after \(rollbacks) loss spikes (last: update \(step + 1), \(reason))")
    }
    guard let ck = store.latest() else {
      emit(r)
      throw TrainError.diverged("loss spike at update \(step + 1) (\(reason)) and no checkpoint to roll back to")
    }
    try restore(ck, resetClock: false)
    let resumeAt = max((ck.manifest.sampler?.step ?? 1) + options.spikes.skipBatches, position + 1)
    sampler.state.step = resumeAt
    r.restoredStep = step
    r.resumedDataPosition = resumeAt
    emit(r)
  }

  private func emit(_ r: MetricsRecord) {
    history.append(r)
    onRecord?(r)
  }
}

extension LoadedCheckpoint {
  /// Restores parameters and optimizer state for a training run (single device or mesh) and
  /// returns the data position to continue from; every failure is one `TrainError.checkpoint`.
  public func restoreForTraining(config: PalmConfig, parameters: [(name: String, tensor: Tensor)],
                                 optimizer: Optimizer) throws -> SamplerState {
    do {
      try restore(config: config, parameters: parameters, optimizer: optimizer)
    } catch let e as CheckpointError {
      throw TrainError.checkpoint(e.description)
    } catch let e as SafeTensorsError {
      throw TrainError.checkpoint("checkpoint \(path): \(e.description)")
    } catch let e as OptimizerError {
      throw TrainError.checkpoint(e.description)
    }
    guard let s = manifest.sampler else {
      throw TrainError.checkpoint("checkpoint \(path) has no data position (sampler state)")
    }
    return s
  }
}
