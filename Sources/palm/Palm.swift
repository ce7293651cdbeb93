// palm: the command-line entry point. One subcommand per file in this folder.

import ArgumentParser
import PalmTensor

@main
struct Palm: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "palm",
    abstract: "Train PaLM-style language models on CPUs and measure how well they use the hardware.",
    discussion: """
      Start with `palm bench` (no data needed) to measure this machine, or `palm train --help`.
      Set KMP_BLOCKTIME=0 on shared machines so idle OpenMP workers give their cores back.
      """,
    version: "0.1.0",
    subcommands: [Peak.self, Bench.self, DataCommand.self, MFUTable.self, Train.self, Sample.self, Eval.self])
}

/// Options every compute-heavy subcommand shares.
struct ComputeOptions: ParsableArguments {
  @Option(help: "OpenMP threads for the kernels (default: all cores).")
  var threads: Int?

  @Option(help: "Instruction set for the kernels: scalar, avx2, avx512 or avx512bf16 (avx512 with native bf16 GEMMs; default: the best this CPU has).")
  var isa: ISAChoice?

  func validate() throws {
    if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t))") }
    if let i = isa, ISA(i) > ISA.detected || (i == .avx512bf16 && !ISA.hasBF16) {
      throw ValidationError("--isa \(i.rawValue) is not supported by this CPU (best: \(ISA.detected)\(ISA.hasBF16 ? "bf16" : ""))")
    }
  }

  /// Applies the thread count and ISA to the kernels.
  func apply() throws {
    Threads.setBlocktime(milliseconds: 0)
    if let t = threads { Threads.count = t }
    if let i = isa {
      try ISA.force(ISA(i))
      try ISA.forceBF16(i == .avx512bf16)
    }
  }
}

enum ISAChoice: String, ExpressibleByArgument, CaseIterable {
  case scalar, avx2, avx512, avx512bf16
}

extension ISA {
  init(_ c: ISAChoice) {
    switch c {
    case .scalar: self = .scalar
    case .avx2: self = .avx2
    case .avx512, .avx512bf16: self = .avx512
    }
  }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
  case text, json
}
