// The built `palm` binary with SentencePiece: tokenizer train / encode / decode (lossless on binary
// input, both id formats), palm train --tokenizer (token file built then reused, the vocab set, the
// tokenizer in the checkpoint), palm sample and palm eval with the checkpoint's tokenizer, and bad input: one
// error line, a non-zero exit, nothing overwritten.
import Foundation
import PalmModel
import PalmTrain
import Testing
import _PalmTestSupport

private func corpus() -> [UInt8] {
  let words = ["the", "king", "queen", "ROMEO:", "thou", "art", "my", "love", "and", "of", "sweet", "night", "café", "1599"]
  var rng: UInt64 = 11
  var text = ""
  func next() -> Int {
    rng = rng &* 6364136223846793005 &+ 1442695040888963407
    return Int(rng >> 33)
  }
  for _ in 0..<2500 {
    text += (0..<(3 + next() % 8)).map { _ in words[next() % words.count] }.joined(separator: " ") + "\n"
  }
  return Array(text.utf8)
}

private func read(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

/// The lines of `output` that say "error".
private func errorLines(_ output: String) -> [Substring] { output.split(separator: "\n").filter { $0.contains("rror") } }

@Suite("palm tokenizer / train --tokenizer (CLI)", .serialized)
struct TokenizerCLITests {
  let dir: String
  init() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-tokcli-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try Data(corpus()).write(to: URL(fileURLWithPath: "\(dir)/corpus.txt"))
  }

  /// A model of `vocab` pieces (this corpus fills at most 312).
  func trainTokenizer(_ vocab: Int = 300) throws -> String {
    let model = "\(dir)/t.model"
    let (status, out) = try runProgram(palmBinary!, ["tokenizer", "train", "--data", "\(dir)/corpus.txt", "--vocab-size", "\(vocab)",
                                                     "--output", model, "--threads", "1"], deadline: 60)
    #expect(status == 0, "\(out)")
    #expect(out.contains("vocab \(vocab)") && out.contains("bytes/token"))
    return model
  }

  @Test("train, encode, decode: binary input round-trips exactly, in both id formats")
  func roundTrip() throws {
    let model = try trainTokenizer()
    var input = Array("ROMEO: the king\u{0}  and\t1599 ▁ <unk>\n".utf8) + [0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80]
    input += (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }
    try Data(input).write(to: URL(fileURLWithPath: "\(dir)/in.bin"))
    for format in ["binary", "text"] {
      let (s1, o1) = try runProgram(palmBinary!, ["tokenizer", "encode", "--tokenizer", model, "--input", "\(dir)/in.bin",
                                                  "--output", "\(dir)/ids.\(format)", "--format", format])
      #expect(s1 == 0, "\(o1)")
      let (s2, o2) = try runProgram(palmBinary!, ["tokenizer", "decode", "--tokenizer", model, "--input", "\(dir)/ids.\(format)",
                                                  "--output", "\(dir)/out.\(format)", "--format", format])
      #expect(s2 == 0, "\(o2)")
      let same = read("\(dir)/out.\(format)") == input
      #expect(same, "decode(encode(x)) == x with --format \(format)")
    }
    #expect((read("\(dir)/ids.binary")?.count ?? 0) % 4 == 0)
  }

  @Test("train without --threads twice: byte-identical models (the default thread count is fixed, not the machine's)")
  func deterministicTraining() throws {
    var models: [[UInt8]] = []
    for i in 0..<2 {
      let out = "\(dir)/d\(i).model"
      let (status, o) = try runProgram(palmBinary!, ["tokenizer", "train", "--data", "\(dir)/corpus.txt", "--vocab-size", "300",
                                                    "--output", out], deadline: 60)
      #expect(status == 0, "\(o)")
      models.append(read(out) ?? [])
    }
    #expect(!models[0].isEmpty && models[0] == models[1])
  }

  @Test("Bad input: not a model, a vocabulary the text cannot fill, ids that are not uint32s: one line, exit != 0")
  func badInput() throws {
    try Data("not a model".utf8).write(to: URL(fileURLWithPath: "\(dir)/junk.model"))
    let (s1, o1) = try runProgram(palmBinary!, ["tokenizer", "encode", "--tokenizer", "\(dir)/junk.model",
                                                "--input", "\(dir)/corpus.txt", "--output", "\(dir)/x.ids"])
    #expect(s1 != 0 && errorLines(o1).count == 1 && o1.contains("junk.model is not a usable tokenizer"), "\(o1)")
    #expect(read("\(dir)/x.ids") == nil)

    try Data("two short\nlines\n".utf8).write(to: URL(fileURLWithPath: "\(dir)/small.txt"))
    let (s2, o2) = try runProgram(palmBinary!, ["tokenizer", "train", "--data", "\(dir)/small.txt", "--vocab-size", "4000",
                                                "--output", "\(dir)/big.model", "--threads", "1"])
    #expect(s2 != 0 && errorLines(o2).count == 1 && o2.contains("smaller --vocab-size"), "\(o2)")
    #expect(read("\(dir)/big.model") == nil)

    let model = try trainTokenizer()
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: "\(dir)/odd.ids"))
    let (s3, o3) = try runProgram(palmBinary!, ["tokenizer", "decode", "--tokenizer", model, "--input", "\(dir)/odd.ids",
                                                "--output", "\(dir)/odd.txt"])
    #expect(s3 != 0 && o3.contains("not a whole number of uint32 ids"), "\(o3)")
  }

  @Test("Nothing lost: an --output that is the input is refused (train, encode, decode); a bad --output before training; SentencePiece's limits said in palm's terms; blank lines and CRLF in text ids")
  func nothingLost() throws {
    let corpusBytes = read("\(dir)/corpus.txt")
    func tok(_ args: [String]) throws -> (Int32, String) { try runProgram(palmBinary!, ["tokenizer"] + args, deadline: 60) }
    let (s1, o1) = try tok(["train", "--data", "\(dir)/corpus.txt", "--vocab-size", "300", "--output", "\(dir)/./corpus.txt", "--threads", "1"])
    #expect(s1 != 0 && o1.contains("is the input file"), "\(o1)")
    #expect(read("\(dir)/corpus.txt") == corpusBytes)
    try FileManager.default.createDirectory(atPath: "\(dir)/adir", withIntermediateDirectories: true)
    let (s2, o2) = try tok(["train", "--data", "\(dir)/corpus.txt", "--vocab-size", "300", "--output", "\(dir)/adir", "--threads", "1"])
    #expect(s2 != 0 && o2.contains("is a directory") && !o2.contains("rename"), "\(o2)")
    let (s3, o3) = try tok(["train", "--data", "\(dir)/corpus.txt", "--vocab-size", "260", "--output", "\(dir)/v.model", "--threads", "1"])
    #expect(s3 != 0 && o3.contains("give --vocab-size") && !o3.contains("character_coverage"), "\(o3)")
    #expect(FileManager.default.createFile(atPath: "\(dir)/empty.txt", contents: Data()))
    let (s4, o4) = try tok(["train", "--data", "\(dir)/empty.txt", "--vocab-size", "300", "--output", "\(dir)/e.model", "--threads", "1"])
    #expect(s4 != 0 && o4.contains("is empty"), "\(o4)")
    let model = try trainTokenizer()
    for (name, text, want) in [("blank.txt", "5\n\nabc\n", "line 3"), ("crlf.txt", "5\r\n6\r\n", "")] {
      try Data(text.utf8).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
      let (s, o) = try tok(["decode", "--tokenizer", model, "--input", "\(dir)/\(name)", "--output", "\(dir)/\(name).out", "--format", "text"])
      if want.isEmpty { #expect(s == 0 && read("\(dir)/\(name).out") == [4, 5], "\(name): \(o)") } else { #expect(s != 0 && o.contains(want), "\(name): \(o)") }
    }
    let ids = "\(dir)/crlf.txt"
    let (s5, o5) = try tok(["decode", "--tokenizer", model, "--input", ids, "--output", ids, "--format", "text"])
    #expect(s5 != 0 && o5.contains("is the input file") && read(ids) == Array("5\r\n6\r\n".utf8), "\(o5)")
  }

  @Test("train --tokenizer: vocab from the tokenizer, token file built then reused, tokenizer in the checkpoint, sample decodes with it")
  func trainAndSample() throws {
    let model = try trainTokenizer()
    let tokens = "\(dir)/corpus.tokens", ck = "\(dir)/ck"
    let args = ["train", "--data", "\(dir)/corpus.txt", "--tokenizer", model, "--token-file", tokens, "--config", "tiny",
                "--batch", "2", "--seq-len", "32", "--eval-every", "0", "--eval-windows", "1", "--peak-gflops", "100",
                "--threads", "1", "--checkpoint-dir", ck]
    let (s1, o1) = try runProgram(palmBinary!, args + ["--steps", "1"])
    #expect(s1 == 0, "\(o1)")
    #expect(o1.contains("token file \(tokens): encoded") && o1.contains("SentencePiece vocab 300") && o1.contains("bytes/token"), "\(o1)")
    let step = "\(ck)/step_00000001"
    #expect(read("\(step)/tokenizer.model") == read(model))
    let manifest = String(decoding: read("\(step)/manifest.json") ?? [], as: UTF8.self)
    #expect(manifest.contains("\"tokenizer\"") && manifest.contains("\"vocab\" : 300"), "\(manifest)")

    // --allow-changed-settings: the cosine schedule spans --steps, which grows here.
    let (s2, o2) = try runProgram(palmBinary!, args + ["--steps", "2", "--resume", "--allow-changed-settings"])
    #expect(s2 == 0 && o2.contains("token file \(tokens): reused"), "\(o2)")

    // Resuming with the byte tokenizer is refused, naming the way out.
    let bytesArgs = ["train", "--data", "\(dir)/corpus.txt", "--config", "tiny", "--batch", "2", "--seq-len", "32",
                     "--eval-every", "0", "--peak-gflops", "100", "--threads", "1", "--checkpoint-dir", ck, "--steps", "3", "--resume",
                     "--allow-changed-settings"]
    let (s3, o3) = try runProgram(palmBinary!, bytesArgs)
    #expect(s3 != 0 && (o3.contains("vocab") || o3.contains("--tokenizer")), "\(o3)")

    let (s4, o4) = try runProgram(palmBinary!, ["sample", "--checkpoint", ck, "--prompt", "ROMEO: thou", "--max-tokens", "8",
                                                "--temperature", "0", "--threads", "1"])
    #expect(s4 == 0 && o4.hasPrefix("ROMEO: thou") && o4.contains("sampled 8 tokens"), "\(o4)")

    // palm eval encodes the file with the checkpoint's tokenizer: the JSON is Evaluation's result
    // on the same checkpoint and text, bits per byte over the bytes the scored tokens cover.
    let text = Array(corpus().prefix(6000))
    try Data(text).write(to: URL(fileURLWithPath: "\(dir)/eval.txt"))
    let e = try runProgramSplit(palmBinary!, ["eval", "--checkpoint", ck, "--data", "\(dir)/eval.txt", "--threads", "1", "--format", "json"])
    #expect(e.status == 0 && e.stderr.contains("eval: encoding") && e.stderr.contains("windows"), "\(e.stdout)\(e.stderr)")
    let got = try JSONDecoder().decode(FileEvaluation.self, from: Data(e.stdout.utf8))
    let loaded = try CheckpointStore.load(path: "\(ck)/step_00000002")
    let tok = try loaded.tokenizer()
    let m = try Model(config: loaded.manifest.config, remat: .full)
    try loaded.restore(config: loaded.manifest.config, parameters: m.parameters.named)
    let want = try text.withUnsafeBytes { try Evaluation.evaluate(model: m, data: $0, tokenizer: tok) }
    let ids = try tok.encode(bytes: text)
    #expect(got.tokens == ids.count - 1 && got.bytes == text.count - tok.byteLength(ids[0]) && got.windows == want.windows, "\(got)")
    #expect(abs(got.natsPerToken - want.natsPerToken) <= 1e-6 * want.natsPerToken && abs(got.bitsPerByte - want.bitsPerByte) <= 1e-6 * want.bitsPerByte,
            "CLI \(got) vs library \(want)")
    let (s6, o6) = try runProgram(palmBinary!, ["eval", "--checkpoint", ck, "--data", "\(dir)/eval.txt", "--threads", "1"])
    #expect(s6 == 0 && o6.contains("bits per byte") && o6.contains("\(got.tokens) tokens covering \(got.bytes) bytes"), "\(o6)")
    // The checkpoint's precision by default (this run's: fp32); --precision bf16 rounds the
    // products, so the score moves a little, and the output says which ran.
    #expect(got.precision == .fp32 && o6.contains(", fp32, "), "\(o6)")
    let b = try runProgramSplit(palmBinary!, ["eval", "--checkpoint", ck, "--data", "\(dir)/eval.txt", "--threads", "1", "--format", "json",
                                              "--precision", "bf16"])
    let bf = try JSONDecoder().decode(FileEvaluation.self, from: Data(b.stdout.utf8))
    #expect(b.status == 0 && bf.precision == .bf16 && bf.tokens == got.tokens, "\(b.stderr)")
    #expect(bf.natsPerToken != got.natsPerToken && abs(bf.natsPerToken / got.natsPerToken - 1) < 0.01, "bf16 \(bf) vs fp32 \(got)")
    // A bf16-trained checkpoint is scored in bf16 unless told otherwise.
    let ck16 = "\(dir)/ck-bf16"
    let (s7, o7) = try runProgram(palmBinary!, ["train", "--data", "\(dir)/corpus.txt", "--config", "tiny", "--batch", "2",
                                                "--seq-len", "32", "--eval-every", "0", "--peak-gflops", "100", "--threads", "1",
                                                "--checkpoint-dir", ck16, "--steps", "1", "--precision", "bf16"])
    #expect(s7 == 0, "\(o7)")
    let (s8, o8) = try runProgram(palmBinary!, ["eval", "--checkpoint", ck16, "--data", "\(dir)/eval.txt", "--threads", "1"])
    #expect(s8 == 0 && o8.contains(", bf16, "), "\(o8)")
    let (s9, o9) = try runProgram(palmBinary!, ["eval", "--checkpoint", ck16, "--data", "\(dir)/eval.txt", "--threads", "1",
                                                "--precision", "fp32"])
    #expect(s9 == 0 && o9.contains(", fp32, "), "\(o9)")
    // JSON written before `precision` existed still reads (as fp32).
    let old = #"{"bits_per_byte":2.5,"bytes":10,"nats_per_token":1.7,"seconds":0.1,"tokens":9,"windows":1}"#
    #expect(try JSONDecoder().decode(FileEvaluation.self, from: Data(old.utf8)).precision == .fp32)

    try FileManager.default.removeItem(atPath: "\(ck)/step_00000002/tokenizer.model")
    let (s5, o5) = try runProgram(palmBinary!, ["sample", "--checkpoint", "\(ck)/step_00000002", "--max-tokens", "4", "--threads", "1"])
    #expect(s5 != 0 && errorLines(o5).count == 1 && o5.contains("tokenizer.model is missing"), "\(o5)")
  }

  @Test("A --token-file that is not a token file is not overwritten; a mismatched one is rebuilt")
  func tokenFileSafety() throws {
    let model = try trainTokenizer()
    let notes = "\(dir)/notes.txt"
    try Data("precious".utf8).write(to: URL(fileURLWithPath: notes))
    let args = ["train", "--data", "\(dir)/corpus.txt", "--tokenizer", model, "--config", "tiny", "--batch", "2",
                "--seq-len", "32", "--eval-every", "0", "--eval-windows", "1", "--peak-gflops", "100", "--threads", "1", "--steps", "1"]
    let (s1, o1) = try runProgram(palmBinary!, args + ["--token-file", notes])
    #expect(s1 != 0 && errorLines(o1).count == 1 && o1.contains("not overwriting it"), "\(o1)")
    #expect(read(notes) == Array("precious".utf8))

    let tokens = "\(dir)/c.tokens"
    #expect(try runProgram(palmBinary!, args + ["--token-file", tokens]).0 == 0)
    var edited = corpus()
    edited[0] = UInt8(ascii: "X")
    try Data(edited).write(to: URL(fileURLWithPath: "\(dir)/corpus.txt"))
    let (s2, o2) = try runProgram(palmBinary!, args + ["--token-file", tokens])
    #expect(s2 == 0 && o2.contains("rebuilt, it was built from another version of"), "\(o2)")
  }
}
