// Metrics: one JSON object per line (metrics.jsonl), schema in docs/FORMATS.md "metrics.jsonl".
// Records are "step" (an applied update, with validation fields when it evaluated), "spike" (an
// update rejected by the loss-spike rule and rolled back) and "end". Non-finite numbers are written
// as the strings "nan", "inf", "-inf".

import Foundation

/// One line of metrics.jsonl.
public struct MetricsRecord: Codable, Equatable, Sendable {
  /// "step", "spike" or "end".
  public var type: String
  /// Updates applied so far (for "spike": the update that was attempted).
  public var step: Int
  /// Training tokens consumed by the applied updates so far.
  public var tokens: Int
  /// Mean (cross-entropy + z-loss) of the update's tokens, nats.
  public var loss: Double?
  /// Mean cross-entropy alone, nats per token (per byte with the byte vocabulary).
  public var crossEntropy: Double?
  public var lr: Double?
  /// Global gradient norm before clipping.
  public var gradNorm: Double?
  /// Wall-clock seconds since the run started (carried over a resume).
  public var seconds: Double
  /// Seconds of this update (forward, backward, optimizer; not evaluation or checkpointing).
  public var stepSeconds: Double?
  public var tokensPerS: Double?
  /// The GEMMs' precision of the update ("fp32" or "bf16").
  public var precision: String?
  /// Model FLOPs utilisation: FLOPs.modelPerToken · tokens/s ÷ peak (null without a peak); the peak
  /// is the one `peakPrecision` names (bf16 for a bf16 run where the CPU has a bf16 unit).
  public var mfu: Double?
  /// Hardware FLOPs utilisation: FLOPs.hardwarePerToken(remat) · tokens/s ÷ peak.
  public var hfu: Double?
  /// Which peak `mfu` and `hfu` divide by: "fp32" or "bf16".
  public var peakPrecision: String?
  /// An fp32 update's MFU and HFU against the bf16 peak (null for bf16 updates or without one).
  public var mfuOfBF16Peak: Double?
  public var hfuOfBF16Peak: Double?
  /// Validation cross-entropy, nats per token (only on evaluation steps).
  public var valLoss: Double?
  /// valLoss / ln 2.
  public var valBitsPerByte: Double?
  /// "end" records: validation cross-entropy over the WHOLE validation split (every full batch of
  /// non-overlapping windows), the figure to quote; `valLoss` uses the fixed `--eval-windows` subset.
  public var valLossFull: Double?
  /// "end" records: `valLossFull` in bits per byte (÷ ln 2 ÷ the split's bytes per token).
  public var valBitsPerByteFull: Double?
  /// The sampler position the update's data came from.
  public var dataPosition: Int?
  /// Rollbacks so far.
  public var rollbacks: Int
  /// "spike": why; the step restored; the data position training continues from.
  public var reason: String?
  public var restoredStep: Int?
  public var resumedDataPosition: Int?
  /// Path of a checkpoint written after this update.
  public var checkpoint: String?
  /// Mesh runs (`palm train --mesh`): bytes of gradient this rank put into the pod exchange, the
  /// exchange's transfer time (seconds) and the fraction of it hidden behind the backward pass.
  public var exchangeBytes: Int?
  public var exchangeSeconds: Double?
  public var exchangeHidden: Double?

  enum CodingKeys: String, CodingKey {
    case type, step, tokens, loss, lr, seconds, mfu, hfu, rollbacks, reason, checkpoint
    case crossEntropy = "cross_entropy", gradNorm = "grad_norm", stepSeconds = "step_seconds"
    case tokensPerS = "tokens_per_s", valLoss = "val_loss", valBitsPerByte = "val_bpb", valLossFull = "val_loss_full"
    case valBitsPerByteFull = "val_bpb_full"
    case dataPosition = "data_position", restoredStep = "restored_step", resumedDataPosition = "resumed_data_position"
    case exchangeBytes = "exchange_bytes", exchangeSeconds = "exchange_seconds", exchangeHidden = "exchange_hidden"
    case precision, peakPrecision = "peak_precision", mfuOfBF16Peak = "mfu_of_bf16_peak", hfuOfBF16Peak = "hfu_of_bf16_peak"
  }

  public init(type: String, step: Int, tokens: Int, seconds: Double, rollbacks: Int) {
    self.type = type
    self.step = step
    self.tokens = tokens
    self.seconds = seconds
    self.rollbacks = rollbacks
  }

  /// The record as one line of JSON (keys sorted, no trailing newline).
  public func jsonLine() -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return String(decoding: (try? e.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
  }

  /// Parses one line written by `jsonLine()`.
  public static func parse(_ line: String) throws -> MetricsRecord {
    let d = JSONDecoder()
    d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try d.decode(MetricsRecord.self, from: Data(line.utf8))
  }
}

/// Appends records to a JSON-lines file (flushed per line, so a crash loses at most one line).
public final class MetricsLog: @unchecked Sendable {
  public let path: String
  private let handle: FileHandle

  /// Opens `path` for appending (`append: false` truncates it first), creating its parent
  /// directories as a checkpoint directory is created.
  /// - Throws: `TrainError.badOptions` when the file cannot be created.
  public init(path: String, append: Bool) throws {
    self.path = path
    if !append { try Self.checkNew(path) }
    let fm = FileManager.default
    let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
    do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
      throw TrainError.badOptions("cannot create the directory of metrics log \(path): \(error.localizedDescription)")
    }
    if !append || !fm.fileExists(atPath: path) {
      guard fm.createFile(atPath: path, contents: nil) else {
        throw TrainError.badOptions("cannot create metrics log \(path)")
      }
    }
    guard let h = FileHandle(forWritingAtPath: path) else { throw TrainError.badOptions("cannot open metrics log \(path)") }
    handle = h
    handle.seekToEndOfFile()
  }

  /// A new run's log must not hold anything yet: truncating it would lose another run's metrics
  /// (or whatever file the path names). - Throws: `TrainError.badOptions` naming the way out.
  public static func checkNew(_ path: String) throws {
    var st = stat()
    guard stat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) != S_IFREG {
      throw TrainError.badOptions("metrics log \(path) is not a regular file: give a file path to --log")
    }
    if st.st_size > 0 {
      throw TrainError.badOptions("metrics log \(path) already holds \(st.st_size) bytes (another run's?): give another --log, remove it, or pass --resume to append to it")
    }
  }

  public func write(_ record: MetricsRecord) {
    handle.write(Data((record.jsonLine() + "\n").utf8))
  }

  deinit { try? handle.close() }

  /// Every record of a metrics file (lines that do not parse are skipped).
  public static func read(path: String) -> [MetricsRecord] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { try? MetricsRecord.parse(String($0)) }
  }
}

/// The run counters a checkpoint manifest keeps under "metrics": the one encoder and decoder of that
/// dictionary, used by Trainer and by the mesh trainer (PalmParallel), so either resumes from the
/// other's checkpoints. Keys: tokens, seconds, rollbacks, recent_losses (a count) with
/// recent_loss.000, recent_loss.001, ... (oldest first), val_loss and loss (the latest) when known.
public struct CheckpointMetrics: Equatable, Sendable {
  /// Training tokens consumed so far.
  public var tokens: Int
  /// Wall-clock seconds of the run so far.
  public var seconds: Double
  public var rollbacks: Int
  /// The latest accepted losses, oldest first (the loss-spike rule's window).
  public var recentLosses: [Double]
  /// The last validation loss.
  public var validationLoss: Double?

  public init(tokens: Int, seconds: Double, rollbacks: Int, recentLosses: [Double], validationLoss: Double?) {
    self.tokens = tokens
    self.seconds = seconds
    self.rollbacks = rollbacks
    self.recentLosses = recentLosses
    self.validationLoss = validationLoss
  }

  /// The most losses "recent_losses" may count (the spike rule's window is 50 by default).
  public static let maxRecentLosses = 10_000

  /// A value of a manifest's "metrics" outside its bound.
  public struct Invalid: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "metrics: \(message)" }
  }

  /// Reads a manifest's "metrics" (absent keys read as 0 or nil).
  /// - Throws: `Invalid` for a count that is not a whole number in its range (tokens and seconds
  ///   0...2^53, rollbacks 0...2^31, recent_losses 0...10,000), or a listed loss that is absent or
  ///   not finite.
  public init(decoding m: [String: Double]) throws {
    func count(_ key: String, max: Int) throws -> Int {
      let x = m[key] ?? 0
      guard x >= 0, x <= Double(max), x.rounded() == x else {
        throw Invalid(message: "\(key) = \(x) is not a whole number in 0...\(max)")
      }
      return Int(x)
    }
    tokens = try count("tokens", max: 1 << 53)
    seconds = m["seconds"] ?? 0
    if !(seconds >= 0 && seconds <= Double(1 << 53)) { throw Invalid(message: "seconds = \(seconds) is not in 0...2^53") }
    rollbacks = try count("rollbacks", max: 1 << 31)
    recentLosses = try (0..<count("recent_losses", max: Self.maxRecentLosses)).map { i in
      let key = String(format: "recent_loss.%03d", i)
      guard let l = m[key], l.isFinite else { throw Invalid(message: "\(key) is missing or not finite") }
      return l
    }
    validationLoss = m["val_loss"]
  }

  /// The manifest's "metrics" dictionary.
  public var encoded: [String: Double] {
    var m: [String: Double] = ["tokens": Double(tokens), "seconds": seconds, "rollbacks": Double(rollbacks),
                               "recent_losses": Double(recentLosses.count)]
    for (i, l) in recentLosses.enumerated() { m[String(format: "recent_loss.%03d", i)] = l }
    if let v = validationLoss { m["val_loss"] = v }
    if let l = recentLosses.last { m["loss"] = l }
    return m
  }
}
