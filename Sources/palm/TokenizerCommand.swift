// palm tokenizer: train a SentencePiece vocabulary with PaLM's properties (PalmTrain/SentencePiece.swift)
// and encode or decode files with it, for inspection. Every output file is written atomically.
import ArgumentParser
import Foundation
import PalmTensor
import PalmTrain

struct TokenizerCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tokenizer", abstract: "Train a SentencePiece vocabulary, encode and decode with it.",
    discussion: """
      The default tokenizer of palm train is bytes (vocab 256) and needs no file; `palm train --tokenizer T.model` uses a model trained here, and stores it in every checkpoint.
      Examples:
        palm tokenizer train --data tinyshakespeare.txt --vocab-size 2048 --output shk.model
        palm tokenizer encode --tokenizer shk.model --input f.txt --output f.ids
        palm tokenizer decode --tokenizer shk.model --input f.ids --output f.txt
      """,
    subcommands: [TrainTokenizer.self, Encode.self, Decode.self])

  struct TrainTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "train", abstract: "Train a SentencePiece unigram model with PaLM's properties.",
      discussion: """
        Byte fallback (every character outside the vocabulary becomes its UTF-8 bytes, so nothing is ever unknown), digits split, no normalization, whitespace kept exactly (no dummy prefix, runs of spaces kept and allowed as pieces; pieces do not cross a space). The vocabulary includes the 256 byte pieces and <unk>; no <s>, </s> or <pad>. Each line of --data is one training sentence. The exact options: docs/FORMATS.md ("Tokenizer").
        """)

    @Option(help: "Training text.")
    var data: String
    @Option(help: "Vocabulary size, including the 256 byte pieces and <unk>.")
    var vocabSize: Int
    @Option(help: "Where to write the model (.model).")
    var output: String
    @Option(help: "Trainer threads; the default is the same on every machine, because the model depends on the thread count (and otherwise only on the text and --vocab-size).")
    var threads = SentencePieceTokenizer.defaultTrainerThreads
    @Flag(help: "Show SentencePiece's training log.")
    var verbose = false

    func validate() throws {
      if vocabSize < 258 { throw ValidationError("--vocab-size must be at least 258 (<unk>, the 256 byte pieces and one more; got \(vocabSize))") }
      // The model's ids are Int32 and palm train's vocab is bounded at 2^20.
      if vocabSize > 1 << 20 { throw ValidationError("--vocab-size must be at most \(1 << 20) (got \(vocabSize))") }
      if !(1...1024).contains(threads) { throw ValidationError("--threads must be in 1...1024 (got \(threads))") }
    }

    func run() throws {
      // The output checked before the training (minutes on a big text), and never the input.
      try Train.checkWritable(output, flag: "--output")
      try refuseOverwriting(input: data, output: output)
      let text = try readInput(data)
      if text.isEmpty { throw CLIError("\(data) is empty: a vocabulary needs training text") }
      let model: [UInt8]
      do {
        model = try SentencePieceTokenizer.train(
          text: text, vocabularySize: vocabSize, threads: threads, quiet: !verbose)
      } catch {
        let text = "\(error)"
        // SentencePiece: "Vocabulary size is smaller than required_chars. 300 vs 311. ..." (its
        // own flags named): say it in this command's terms.
        if let r = text.range(of: #"required_chars\. \d+ vs (\d+)"#, options: .regularExpression),
           let n = Int(text[r].split(separator: " ").last ?? "") {
          throw CLIError("--vocab-size \(vocabSize) is below what \(data) needs: its characters, the 256 byte pieces and <unk> take \(n); give --vocab-size \(n) or more")
        }
        throw CLIError("\(text) (on \(data); for a vocabulary too large for the text, give a smaller --vocab-size)")
      }
      let tok: SentencePieceTokenizer
      do { tok = try SentencePieceTokenizer(model: model, name: output) } catch { throw CLIError("\(error)") }
      try writeOutput(output, model)
      let ids = (try? tok.encode(bytes: text))?.count ?? 0
      print("tokenizer \(output): vocab \(tok.vocabularySize), SHA-256 \(tok.sha256); \(data): \(text.count) bytes -> \(ids) tokens (\(String(format: "%.2f", Double(text.count) / Double(max(ids, 1)))) bytes/token)")
    }
  }

  struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Encode a file: one little-endian uint32 per token, or --format text (one id and its piece per line).")

    @OptionGroup var files: IdFiles

    func run() throws {
      try refuseOverwriting(input: files.input, output: files.output)
      let tok = try loadTokenizer(files.tokenizer)
      let ids: [Int32]
      do { ids = try tok.encode(bytes: try readInput(files.input)) } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
      let output = files.output
      switch files.format {
      case .binary:
        var bytes = [UInt8](repeating: 0, count: ids.count * 4)
        bytes.withUnsafeMutableBytes { out in
          for (i, id) in ids.enumerated() { out.storeBytes(of: UInt32(bitPattern: id).littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
        try writeOutput(output, bytes)
      case .text:
        let lines = ids.map { "\($0)\t\(tok.piece($0).debugDescription)\n" }.joined()
        try writeOutput(output, Array(lines.utf8))
      }
    }
  }

  struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Decode ids (little-endian uint32, or --format text: the first number of each line) to the exact bytes.")

    @OptionGroup var files: IdFiles

    func run() throws {
      try refuseOverwriting(input: files.input, output: files.output)
      let tok = try loadTokenizer(files.tokenizer)
      let input = files.input, raw = try readInput(input)
      var ids: [Int32] = []
      switch files.format {
      case .binary:
        guard raw.count % 4 == 0 else {
          throw CLIError("\(input) is \(raw.count) bytes, not a whole number of uint32 ids (encode with --format binary)")
        }
        ids = raw.withUnsafeBytes { b in (0..<raw.count / 4).map { Int32(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
      case .text:
        // Line numbers as an editor counts them (blank lines skipped but counted; \r\n accepted).
        // ("\r\n" is one Character, a newline, in Swift's strings.)
        let lines = String(decoding: raw, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (n, line) in lines.enumerated() where !line.isEmpty {
          guard let id = Int32(line.prefix { $0 != "\t" && $0 != " " }) else {
            throw CLIError("\(input) line \(n + 1) does not start with a token id")
          }
          ids.append(id)
        }
      }
      do { try writeOutput(files.output, try tok.decode(ids)) } catch let e as CLIError { throw e } catch {
        throw CLIError("\(input): \(error)")
      }
    }
  }

  /// The options encode and decode share: the tokenizer, the file read, the file written, the ids' format.
  struct IdFiles: ParsableArguments {
    @Option(help: "The tokenizer model (.model).")
    var tokenizer: String
    @Option(help: "The file to read: any bytes (encode), or ids (decode).")
    var input: String
    @Option(help: "Where to write the ids (encode) or the bytes (decode).")
    var output: String
    @Option(help: "The ids' format: binary (uint32 little-endian per token) or text.")
    var format: IdFormat = .binary
  }

  enum IdFormat: String, ExpressibleByArgument, CaseIterable { case binary, text }
}

/// A tokenizer model file, or one error line naming it.
func loadTokenizer(_ path: String) throws -> SentencePieceTokenizer {
  do { return try SentencePieceTokenizer(path: path) } catch { throw CLIError("\(error)") }
}

/// The bytes of a file, or one error line naming it. Read, not mapped: a file cut while it is read
/// must not end the command with SIGBUS. Read straight into the array (one copy of the input).
private func readInput(_ path: String) throws -> [UInt8] {
  do {
    let f = try DataFile(path: path) { st in
      if (st.st_mode & S_IFMT) == S_IFDIR { throw CLIError("\(path) is a directory") }
    }
    return try [UInt8](unsafeUninitializedCapacity: f.count) { buffer, initialized in
      try f.read(into: UnsafeMutableRawBufferPointer(buffer), at: 0)
      initialized = f.count
    }
  } catch let e as CLIError { throw e } catch let e as MappedFile.Failure {
    throw CLIError("cannot read \(path): \(e.reason)")
  }
}

/// One error line when `output` is the file `input` names (however spelled): writing it would
/// destroy the input.
private func refuseOverwriting(input: String, output: String) throws {
  if Train.sameFile(input, output) { throw CLIError("--output \(output) is the input file \(input): give another path") }
}

/// Writes a file atomically, or one error line naming it.
private func writeOutput(_ path: String, _ bytes: [UInt8]) throws {
  do { try AtomicFile.write(to: path, bytes: bytes) } catch { throw CLIError("cannot write \(path): \(error)") }
}
