// palm: the command-line entry point. One subcommand per file in this folder.

import ArgumentParser
import Foundation
import PalmBench
import PalmModel
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
    subcommands: [Peak.self, Bench.self, DataCommand.self, TokenizerCommand.self, MFUTable.self, PlanCommand.self, Train.self, Sample.self, Eval.self])

  static func main() async {
    await main(Palm.joiningNegativeValues(Array(CommandLine.arguments.dropFirst())))
  }

  /// `--steps -1` as `--steps=-1`: swift-argument-parser reads a value that starts with "-" as a
  /// flag ("Missing value for '--steps'"), so a negative number would never reach the checks
  /// that explain what the option accepts. No palm option or argument takes a value that looks
  /// like a negative number for another reason.
  static func joiningNegativeValues(_ args: [String]) -> [String] {
    var out: [String] = []
    var i = 0
    while i < args.count {
      let a = args[i]
      if a == "--" { out += args[i...]; break }
      if a.hasPrefix("--"), !a.contains("="), i + 1 < args.count, Double(args[i + 1]) != nil, args[i + 1].hasPrefix("-") {
        out.append(a + "=" + args[i + 1])
        i += 2
      } else {
        out.append(a)
        i += 1
      }
    }
    return out
  }
}

/// Options every compute-heavy subcommand shares.
struct ComputeOptions: ParsableArguments {
  @Option(help: "OpenMP threads for the kernels (default: all cores).")
  var threads: Int?

  @Option(help: "Instruction set for the kernels: scalar, avx2, avx512 or avx512bf16 (avx512 with native bf16 GEMMs; default: the best this CPU has).")
  var isa: ISAChoice?

  func validate() throws {
    // More threads than cores only queue behind each other (and OpenMP spins): 4x is already no use.
    if let t = threads, let problem = ThreadCounts.problem(t, option: "--threads") { throw ValidationError(problem) }
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

/// --remat none|selective|full where a command takes the policy itself.
extension RematPolicy: ExpressibleByArgument {}

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
