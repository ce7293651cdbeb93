// palm mfu-table: PaLM's Table 3 MFU comparison recomputed from the published inputs (part one),
// as Markdown, JSON or an SVG bar chart. Part two (rows measured here) is filled by the step
// benchmark. Reference: PaLM §4.1, Appendix B; PalmBench/MFUTable.swift.

import ArgumentParser
import PalmBench
import PalmTensor

struct MFUTable: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mfu-table",
    abstract: "Print PaLM's MFU comparison table (GPT-3, Gopher, MT-NLG, PaLM) recomputed from published inputs.",
    discussion: """
      MFU = tokens/s × (6N + 12·L·H·Q·T) / (chips × peak FLOP/s per chip). Every row goes through \
      one function; rows that do not reproduce their published figure (GPT-3) say so and why.
      """)

  @Option(help: "Output format: markdown, json or svg.")
  var format: PalmBench.MFUTable.Format = .markdown

  @Option(help: "Write to this file (atomically) instead of standard output.")
  var output: String?

  @Flag(help: "Also measure part two here: tiny and small × remat none/selective/full × 1 and 2 threads (each run in a child process; minutes).")
  var measure = false

  @Option(help: "With --measure: GEMM precisions of the measured rows, comma-separated (fp32, bf16; default fp32). Each row divides by its precision's peak.")
  var precision: String?

  func validate() throws {
    if let precision {
      guard measure else { throw ValidationError("--precision selects the measured rows: it needs --measure") }
      _ = try PrecisionList.parseOption(precision)
    }
    if let output, output.isEmpty { throw ValidationError("--output must not be empty") }
  }

  func run() throws {
    if let output { try Train.checkWritable(output, flag: "--output") }  // before --measure's minutes
    let text = try PalmBench.MFUTable.render(PalmBench.MFUTable.rows(measured: measure ? measuredRows() : []), format: format)
    if let output {
      try AtomicFile.write(to: output, bytes: Array(text.utf8))
    } else {
      print(text, terminator: "")
    }
  }
}

extension PalmBench.MFUTable.Format: ExpressibleByArgument {}
