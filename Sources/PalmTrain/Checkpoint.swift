// Checkpoint: crash-safe training checkpoints in a directory of steps.
//
//   <dir>/step_00001234/model.safetensors      parameters (names = the model's parameter table)
//                      /optimizer.safetensors  moments "m.<name>", "v.<name>" (when an optimizer is saved)
//                      /tokenizer.model        the SentencePiece model of a run with --tokenizer (absent: bytes)
//                      /manifest.json          format version, run id, step, config, optimizer, schedule,
//                                              sampler state, metrics, time, size + SHA-256 of each file
//                                              (fields and bounds: docs/FORMATS.md "Checkpoint manifest")
// A step is written into a hidden temp directory (.tmp-step_…), manifest.json last, everything
// fsynced, then the directory is renamed into place and its parent fsynced: a step directory with a
// manifest whose checksums match is complete; anything else (a crash mid-write, a full disk) is
// ignored by `latest` with a warning, and the previous checkpoints are untouched. Older complete
// checkpoints beyond the last K verified ones are deleted only after the new one is in place (as
// llm.c's DONE_%08d marker and its -nk keep-last-K option). A manifest's every value is checked
// against its bounds when it is read, so a hand-edited or damaged one is refused in one line.

import CKernels
import Foundation
import PalmModel
import PalmTensor

/// Size and SHA-256 (lower-case hex, as `sha256sum` prints it) of one checkpoint file.
public struct CheckpointFileRecord: Codable, Equatable, Sendable {
  public var bytes: Int
  public var sha256: String
}

/// manifest.json: everything besides the tensors needed to resume a run exactly.
public struct CheckpointManifest: Codable, Equatable, Sendable {
  public static let currentFormatVersion = 1
  public var formatVersion: Int
  /// The run the checkpoint belongs to (random, made when a run starts at step 0, kept by every
  /// resume); absent in manifests written before run ids existed.
  public var runId: String?
  /// Optimizer updates completed when the checkpoint was taken.
  public var step: Int
  public var config: PalmConfig
  public var optimizer: OptimizerSettings?
  /// The optimizer's own update count (bias correction / β2 schedule).
  public var optimizerStep: Int?
  public var schedule: LearningRateSchedule?
  /// Data position: the sampler's seed and next step.
  public var sampler: SamplerState?
  /// Any other generator seed the run uses (initialization, data order, dropout masks).
  public var rngSeed: UInt64?
  /// Dropout rates of the run (absent in older manifests: none).
  public var dropout: Dropout?
  /// The GEMMs' precision of the run (absent in older manifests: fp32); `--resume` keeps it
  /// unless told otherwise.
  public var precision: GEMMPrecision?
  /// Micro-batches per update and the gradient-norm clip of the run (absent in older manifests).
  public var microBatches: Int?
  public var clipNorm: Double?
  /// The run's SentencePiece tokenizer, stored beside the tensors (absent: the byte tokenizer).
  public var tokenizer: CheckpointTokenizer?
  /// A summary such as {"loss": 1.91, "val_loss": 1.95, "tokens": 4.1e6}.
  public var metrics: [String: Double]
  /// ISO 8601, UTC.
  public var createdAt: String
  /// OpenMP threads of the run (results are bit-reproducible at a fixed thread count).
  public var threads: Int
  /// "model.safetensors" / "optimizer.safetensors" -> size and checksum.
  public var files: [String: CheckpointFileRecord]

  /// The largest step, token count or data position a manifest may record (2^53: exact in the
  /// JSON's doubles, and far from Int overflow when a resume adds to it).
  public static let maxCount = 1 << 53

  /// Throws a message naming the first value outside its bound (docs/FORMATS.md lists them).
  public func validate() throws {
    func bad(_ m: String) -> CheckpointManifestInvalid { CheckpointManifestInvalid(message: m) }
    if let id = runId, id.isEmpty || id.count > 64 { throw bad("run_id must be 1 to 64 characters") }
    if !(0...Self.maxCount).contains(step) { throw bad("step \(step) is not in 0...2^53") }
    if let s = optimizerStep, !(0...Self.maxCount).contains(s) { throw bad("optimizer_step \(s) is not in 0...2^53") }
    if let s = sampler, !(1...Self.maxCount).contains(s.step) { throw bad("sampler step \(s.step) is not in 1...2^53") }
    if !(1...1 << 20).contains(threads) { throw bad("threads \(threads) is not in 1...2^20") }
    if let k = microBatches, !(1...TrainOptions.maxMicroBatches).contains(k) {
      throw bad("micro_batches \(k) is not in 1...\(TrainOptions.maxMicroBatches)")
    }
    if let c = clipNorm, !c.isFinite { throw bad("clip_norm \(c) is not finite") }
    do { try config.validate() } catch { throw bad("\(error)") }
    do { try dropout?.validate() } catch { throw bad("\(error)") }
    do { try optimizer?.validate() } catch { throw bad("\(error)") }
    do { try schedule?.validate() } catch { throw bad("\(error)") }
    do { _ = try CheckpointMetrics(decoding: metrics) } catch { throw bad("\(error)") }
    for (name, f) in files {
      if name.contains("/") || name.isEmpty { throw bad("bad file name \(name)") }
      if f.bytes < 0 { throw bad("\(name) has \(f.bytes) bytes") }
      if f.sha256.count != 64 || !f.sha256.allSatisfy(\.isHexDigit) { throw bad("\(name) has a malformed SHA-256") }
    }
  }
}

/// A manifest value outside its bound (`CheckpointManifest.validate`).
public struct CheckpointManifestInvalid: Error, CustomStringConvertible {
  public let message: String
  public var description: String { message }
}

/// Tensors handed to a writer one at a time, in `table`'s order (`tensor(i)` for i = 0, 1, ...).
public struct TensorStream {
  public let table: [(name: String, shape: [Int])]
  public let tensor: (Int) throws -> Tensor
  public init(table: [(name: String, shape: [Int])], tensor: @escaping (Int) throws -> Tensor) {
    self.table = table
    self.tensor = tensor
  }
}

/// What a checkpoint holds, for `CheckpointStore.save`.
public struct CheckpointContents {
  public var step: Int
  public var config: PalmConfig
  public var parameters: [(name: String, tensor: Tensor)]
  /// The optimizer's settings, update count and moments ("m.<name>", "v.<name>"), or nil.
  public var optimizerState: (settings: OptimizerSettings, step: Int, tensors: [(name: String, tensor: Tensor)])?
  /// Instead of `parameters` and `optimizerState.tensors`: tensors streamed to the files one at a
  /// time (a mesh assembles each from every rank's shard; no rank holds the whole model).
  public var streamed: (parameters: TensorStream, moments: TensorStream)?
  public var schedule: LearningRateSchedule?
  public var sampler: SamplerState?
  public var rngSeed: UInt64?
  public var dropout: Dropout?
  public var precision: GEMMPrecision?
  public var runId: String?
  public var microBatches: Int?
  public var clipNorm: Double?
  /// Written as tokenizer.model and recorded in the manifest (nil: the byte tokenizer).
  public var tokenizer: SentencePieceTokenizer?
  public var metrics: [String: Double]

  public init(step: Int, config: PalmConfig, parameters: [(name: String, tensor: Tensor)], optimizer: Optimizer? = nil,
              schedule: LearningRateSchedule? = nil, sampler: SamplerState? = nil, rngSeed: UInt64? = nil,
              dropout: Dropout? = nil, precision: GEMMPrecision? = nil, metrics: [String: Double] = [:]) {
    self.step = step
    self.config = config
    self.parameters = parameters
    self.optimizerState = optimizer.map { ($0.settings, $0.step, $0.stateTensors) }
    self.schedule = schedule
    self.sampler = sampler
    self.rngSeed = rngSeed
    self.dropout = dropout
    self.precision = precision
    self.metrics = metrics
  }
}

/// Why a checkpoint could not be written or used.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
  case io(String)
  case incomplete(path: String, reason: String)
  case corrupt(path: String, reason: String)
  case unsupportedFormat(path: String, version: Int)
  case configMismatch(path: String, field: String, checkpoint: String, expected: String)
  case noCheckpoint(directory: String)
  /// A new run into a directory that holds another run's checkpoints (`held`: "step 120, seed 7").
  case otherRun(directory: String, held: String)
  /// A file of a verified checkpoint could not be read while its tensors were loaded (truncated
  /// or rewritten meanwhile, or a read error).
  case unreadable(path: String, file: String, reason: String)
  /// Another live process trains into the directory (`holder`: "pid 1234", or "another process").
  case locked(directory: String, holder: String)

  public var description: String {
    switch self {
    case .io(let m): "checkpoint: \(m)"
    case .incomplete(let p, let r): "checkpoint \(p) is incomplete: \(r)"
    case .corrupt(let p, let r): "checkpoint \(p) is corrupt: \(r)"
    case .unsupportedFormat(let p, let v):
      "checkpoint \(p) has format version \(v); this build reads version \(CheckpointManifest.currentFormatVersion)"
    case .configMismatch(let p, let f, let c, let e):
      "checkpoint \(p) was trained with \(f) = \(c), but the model has \(f) = \(e)"
    case .noCheckpoint(let d): "no complete checkpoint in \(d)"
    case .otherRun(let d, let held):
      "\(d) holds another run (\(held)): pass --resume to continue it, or another --checkpoint-dir"
    case .unreadable(let p, let f, let r):
      "checkpoint \(p): \(f) could not be read while loading (\(r)); put the file back, or move \(p) aside "
        + "to load the newest checkpoint before it"
    case .locked(let d, let holder):
      "\(d) is in use by a running palm train (\(holder)): wait for it to end, or give another --checkpoint-dir"
    }
  }
}

/// One run at a time in a checkpoint directory: an exclusive flock(2) on `<directory>/.lock`, held
/// while this object lives (the training process), released by the kernel when the process ends
/// however it ends, so a killed run never leaves a stale lock. The file holds the holder's pid,
/// for the message. Advisory: it stops a second `palm train`, not other programs.
public final class CheckpointDirectoryLock: @unchecked Sendable {
  public static let fileName = ".lock"
  public let directory: String
  private let fd: Int32

  /// Creates `directory` if needed and takes its lock.
  /// - Throws: `CheckpointError.locked` when another process holds it; `.io` when the directory or
  ///   the lock file cannot be made.
  public init(directory: String) throws {
    self.directory = directory
    do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
      throw CheckpointError.io("cannot create \(directory): \(error.localizedDescription)")
    }
    let path = "\(directory)/\(Self.fileName)"
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw CheckpointError.io(FileError("open", path).description) }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      let code = errno
      var text = [UInt8](repeating: 0, count: 32)
      let n = pread(fd, &text, text.count, 0)
      close(fd)
      guard code == EWOULDBLOCK else { throw CheckpointError.io(FileError("flock", path, code: code).description) }
      let pid = n > 0 ? Int(String(decoding: text[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) : nil
      throw CheckpointError.locked(directory: directory, holder: pid.map { "pid \($0)" } ?? "another process")
    }
    let mine = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pwrite(fd, mine, mine.count, 0)
    self.fd = fd
  }

  deinit { close(fd) }  // releases the flock
}

/// A verified checkpoint: manifest read, file sizes and checksums matched, safetensors headers valid.
public final class LoadedCheckpoint: @unchecked Sendable {
  public let path: String
  public let manifest: CheckpointManifest
  public let model: SafeTensorsFile
  public let optimizerState: SafeTensorsFile?

  init(path: String, manifest: CheckpointManifest, model: SafeTensorsFile, optimizerState: SafeTensorsFile?) {
    self.path = path
    self.manifest = manifest
    self.model = model
    self.optimizerState = optimizerState
  }

  /// Throws `.configMismatch` naming the first model-shape field that differs from `config`.
  /// The batch size and preset name may differ (PaLM changed the batch size during training).
  public func checkCompatible(with config: PalmConfig) throws {
    let c = manifest.config
    let fields: [(String, Int, Int)] = [
      ("d_model", c.dModel, config.dModel), ("layers", c.layers, config.layers), ("heads", c.heads, config.heads),
      ("head_dim", c.headDim, config.headDim), ("d_ff", c.dFF, config.dFF), ("vocab", c.vocab, config.vocab),
      ("seq_len", c.seqLen, config.seqLen),
    ]
    for (name, saved, wanted) in fields where saved != wanted {
      throw CheckpointError.configMismatch(path: path, field: name, checkpoint: "\(saved)", expected: "\(wanted)")
    }
  }

  /// Checks the config, then copies parameters (and moments, when `optimizer` is given) into place.
  /// - Throws: `.configMismatch`, `SafeTensorsError` ("missing tensor ...", shape mismatch),
  ///   `.incomplete` when the optimizer state is asked for but was not saved, `OptimizerError` for
  ///   another optimizer kind.
  public func restore(config: PalmConfig, parameters: [(name: String, tensor: Tensor)], optimizer: Optimizer? = nil) throws {
    try checkCompatible(with: config)
    try model.check(expected: parameters.map { ($0.name, $0.tensor.shape) })
    if let optimizer {
      guard let state = optimizerState, let saved = manifest.optimizer else {
        throw CheckpointError.incomplete(path: path, reason: "it holds no optimizer state")
      }
      if saved.kind != optimizer.settings.kind {
        throw OptimizerError("checkpoint \(path) holds \(saved.kind) state, the run uses \(optimizer.settings.kind)")
      }
      try state.check(expected: optimizer.stateTable)
      try reading { try optimizer.restore(from: state, step: manifest.optimizerStep ?? manifest.step) }
    }
    try reading { try model.load(into: parameters) }
  }

  /// Runs `body`, which reads tensors from the checkpoint's files; a file that became shorter since
  /// it was verified (`.changed`), or whose read fails, becomes `.unreadable` naming it and the way out.
  func reading<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as SafeTensorsError where e.kind == .changed || e.kind == .io {
      throw CheckpointError.unreadable(path: path, file: (e.file as NSString).lastPathComponent, reason: e.message)
    }
  }
}

/// A directory of step checkpoints with keep-last-K retention.
///
/// ```swift
/// let store = CheckpointStore(directory: "runs/tiny/checkpoints", keepLast: 3)
/// try store.save(CheckpointContents(step: 500, config: cfg, parameters: params.named, optimizer: opt,
///                                   sampler: sampler.state))
/// if let ckpt = store.latest() { try ckpt.restore(config: cfg, parameters: params.named, optimizer: opt) }
/// ```
public struct CheckpointStore: Sendable {
  public let directory: String
  /// Complete checkpoints kept after a save (older ones are deleted); at least 1.
  public var keepLast: Int
  /// Receives warnings (a skipped incomplete or corrupt checkpoint); default: standard error.
  public var warn: @Sendable (String) -> Void
  /// rename(2) of a finished temp directory into its step directory; tests inject a failing one
  /// (a same-step replacement that cannot take the old one's place). Default: rename(2).
  let renameIntoPlace: @Sendable (String, String) -> Int32
  /// Step directories known to verify: written by this store, or loaded once (keep-last-K counts
  /// only these, without re-reading every kept checkpoint at each save).
  private let verified = VerifiedPaths()

  public init(directory: String, keepLast: Int = 3,
              warn: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data("warning: \($0)\n".utf8)) }) {
    self.init(directory: directory, keepLast: keepLast, warn: warn, renameIntoPlace: { rename($0, $1) })
  }

  /// A store whose rename of a new step directory into place is `renameIntoPlace` (tests).
  init(directory: String, keepLast: Int = 3, warn: @escaping @Sendable (String) -> Void = { _ in },
       renameIntoPlace: @escaping @Sendable (String, String) -> Int32) {
    self.directory = directory
    self.keepLast = max(1, keepLast)
    self.warn = warn
    self.renameIntoPlace = renameIntoPlace
  }

  /// The directory name of a step: step_00001234.
  public static func directoryName(step: Int) -> String {
    let digits = String(step)
    return "step_" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
  }

  /// Writes a checkpoint for `contents.step`, then deletes complete checkpoints beyond the last K.
  /// - Returns: the new step directory.
  /// - Throws: `CheckpointError.io` naming the failed write (e.g. "No space left on device"); the
  ///   partial temp directory is removed and earlier checkpoints are untouched.
  @discardableResult
  public func save(_ contents: CheckpointContents) throws -> String {
    if contents.step < 0 { throw CheckpointError.io("negative step \(contents.step)") }
    let fm = FileManager.default
    do {
      try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw CheckpointError.io("cannot create \(directory): \(error.localizedDescription)")
    }
    let name = CheckpointStore.directoryName(step: contents.step)
    let final = "\(directory)/\(name)"
    let tmp = "\(directory)/.tmp-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    guard mkdir(tmp, 0o755) == 0 else { throw CheckpointError.io(FileError("mkdir", tmp).description) }
    do {
      var files: [String: CheckpointFileRecord] = [:]
      let meta = ["format": "pt", "palm.step": "\(contents.step)", "palm.config": contents.config.name]
      if let st = contents.streamed {
        try SafeTensors.write(table: st.parameters.table, metadata: meta, to: "\(tmp)/model.safetensors", tensor: st.parameters.tensor)
      } else {
        try SafeTensors.write(contents.parameters, metadata: meta, to: "\(tmp)/model.safetensors")
      }
      files["model.safetensors"] = try CheckpointStore.record("\(tmp)/model.safetensors")
      if let opt = contents.optimizerState {
        let optMeta = meta.merging(["palm.optimizer": opt.settings.kind]) { $1 }
        if let st = contents.streamed {
          try SafeTensors.write(table: st.moments.table, metadata: optMeta, to: "\(tmp)/optimizer.safetensors", tensor: st.moments.tensor)
        } else {
          try SafeTensors.write(opt.tensors, metadata: optMeta, to: "\(tmp)/optimizer.safetensors")
        }
        files["optimizer.safetensors"] = try CheckpointStore.record("\(tmp)/optimizer.safetensors")
      }
      if let tok = contents.tokenizer {
        try AtomicFile.write(to: "\(tmp)/\(CheckpointTokenizer.fileName)", bytes: tok.model)
        files[CheckpointTokenizer.fileName] = try CheckpointStore.record("\(tmp)/\(CheckpointTokenizer.fileName)")
      }
      let manifest = CheckpointManifest(
        formatVersion: CheckpointManifest.currentFormatVersion, runId: contents.runId, step: contents.step, config: contents.config,
        optimizer: contents.optimizerState?.settings, optimizerStep: contents.optimizerState?.step, schedule: contents.schedule,
        sampler: contents.sampler, rngSeed: contents.rngSeed, dropout: contents.dropout, precision: contents.precision,
        microBatches: contents.microBatches, clipNorm: contents.clipNorm, 
        tokenizer: contents.tokenizer.map { CheckpointTokenizer(tokenizer: $0) }, metrics: contents.metrics,
        createdAt: ISO8601DateFormatter().string(from: Date()), threads: Threads.count, files: files)
      try AtomicFile.write(to: "\(tmp)/manifest.json", bytes: Array(try CheckpointStore.encoder.encode(manifest)))
      try AtomicFile.syncDirectory(tmp)
      // Replace an existing directory of the same step only now that the new one is complete; if
      // the new one cannot take its place, the old one is put back (a crash in between leaves it
      // as .trash-…, which `restoreOrphanedTrash` puts back).
      var trash: String?
      if fm.fileExists(atPath: final) {
        trash = "\(directory)/.trash-\(name)-\(getpid())"
        if rename(final, trash!) != 0 { throw FileError("rename", "\(final) -> \(trash!)") }
      }
      if renameIntoPlace(tmp, final) != 0 {
        let failure = FileError("rename", "\(tmp) -> \(final)")
        if let trash { _ = rename(trash, final) }
        throw failure
      }
      try AtomicFile.syncDirectory(directory)
      verified.insert(final)
      if let trash { try? fm.removeItem(atPath: trash) }
    } catch {
      try? fm.removeItem(atPath: tmp)
      switch error {
      case let e as FileError: throw CheckpointError.io(e.description)
      case let e as SafeTensorsError: throw CheckpointError.io(e.description)
      default: throw error
      }
    }
    prune(keeping: final)
    return final
  }

  /// Step directories (complete or not), newest first.
  public func stepDirectories() -> [(step: Int, path: String)] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.compactMap { n -> (Int, String)? in
      guard n.hasPrefix("step_"), let s = Int(n.dropFirst(5)), s >= 0 else { return nil }
      return (s, "\(directory)/\(n)")
    }.sorted { $0.0 > $1.0 }
  }

  /// The newest checkpoint that loads and verifies (of run `runId` when given; a manifest without
  /// a run id, written before they existed, counts as any run's); incomplete or corrupt ones are
  /// skipped with a warning. nil when there is none.
  public func latest(runId: String? = nil) -> LoadedCheckpoint? {
    restoreOrphanedTrash()
    for (_, path) in stepDirectories() {
      do {
        let ck = try CheckpointStore.load(path: path)
        verified.insert(path)
        if let runId, let id = ck.manifest.runId, id != runId { continue }
        return ck
      } catch { warn("skipping \(error)") }
    }
    return nil
  }

  /// The run the directory already holds, as "step 120, seed 7" (its newest step directory's
  /// manifest, read without verifying the files), or nil when it holds no step directory.
  public func heldRun() -> String? {
    restoreOrphanedTrash()
    guard let (step, path) = stepDirectories().first else { return nil }
    guard let data = FileManager.default.contents(atPath: "\(path)/manifest.json"),
          let m = try? CheckpointStore.decoder.decode(CheckpointManifest.self, from: data) else {
      return "step \(step), manifest unreadable"
    }
    return "step \(m.step)" + (m.rngSeed.map { ", seed \($0)" } ?? "")
  }

  /// Puts back a step directory that a crash left moved aside as .trash-step_…-<pid> while its
  /// replacement was being renamed in (the writer is dead and the step directory is missing).
  private func restoreOrphanedTrash() {
    let fm = FileManager.default
    for n in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where n.hasPrefix(".trash-step_") {
      let parts = n.split(separator: "-")  // .trash, step_XXXXXXXX, pid
      guard parts.count == 3, let pid = Int32(parts[2]), kill(pid, 0) != 0 else { continue }
      let final = "\(directory)/\(parts[1])"
      if !fm.fileExists(atPath: final) { _ = rename("\(directory)/\(n)", final) }
    }
  }

  /// The newest complete, verified checkpoint in `directory` (see `latest()`).
  public static func latest(in directory: String,
                            warn: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data("warning: \($0)\n".utf8)) })
    -> LoadedCheckpoint? {
    CheckpointStore(directory: directory, warn: warn).latest()
  }

  /// Reads and verifies the checkpoint in `path`: manifest present and readable, format version
  /// known, every listed file of the recorded size and SHA-256, safetensors headers valid.
  public static func load(path: String) throws -> LoadedCheckpoint {
    let manifestPath = "\(path)/manifest.json"
    guard let data = FileManager.default.contents(atPath: manifestPath) else {
      throw CheckpointError.incomplete(path: path, reason: "manifest.json is missing (the write did not finish)")
    }
    let manifest: CheckpointManifest
    do { manifest = try decoder.decode(CheckpointManifest.self, from: data) } catch {
      throw CheckpointError.corrupt(path: path, reason: "manifest.json does not decode: \(error)")
    }
    if manifest.formatVersion != CheckpointManifest.currentFormatVersion {
      throw CheckpointError.unsupportedFormat(path: path, version: manifest.formatVersion)
    }
    do { try manifest.validate() } catch {
      throw CheckpointError.corrupt(path: path, reason: "manifest.json: \(error)")
    }
    guard manifest.files["model.safetensors"] != nil else {
      throw CheckpointError.corrupt(path: path, reason: "manifest lists no model.safetensors")
    }
    for (file, want) in manifest.files.sorted(by: { $0.key < $1.key }) {
      guard !file.contains("/") else { throw CheckpointError.corrupt(path: path, reason: "bad file name \(file)") }
      if access("\(path)/\(file)", F_OK) != 0 && errno == ENOENT {
        throw CheckpointError.incomplete(path: path, reason: "\(file) is missing, though its manifest lists it (put the file back, e.g. the run's tokenizer model as \(file), or use another checkpoint)")
      }
      let got: CheckpointFileRecord
      do { got = try record("\(path)/\(file)") } catch {
        throw CheckpointError.corrupt(path: path, reason: "\(file): \(error)")
      }
      if got.bytes != want.bytes {
        throw CheckpointError.corrupt(path: path, reason: "\(file) is \(got.bytes) bytes, the manifest says \(want.bytes) "
                                      + "(truncated or partly copied: copy the checkpoint again, or use another step directory)")
      }
      if got.sha256 != want.sha256 {
        throw CheckpointError.corrupt(path: path, reason: "\(file) has SHA-256 \(got.sha256), the manifest says \(want.sha256) "
                                      + "(damaged: copy the checkpoint again, or use another step directory)")
      }
    }
    let model = try SafeTensorsFile(path: "\(path)/model.safetensors")
    let opt = manifest.files["optimizer.safetensors"] != nil ? try SafeTensorsFile(path: "\(path)/optimizer.safetensors") : nil
    return LoadedCheckpoint(path: path, manifest: manifest, model: model, optimizerState: opt)
  }

  /// Deletes step directories older than the newest `keepLast` verified checkpoints (never
  /// `keeping`; an unverified directory newer than those is left for `latest` to skip), leftover
  /// temp directories of dead writers, and trash.
  private func prune(keeping: String) {
    let fm = FileManager.default
    restoreOrphanedTrash()
    var kept = 0
    for (_, path) in stepDirectories() where path != keeping {
      if kept >= keepLast - 1 { try? fm.removeItem(atPath: path); continue }
      if verified.contains(path) || (try? CheckpointStore.load(path: path)) != nil {
        verified.insert(path)
        kept += 1
      }
    }
    for n in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where n.hasPrefix(".tmp-step_") || n.hasPrefix(".trash-step_") {
      // .tmp-step_XXXXXXXX-<pid>-<rand> / .trash-step_XXXXXXXX-<pid>: keep while the writer is alive.
      let parts = n.split(separator: "-")
      if parts.count >= 3, let pid = Int32(parts[2]), kill(pid, 0) == 0 { continue }
      try? fm.removeItem(atPath: "\(directory)/\(n)")
    }
  }

  static var encoder: JSONEncoder {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return e
  }

  static var decoder: JSONDecoder {
    let d = JSONDecoder()
    d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return d
  }

  /// Size and SHA-256 of a file, read in 1 MiB pieces.
  static func record(_ path: String) throws -> CheckpointFileRecord {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw FileError("open", path) }
    defer { close(fd) }
    var sha = SHA256()
    let size = 1 << 20
    let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    defer { buf.deallocate() }
    var total = 0
    while true {
      let n = read(fd, buf, size)
      if n < 0 { if errno == EINTR { continue }; throw FileError("read", path) }
      if n == 0 { break }
      sha.update(UnsafeRawBufferPointer(start: buf, count: n))
      total += n
    }
    let hex = SHA256.hex(sha.finalize())
    return CheckpointFileRecord(bytes: total, sha256: hex)
  }
}

/// A set of paths shared by copies of a `CheckpointStore` (a struct), behind a lock.
private final class VerifiedPaths: @unchecked Sendable {
  private let lock = NSLock()
  private var paths: Set<String> = []
  func insert(_ p: String) { lock.lock(); paths.insert(p); lock.unlock() }
  func contains(_ p: String) -> Bool { lock.lock(); defer { lock.unlock() }; return paths.contains(p) }
}
