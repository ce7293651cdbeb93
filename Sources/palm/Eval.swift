// palm eval: bits per byte of a checkpoint over a whole file (PalmTrain/Evaluation.swift), every
// byte after the first scored exactly once, with a progress line; text or one JSON object.
import ArgumentParser
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Score a checkpoint on a whole file: bits per byte and nats per token.",
    discussion: """
      The file is cut into consecutive, non-overlapping windows of the model's sequence length T (the last one shorter); every byte but the first is predicted exactly once, from the bytes before it in its window, which starts at position 0 as in training (so a window's first bytes have little context; a sliding window would score them better at T times the cost). Bits per byte = summed cross-entropy ÷ bytes scored ÷ ln 2 (the z-loss is not included), the figure that compares runs of any vocabulary. --checkpoint is a step directory or a checkpoint directory (its newest complete step).
        palm eval --checkpoint runs/shk --data tinyshakespeare.txt
        palm eval --checkpoint runs/shk/step_00002000 --data other.txt --format json
      """)

  @Option(help: "Checkpoint step directory, or a directory of steps (newest used).")
  var checkpoint: String
  @Option(help: "The file to score (any bytes).")
  var data: String
  @Option(help: "Windows per forward pass (default: the checkpoint config's batch).")
  var batch: Int?
  @Option(help: "Output format: text or json (one object).")
  var format: OutputFormat = .text
  @OptionGroup var compute: ComputeOptions

  func validate() throws {
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
  }

  func run() throws {
    try compute.apply()
    let ck = try CheckpointArgument.load(checkpoint)
    if let t = ck.manifest.tokenizer {  // Evaluation scores byte ids; a subword model needs the file encoded first
      throw CLIError("\(ck.path) was trained with a SentencePiece tokenizer (\(t.file), vocab \(t.vocab)); palm eval scores byte-vocabulary checkpoints only, so far")
    }
    var cfg = ck.manifest.config
    if let batch { cfg.batch = batch }
    let file: MappedFile
    // Read, not mapped: a file truncated during the evaluation must not end it with SIGBUS.
    do { file = try MappedFile(path: data, map: false) } catch let e as MappedFile.Failure {
      throw CLIError("cannot read \(data): \(e.reason) (give --data a readable file)")
    }
    let result: FileEvaluation
    do {
      let model = try Model(config: cfg, remat: .full)
      try ck.restore(config: ck.manifest.config, parameters: model.parameters.named)
      let tty = isatty(STDERR_FILENO) != 0
      var last = Date.distantPast
      let start = Date()
      result = try Evaluation.evaluate(model: model, data: file.bytes) { done, total in
        guard Date().timeIntervalSince(last) > 1 || done == total else { return }
        last = Date()
        let eta = Date().timeIntervalSince(start) / Double(done) * Double(total - done)
        let line = "eval: \(done)/\(total) windows, ETA \(Int(eta)) s"
        FileHandle.standardError.write(Data((tty ? "\r" + line + "\u{1B}[K" + (done == total ? "\n" : "") : line + "\n").utf8))
      }
    } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
    if format == .json {
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys]
      print(String(decoding: try e.encode(result), as: UTF8.self))
    } else {
      print(String(format: "%@: %.4f bits per byte (%.4f nats per token) over %d bytes of %@, %d windows of %d, step %d, %.1f s",
                   ck.path, result.bitsPerByte, result.natsPerToken, result.bytes, data, result.windows, cfg.seqLen,
                   ck.manifest.step, result.seconds))
    }
  }
}

/// `--checkpoint`: a step directory, or a directory of steps whose newest complete one is used.
enum CheckpointArgument {
  static func load(_ path: String) throws -> LoadedCheckpoint {
    do {
      if FileManager.default.fileExists(atPath: "\(path)/manifest.json") || path.split(separator: "/").last?.hasPrefix("step_") == true {
        return try CheckpointStore.load(path: path)
      }
      let store = CheckpointStore(directory: path, warn: { _ in })
      guard let c = store.latest() else {
        if let newest = store.stepDirectories().first { _ = try CheckpointStore.load(path: newest.path) }
        throw CLIError("no checkpoint in \(path)")
      }
      return c
    } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
  }
}
