// palm eval: bits per byte of a checkpoint over a whole file (PalmTrain/Evaluation.swift), encoded
// with the checkpoint's tokenizer (bytes, or its tokenizer.model), every token after the first
// scored exactly once, with a progress line; text or one JSON object.
import ArgumentParser
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Score a checkpoint on a whole file: bits per byte and nats per token.",
    discussion: """
      The file is encoded with the checkpoint's tokenizer (bytes, or the SentencePiece tokenizer.model it was trained with) and the tokens cut into consecutive, non-overlapping windows of the model's sequence length T (the last one shorter); every token but the first is predicted exactly once, from the tokens before it in its window, which starts at position 0 as in training (so a window's first tokens have little context; a sliding window would score them better at T times the cost). Bits per byte = the cross-entropy summed over the scored tokens (nats; the z-loss is not included) ÷ the bytes of text those tokens stand for (the file's size less the first token's bytes) ÷ ln 2: the figure that compares runs of any vocabulary. Nats per token = the same sum ÷ the tokens scored. The forward runs at the checkpoint's GEMM precision (a bf16-trained run is scored in bf16, as its training log's evaluations were); --precision fp32 scores its fp32 master weights with fp32 products.
        palm eval --checkpoint runs/shk --data tinyshakespeare.txt
        palm eval --checkpoint runs/shk/step_00002000 --data other.txt --format json
      """)

  @OptionGroup var checkpoint: CheckpointOption
  @Option(help: "The file to score (any bytes).")
  var data: String
  @Option(help: "Windows per forward pass (default: the checkpoint config's batch).")
  var batch: Int?
  @Option(help: "Output format: text or json (one object).")
  var format: OutputFormat = .text
  @Option(help: "GEMM precision of the forward: fp32 or bf16 (default: the checkpoint's).")
  var precision: GEMMPrecision?
  @OptionGroup var compute: ComputeOptions

  func validate() throws {
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
  }

  func run() throws {
    try compute.apply()
    let ck = try checkpoint.load()
    let tokenizer: Tokenizer
    do { tokenizer = try ck.tokenizer() } catch { throw CLIError("\(error)") }
    var cfg = ck.manifest.config
    let file: MappedFile
    // Read, not mapped: a file truncated during the evaluation must not end it with SIGBUS.
    do { file = try MappedFile(path: data, map: false) } catch let e as MappedFile.Failure {
      throw CLIError("cannot read \(data): \(e.reason) (give --data a readable file)")
    }
    // No more rows than the file has windows (a token is at least a byte), and the model fits.
    if let batch { cfg.batch = min(batch, max(1, file.bytes.count / cfg.seqLen + 1)) }
    let bytes = cfg.parameterCount * 4 + MemoryPlan(config: cfg, policy: .full).totalBytes
    do { try MemoryBudget.check(bytes, for: "evaluating \(ck.path) at batch \(cfg.batch) (weights and activations)") } catch {
      throw CLIError("\(error); give a smaller --batch")
    }
    let tty = isatty(STDERR_FILENO) != 0
    func say(_ line: String, final: Bool) {
      FileHandle.standardError.write(Data((tty ? "\r" + line + "\u{1B}[K" + (final ? "\n" : "") : line + "\n").utf8))
    }
    if tokenizer.sentencePiece != nil { say("eval: encoding \(file.bytes.count) bytes of \(data) with \(ck.path)/\(CheckpointTokenizer.fileName)", final: false) }
    let model: Model
    do {
      model = try Model(config: cfg, remat: .full, precision: precision ?? ck.manifest.precision ?? .fp32)
      try ck.restore(config: ck.manifest.config, parameters: model.parameters.named)
    } catch let e as CLIError { throw e } catch { throw CLIError("\(ck.path): \(error)") }
    let result: FileEvaluation
    do {
      var last = Date.distantPast
      let start = Date()
      result = try Evaluation.evaluate(model: model, data: file.bytes, tokenizer: tokenizer) { done, total in
        guard Date().timeIntervalSince(last) > 1 || done == total else { return }
        last = Date()
        let eta = Date().timeIntervalSince(start) / Double(done) * Double(total - done)
        say("eval: \(done)/\(total) windows, ETA \(Int(eta)) s", final: done == total)
      }
    } catch let e as CLIError { throw e } catch { throw CLIError("\(data): \(error)") }
    guard result.natsPerToken.isFinite && result.bitsPerByte.isFinite else {
      throw CLIError("\(ck.path): the loss on \(data) is \(result.natsPerToken) (not finite): the checkpoint's weights hold NaN or Inf; evaluate an earlier checkpoint")
    }
    if format == .json {
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys]
      print(String(decoding: try e.encode(result), as: UTF8.self))
    } else {
      print(String(format: "%@: %.4f bits per byte (%.4f nats per token) over %d tokens covering %d bytes of %@, %d windows of %d, step %d, %@, %.1f s",
                   ck.path, result.bitsPerByte, result.natsPerToken, result.tokens, result.bytes, data, result.windows,
                   cfg.seqLen, ck.manifest.step, model.precision.rawValue, result.seconds))
    }
  }
}

/// `--checkpoint`: a step directory, or a directory of steps whose newest complete one is used
/// (palm eval, palm sample).
struct CheckpointOption: ParsableArguments {
  @Option(help: "Checkpoint step directory, or a directory of steps (newest used).")
  var checkpoint: String

  func load() throws -> LoadedCheckpoint {
    let path = checkpoint
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
