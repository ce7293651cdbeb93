// palm train: train a model on a file of bytes or SentencePiece tokens (PalmTrain/Trainer.swift), with
// a live progress line, metrics.jsonl, checkpoints, --resume and a loss-curve SVG at the end. One
// launch for every mesh: without --mesh the run is the mesh (1,1,1) on this thread. Bad input (a mesh
// that does not divide the model or the batch, a mesh size that is not the number of ranks) is one
// error line before any work; under mpirun only rank 0 prints it and all exit non-zero.
import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a PaLM-style model on a text (or any byte) file.",
    discussion: """
      Tokens are bytes (vocab 256), or with --tokenizer T.model the pieces of a SentencePiece model (`palm tokenizer train`; the vocab is then the tokenizer's, the text is encoded once into a token file, and losses are nats per token); the last 10% of the file (of its bytes) is the validation split. Stops after --steps updates, or before the update that would end past --time-budget seconds. Losses are nats per token (per byte with the byte vocabulary; cross-entropy, the training loss also includes PaLM's z-loss); validation is also given in bits per byte (÷ ln 2 ÷ the split's bytes per token), the axis on which byte and subword runs compare. With the cosine schedule, resume with the same --steps (the schedule spans them).

      MFU/HFU use --peak-gflops (all threads), else $PALM_PEAK_GFLOPS (per thread, or a list for 1, 2, ... threads, as `palm peak` prints), else this machine's FMA peak measured at start-up by the `palm peak` probe (about 0.2 s).

      --precision bf16 is PaLM's mixed precision: every GEMM (the projections, the head, their backward) and attention's tile products take their inputs rounded to bf16 and accumulate in fp32; weights, gradients, optimizer state, LayerNorm, RoPE, the softmax, SwiGLU's elementwise part and the loss stay fp32 (docs/ARCHITECTURE.md, "Mixed precision"). Its MFU/HFU divide by the bf16 dot-product peak ($PALM_PEAK_BF16_GFLOPS, else measured); an fp32 run divides by the fp32 peak and also prints its MFU against the bf16 peak. Without AVX512_BF16 the same rounding is emulated (said once; at most the fp32 speed). The checkpoint records the precision; --resume keeps it unless --precision is given.

      --dropout P (default 0, as PaLM) drops out each block's residual branch and the embedding output during training (never in validation or sampling); masks are recomputed from the seed and update number, so --resume stays bit-exact and uses the checkpoint's rate. A loss spike (NaN/Inf, or above --spike-factor x the running median) restores the last checkpoint and skips the batches since (docs/FORMATS.md).

      SIGTERM or SIGINT (preemption, Ctrl-C) ends the run after the update in flight, with a checkpoint when --checkpoint-dir is given, and exits 143 / 130; a second signal exits at once (the last complete checkpoint is intact). A --checkpoint-dir belongs to one run: without --resume one that holds another run is refused; --resume refuses changed settings unless --allow-changed-settings (manifest fields and bounds: docs/FORMATS.md).

      Examples:
        palm train --config shakespeare --data tinyshakespeare.txt --time-budget 600
        palm train --config tiny --data f.txt --steps 2000 --checkpoint-dir ck --log m.jsonl --plot loss.svg
        palm train --config tiny --data f.txt --steps 2000 --checkpoint-dir ck --resume

      Mesh (--mesh pod=P,data=D,model=M; docs/ARCHITECTURE.md, "One training step on a mesh"): the model is sharded over model (heads and d_ff), its parameters and AdamW moments over data (FSDP), and pods exchange gradients once per update, overlapped with the backward pass. --batch is the GLOBAL batch (pod·data must divide it; model must divide heads, d_ff and d_model). --devices local runs the P·D·M devices as threads of this process; --devices mpi (the default under mpirun) makes every mpirun rank one device, and the mesh size must equal the number of ranks. --threads is then the OpenMP threads per device (default: cores / devices on this machine). Every rank prints its own lines, prefixed [rank r/N] (losses are global; step time and exchange are the rank's own); --log, --plot and checkpoints are written by rank 0 alone. Checkpoints are in the single-device layout (parameters, optimizer moments, step, data position), so --resume, `palm sample` and a mesh of another shape all read them; the data file and --checkpoint-dir must be visible to every rank. Every flag works on every mesh: the single device is the mesh pod=1,data=1,model=1 of the same trainer (--remat, --optimizer adafactor, --micro-batches, --dropout, loss-spike rollback, evaluation on every rank). The header prints the planned bytes per rank.
        palm train --config tiny --data f.txt --steps 200 --mesh pod=1,data=2,model=2 --devices local --checkpoint-dir ck
        mpirun --oversubscribe --bind-to none -np 2 palm train --config tiny --data f.txt --steps 200 --mesh pod=2,data=1,model=1 --threads 1
      """)

  @Option(help: "Preset: \(PalmConfig.presets.keys.sorted().joined(separator: ", ")).")
  var config: String?
  @Option(help: "A JSON PalmConfig file (keys name, dModel, layers, heads, headDim, dFF, vocab, seqLen, batch).")
  var configFile: String?
  @Option(help: "Training data file (default: $PALM_DATA).")
  var data: String?
  @Option(help: "A SentencePiece model (palm tokenizer train): the data is encoded once into a token file and the vocab is the tokenizer's (default: bytes, vocab 256).")
  var tokenizer: String?
  @Option(help: "With --tokenizer: the token file (reused when its header names this tokenizer and data, else rebuilt; default: in $PALM_CACHE or ~/.cache/palm/tokens).")
  var tokenFile: String?
  @Option(help: "Updates to run (total, counting those before a resume).")
  var steps: Int?
  @Option(help: "Wall-clock seconds of training for this process.")
  var timeBudget: Double?
  @Option(help: "Activation recomputation: none, selective or full.")
  var remat: String = "selective"
  @Option(help: "GEMM precision: fp32, or bf16 (mixed precision, fp32 master weights). Default fp32; with --resume: the checkpoint's.")
  var precision: GEMMPrecision?
  @OptionGroup var compute: ComputeOptions
  @Option(help: "Sequences per micro-batch (default: the preset's).")
  var batch: Int?
  @Option(help: "Micro-batches accumulated per update (the update sees micro-batches × batch sequences).")
  var microBatches: Int = 1
  @Option(help: "Tokens per sequence (default: the preset's).")
  var seqLen: Int?
  @Option(help: "Peak learning rate (default: 2e-3 AdamW, 1e-2 Adafactor).")
  var lr: Float?
  @Option(help: "adamw or adafactor (PaLM's).")
  var optimizer: String = "adamw"
  @Option(help: "Schedule: cosine (linear warm-up, cosine to 10% over --steps or --time-budget), palm (constant for --constant-steps, then 1/sqrt(k)) or constant. Default: cosine for adamw, palm for adafactor.")
  var schedule: String?
  @Option(help: "Warm-up updates of the cosine schedule (default 100).")
  var warmup: Int?
  @Option(help: "Constant updates before the 1/sqrt(k) decay of the palm schedule (default 1000).")
  var constantSteps: Int?
  @Option(help: "AdamW's decoupled weight decay (default 0.1; Adafactor decays by lr², as PaLM).")
  var weightDecay: Float?
  @Option(help: "Dropout rate in [0, 1) on each block's residual branch and the embedding output (default 0; with --resume: the checkpoint's).")
  var dropout: Float?
  @Option(help: "Dropout rate on the embedding output alone (default: --dropout).")
  var embeddingDropout: Float?
  @Option(help: "Validate every N updates (0: only at the end).")
  var evalEvery: Int = 50
  @Option(help: "Validation windows of seq-len bytes per evaluation (fixed, spread evenly over the split; the end of the run also evaluates the whole split).")
  var evalWindows: Int = 64
  @Option(help: "Checkpoint directory (step_XXXXXXXX/ with model.safetensors, optimizer.safetensors, manifest.json).")
  var checkpointDir: String?
  @Option(help: "Checkpoint every N updates (0: only at the end).")
  var checkpointEvery: Int = 100
  @Option(help: "Complete checkpoints kept in --checkpoint-dir (default 3).")
  var keep: Int?
  @Flag(help: "Continue from the newest complete checkpoint in --checkpoint-dir (bit-exact at the same --threads). The directory must exist (an empty one starts at step 0). Without --resume, a --checkpoint-dir that holds another run is refused.")
  var resume = false
  @Flag(help: "With --resume: continue although the seed, optimizer settings, schedule (--lr, --warmup, --steps of a cosine schedule, ...), batch, micro-batches or clip differ from the checkpoint's; without it such a resume is refused, listing what changed.")
  var allowChangedSettings = false
  @Option(help: "Seed of the initialization and of the data order.")
  var seed: UInt64 = 0
  @Option(help: "Append per-update metrics as JSON lines to this file (schema: docs/FORMATS.md).")
  var log: String?
  @Option(help: "Write the loss curves (SVG) here at the end.")
  var plot: String?
  @Option(help: "Loss-spike rule: a loss above FACTOR x the median of the last 50 accepted losses rolls back.")
  var spikeFactor: Double = 1.5
  @Option(help: "Batches skipped past the restored checkpoint's data position after a spike.")
  var spikeSkip: Int = 20
  @Option(help: "MFU/HFU denominator: peak GFLOP/s of all threads together at --precision (fp32 when not given; default: $PALM_PEAK_GFLOPS / $PALM_PEAK_BF16_GFLOPS, per thread or a list as `palm peak` prints, else measured).")
  var peakGflops: Double?
  @Option(help: "Without a terminal: print a line every N updates (and at each evaluation).")
  var printEvery: Int = 10
  @Option(help: "Train on a device mesh pod=P,data=D,model=M (axes in any order, missing = 1); see below.")
  var mesh: String?
  @Option(help: "With --mesh: local (threads of this process) or mpi (the ranks of mpirun). Default: mpi under mpirun, else local.")
  var devices: DeviceBackend?
  @Option(help: "With --mesh: seconds a collective may wait for the other ranks before the run stops with an error naming them (default 300).")
  var commTimeout: Double?
  @Option(help: "With --mesh: seconds one rank may work alone while the others wait for it (rank 0's checkpoint write, every rank's checkpoint read) before the run stops with an error naming it and the phase; at least --comm-timeout. Default: 10 x --comm-timeout.")
  var phaseTimeout: Double?

  func validate() throws {
    if config != nil && configFile != nil { throw ValidationError("give --config or --config-file, not both") }
    if steps == nil && timeBudget == nil { throw ValidationError("give --steps N or --time-budget SECONDS") }
    if RematPolicy(rawValue: remat) == nil { throw ValidationError("--remat must be none, selective or full") }
    if !["adamw", "adafactor"].contains(optimizer) { throw ValidationError("--optimizer must be adamw or adafactor") }
    if let s = schedule, !["cosine", "palm", "constant"].contains(s) {
      throw ValidationError("--schedule must be cosine, palm or constant")
    }
    if resume && checkpointDir == nil { throw ValidationError("--resume needs --checkpoint-dir") }
    if allowChangedSettings && !resume { throw ValidationError("--allow-changed-settings needs --resume") }
    if devices != nil && mesh == nil { throw ValidationError("--devices needs --mesh") }
    if tokenFile != nil && tokenizer == nil { throw ValidationError("--token-file needs --tokenizer") }
    if let t = commTimeout, !(t > 0) { throw ValidationError("--comm-timeout must be > 0 seconds") }
    if printEvery < 1 { throw ValidationError("--print-every must be at least 1 (got \(printEvery))") }
    // Flags that only one setting reads are refused elsewhere rather than ignored.
    let resolvedSchedule = schedule ?? (optimizer == "adafactor" ? "palm" : "cosine")
    if warmup != nil && resolvedSchedule != "cosine" {
      throw ValidationError("--warmup is the cosine schedule's; the \(resolvedSchedule) schedule has none (add --schedule cosine)")
    }
    // The default warm-up (100) shortens itself to a short run; one given is kept or refused.
    if let w = warmup, let s = steps, w >= s {
      throw ValidationError("--warmup \(w) must be below --steps \(s) (the cosine decay needs at least one step after it)")
    }
    if let t = commTimeout, t > LocalCluster.maxTimeout || (phaseTimeout ?? 0) > 10 * LocalCluster.maxTimeout {
      throw ValidationError("--comm-timeout must be at most \(Int(LocalCluster.maxTimeout)) seconds and --phase-timeout \(Int(10 * LocalCluster.maxTimeout))")
    }
    if constantSteps != nil && resolvedSchedule != "palm" {
      throw ValidationError("--constant-steps is the palm schedule's; this run's schedule is \(resolvedSchedule) (add --schedule palm)")
    }
    if weightDecay != nil && optimizer != "adamw" {
      throw ValidationError("--weight-decay is AdamW's; Adafactor decays the weights by lr² (PaLM) and takes no rate")
    }
    if keep != nil && checkpointDir == nil { throw ValidationError("--keep needs --checkpoint-dir") }
    if commTimeout != nil && mesh == nil { throw ValidationError("--comm-timeout needs --mesh (one device waits for no one)") }
    if phaseTimeout != nil && mesh == nil { throw ValidationError("--phase-timeout needs --mesh") }
    if let p = phaseTimeout, !(p > 0 && p.isFinite) { throw ValidationError("--phase-timeout must be > 0 seconds") }
    if let p = phaseTimeout, p < commTimeout ?? 300 {
      throw ValidationError("--phase-timeout \(p) is shorter than --comm-timeout \(commTimeout ?? 300): a phase is work that may outlast a wait; give at least --comm-timeout")
    }
    if let g = peakGflops, !(g > 0 && g.isFinite) { throw ValidationError("--peak-gflops must be a positive number of GFLOP/s (got \(g))") }
  }

  /// One launch for every mesh. Without --mesh the run is the mesh pod=1,data=1,model=1 of the same
  /// trainer, on this thread (`MeshLauncher` calls the body directly with a `SoloCommunicator`: no
  /// rank thread, no collective). Bad input is one line before any work; under mpirun rank 0 says it.
  func run() throws {
    try compute.apply()
    let cfg = try resolveConfig()
    Preemption.install()
    let devices = self.devices ?? DeviceBackend.detected
    var o = trainOptions(cfg)
    let shape: MeshShape
    do {
      if mesh == nil, devices == .mpi, let n = MPILaunch.worldSize, n > 1 {
        throw CLIError("mpirun started \(n) ranks, but without --mesh palm train is one device: give a mesh of \(n) devices (e.g. --mesh data=\(n)) or run it without mpirun")
      }
      shape = try mesh.map { try MeshShape(parsing: $0) } ?? MeshShape()
      try Trainer.validate(options: o, shape: shape)
      try MeshLauncher.check(shape, devices: devices)
      try Trainer.checkMemory(options: o, shape: shape, devicesHere: MeshLauncher.ranksHere(shape, devices: devices))
      try preflight()
    } catch {
      throw MeshCLI.beforeWork(error, devices: devices)
    }
    let dataset: TokenDataset
    do {
      dataset = try openDataset(cfg)
      // A byte file may hold any byte: a smaller vocabulary fails at its first such byte, after the
      // step-0 checkpoint (which then blocks the corrected run).
      if dataset.tokenizer.sentencePiece == nil && cfg.vocab < 256 {
        throw CLIError("byte data (no --tokenizer) has token ids 0...255, the model's vocab is \(cfg.vocab): give the config vocab >= 256, or train with a --tokenizer of that size")
      }
    } catch { throw MeshCLI.beforeWork(error, devices: devices) }
    let meshed = shape.count > 1
    let threads = compute.threads ?? MeshLauncher.defaultThreadsPerRank(shape, devices: devices)
    Threads.count = threads  // this thread's; each rank thread of a local mesh sets its own
    let peakSource = Train.resolvePeaks(peakGflops, precision: precision ?? .fp32, ranks: shape.count, into: &o)

    let (resume, log, printEvery, checkpointDir) = (self.resume, self.log, self.printEvery, self.checkpointDir)
    let options = o
    let header = Train.modelSummary(cfg)
      + "batch \(o.microBatches)x\(cfg.batch)\(meshed ? " global, mesh \(shape) on \(devices) devices" : ""), "
      + "\(cfg.parameterCount) params, \(threads) thread(s)\(meshed ? " per rank" : ""), \(o.optimizer.kind), remat \(o.remat); "
      + "planned bytes\(meshed ? " per rank" : ""): \(Train.rankBytesText(cfg, shape: shape, options: o)); "
      + "\(Train.dataSummary(dataset)); peak fp32 \(Train.peakText(o.peakFLOPS)), bf16 \(Train.peakText(o.bf16PeakFLOPS)) (\(peakSource))"
    // A live progress line on a terminal when one rank prints; a line per --print-every otherwise.
    let live = isatty(STDOUT_FILENO) != 0 && !meshed
    let budgetStart = Date()
    let outcome: (end: MetricsRecord, history: [MetricsRecord])
    do {
      outcome = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout ?? 300,
                                     phaseTimeout: phaseTimeout) {
        comm -> (end: MetricsRecord, history: [MetricsRecord]) in
        let prefix = meshed ? "[rank \(comm.rank)/\(comm.size)] " : ""
        let trainer = try Trainer(options: options, dataset: dataset, mesh: try Mesh(shape: shape, world: comm))
        trainer.stopRequested = { Preemption.signal != nil }  // rank 0's answer holds for every rank
        if checkpointDir == nil && comm.rank == 0 { Preemption.removeOnExit = trainer.store.directory }
        if let slow = MeshCLI.slowCheckpointDrill { trainer.duringCheckpointWrite = { usleep(UInt32(slow * 1e6)) } }
        if comm.rank == 0 {
          Train.say(header)
          if !trainer.dropout.isOff { Train.say("dropout: \(trainer.dropout)") }
          Train.sayPrecision(trainer.precision)
        }
        if resume {
          let text = prefix + Train.resumeMessage(try trainer.resume(), directory: checkpointDir!)
          FileHandle.standardError.write(Data((text + "\n").utf8))
        }
        // One run at a time per checkpoint directory, held by rank 0 from its first write (nothing
        // is written before: a refused resume leaves the directory as it was) to the run's end.
        let directoryLock = comm.rank == 0 ? try checkpointDir.map { try CheckpointDirectoryLock(directory: $0) } : nil
        defer { withExtendedLifetime(directoryLock) {} }
        // Metrics JSONL from rank 0 only: the losses are global, the other ranks would repeat them.
        let metrics = try comm.rank == 0 ? Train.openMetricsLog(log, append: resume) : nil
        let hang = MeshCLI.hangDrill, kill9 = MeshCLI.killDrill
        let stepsAtStart = trainer.step
        trainer.onRecord = { [unowned trainer] r in
          metrics?.write(r)
          if r.type == "step" && comm.rank == 0 { Preemption.drill(afterStep: r.step) }
          let line = prefix + Train.progressLine(r, lastValidation: trainer.lastValidationLoss, meshed: meshed,
                                                 options: options, stepsAtStart: stepsAtStart, since: budgetStart)
          if live {
            FileHandle.standardOutput.write(Data(("\r" + line + "\u{1B}[K" + (Train.isMilestone(r) ? "\n" : "")).utf8))
          } else if Train.isMilestone(r) || r.checkpoint != nil || r.step % printEvery == 0 {
            Train.say(line)
          }
          if let kill9, kill9.rank == comm.rank, kill9.step == r.step, r.type == "step" { kill(getpid(), SIGKILL) }
          if let hang, hang.rank == comm.rank, hang.step == r.step, r.type == "step" {
            Train.say(prefix + "fault drill: hanging after step \(r.step)")
            while true { sleep(3600) }
          }
        }
        let end = try trainer.run()
        return (end: end, history: trainer.history)
      }
    } catch {
      throw MeshCLI.afterStart(error, devices: devices, command: "train")
    }
    guard MeshCLI.isReporter(devices) else {
      if let sig = Preemption.signal { throw ExitCode(128 + sig) }
      return
    }
    try finish(end: outcome.end, history: outcome.history,
               title: "palm train \(cfg.name)\(meshed ? " mesh \(shape)" : ""): loss (nats/token) — \(outcome.end.step) updates")
  }

  // MARK: - Parts of the run

  /// Checks made before anything is read or written: the --plot path can be written, and without
  /// --resume the checkpoint directory holds no other run.
  func preflight() throws {
    if let plot { try Train.checkWritable(plot, flag: "--plot") }
    if !resume, let dir = checkpointDir, let held = CheckpointStore(directory: dir).heldRun() {
      throw CLIError(CheckpointError.otherRun(directory: dir, held: held).description)
    }
    // Outputs that would overwrite an input (or each other): the same file, however it is named.
    let outputs = [("--plot", plot), ("--log", log)].compactMap { f, p in p.map { (f, $0) } }
    for (flag, path) in outputs {
      if let data, Train.sameFile(path, data) { throw CLIError("\(flag) \(path) is the --data file: writing it would destroy the data; give another path") }
    }
    if let plot, let log, plot == log || Train.sameFile(plot, log) {
      throw CLIError("--plot and --log name the same file \(plot): the plot would overwrite the metrics; give two paths")
    }
    if !resume, let log {
      do { try MetricsLog.checkNew(log) } catch let e as TrainError { throw CLIError(e.description) }
    }
  }

  /// Whether two paths name one existing file (same device and inode: links and other spellings too).
  static func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat(), sb = stat()
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
  }

  /// Creates the parent directories of `path` and checks that a file can be written there.
  static func checkWritable(_ path: String, flag: String) throws {
    let url = URL(fileURLWithPath: path)
    let parent = url.deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
      throw CLIError("\(flag) \(path) is a directory: give a file path")
    }
    do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
      throw CLIError("\(flag) \(path): cannot create directory \(parent)")
    }
    if access(parent, W_OK) != 0 { throw CLIError("\(flag) \(path): directory \(parent) is not writable") }
  }

  /// What a run stopped by SIGTERM / SIGINT says, and its exit code (128 + the signal, as a shell
  /// reports a process the signal ended); nil when no signal came.
  static func preemptionExit(_ end: MetricsRecord, checkpointDir: String?) -> ExitCode? {
    guard let sig = Preemption.signal else { return nil }
    let saved = checkpointDir == nil ? "no --checkpoint-dir, nothing saved"
                                     : "checkpoint \(end.checkpoint ?? "-") written (continue with --resume)"
    FileHandle.standardError.write(Data("palm train: \(Preemption.name(sig)): stopped at step \(end.step), \(saved)\n".utf8))
    return ExitCode(128 + sig)
  }

  /// The metrics log of --log (appended to on --resume), or nil without --log.
  static func openMetricsLog(_ path: String?, append: Bool) throws -> MetricsLog? {
    try path.map { try MetricsLog(path: $0, append: append) }
  }

  /// The end of a run: the loss plot of --plot (from the --log file when it has records, else from
  /// `history`) and the last checkpoint.
  func finish(end: MetricsRecord, history: [MetricsRecord], title: String) throws {
    if let exit = Train.preemptionExit(end, checkpointDir: checkpointDir) { throw exit }
    if let plot {
      let all = log.map { MetricsLog.read(path: $0) } ?? history
      let svg = LossPlot.svg(all.isEmpty ? history : all, title: title)
      do { try AtomicFile.write(to: plot, bytes: Array(svg.utf8)) } catch { throw CLIError("cannot write \(plot): \(error)") }
      Train.say("loss plot: \(plot)")
    }
    if let c = end.checkpoint { Train.say("checkpoint: \(c)") }
  }

  /// The start of the header line: the model's shape.
  static func modelSummary(_ cfg: PalmConfig) -> String {
    "palm train: \(cfg.name) d\(cfg.dModel) L\(cfg.layers) H\(cfg.heads)x\(cfg.headDim) F\(cfg.dFF) T\(cfg.seqLen) "
  }

  /// The header's data part: the sizes of the two splits.
  static func dataSummary(_ dataset: TokenDataset) -> String {
    guard let sp = dataset.tokenizer.sentencePiece else { return "data \(dataset.trainCount) train / \(dataset.validationCount) val bytes" }
    return "data \(dataset.trainCount) train / \(dataset.validationCount) val tokens of SentencePiece vocab \(sp.vocabularySize) "
      + "(val \(dataset.validationByteCount) bytes, \(String(format: "%.3f", Double(dataset.validationByteCount) / Double(max(dataset.validationCount, 1)))) bytes/token)"
  }

  /// The header's MFU peak ("-" when unknown).
  static func peakText(_ flops: Double?) -> String { flops.map { String(format: "%.1f GFLOP/s", $0 / 1e9) } ?? "-" }

  /// What --resume found: the step resumed from, or that the run starts at step 0.
  static func resumeMessage(_ step: Int?, directory: String) -> String {
    step.map { "resumed from step \($0) in \(directory)" } ?? "no checkpoint in \(directory): starting at step 0"
  }

  /// A record always printed on its own line: a spike, the end, or an update that validated.
  static func isMilestone(_ r: MetricsRecord) -> Bool { r.type != "step" || r.valLoss != nil }

  /// A number of a progress line with `digits` decimals, "-" when absent.
  static func fmt(_ x: Double?, _ digits: Int = 3) -> String { x.map { String(format: "%.\(digits)f", $0) } ?? "-" }

  /// The model shape: the preset or config file, with --batch and --seq-len applied.
  func resolveConfig() throws -> PalmConfig {
    var cfg: PalmConfig
    if let f = configFile {
      guard let bytes = FileManager.default.contents(atPath: f) else { throw CLIError("cannot read config file \(f)") }
      do { cfg = try JSONDecoder().decode(PalmConfig.self, from: bytes) } catch {
        throw CLIError("config file \(f) is not a PalmConfig JSON: \(error)")
      }
    } else {
      let name = config ?? "shakespeare"
      guard let p = PalmConfig.presets[name] else {
        throw CLIError("unknown config \(name); presets: \(PalmConfig.presets.keys.sorted().joined(separator: ", "))")
      }
      cfg = p
    }
    if let b = batch { cfg.batch = b }
    if let t = seqLen { cfg.seqLen = t }
    do { try cfg.validate() } catch { throw CLIError("\(error)") }
    return try applyTokenizer(to: cfg)
  }

  /// The training data, as windows of the config's sequence length.
  func openDataset(_ cfg: PalmConfig) throws -> TokenDataset {
    guard let dataPath = data ?? ProcessInfo.processInfo.environment["PALM_DATA"], !dataPath.isEmpty else {
      throw CLIError("no data: give --data PATH or set PALM_DATA")
    }
    if let tok = try runTokenizer() { return try openTokenDataset(cfg, data: dataPath, tokenizer: tok) }
    do { return try TokenDataset(path: dataPath, sequenceLength: cfg.seqLen) } catch { throw CLIError("\(error)") }
  }

  /// The run's settings from the flags (the MFU peak is set by the caller).
  func trainOptions(_ cfg: PalmConfig) -> TrainOptions {
    var o = TrainOptions(config: cfg)
    o.remat = RematPolicy(rawValue: remat)!
    o.precision = precision
    o.microBatches = microBatches
    o.maxSteps = steps
    o.timeBudget = timeBudget
    o.seed = seed
    if dropout != nil || embeddingDropout != nil {
      o.dropout = Dropout(residual: dropout ?? 0, embedding: embeddingDropout ?? dropout ?? 0)
    }
    o.evalEvery = evalEvery
    o.evalWindows = evalWindows
    o.checkpointDirectory = checkpointDir
    o.checkpointEvery = checkpointEvery
    o.keepLast = keep ?? 3
    o.allowChangedSettings = allowChangedSettings
    o.spikes.factor = spikeFactor
    o.spikes.skipBatches = spikeSkip
    let peak = optimizer == "adafactor" ? (lr ?? 1e-2) : (lr ?? 2e-3)
    o.optimizer = optimizer == "adafactor" ? .adafactor(AdafactorSettings())
                                            : .adamW(AdamWSettings(weightDecay: weightDecay ?? 0.1))
    switch schedule ?? (optimizer == "adafactor" ? "palm" : "cosine") {
    case "palm": o.learningRate = .steps(.palm(peak: peak, constantSteps: constantSteps ?? 1000))
    case "constant": o.learningRate = .steps(.constant(peak))
    default:
      if let s = steps {
        o.learningRate = .steps(.warmupCosine(peak: peak, warmupSteps: min(warmup ?? 100, max(s - 1, 0)),
                                              totalSteps: max(s, 1), floor: peak / 10))
      } else {
        o.learningRate = .timeCosine(peak: peak, warmupSteps: warmup ?? 100, floor: peak / 10, budget: timeBudget!)
      }
    }
    return o
  }

  /// A line on stdout, unbuffered (so it interleaves with the progress line).
  static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

  /// One line of progress. A mesh run adds the rank's step time and pod exchange.
  static func progressLine(_ r: MetricsRecord, lastValidation: Double?, meshed: Bool, options o: TrainOptions,
                           stepsAtStart: Int, since start: Date) -> String {
    switch r.type {
    case "spike":
      return "spike at update \(r.step): \(r.reason ?? "") -> restored step \(r.restoredStep.map(String.init) ?? "-"), data from batch \(r.resumedDataPosition.map(String.init) ?? "-") (rollbacks \(r.rollbacks))"
    case "end":
      return "done: step \(r.step), \(r.tokens) tokens, \(fmt(r.seconds, 1)) s, val \(fmt(r.valLoss)) nats/token (\(fmt(r.valBitsPerByte)) bits/byte), whole validation split \(fmt(r.valLossFull)) nats/token (\(fmt(r.valBitsPerByteFull)) bits/byte), rollbacks \(r.rollbacks)"
    default:
      let elapsed = Date().timeIntervalSince(start)
      var eta: Double?
      if let b = o.timeBudget { eta = max(0, b - elapsed) }
      if let n = o.maxSteps, r.step > stepsAtStart {
        let e = elapsed / Double(r.step - stepsAtStart) * Double(n - r.step)
        eta = min(eta ?? e, e)
      }
      let exchange = !meshed ? "" : "| \(fmt(r.stepSeconds, 3)) s/step | exchange "
        + "\(String(format: "%.2f", Double(r.exchangeBytes ?? 0) / 1e6)) MB \(fmt((r.exchangeSeconds ?? 0) * 1e3, 1)) ms "
        + "hidden \(fmt((r.exchangeHidden ?? 1) * 100, 0))% "
      return "step \(r.step) loss \(fmt(r.crossEntropy)) val \(fmt(r.valLoss ?? lastValidation)) | \(fmt(r.tokensPerS, 0)) tok/s "
        + utilizationText(r) + " " + exchange + "| lr \(String(format: "%.2e", r.lr ?? 0)) | ETA \(fmt(eta, 0)) s"
        + (r.checkpoint.map { " | checkpoint \($0)" } ?? "")
    }
  }

  /// The planned bytes of one rank (MeshMemory): parameters, gradients, optimizer state, gathered
  /// buffers and activations.
  static func rankBytesText(_ cfg: PalmConfig, shape: MeshShape, options o: TrainOptions) -> String {
    guard let m = try? MeshMemory(config: cfg, shape: shape, remat: o.remat) else { return "-" }
    return m.summary
  }

  /// The MFU denominators into `o.peakFLOPS` / `o.bf16PeakFLOPS`: the peaks measured now at this
  /// thread's OpenMP threads × `ranks` (each rank of a mesh runs as many), or $PALM_PEAK_GFLOPS /
  /// $PALM_PEAK_BF16_GFLOPS in their place; then --peak-gflops, the whole mesh's at `precision`.
  /// Returns where they came from.
  static func resolvePeaks(_ flag: Double?, precision: GEMMPrecision, ranks: Int, into o: inout TrainOptions) -> String {
    var source: String
    do {
      let scale = 1e9 * Double(ranks)
      o.peakFLOPS = try PeakSource.measured.gflops(Threads.count).map { $0 * scale }
      o.bf16PeakFLOPS = try PeakSource.measured.bf16Gflops(Threads.count).map { $0 * scale }
      source = "\(PeakSource.measured.name) at \(Threads.count) threads" + (ranks > 1 ? " × \(ranks) ranks" : "")
    } catch {
      source = "peaks unknown (\(error))"
    }
    if let g = flag {
      if precision == .bf16 { o.bf16PeakFLOPS = g * 1e9 } else { o.peakFLOPS = g * 1e9 }
      source = "\(precision.rawValue): --peak-gflops; other: " + source
    }
    if (precision == .bf16 ? o.bf16PeakFLOPS : o.peakFLOPS) == nil {
      source += "; \(precision.rawValue) peak unknown: MFU/HFU not reported"
    }
    return source
  }

  /// "MFU 41.0% HFU 44.1% of fp32 peak (MFU 20.5% of bf16 peak)": every figure names its peak.
  static func utilizationText(_ r: MetricsRecord) -> String {
    "MFU \(fmt(r.mfu.map { $0 * 100 }, 1))% HFU \(fmt(r.hfu.map { $0 * 100 }, 1))% of \(r.peakPrecision ?? "-") peak"
      + (r.mfuOfBF16Peak.map { " (MFU \(fmt($0 * 100, 1))% of bf16 peak)" } ?? "")
  }

  /// The run's precision, once: bf16 says whether it is native or emulated.
  static func sayPrecision(_ p: GEMMPrecision) {
    guard p == .bf16 else { return }
    say(ISA.bf16Native ? "precision: bf16 GEMMs (AVX512_BF16), fp32 master weights and accumulation"
                       : "precision: bf16 GEMMs; " + BenchStep.bf16EmulationText)
  }
}
