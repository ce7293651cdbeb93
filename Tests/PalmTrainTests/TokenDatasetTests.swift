// ByteTokenizer and TokenDataset/BatchSampler: lossless bytes, split sizes, counter-based batches
// (same step -> same batch, any order, after a resume), fixed validation windows, typed errors.
import Foundation
import Testing
import _PalmTestSupport
@testable import PalmTrain

private func temporaryFile(_ bytes: [UInt8]) throws -> String {
  let path = FileManager.default.temporaryDirectory.appendingPathComponent("palm-ds-\(UUID().uuidString)").path
  try Data(bytes).write(to: URL(fileURLWithPath: path))
  return path
}

@Suite("ByteTokenizer")
struct ByteTokenizerTests {
  @Test("UTF-8 round trip is lossless; display never fails")
  func roundTrip() throws {
    let text = "héllo, wörld — 日本語 🙂\n\t\u{0}"
    let ids = ByteTokenizer.encode(text)
    #expect(ids.count == text.utf8.count)
    #expect(ids.allSatisfy { $0 >= 0 && $0 < 256 })
    #expect(try ByteTokenizer.decode(ids) == Array(text.utf8))
    #expect(ByteTokenizer.display(ids) == text)
    // A character split in half displays with a replacement character, and still decodes exactly.
    let cut = Array(ids.prefix(2))  // "h" + first byte of "é"
    #expect(ByteTokenizer.display(cut) == "h\u{FFFD}")
    #expect(try ByteTokenizer.decode(cut) == Array(text.utf8.prefix(2)))
    let all = (0..<256).map { UInt8($0) }
    #expect(try ByteTokenizer.decode(ByteTokenizer.encode(bytes: all)) == all)
    #expect(throws: TokenizerError.outOfRange(256)) { try ByteTokenizer.decode([1, 256]) }
    #expect(ByteTokenizer.display([72, -1, 105]) == "H\u{FFFD}i")
  }
}

@Suite("TokenDataset")
struct TokenDatasetTests {
  @Test("Split sizes and contents; the file read with pread equals its bytes")
  func split() throws {
    let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    let path = try temporaryFile(bytes)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let ds = try TokenDataset(path: path, sequenceLength: 16)
    #expect(ds.count == 1000 && ds.trainCount == 900 && ds.validationCount == 100)
    #expect(try ds.tokens(0..<ds.trainCount) == bytes[0..<900].map(Int32.init))
    #expect(try ds.tokens(ds.trainCount..<ds.count) == bytes[900...].map(Int32.init))
    let ds2 = try TokenDataset(path: path, sequenceLength: 16, validationFraction: 0.25)
    #expect(ds2.trainCount == 750)
    let ds3 = try TokenDataset(path: path, sequenceLength: 16, validationFraction: 0)
    #expect(ds3.trainCount == 1000 && ds3.validationWindowCount == 0)
  }

  @Test("Bad input: missing, empty, too short, bad arguments -> typed errors naming file and sizes")
  func errors() throws {
    #expect(throws: DatasetError.self) { try TokenDataset(path: "/nonexistent/palm.txt", sequenceLength: 8) }
    do { _ = try TokenDataset(path: "/nonexistent/palm.txt", sequenceLength: 8) } catch {
      #expect("\(error)".contains("/nonexistent/palm.txt"))
    }
    let empty = try temporaryFile([])
    defer { try? FileManager.default.removeItem(atPath: empty) }
    #expect(throws: DatasetError.empty(path: empty)) { try TokenDataset(path: empty, sequenceLength: 8) }
    let short = try temporaryFile(Array(repeating: 65, count: 50))
    defer { try? FileManager.default.removeItem(atPath: short) }
    // 50 bytes, 10% = 5 for validation: validation is too short for T = 8.
    #expect(throws: DatasetError.tooShort(path: short, part: "validation", tokens: 5, needed: 9)) {
      try TokenDataset(path: short, sequenceLength: 8)
    }
    #expect(throws: DatasetError.tooShort(path: short, part: "train", tokens: 50, needed: 65)) {
      try TokenDataset(path: short, sequenceLength: 64, validationFraction: 0)
    }
    do { _ = try TokenDataset(path: short, sequenceLength: 64, validationFraction: 0) } catch {
      #expect("\(error)".contains("50 tokens") && "\(error)".contains("65"))
    }
    #expect(throws: DatasetError.self) { try TokenDataset(path: short, sequenceLength: 0) }
    #expect(throws: DatasetError.self) { try TokenDataset(path: short, sequenceLength: 4, validationFraction: 1) }
    #expect(throws: DatasetError.self) { try TokenDataset(path: NSTemporaryDirectory(), sequenceLength: 4) }
  }

  /// Issue 13 item 14: a memory-mapped dataset truncated during a run killed the process with
  /// SIGBUS at the next batch (this test process, before DataFile). Now every read past the new end
  /// is a thrown DatasetError.changed naming the file, both sizes and the way out.
  @Test("A data file truncated while open: the next batch throws DatasetError.changed, no SIGBUS")
  func truncatedWhileOpen() throws {
    let bytes = (0..<1 << 20).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
    let path = try temporaryFile(bytes)
    defer { unlink(path) }
    let ds = try TokenDataset(path: path, sequenceLength: 64)
    var s = BatchSampler(dataset: ds, batchSize: 8, seed: 3)
    let before = try s.next()
    #expect(before[0].inputs.count == 8 * 64)
    #expect(truncate(path, 4096) == 0)
    // Rows start anywhere in the train part: nearly all lie past byte 4096 now.
    #expect { _ = try s.next() } throws: { e in
      guard case .changed(let p, let reason) = e as? DatasetError else { return false }
      return p == path && reason.contains("now 4096 bytes, it was 1048576") && "\(e)".contains("--resume")
    }
    #expect { _ = try s.validationBatches() } throws: { ($0 as? DatasetError).map { if case .changed = $0 { true } else { false } } ?? false }
    // A failed draw does not advance the data position: a resume redraws the same batch.
    #expect(s.state.step == 2)
  }

  @Test("Binary data is fine: every byte value survives into inputs and targets")
  func binary() throws {
    let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ ($0 >> 8)) }
    let ds = try TokenDataset(bytes: bytes, sequenceLength: 31)
    let s = BatchSampler(dataset: ds, batchSize: 8, seed: 1)
    let b = try s.batch(step: 1)
    for r in 0..<8 {
      let start = s.offset(step: 1, microBatch: 0, row: r)
      #expect(start >= 0 && start + 31 < ds.trainCount)
      for t in 0..<31 {
        #expect(b.inputs[r * 31 + t] == Int32(bytes[start + t]))
        #expect(b.targets[r * 31 + t] == Int32(bytes[start + t + 1]))
      }
    }
  }

  @Test("A batch depends only on (seed, step, micro-batch): resume and skip are exact")
  func counterBased() throws {
    let bytes = (0..<20_000).map { UInt8(truncatingIfNeeded: ($0 * 2_654_435_761) >> 7) }
    let ds = try TokenDataset(bytes: bytes, sequenceLength: 64)
    var a = BatchSampler(dataset: ds, batchSize: 4, seed: 42)
    let run = try (0..<6).map { _ in try a.next(microBatches: 2) }
    #expect(a.state == SamplerState(seed: 42, step: 7))
    // Resume from a saved state (through JSON, as a checkpoint does).
    var saved = SamplerState(seed: 42, step: 1)
    var b = BatchSampler(dataset: ds, batchSize: 4, state: saved)
    _ = try b.next(microBatches: 2); _ = try b.next(microBatches: 2)
    saved = try JSONDecoder().decode(SamplerState.self, from: JSONEncoder().encode(b.state))
    var c = BatchSampler(dataset: ds, batchSize: 4, state: saved)
    #expect(try c.next(microBatches: 2) == run[2])
    c.skip(2)
    #expect(try c.next(microBatches: 2) == run[5])
    // Any order gives the same batch; different step/micro/seed give different ones.
    #expect(try a.batch(step: 4, microBatch: 1) == run[3][1])
    #expect(run[0][0] != run[0][1] && run[0][0] != run[1][0])
    #expect(try BatchSampler(dataset: ds, batchSize: 4, seed: 43).batch(step: 1) != run[0][0])
    // A large seed survives JSON exactly.
    let big = SamplerState(seed: UInt64.max - 12345, step: 99)
    #expect(try JSONDecoder().decode(SamplerState.self, from: JSONEncoder().encode(big)) == big)
  }

  @Test("Offsets cover the train part roughly uniformly and never touch validation")
  func uniformOffsets() throws {
    let ds = try TokenDataset(bytes: [UInt8](repeating: 1, count: 10_000), sequenceLength: 100)
    let s = BatchSampler(dataset: ds, batchSize: 1, seed: 9)
    var buckets = [Int](repeating: 0, count: 10)
    let starts = ds.trainCount - 100
    for k in 1...5000 {
      let o = s.offset(step: k, microBatch: 0, row: 0)
      #expect(o >= 0 && o < starts)
      buckets[o * 10 / starts] += 1
    }
    #expect(buckets.allSatisfy { $0 > 400 && $0 < 600 }, "buckets \(buckets)")
  }

  @Test("Validation windows are fixed, non-overlapping, and cover the held-out tail")
  func validation() throws {
    let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
    let ds = try TokenDataset(bytes: bytes, sequenceLength: 16)  // validation: 100 tokens -> 6 windows
    #expect(ds.validationWindowCount == 6)
    let s = BatchSampler(dataset: ds, batchSize: 4, seed: 1)
    let batches = try s.validationBatches()
    #expect(batches.map(\.batchSize) == [4, 2])
    #expect(try batches == s.validationBatches())
    #expect(batches[1].inputs[16] == Int32(bytes[900 + 5 * 16]))
    #expect(batches[1].targets.last == Int32(bytes[900 + 6 * 16]))
    #expect(try s.validationBatches(maxWindows: 5).map(\.batchSize) == [4, 1])
    #expect(try s.validationBatch(firstWindow: 6) == nil)
    // Spread: 3 of the 6 windows are 0, 2, 4; all 6 are the split in order; more than 6 caps at 6.
    let spread = try s.spreadValidationBatches(windows: 3)
    #expect(spread.map(\.batchSize) == [3])
    let firstTokens: [Int32] = (0..<3).map { spread[0].inputs[$0 * 16] }
    let expected: [Int32] = [0, 2, 4].map { (w: Int) -> Int32 in Int32(bytes[900 + w * 16]) }
    #expect(firstTokens == expected)
    #expect(try s.spreadValidationBatches(windows: 6) == batches)
    #expect(try s.spreadValidationBatches(windows: 99) == batches)
    #expect(try s.spreadValidationBatches(windows: 0).isEmpty)
  }

  @Test("The shared corpus loads (when present)", .enabled(if: TestData.tinyShakespeare != nil))
  func corpus() throws {
    let ds = try TokenDataset(path: TestData.tinyShakespeare!, sequenceLength: 256)
    #expect(ds.count > 1_000_000)
    let b = try BatchSampler(dataset: ds, batchSize: 2, seed: 0).batch(step: 1)
    #expect(ByteTokenizer.display(b.inputs).count > 0)
  }
}
