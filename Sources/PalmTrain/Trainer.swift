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
// One trainer for every mesh (the single device is the mesh (1,1,1)): on a mesh every rank builds
// one over its shard of the Model, draws the same GLOBAL batch, and every decision (spike, clip,
// stop) uses global values (losses, norm), so every rank decides the same; rank 0's clock decides
// when to stop and the learning rate (broadcast each update). Checkpoints are in the single-device
// layout (assembled tensor by tensor, written by rank 0), so any mesh resumes any other's.
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
  /// The mesh of this rank (`Mesh.single()` on one device).
  public var mesh: Mesh { model.mesh }
  /// The dropout rates of the updates: `options.dropout`, or after `resume()` the checkpoint's.
  public var dropout: Dropout { model.dropout }
  /// The GEMMs' precision of the updates: `options.precision` (fp32 when nil), or after `resume()`
  /// without `options.precision` the checkpoint's.
  public var precision: GEMMPrecision { model.precision }
  public let dataset: TokenDataset
  public let optimizer: Optimizer
  /// Draws microBatches · batch rows per update (split into micro-batches in order).
  public private(set) var sampler: BatchSampler
  /// Where checkpoints go: the configured directory, or a private temporary one (for spike rollback),
  /// removed when the trainer is released (and, after a crash, by the next trainer on this machine).
  public let store: CheckpointStore
  private let privateStore: Bool
  /// The run this trainer continues: made at random for a new run, the checkpoint's after
  /// `resume()`; recorded in every manifest, so a directory is bound to one run.
  public private(set) var runId: String
  /// Updates applied.
  public private(set) var step = 0
  public private(set) var tokens = 0
  public private(set) var rollbacks = 0
  /// Accepted losses of the most recent updates (the spike rule's window).
  public private(set) var recentLosses: [Double] = []
  /// Every record emitted by this process, in order.
  public private(set) var history: [MetricsRecord] = []
  public private(set) var lastValidationLoss: Double?
  /// Called with each record as it is made (progress line, metrics log). A closure that uses the
  /// trainer must capture it weakly or unowned (else the two keep each other alive).
  public var onRecord: ((MetricsRecord) -> Void)?
  /// Asked before each update (on a mesh: rank 0's answer holds for all): true ends the run after
  /// the update in flight, with a checkpoint when there is a checkpoint directory (preemption:
  /// SIGTERM / SIGINT in the CLI).
  public var stopRequested: (() -> Bool)?
  /// Whether the last `run()` ended on `stopRequested`.
  public private(set) var stopped = false
  /// Test hook: when it returns true for a data position, that update's loss is replaced by NaN
  /// (an injected bad batch).
  public var poison: ((Int) -> Bool)?
  /// Test hook: runs on the checkpoint writer (rank 0) inside its write, before the files (a slow
  /// disk, for the long-phase tests: PALM_FAULT_SLOW_CHECKPOINT in the CLI).
  public var duringCheckpointWrite: (() -> Void)?
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

  /// Checks options and mesh together, with no communication and no allocation (the CLI calls it
  /// before MPI starts). Throws `TrainError.badOptions` naming the first problem.
  public static func validate(options: TrainOptions, shape: MeshShape) throws {
    try options.validate()
    do { try shape.validate(config: options.config, batch: options.config.batch) } catch let e as MeshError {
      throw TrainError.badOptions(e.message)
    }
  }

  /// Throws `TrainError.badOptions` when `devicesHere` ranks of `shape` need more memory than this
  /// machine has ("training tiny needs 38.2 GiB ..., this machine has 23.4 GiB"). Call after
  /// `validate`.
  public static func checkMemory(options: TrainOptions, shape: MeshShape, devicesHere: Int = 1) throws {
    let (bytes, overflow) = try options.plannedBytes(shape: shape).multipliedReportingOverflow(by: max(devicesHere, 1))
    let devices = devicesHere > 1 ? " on \(devicesHere) devices" : ""
    do {
      try MemoryBudget.check(overflow ? Int.max : bytes,
                             for: "training \(options.config.name)\(devices) (parameters, gradients, optimizer state, activations)")
    } catch let e as MemoryBudget.Exceeded {
      throw TrainError.badOptions("\(e); use a smaller model, --batch or --seq-len, or --remat full")
    }
  }

  /// Builds the model (PaLM init from `options.seed`), optimizer and sampler; on a mesh this
  /// rank's shard of them (collective: every rank of `mesh` builds its trainer).
  /// - Throws: `TrainError` for bad options, or a dataset whose sequence length is not the config's.
  public init(options: TrainOptions, dataset: TokenDataset, mesh: Mesh = .single()) throws {
    try Trainer.validate(options: options, shape: mesh.shape)
    try Trainer.checkMemory(options: options, shape: mesh.shape)
    guard dataset.sequenceLength == options.config.seqLen else {
      throw TrainError.data("dataset windows are \(dataset.sequenceLength) tokens, the model's sequence is \(options.config.seqLen)")
    }
    if let sp = dataset.tokenizer.sentencePiece, sp.vocabularySize != options.config.vocab {
      throw TrainError.data("the tokenizer has \(sp.vocabularySize) tokens, the model's vocab is \(options.config.vocab)")
    }
    self.options = options
    self.dataset = dataset
    let c = options.config
    model = try Model(config: c, remat: options.remat, seed: options.seed, dropout: options.dropout ?? .off, mesh: mesh,
                      precision: options.precision ?? .fp32, headRows: options.headRows)
    if mesh.isSingle {
      optimizer = try Optimizer(options.optimizer, parameters: model.parameters.entries.map { ($0.name, $0.shape) })
      updatePlan = try optimizer.bind(params: model.parameters.named, grads: model.gradients.named)
      gradientTable = GradientClipping.Table(model.gradients.named.map(\.tensor))
    } else {
      let parts = Trainer.shardParts(model)
      optimizer = try Optimizer(options.optimizer, parameters: [("shard", [model.layout.shardFloats])])
      let m = mesh
      updatePlan = try optimizer.bind(shard: model.shard, grad: model.gradientShard, parts: parts,
                                      groupCounts: Parameters.layout(for: c).entries.map(\.count)) { sums in
        if m.shape.data > 1 { try m.dataComm.allReduce(&sums) }
        if m.shape.model > 1 { try m.modelComm.allReduce(&sums) }
      }
      // The norm counts every element of the model once: replicated copies on model shard 0 only.
      let g = model.gradientShard
      gradientTable = GradientClipping.Table(parts.filter(\.counted).map {
        Tensor(storage: g.storage, offset: g.offset + $0.range.lowerBound, shape: [$0.range.count])
      })
    }
    sampler = BatchSampler(dataset: dataset, batchSize: options.microBatches * c.batch, seed: options.seed)
    runId = String((0..<16).map { _ in "0123456789abcdef".randomElement()! })
    if let dir = options.checkpointDirectory {
      store = CheckpointStore(directory: dir, keepLast: options.keepLast)
      privateStore = false
    } else {
      // One private directory for the whole mesh (rank 0 writes, every rank reads on a rollback),
      // named by rank 0's pid (< 2^22 on Linux: exact in a Float).
      var tag: [Float] = [Float(getpid()), Float(UInt16.random(in: 0...UInt16.max))]
      if !mesh.isSingle { try mesh.world.broadcast(&tag, root: 0) }
      if mesh.world.rank == 0 { mesh.world.whileBusy("temporary directory cleanup") { Trainer.removeStalePrivateStores() } }
      let dir = NSTemporaryDirectory() + "palm-train-\(Int(tag[0]))-\(Int(tag[1]))-\(options.seed)"
      store = CheckpointStore(directory: dir, keepLast: 1)
      privateStore = true
    }
    // Evaluation batches: a multiple of pod·data (each rank evaluates its rows of them).
    let split = mesh.shape.pod * mesh.shape.data
    let windows = min(options.evalWindows, dataset.validationWindowCount) / split * split
    if windows > 0 {
      let eb = max(min(c.batch, windows) / split * split, split)
      // Shares the training model's weights (no copy, no second set): only its arena is its own.
      evalModel = try Model(sharing: model, remat: .full, batch: eb)
      evalBatches = try BatchSampler(dataset: dataset, batchSize: eb, seed: 0).spreadValidationBatches(windows: windows / eb * eb)
    } else {
      evalModel = nil
      evalBatches = []
    }
    modelFLOPsPerToken = FLOPs.modelPerToken(c)
    // What the devices execute, replicated work included (the head and K/V on every model shard).
    hardwareFLOPsPerToken = FLOPs.hardwarePerToken(c, remat: options.remat, mesh: mesh.shape)
  }

  deinit {
    if privateStore && mesh.world.rank == 0 { try? FileManager.default.removeItem(atPath: store.directory) }
  }

  /// Removes the private checkpoint directories (palm-train-<pid>-…) that trainers of processes
  /// no longer alive left in the temporary directory (killed with SIGKILL, or crashed).
  static func removeStalePrivateStores() {
    let tmp = NSTemporaryDirectory(), fm = FileManager.default
    for n in (try? fm.contentsOfDirectory(atPath: tmp)) ?? [] where n.hasPrefix("palm-train-") {
      let parts = n.split(separator: "-")  // palm, train, pid, tag, seed
      guard parts.count == 5, let pid = Int32(parts[2]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
      try? fm.removeItem(atPath: tmp + n)
    }
  }

  /// The ranges of this rank's shard that hold parameters (padding left out), each part of one
  /// whole tensor of the single-device layout (its index), split where a model-replicated range
  /// begins or ends so that `counted` is false exactly on the copies model shard 0 counts.
  static func shardParts(_ model: Model) -> [(range: Range<Int>, group: Int, counted: Bool)] {
    let L = model.layout, data = model.mesh.data
    let replicated = model.mesh.model == 0 ? [] : L.replicatedRanges
    var parts: [(range: Range<Int>, group: Int, counted: Bool)] = []
    var r = 0
    for (t, e) in L.localEntries.enumerated() {
      var cursor = e.offset
      let end = e.offset + e.count
      func emit(_ a: Int, _ b: Int, _ counted: Bool) {
        guard a < b, let s = L.shardRange(of: a..<b, data: data) else { return }
        parts.append((s, t, counted))
      }
      while r < replicated.count && replicated[r].upperBound <= cursor { r += 1 }
      var k = r
      while k < replicated.count && replicated[k].lowerBound < end {
        let lo = max(replicated[k].lowerBound, cursor), hi = min(replicated[k].upperBound, end)
        emit(cursor, lo, true)
        emit(lo, hi, false)
        cursor = hi
        k += 1
      }
      emit(cursor, end, true)
    }
    return parts
  }

  /// Bits per byte of a validation loss in nats per token: ÷ ln 2 ÷ the validation split's bytes
  /// per token (1 for the byte vocabulary; a subword tokenizer's tokens cover several bytes, and
  /// the split's average is the one the fixed windows and the whole split both sample).
  func bitsPerByte(_ natsPerToken: Double) -> Double {
    let bytesPerToken = Double(dataset.validationByteCount) / Double(max(dataset.validationCount, 1))
    return natsPerToken / M_LN2 / bytesPerToken
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
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: store.directory, isDirectory: &isDirectory) else {
      throw TrainError.checkpoint("cannot resume: \(store.directory) does not exist (drop --resume to start a new run there)")
    }
    guard isDirectory.boolValue else {
      throw TrainError.checkpoint("cannot resume: \(store.directory) is a file, not a checkpoint directory (give the --checkpoint-dir of the run)")
    }
    let dirs = store.stepDirectories()
    var found: LoadedCheckpoint?
    var problem: String?
    if !dirs.isEmpty {
      let quiet = CheckpointStore(directory: store.directory, keepLast: store.keepLast, warn: { _ in })
      found = mesh.world.whileBusy("checkpoint read") { quiet.latest() }
      if found == nil {
        var why = "unreadable"
        do { _ = try CheckpointStore.load(path: dirs[0].path) } catch { why = "\(error)" }
        problem = "cannot resume: no usable checkpoint in \(store.directory) (newest: \(why))"
      } else if found!.path != dirs[0].path, mesh.world.rank == 0 {
        var why = "unreadable"
        do { _ = try CheckpointStore.load(path: dirs[0].path) } catch { why = "\(error)" }
        store.warn("skipping \(why)")
      }
    }
    if !mesh.isSingle {
      // Every rank reads the directory itself; they must agree before any of them loads.
      let mine: Float = found.map { Float($0.manifest.step) } ?? (problem == nil ? -1 : -2)
      let all = try mesh.world.allGather([mine])
      guard all.allSatisfy({ $0 == all[0] }) else {
        throw TrainError.checkpoint("ranks see different checkpoints in \(store.directory) (steps \(all.map { Int($0) })): "
                                    + "--resume needs the checkpoint directory on a filesystem every rank sees")
      }
    }
    if let problem { throw TrainError.checkpoint(problem) }
    guard let ck = found else { return nil }
    let changes = Trainer.changedSettings(ck.manifest, options)
    if !changes.isEmpty {
      let list = changes.joined(separator: ", ")
      if !options.allowChangedSettings {
        throw TrainError.checkpoint("checkpoint \(ck.path) was trained with other settings: \(list); resume with the "
                                    + "checkpoint's values, or pass --allow-changed-settings to continue with the new ones")
      }
      if mesh.world.rank == 0 { store.warn("continuing \(ck.path) with changed settings: \(list)") }
    }
    try mesh.world.whileBusy("checkpoint read") { try restore(ck, resetClock: true) }
    runId = ck.manifest.runId ?? runId
    return step
  }

  /// The recorded settings of a checkpoint that `options` change, as "seed 7 -> 8" (nothing for
  /// settings the manifest does not record). The optimizer kind, the model shape and dropout have
  /// rules of their own (they cannot change, or are refused by `restore`).
  public static func changedSettings(_ m: CheckpointManifest, _ o: TrainOptions) -> [String] {
    var old: [(String, String)] = [], new: [(String, String)] = []
    if let s = m.rngSeed { old.append(("seed", "\(s)")); new.append(("seed", "\(o.seed)")) }
    old.append(("batch", "\(m.config.batch)")); new.append(("batch", "\(o.config.batch)"))
    if let k = m.microBatches { old.append(("micro-batches", "\(k)")); new.append(("micro-batches", "\(o.microBatches)")) }
    if let c = m.clipNorm { old.append(("clip norm", "\(c)")); new.append(("clip norm", "\(o.clipNorm)")) }
    if let s = m.optimizer, s.kind == o.optimizer.kind {
      old += describe(s); new += describe(o.optimizer)
    }
    var schedule: LearningRateSchedule?
    if case .steps(let s) = o.learningRate { schedule = s }
    let (a, b) = (describe(m.schedule), describe(schedule))
    if a.first?.1 != b.first?.1 {  // another kind of schedule: name it alone
      old.append(a[0]); new.append(b[0])
    } else {
      old += a; new += b
    }
    return zip(old, new).compactMap { $0.1 == $1.1 ? nil : "\($0.0) \($0.1) -> \($1.1)" }
  }

  private static func describe(_ s: OptimizerSettings) -> [(String, String)] {
    switch s {
    case .adamW(let a):
      return [("beta1", fmt(a.beta1)), ("beta2", fmt(a.beta2)), ("eps", fmt(a.eps)), ("weight decay", fmt(a.weightDecay))]
    case .adafactor(let a):
      return [("beta1", fmt(a.beta1)), ("decay exponent", fmt(a.decayExponent)), ("eps1", fmt(a.eps1)), ("eps2", fmt(a.eps2)),
              ("clipping threshold", fmt(a.clippingThreshold)),
              ("weight decay exponent", a.weightDecayLRExponent.map(fmt) ?? "none"),
              ("weight decay rate", a.weightDecayRate.map(fmt) ?? "none")]
    }
  }

  /// A schedule as its kind, then its parameters (the kind first: `changedSettings` compares it).
  private static func describe(_ s: LearningRateSchedule?) -> [(String, String)] {
    switch s {
    case nil: return [("schedule", "time-budget cosine")]
    case .constant(let lr)?: return [("schedule", "constant"), ("lr", fmt(lr))]
    case .palm(let peak, let k0)?: return [("schedule", "palm"), ("lr", fmt(peak)), ("constant steps", "\(k0)")]
    case .warmupCosine(let peak, let warmup, let total, let floor)?:
      return [("schedule", "cosine"), ("lr", fmt(peak)), ("warm-up", "\(warmup)"),
              ("steps (the cosine schedule spans them)", "\(total)"), ("lr floor", fmt(floor))]
    }
  }

  private func restore(_ ck: LoadedCheckpoint, resetClock: Bool) throws {
    // Dropout rates: the checkpoint's, unless the options ask for others (then nothing is changed).
    let saved = ck.manifest.dropout ?? .off
    if let wanted = options.dropout, wanted != saved {
      throw TrainError.checkpoint("checkpoint \(ck.path) was trained with dropout \(saved), this run asks for \(wanted) (omit --dropout to continue with the checkpoint's)")
    }
    do { try saved.validate() } catch { throw TrainError.checkpoint("checkpoint \(ck.path): \(error)") }
    if ck.manifest.tokenizer?.sha256 != dataset.tokenizer.sentencePiece?.sha256 {
      let name = { (sha: String?) in sha.map { "tokenizer SHA-256 \($0.prefix(12))…" } ?? "the byte tokenizer" }
      throw TrainError.checkpoint("checkpoint \(ck.path) was trained with \(name(ck.manifest.tokenizer?.sha256)), this run uses \(name(dataset.tokenizer.sentencePiece?.sha256)) (\(ck.manifest.tokenizer == nil ? "leave out --tokenizer" : "give --tokenizer \(ck.path)/\(CheckpointTokenizer.fileName)"))")
    }
    let s = try ck.restoreForTraining(model: model, optimizer: optimizer)
    if saved != model.dropout { try model.setDropout(saved) }  // validated above
    // Precision: the checkpoint's unless the options name one (a switch is allowed: the master
    // weights and moments are fp32 either way). The evaluation model follows the training model.
    model.precision = options.precision ?? ck.manifest.precision ?? .fp32
    evalModel?.precision = model.precision
    let m: CheckpointMetrics
    do { m = try CheckpointMetrics(decoding: ck.manifest.metrics) } catch { throw TrainError.checkpoint("checkpoint \(ck.path): \(error)") }
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

  private static func fmt(_ x: Float) -> String { String(format: "%g", Double(x)) }

  // MARK: - Checkpoints

  /// Writes a checkpoint of the current state in the single-device layout (collective on a mesh:
  /// every rank takes part in assembling the tensors, rank 0 writes them and tells the others
  /// whether it succeeded). - Returns: its directory.
  @discardableResult
  public func saveCheckpoint() throws -> String {
    let m = CheckpointMetrics(tokens: tokens, seconds: seconds, rollbacks: rollbacks, recentLosses: recentLosses,
                              validationLoss: lastValidationLoss).encoded
    var schedule: LearningRateSchedule?
    if case .steps(let s) = options.learningRate { schedule = s }
    let writer = mesh.world.rank == 0
    let flat = optimizer.flatMoments
    var contents = CheckpointContents(
      step: step, config: model.config, parameters: [], schedule: schedule, sampler: sampler.state,
      rngSeed: options.seed, dropout: model.dropout, precision: model.precision, metrics: m)
    contents.runId = runId
    contents.microBatches = options.microBatches
    contents.clipNorm = options.clipNorm
    contents.tokenizer = dataset.tokenizer.sentencePiece
    contents.optimizerState = (optimizer.settings, optimizer.step, [])
    // The tensors in the single-device layout, pulled one at a time by the writer (views at
    // (1,1,1); on a mesh each assembled from every rank's shard, collectively: the other ranks run
    // the same sequence of gathers, and rank 0 finishes it even when its write fails).
    let cursor = FullTensorCursor(model: model, sources: [model.shard, flat.m, flat.v])
    let table = Parameters.layout(for: model.config).entries.map { ($0.name, $0.shape) }
    func pull(_ expected: String) throws -> Tensor {
      guard let (name, t) = try cursor.next(), name == expected else { throw TrainError.checkpoint("checkpoint stream out of order at \(expected)") }
      return t
    }
    contents.streamed = (TensorStream(table: table) { try pull(table[$0].0) },
                         TensorStream(table: table.map { ("m.\($0.0)", $0.1) } + table.map { ("v.\($0.0)", $0.1) }) {
                           try pull(table[$0 % table.count].0)
                         })
    var failure: String?
    if writer {
      // A long phase of rank 0 alone (the files, their fsync, keep-last-K): the others wait for it
      // in the gathers and the broadcast below, and must not take it for a dead rank 0.
      mesh.world.whileBusy("checkpoint write") {
        duringCheckpointWrite?()
        do { _ = try store.save(contents) } catch let e as CheckpointError { failure = e.description } catch { failure = "\(error)" }
      }
    }
    try cursor.drain()
    if !mesh.isSingle {
      var ok: [Float] = [failure == nil ? 1 : 0]
      try mesh.world.broadcast(&ok, root: 0)
      if ok[0] == 0 && failure == nil { failure = "rank 0 could not write the checkpoint of step \(step)" }
    }
    if let failure { throw TrainError.checkpoint(failure) }
    lastCheckpointStep = step
    return "\(store.directory)/\(CheckpointStore.directoryName(step: step))"
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
    let eb = evalModel.config.batch  // global: every rank evaluates its rows
    let windows = dataset.validationWindowCount / eb * eb
    return try evaluate(try BatchSampler(dataset: dataset, batchSize: eb, seed: 0).validationBatches(maxWindows: windows))
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
    stopped = false
    if lastCheckpointStep == nil {
      // A new run: the directory must not hold another run (rank 0 looks, as it alone writes).
      var held = mesh.world.rank == 0 && !privateStore ? store.heldRun() : nil
      if !mesh.isSingle {
        var flag: [Float] = [held == nil ? 0 : 1]
        try mesh.world.broadcast(&flag, root: 0)
        if flag[0] == 1 && held == nil { held = "found by rank 0" }
      }
      if let held { throw TrainError.checkpoint(CheckpointError.otherRun(directory: store.directory, held: held).description) }
      try saveCheckpoint()  // the rollback target before the first interval
    }
    var lastStepSeconds = 0.0
    while true {
      // Rank 0's clock decides (the ranks' clocks differ): go on, and the seconds the schedule reads;
      // rank 0's stop request too (2: stop now).
      var plan: [Double] = [1, pk_now_seconds() - runStart]
      if let n = options.maxSteps, step >= n { plan[0] = 0 }
      if let b = options.timeBudget, plan[1] + lastStepSeconds > b { plan[0] = 0 }
      if mesh.world.rank == 0, stopRequested?() == true { plan[0] = 2 }
      if !mesh.isSingle { try mesh.world.broadcast(&plan, root: 0) }
      if plan[0] != 1 { stopped = plan[0] == 2; break }
      let t0 = pk_now_seconds()
      try trainStep(runSeconds: plan[1])
      lastStepSeconds = pk_now_seconds() - t0
    }
    // A stopped run skips the final evaluations (preemption leaves little time) but keeps its work.
    if !stopped, history.last?.valLoss == nil || history.last?.type != "step", let v = try evaluate() {
      lastValidationLoss = v
    }
    var end = MetricsRecord(type: "end", step: step, tokens: tokens, seconds: seconds, rollbacks: rollbacks)
    end.valLoss = lastValidationLoss
    end.valBitsPerByte = lastValidationLoss.map(bitsPerByte)
    end.valLossFull = stopped ? nil : try evaluateFullSplit()
    end.valBitsPerByteFull = end.valLossFull.map(bitsPerByte)
    end.loss = recentLosses.last
    if stopped { end.reason = "stopped" }
    if lastCheckpointStep != step && !(stopped && privateStore) { try saveCheckpoint() }
    if !privateStore { end.checkpoint = "\(store.directory)/\(CheckpointStore.directoryName(step: step))" }
    emit(end)
    return end
  }

  /// One update (or one rejected spike and its rollback).
  /// - Parameter runSeconds: seconds since this process's run started (the time-cosine schedule).
  public func trainStep(runSeconds: Double = 0) throws {
    let c = model.config
    let k = options.microBatches, rowTokens = c.batch * c.seqLen  // the GLOBAL micro-batch's tokens
    let position = sampler.state.step
    let batch = try sampler.next()[0]
    let t0 = pk_now_seconds()
    let grads = model.gradientShard
    grads.fill(0)
    var lossSum = 0.0, ceSum = 0.0
    for j in 0..<k {
      let key = DropoutKey.training(runSeed: options.seed, update: step + 1, microBatch: j,
                                    tokensPerMicroBatch: rowTokens)
      let r = j * rowTokens..<(j + 1) * rowTokens  // micro-batch j's rows, read in place
      // The pod exchange starts during the last micro-batch's backward only.
      let l = try model.forwardBackward(tokens: batch.inputs[r], targets: batch.targets[r], dropoutKey: key,
                                        exchange: j == k - 1)
      lossSum += Double(l.total)
      ceSum += Double(l.crossEntropy)
    }
    let exchange = try model.finishExchange()
    var loss = lossSum / Double(k), ce = ceSum / Double(k)
    if poison?(position) == true { loss = .nan; ce = .nan }
    // Each micro-batch added the gradient of ITS mean; the update wants the mean over all k.
    if k > 1 {
      try KernelError.check(pk_scale_inplace(grads.pointer, Int64(grads.count), 1 / Float(k)), "scale_inplace")
    }
    let norm = try globalGradientNorm()
    if options.clipNorm > 0, norm.isFinite, norm > options.clipNorm {
      try KernelError.check(pk_scale_inplace(grads.pointer, Int64(grads.count), Float(options.clipNorm / norm)),
                            "scale_inplace")
    }
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
    r.precision = model.precision.rawValue
    let bf16Peak = options.bf16PeakFLOPS.flatMap { $0 > 0 ? $0 : nil }
    let useBF16Peak = model.precision == .bf16 && bf16Peak != nil
    if let peak = useBF16Peak ? bf16Peak : options.peakFLOPS, peak > 0 {
      r.mfu = modelFLOPsPerToken * tps / peak
      r.hfu = hardwareFLOPsPerToken * tps / peak
      r.peakPrecision = useBF16Peak ? "bf16" : "fp32"
    }
    if !useBF16Peak, model.precision == .fp32, let b = bf16Peak {
      r.mfuOfBF16Peak = modelFLOPsPerToken * tps / b
      r.hfuOfBF16Peak = hardwareFLOPsPerToken * tps / b
    }
    r.dataPosition = position
    if !mesh.isSingle {
      r.exchangeBytes = exchange.bytes
      r.exchangeSeconds = exchange.transferSeconds
      r.exchangeHidden = exchange.hiddenFraction
    }
    if options.evalEvery > 0 && step % options.evalEvery == 0, let v = try evaluate() {
      lastValidationLoss = v
      r.valLoss = v
      r.valBitsPerByte = bitsPerByte(v)
    }
    // The record goes out before the checkpoint is written, so that a crash during or after the
    // write never loses the metrics of an update that the checkpoint (and so a resume) includes.
    let checkpointing = options.checkpointEvery > 0 && step % options.checkpointEvery == 0
    if checkpointing && !privateStore { r.checkpoint = "\(store.directory)/\(CheckpointStore.directoryName(step: step))" }
    r.seconds = seconds
    emit(r)
    if checkpointing { try saveCheckpoint() }
  }

  /// The global gradient norm: this rank's counted parts, summed over data and model (the pods
  /// hold the same gradients after the exchange).
  private func globalGradientNorm() throws -> Double {
    if mesh.isSingle { return try GradientClipping.globalNorm(gradientTable) }
    var sq = [pow(try GradientClipping.globalNorm(gradientTable), 2)]
    if mesh.shape.data > 1 { try mesh.dataComm.allReduce(&sq) }
    if mesh.shape.model > 1 { try mesh.modelComm.allReduce(&sq) }
    return sq[0].squareRoot()
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
    // Every rank reads the checkpoint (verifying it may take rank 0 less time than the others).
    guard let ck = mesh.world.whileBusy("checkpoint read", { store.latest(runId: runId) }) else {
      emit(r)
      throw TrainError.diverged("loss spike at update \(step + 1) (\(reason)) and no checkpoint to roll back to")
    }
    try mesh.world.whileBusy("checkpoint read") { try restore(ck, resetClock: false) }
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
  /// Restores parameters and optimizer state into `model`'s shard (any mesh: every tensor is read
  /// from the single-device layout and this rank keeps its part) and returns the data position to
  /// continue from; every failure is one `TrainError.checkpoint`.
  public func restoreForTraining(model: Model, optimizer: Optimizer) throws -> SamplerState {
    do {
      try checkCompatible(with: model.config)
      let table = Parameters.layout(for: model.config).entries
      try self.model.check(expected: table.map { ($0.name, $0.shape) })
      guard let state = optimizerState, let saved = manifest.optimizer else {
        throw CheckpointError.incomplete(path: path, reason: "it holds no optimizer state")
      }
      if saved.kind != optimizer.settings.kind {
        throw OptimizerError("checkpoint \(path) holds \(saved.kind) state, the run uses \(optimizer.settings.kind)")
      }
      try state.check(expected: table.flatMap { [("m.\($0.name)", $0.shape), ("v.\($0.name)", $0.shape)] })
      let flat = optimizer.flatMoments
      try reading {
        try model.loadFull { name, t in try self.model.copy(name, into: t) }
        try model.loadFull(into: flat.m) { name, t in try state.copy("m.\(name)", into: t) }
        try model.loadFull(into: flat.v) { name, t in try state.copy("v.\(name)", into: t) }
      }
      try optimizer.setStep(manifest.optimizerStep ?? manifest.step)
    } catch let e as CheckpointError {
      throw TrainError.checkpoint(e.description)
    } catch let e as SafeTensorsError {
      throw TrainError.checkpoint("checkpoint \(path): \(e.description)")
    } catch let e as OptimizerError {
      throw TrainError.checkpoint(e.description)
    } catch let e as MeshError {
      throw TrainError.checkpoint("checkpoint \(path): \(e.message)")
    }
    guard let s = manifest.sampler else {
      throw TrainError.checkpoint("checkpoint \(path) has no data position (sampler state)")
    }
    return s
  }
}
