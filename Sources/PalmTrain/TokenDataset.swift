// TokenDataset: a file of bytes, or a token file (TokenFile.swift: a text encoded by a SentencePiece
// tokenizer, uint16/uint32 ids), as a token stream read with pread (PalmTensor's DataFile: a file
// truncated during a run is a thrown DatasetError.changed, where a memory map would end the process
// with SIGBUS), split into train and validation
// parts, and a BatchSampler whose batch at step k depends only on (seed, k, micro-batch index).
//
// As in PaLM (§5: "a batch depends only on the step number", which made every run bitwise
// reproducible from any checkpoint), sampling is counter-based: no hidden generator state, so a
// resumed run sees the same batches and skipping batches after a loss spike is `state.step += n`.
// Training windows start at uniformly drawn offsets of the train part; validation uses fixed,
// non-overlapping windows of the held-out tail (the last 10% by default; of a token file, the tokens
// that start in the last 10% of the text's bytes, so byte and subword runs validate on the same text).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PalmTensor

/// Why a dataset could not be opened or used, naming the file and the sizes involved.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
  case cannotOpen(path: String, reason: String)
  case empty(path: String)
  case tooShort(path: String, part: String, tokens: Int, needed: Int)
  case badArgument(String)
  /// The file changed while a run read it (truncated, or rewritten in place).
  case changed(path: String, reason: String)

  public var description: String {
    switch self {
    case .cannotOpen(let path, let reason): "cannot read dataset \(path): \(reason)"
    case .empty(let path): "dataset \(path) is empty"
    case .tooShort(let path, let part, let tokens, let needed):
      "dataset \(path): the \(part) part has \(tokens) tokens, fewer than the \(needed) needed for one sequence (sequence length + 1)"
    case .badArgument(let message): "dataset: \(message)"
    case .changed(let path, let reason):
      "dataset \(path) \(reason); restore the file (or give another --data), then continue the run with --resume"
    }
  }
}

/// A byte file as tokens (one token per byte), read with pread, with a train/validation split.
///
/// ```swift
/// let data = try TokenDataset(path: "tinyshakespeare.txt", sequenceLength: 256)
/// var sampler = BatchSampler(dataset: data, batchSize: 16, seed: 42)
/// let batch = try sampler.batch(step: 1)      // inputs/targets, 16 × 256 Int32 each
/// ```
public final class TokenDataset: @unchecked Sendable {
  /// The file (or the name given to in-memory data).
  public let path: String
  /// Total tokens.
  public let count: Int
  /// 1 for a byte file, 2 or 4 for a token file.
  public let bytesPerToken: Int
  /// Bytes of text the validation part covers (= validationCount for a byte file).
  public let validationByteCount: Int
  /// What the ids mean: bytes, or the SentencePiece model that made the token file.
  public let tokenizer: Tokenizer
  /// Tokens [0, trainCount) train; [trainCount, count) validate.
  public let trainCount: Int
  public var validationCount: Int { count - trainCount }
  /// Window length T (inputs are T tokens, targets the next T).
  public let sequenceLength: Int
  private let source: Source
  /// Where the tokens are: a file read with pread (token 0 at byte `offset`), or bytes in memory.
  private enum Source {
    case file(DataFile, offset: Int)
    case memory(MappedFile)
  }

  /// Opens `path` (read with pread as batches need it; nothing is loaded).
  /// - Parameters:
  ///   - validationFraction: the tail fraction held out, in [0, 1); 0 means no validation part.
  /// - Throws: `DatasetError` for a missing/unreadable or empty file, a bad fraction, or a part
  ///   shorter than `sequenceLength + 1` tokens.
  public convenience init(path: String, sequenceLength: Int, validationFraction: Double = 0.1) throws {
    let file: DataFile
    do {
      file = try DataFile(path: path) { st in
        if (st.st_mode & S_IFMT) == S_IFDIR { throw DatasetError.cannotOpen(path: path, reason: "it is a directory") }
        if (st.st_mode & S_IFMT) != S_IFREG {
          throw DatasetError.cannotOpen(path: path, reason: "it is not a regular file (a pipe, terminal or device); "
                                        + "the data is read at random offsets, so save it to a file first")
        }
        let size = Int(st.st_size)
        if size == 0 { throw DatasetError.empty(path: path) }
        try TokenDataset.validate(path: path, count: size, sequenceLength: sequenceLength,
                                  validationFraction: validationFraction)
      }
    } catch let failure as MappedFile.Failure {
      throw DatasetError.cannotOpen(path: path, reason: failure.reason)
    }
    self.init(path: path, source: .file(file, offset: 0), count: file.count, sequenceLength: sequenceLength,
              validationFraction: validationFraction)
  }

  /// In-memory data (tests, generated corpora), labelled `name` in errors.
  public convenience init(bytes: [UInt8], name: String = "<memory>", sequenceLength: Int,
                          validationFraction: Double = 0.1) throws {
    if bytes.isEmpty { throw DatasetError.empty(path: name) }
    try TokenDataset.validate(path: name, count: bytes.count, sequenceLength: sequenceLength,
                              validationFraction: validationFraction)
    let file: MappedFile
    do {
      file = try MappedFile(copying: bytes)
    } catch {
      throw DatasetError.cannotOpen(path: name, reason: "cannot allocate \(bytes.count) bytes")
    }
    self.init(path: name, source: .memory(file), count: file.count, sequenceLength: sequenceLength,
              validationFraction: validationFraction)
  }

  private init(path: String, source: Source, count: Int, sequenceLength: Int, validationFraction: Double) {
    self.path = path
    self.source = source
    self.count = count
    self.bytesPerToken = 1
    self.tokenizer = .bytes
    self.sequenceLength = sequenceLength
    self.trainCount = count - TokenDataset.validationTokens(count, validationFraction)
    self.validationByteCount = count - trainCount
  }

  /// Opens a token file (TokenFile.prepare writes them) made by `tokenizer`.
  /// - Throws: `DatasetError` for an unreadable file, one that is not a token file, one whose header
  ///   names another tokenizer, one cut short, an id outside the vocabulary, or a part shorter than
  ///   `sequenceLength + 1` tokens.
  public init(tokenFile path: String, tokenizer: SentencePieceTokenizer, sequenceLength: Int,
              validationFraction: Double = 0.1) throws {
    let file: DataFile
    var head = [UInt8](repeating: 0, count: TokenFile.headerSize)
    do {
      file = try DataFile(path: path)
      if file.count >= head.count { try head.withUnsafeMutableBytes { try file.read(into: $0, at: 0) } }
    } catch let e as MappedFile.Failure {
      throw DatasetError.cannotOpen(path: path, reason: e.reason)
    }
    guard let header = head.withUnsafeBytes({ TokenFile.Header($0) }) else {
      throw DatasetError.cannotOpen(path: path, reason: "not a palm token file (no PALMTOK1 header)")
    }
    if header.tokenizerSHA256 != TokenFile.hexBytes(tokenizer.sha256) || header.vocabularySize != tokenizer.vocabularySize {
      throw DatasetError.cannotOpen(path: path, reason: "it was made with another tokenizer (SHA-256 \(SHA256.hex(header.tokenizerSHA256).prefix(12))…, not \(tokenizer.sha256.prefix(12))…); rebuild it (palm train does when it is the --token-file)")
    }
    if file.count != header.fileSize {
      throw DatasetError.cannotOpen(path: path, reason: "it is \(file.count) bytes, its header describes \(header.fileSize): rebuild it")
    }
    if header.tokenCount == 0 { throw DatasetError.empty(path: path) }
    try TokenDataset.validate(path: path, count: header.tokenCount, sequenceLength: sequenceLength,
                              validationFraction: validationFraction)
    // Validation: the tokens that start in the last `validationFraction` of the text's bytes.
    let n = header.tokenCount, width = header.bytesPerToken
    let boundary = header.sourceSize - Int((Double(header.sourceSize) * validationFraction).rounded(.down))
    let lengths = tokenizer.surfaces.map(\.count)
    var offset = 0, split = n, validationBytes = 0
    // Every id is checked once, read in pieces of 1 Mi tokens.
    var chunk = [UInt8](repeating: 0, count: min(n, 1 << 20) * width)
    for first in stride(from: 0, to: n, by: 1 << 20) {
      let m = min(1 << 20, n - first)
      do {
        try chunk.withUnsafeMutableBytes {
          try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<m * width]), at: TokenFile.headerSize + first * width)
        }
      } catch let e as MappedFile.Failure {
        throw DatasetError.changed(path: path, reason: e.reason)
      }
      try chunk.withUnsafeBytes { ids in
        for j in 0..<m {
          let i = first + j, id = TokenDataset.load(ids.baseAddress!, j, width)
          guard id >= 0 && Int(id) < lengths.count else {
            throw DatasetError.cannotOpen(path: path, reason: "token \(i) is \(id), outside the vocabulary of \(lengths.count)")
          }
          if validationFraction > 0 && split == n && offset >= boundary { split = i }
          if split < n { validationBytes += lengths[Int(id)] }
          offset += lengths[Int(id)]
        }
      }
    }
    if offset != header.sourceSize {
      throw DatasetError.cannotOpen(path: path, reason: "its tokens decode to \(offset) bytes, the source had \(header.sourceSize): rebuild it")
    }
    let needed = sequenceLength + 1
    if split < needed { throw DatasetError.tooShort(path: path, part: "train", tokens: split, needed: needed) }
    if validationFraction > 0 && n - split < needed {
      throw DatasetError.tooShort(path: path, part: "validation", tokens: n - split, needed: needed)
    }
    self.path = path
    self.source = .file(file, offset: TokenFile.headerSize)
    self.count = n
    self.bytesPerToken = width
    self.tokenizer = .sentencePiece(tokenizer)
    self.sequenceLength = sequenceLength
    self.trainCount = split
    self.validationByteCount = validationBytes
  }

  /// Token `i` of the ids at `base` stored `width` bytes each, little-endian.
  @inline(__always) static func load(_ base: UnsafeRawPointer, _ i: Int, _ width: Int) -> Int32 {
    switch width {
    case 1: Int32(base.load(fromByteOffset: i, as: UInt8.self))
    case 2: Int32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    default: Int32(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
    }
  }

  private static func validationTokens(_ count: Int, _ fraction: Double) -> Int {
    Int((Double(count) * fraction).rounded(.down))
  }

  private static func validate(path: String, count: Int, sequenceLength: Int, validationFraction: Double) throws {
    if sequenceLength < 1 { throw DatasetError.badArgument("sequence length must be at least 1 (got \(sequenceLength))") }
    if !(validationFraction >= 0 && validationFraction < 1) {
      throw DatasetError.badArgument("validation fraction must be in [0, 1) (got \(validationFraction))")
    }
    let val = validationTokens(count, validationFraction)
    let needed = sequenceLength + 1
    if count - val < needed { throw DatasetError.tooShort(path: path, part: "train", tokens: count - val, needed: needed) }
    if validationFraction > 0 && val < needed {
      throw DatasetError.tooShort(path: path, part: "validation", tokens: val, needed: needed)
    }
  }

  /// Tokens `range` (within 0..<count).
  /// - Throws: `DatasetError.changed` when the file has been truncated since it was opened.
  public func tokens(_ range: Range<Int>) throws -> [Int32] {
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "tokens \(range) out of 0..<\(count)")
    var raw = [UInt8](repeating: 0, count: range.count * bytesPerToken)
    try raw.withUnsafeMutableBytes { try read(range.lowerBound, range.count, into: $0) }
    return raw.withUnsafeBytes { b in (0..<range.count).map { TokenDataset.load(b.baseAddress!, $0, bytesPerToken) } }
  }

  /// The bytes of `n` tokens from token `start` into `buffer` (n · bytesPerToken bytes).
  private func read(_ start: Int, _ n: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
    switch source {
    case .memory(let m):
      buffer.copyMemory(from: UnsafeRawBufferPointer(start: m.base + start * bytesPerToken, count: n * bytesPerToken))
    case .file(let f, let offset):
      do { try f.read(into: buffer, at: offset + start * bytesPerToken) } catch let e as MappedFile.Failure {
        throw DatasetError.changed(path: path, reason: e.reason)
      }
    }
  }

  /// Fixed validation windows: window w starts at token trainCount + w·T.
  public var validationWindowCount: Int { validationCount > sequenceLength ? (validationCount - 1) / sequenceLength : 0 }

  /// Copies the window starting at absolute token `start` into rows of `inputs`/`targets`, reading
  /// its T + 1 tokens through `scratch` ((T + 1) · bytesPerToken bytes).
  func copyWindow(start: Int, inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>,
                  scratch: UnsafeMutableRawBufferPointer) throws {
    try read(start, sequenceLength + 1, into: scratch)
    let p = UnsafeRawPointer(scratch.baseAddress!)
    for t in 0..<sequenceLength {
      inputs[t] = TokenDataset.load(p, t, bytesPerToken)
      targets[t] = TokenDataset.load(p, t + 1, bytesPerToken)
    }
  }
}

/// The data position of a training run: everything needed to reproduce its future batches.
public struct SamplerState: Codable, Equatable, Sendable {
  public var seed: UInt64
  /// The next optimizer step to draw (1-based).
  public var step: Int
  public init(seed: UInt64, step: Int = 1) {
    self.seed = seed
    self.step = step
  }
}

/// One batch: row-major (B, T) input ids and (B, T) next-token targets.
public struct Batch: Equatable, Sendable {
  public let batchSize: Int
  public let sequenceLength: Int
  public var inputs: [Int32]  // (B, T)
  public var targets: [Int32]  // (B, T)
}

/// Draws training batches as a pure function of (seed, step, micro-batch index).
///
/// Row r of micro-batch j at step k starts at a train offset drawn from a counter-based generator
/// (SplitMix64 finalizers over the key (seed, k, j, r)), so batches never depend on what was drawn
/// before: `batch(step: k)` is the same in a fresh process, after a resume, or after skipping.
public struct BatchSampler: Sendable {
  public let dataset: TokenDataset
  public let batchSize: Int
  public var state: SamplerState

  public init(dataset: TokenDataset, batchSize: Int, seed: UInt64) {
    precondition(batchSize >= 1, "batch size must be at least 1")
    self.dataset = dataset
    self.batchSize = batchSize
    self.state = SamplerState(seed: seed)
  }

  public init(dataset: TokenDataset, batchSize: Int, state: SamplerState) {
    precondition(batchSize >= 1, "batch size must be at least 1")
    self.dataset = dataset
    self.batchSize = batchSize
    self.state = state
  }

  /// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mixer.
  @inlinable static func mix(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A 64-bit random value for the key (seed, step, micro, row); keys are chained through the mixer.
  public static func random(seed: UInt64, step: Int, microBatch: Int, row: Int) -> UInt64 {
    mix(mix(mix(mix(seed) ^ UInt64(bitPattern: Int64(step))) ^ UInt64(bitPattern: Int64(microBatch))) ^ UInt64(bitPattern: Int64(row)))
  }

  /// Start offset of row `row`: uniform over the trainCount − T valid starts (multiply-high
  /// reduction; bias below 2^-40 for any corpus under 1 TB).
  public func offset(step: Int, microBatch: Int, row: Int) -> Int {
    let starts = UInt64(dataset.trainCount - dataset.sequenceLength)
    let r = BatchSampler.random(seed: state.seed, step: step, microBatch: microBatch, row: row)
    return Int(r.multipliedFullWidth(by: starts).high)
  }

  /// The batch of micro-batch `microBatch` at `step` (pure: the sampler's step is not used or moved).
  /// - Throws: `DatasetError.changed` when the file has been truncated since it was opened (also below).
  public func batch(step: Int, microBatch: Int = 0) throws -> Batch {
    try windowBatch(rows: batchSize) { offset(step: step, microBatch: microBatch, row: $0) }
  }

  /// A batch of `rows` windows; row r is the window starting at absolute token `start(r)`.
  private func windowBatch(rows: Int, start: (Int) -> Int) throws -> Batch {
    let t = dataset.sequenceLength
    var inputs = [Int32](repeating: 0, count: rows * t)
    var targets = [Int32](repeating: 0, count: rows * t)
    var scratch = [UInt8](repeating: 0, count: (t + 1) * dataset.bytesPerToken)
    try inputs.withUnsafeMutableBufferPointer { inp in
      try targets.withUnsafeMutableBufferPointer { tgt in
        try scratch.withUnsafeMutableBytes { raw in
          for r in 0..<rows {
            try dataset.copyWindow(start: start(r), inputs: inp.baseAddress! + r * t, targets: tgt.baseAddress! + r * t,
                                   scratch: raw)
          }
        }
      }
    }
    return Batch(batchSize: rows, sequenceLength: t, inputs: inputs, targets: targets)
  }

  /// The `microBatches` batches of the current step, then advances `state.step`.
  public mutating func next(microBatches: Int = 1) throws -> [Batch] {
    let step = state.step
    let out = try (0..<microBatches).map { try batch(step: step, microBatch: $0) }
    state.step += 1
    return out
  }

  /// Skips `count` steps of data (PaLM's loss-spike remedy skipped 200-500 batches).
  public mutating func skip(_ count: Int) { state.step += count }

  /// Validation windows [first, first + batchSize) clipped to the window count, as one batch
  /// (fewer rows at the end); nil when `first` is past the last window.
  public func validationBatch(firstWindow first: Int) throws -> Batch? {
    try validationBatch(firstWindow: first, windowCount: dataset.validationWindowCount)
  }

  /// Windows [first, min(first + batchSize, count)) of the validation split; nil when `first` is
  /// outside 0..<count.
  private func validationBatch(firstWindow first: Int, windowCount count: Int) throws -> Batch? {
    guard first >= 0 && first < count else { return nil }
    let t = dataset.sequenceLength
    return try windowBatch(rows: min(batchSize, count - first)) { dataset.trainCount + (first + $0) * t }
  }

  /// `windows` validation windows spread evenly over the whole split (window i·count/windows for
  /// i in 0..<windows), in batches of `batchSize` (the last may be shorter): the same every time.
  /// A periodic evaluation on a sample of the split should not see only its first part, whose
  /// text may be easier or harder than the rest.
  public func spreadValidationBatches(windows: Int) throws -> [Batch] {
    let count = dataset.validationWindowCount, w = min(max(windows, 0), count)
    guard w > 0 else { return [] }
    let t = dataset.sequenceLength
    let picks = (0..<w).map { $0 * count / w }
    return try stride(from: 0, to: w, by: batchSize).map { first in
      try windowBatch(rows: min(batchSize, w - first)) { dataset.trainCount + picks[first + $0] * t }
    }
  }

  /// All validation batches (up to `maxWindows` windows), in order: the same every time.
  public func validationBatches(maxWindows: Int = Int.max) throws -> [Batch] {
    let count = min(dataset.validationWindowCount, maxWindows)
    return try stride(from: 0, to: count, by: batchSize).compactMap { try validationBatch(firstWindow: $0, windowCount: count) }
  }
}
