// SentencePiece through the C shim: PaLM's properties (lossless on any bytes, digits split,
// whitespace kept), bad models and vocabularies; the token file (build, reuse, rebuild, refusal)
// and TokenDataset on it; the tokenizer in a checkpoint.
import Foundation
import Testing
import _PalmTestSupport
@testable import PalmTrain
import PalmModel
import PalmTensor

/// A deterministic corpus of ~120 KB: words, numbers, runs of spaces, tabs, non-ASCII.
func tokenizerCorpus(lines: Int = 3000, seed: UInt64 = 7) -> [UInt8] {
  let words = ["the", "king", "queen", "ROMEO:", "JULIET:", "thou", "art", "my", "love", "and", "of", "to", "in",
               "sweet", "night", "day", "café", "naïve", "über", "日本", "—", "1599", "42", "o'er", "heaven"]
  var rng = seed
  func next() -> Int {
    rng = rng &* 6364136223846793005 &+ 1442695040888963407
    return Int(rng >> 33)
  }
  var text = ""
  for _ in 0..<lines {
    let n = 3 + next() % 9
    text += (0..<n).map { _ in words[next() % words.count] }.joined(separator: next() % 7 == 0 ? "  " : " ")
    text += next() % 5 == 0 ? "\t\(next() % 1000)\n" : "\n"
  }
  return Array(text.utf8)
}

/// One tokenizer (vocab 340; this corpus fills at most 349) trained once per test process (a training failure fails each test using it).
private let sharedTraining = Result {
  try SentencePieceTokenizer(model: SentencePieceTokenizer.train(text: tokenizerCorpus(), vocabularySize: 340, threads: 2), name: "shared")
}
func sharedTokenizer() throws -> SentencePieceTokenizer { try sharedTraining.get() }

private func temporaryPath(_ name: String) -> String {
  FileManager.default.temporaryDirectory.appendingPathComponent("palm-tok-\(UUID().uuidString)-\(name)").path
}

@Suite("SentencePiece")
struct SentencePieceTests {
  let tok: SentencePieceTokenizer
  init() throws { tok = try sharedTokenizer() }

  @Test("The vocabulary: the asked size, <unk>, all 256 byte pieces, no <s> </s>")
  func vocabulary() throws {
    #expect(tok.vocabularySize == 340)
    #expect(tok.piece(0) == "<unk>")
    let pieces = (0..<Int32(tok.vocabularySize)).map { tok.piece($0) }
    for b in 0..<256 { #expect(pieces.contains(String(format: "<0x%02X>", b))) }
    #expect(!pieces.contains("<s>") && !pieces.contains("</s>"))
  }

  @Test("decode(encode(x)) == x on text, invalid UTF-8, NUL, U+2581, piece spellings and random bytes")
  func roundTrip() throws {
    var cases: [[UInt8]] = [
      [], Array("ROMEO: the king   and\tthe queen  \n\n  1599 o'er\r\n".utf8),
      Array(" leading and trailing spaces  ".utf8), Array("ﬁ ｆｕｌｌ Å Å".utf8),  // NFKC would change these
      Array("<unk> <0x41> <s> </s> ▁ ▁▁x ▁\u{0}".utf8),
      [0xFF, 0xFE, 0x00, 0x41, 0xC3, 0x28, 0xE2, 0x82, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80, 0xC0, 0xAF, 0x0A],
      Array(repeating: UInt8(ascii: "a"), count: 70_000) + Array(" end".utf8),  // longer than one SentencePiece run
      Array(String(repeating: "日本", count: 40_000).utf8),  // a run cut at a character boundary
    ]
    var state: UInt64 = 2026  // random bytes from a fixed seed, so a failure reproduces
    for length in [1, 7, 100, 5000, 20_000] {
      cases.append((0..<length).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 56)
      })
    }
    // Binary with some text in it: NUL-separated records.
    cases.append(Array((0..<200).flatMap { Array("record \($0)".utf8) + [0, 0xFF, UInt8($0)] }))
    for x in cases {
      let ids = try tok.encode(bytes: x)
      #expect(ids.allSatisfy { $0 > 0 && Int($0) < tok.vocabularySize }, "no <unk>, every id in range")
      #expect(try tok.decode(ids) == x, "round trip of \(x.prefix(24))")
    }
  }

  @Test("Digits are split; whitespace is kept as pieces, not collapsed; text compresses")
  func palmProperties() throws {
    let ids = try tok.encode(bytes: Array("1234567890".utf8))
    #expect(ids.count == 10 && ids.allSatisfy { tok.surfaces[Int($0)].count == 1 })
    let spaces = try tok.encode(bytes: Array("the    king".utf8))
    #expect(try tok.decode(spaces) == Array("the    king".utf8))
    let corpus = tokenizerCorpus(lines: 200, seed: 99)
    let n = try tok.encode(bytes: corpus).count
    #expect(Double(corpus.count) / Double(n) > 2, "a subword vocabulary covers > 2 bytes per token here (got \(corpus.count) / \(n))")
  }

  @Test("Bad input: not a model, empty file, a vocabulary the text cannot fill, an id outside the vocabulary")
  func badInput() throws {
    for bytes in [[UInt8](), Array("this is not a tokenizer\n".utf8), [UInt8](repeating: 0xFF, count: 64)] {
      #expect { try SentencePieceTokenizer(model: bytes, name: "junk.model") } throws: { e in
        "\(e)".contains("junk.model is not a usable tokenizer") && !"\(e)".contains("\n")
      }
    }
    #expect { try SentencePieceTokenizer(path: "/nonexistent/t.model") } throws: { "\($0)".contains("cannot read tokenizer /nonexistent/t.model") }
    #expect { try SentencePieceTokenizer.train(text: Array("a tiny corpus\nof two lines\n".utf8), vocabularySize: 5000) } throws: { e in
      "\(e)".contains("SentencePiece training failed: Vocabulary size too high (5000). Please set it to a value <=")
    }
    #expect { try tok.decode([1, 340]) } throws: { "\($0)".contains("outside the tokenizer's vocabulary 0..<340") }
  }

  /// Training is a function of the text, the vocabulary size and the thread count: twice the same
  /// gives the same bytes (at an even and an odd count, and at the default), so a run's tokenizer
  /// can be rebuilt from its recipe.
  @Test("Training twice with the same text, size and threads gives a byte-identical model", arguments: [2, 3, SentencePieceTokenizer.defaultTrainerThreads])
  func deterministic(threads: Int) throws {
    let text = tokenizerCorpus(lines: 2000, seed: 5)
    let a = try SentencePieceTokenizer.train(text: text, vocabularySize: 330, threads: threads)
    let b = try SentencePieceTokenizer.train(text: text, vocabularySize: 330, threads: threads)
    #expect(a.count > 1000 && a == b, "\(threads) threads: \(SHA256.hex(of: a)) vs \(SHA256.hex(of: b))")
    let ta = try SentencePieceTokenizer(model: a, name: "a"), tb = try SentencePieceTokenizer(model: b, name: "b")
    #expect(try ta.encode(bytes: text) == tb.encode(bytes: text))
  }
}

@Suite("TokenFile")
struct TokenFileTests {
  let tok: SentencePieceTokenizer
  init() throws { tok = try sharedTokenizer() }

  @Test("Built once, reused while tokenizer and source match, rebuilt when the source changes; TokenDataset reads it")
  func buildReuseRebuild() throws {
    let source = temporaryPath("src.txt"), path = temporaryPath("src.tokens")
    defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: path) }
    let text = tokenizerCorpus(lines: 400, seed: 3)
    try AtomicFile.write(to: source, bytes: text)
    #expect(try TokenFile.prepare(path: path, source: source, tokenizer: tok) == .built)
    let first = try Data(contentsOf: URL(fileURLWithPath: path))
    let header = try #require(first.withUnsafeBytes { TokenFile.Header($0) })
    let ids = try tok.encode(bytes: text)
    #expect(header.bytesPerToken == 2 && header.tokenCount == ids.count && header.sourceSize == text.count)
    #expect(header.sourceSHA256 == TokenFile.hexBytes(SHA256.hex(of: text)))
    #expect(header.tokenizerSHA256 == TokenFile.hexBytes(tok.sha256) && header.vocabularySize == 340)
    #expect(first.count == header.fileSize)

    #expect(try TokenFile.prepare(path: path, source: source, tokenizer: tok) == .reused)

    let ds = try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 16)
    #expect(ds.count == ids.count && ds.bytesPerToken == 2)
    #expect(try ds.tokens(0..<ds.count) == ids)
    // The validation split starts at the first token in the last 10% of the bytes.
    let boundary = text.count - text.count / 10
    let before = try tok.decode(Array(ids[..<ds.trainCount])).count
    let lastTrain = tok.surfaces[Int(ids[ds.trainCount - 1])].count
    #expect(before >= boundary && before - lastTrain < boundary)
    #expect(ds.validationByteCount == text.count - before)
    let batch = try BatchSampler(dataset: ds, batchSize: 2, seed: 1).batch(step: 1)
    #expect(batch.inputs.allSatisfy { $0 >= 0 && $0 < 340 })
    #expect(Array(batch.inputs[1..<16]) == Array(batch.targets[0..<15]))

    // Same size, one byte changed: rebuilt, naming the source.
    var edited = text
    edited[10] = edited[10] == UInt8(ascii: "x") ? UInt8(ascii: "y") : UInt8(ascii: "x")
    try AtomicFile.write(to: source, bytes: edited)
    guard case .rebuilt(let reason) = try TokenFile.prepare(path: path, source: source, tokenizer: tok) else {
      Issue.record("an edited source must rebuild the token file"); return
    }
    #expect(reason.contains("another version of \(source)"))
    let rebuilt = try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 16)
    #expect(try tok.decode(rebuilt.tokens(0..<rebuilt.count)) == edited)
  }

  @Test("Validation bits per byte divide by the split's bytes per token, not by 1")
  func bitsPerByteCountBytes() throws {
    let source = temporaryPath("bpb.txt"), path = temporaryPath("bpb.tokens")
    defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: path) }
    try AtomicFile.write(to: source, bytes: tokenizerCorpus(lines: 400, seed: 5))
    _ = try TokenFile.prepare(path: path, source: source, tokenizer: tok)
    let ds = try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 16)
    var o = TrainOptions(config: PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 32,
                                            vocab: tok.vocabularySize, seqLen: 16, batch: 2))
    o.maxSteps = 1
    o.evalEvery = 1
    o.evalWindows = 4
    let t = try Trainer(options: o, dataset: ds)
    let end = try t.run()
    let r = try #require(t.history.first { $0.type == "step" })
    let bytesPerToken = Double(ds.validationByteCount) / Double(ds.validationCount)
    #expect(bytesPerToken > 1.5, "the tokenizer compresses: \(bytesPerToken) bytes a token")
    #expect(abs(r.valBitsPerByte! - r.valLoss! / M_LN2 / bytesPerToken) < 1e-12)
    #expect(abs(end.valBitsPerByteFull! - end.valLossFull! / M_LN2 / bytesPerToken) < 1e-12)
  }

  @Test("Another tokenizer's or a cut-short token file is rebuilt; TokenDataset refuses both")
  func headerMismatch() throws {
    let source = temporaryPath("src.txt"), path = temporaryPath("src.tokens")
    defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: path) }
    try AtomicFile.write(to: source, bytes: tokenizerCorpus(lines: 300, seed: 5))
    _ = try TokenFile.prepare(path: path, source: source, tokenizer: tok)
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    bytes[64] ^= 0xFF  // the tokenizer's SHA-256
    try AtomicFile.write(to: path, bytes: bytes)
    #expect { try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 16) } throws: {
      "\($0)".contains("it was made with another tokenizer")
    }
    guard case .rebuilt(let why) = try TokenFile.prepare(path: path, source: source, tokenizer: tok) else {
      Issue.record("a token file of another tokenizer must be rebuilt"); return
    }
    #expect(why.contains("another tokenizer"))
    bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    try AtomicFile.write(to: path, bytes: Array(bytes.dropLast(2)))
    #expect { try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 16) } throws: { "\($0)".contains("its header describes") }
    guard case .rebuilt = try TokenFile.prepare(path: path, source: source, tokenizer: tok) else {
      Issue.record("a cut-short token file must be rebuilt"); return
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(bytes))
  }

  @Test("A file that is not a token file is never overwritten")
  func refusesForeignFile() throws {
    let source = temporaryPath("src.txt"), path = temporaryPath("notes.txt")
    defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: path) }
    try AtomicFile.write(to: source, bytes: tokenizerCorpus(lines: 50))
    let precious = Array("my notes, not tokens\n".utf8)
    try AtomicFile.write(to: path, bytes: precious)
    #expect { try TokenFile.prepare(path: path, source: source, tokenizer: tok) } throws: {
      "\($0)".contains("is not a palm token file; not overwriting it")
    }
    #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) == precious)
    #expect { try TokenDataset(tokenFile: path, tokenizer: tok, sequenceLength: 4) } throws: { "\($0)".contains("not a palm token file") }
  }
}

@Suite("Checkpoint tokenizer")
struct CheckpointTokenizerTests {
  @Test("tokenizer.model is saved, verified and loaded; a missing one is one clear error")
  func savedAndMissing() throws {
    let tok = try sharedTokenizer()
    let dir = temporaryPath("ck")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let cfg = PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 32, vocab: 340, seqLen: 8, batch: 2)
    let params = try Parameters(config: cfg)
    var contents = CheckpointContents(step: 3, config: cfg, parameters: params.named)
    contents.tokenizer = tok
    let step = try CheckpointStore(directory: dir, warn: { _ in }).save(contents)
    let ck = try CheckpointStore.load(path: step)
    #expect(ck.manifest.tokenizer == CheckpointTokenizer(tokenizer: tok))
    #expect(ck.manifest.files["tokenizer.model"]?.sha256 == tok.sha256)
    #expect(try ck.tokenizer().sentencePiece?.sha256 == tok.sha256)

    try FileManager.default.removeItem(atPath: "\(step)/tokenizer.model")
    #expect { try CheckpointStore.load(path: step) } throws: { e in
      "\(e)".contains("tokenizer.model is missing") && "\(e)".contains("put the file back")
    }
    // A checkpoint without a tokenizer is bytes.
    let plain = try CheckpointStore(directory: dir, warn: { _ in }).save(CheckpointContents(step: 4, config: cfg, parameters: params.named))
    #expect(try CheckpointStore.load(path: plain).tokenizer().sentencePiece == nil)
  }
}
