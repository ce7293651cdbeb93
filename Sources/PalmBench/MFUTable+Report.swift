// MFUTable+Report: the MFU table as Markdown (with the MFU/HFU explanation) and as JSON (one
// object per row, snake_case keys). The SVG chart is in Report+SVG.swift.
//
// Reference: the table layout follows PaLM Table 3; the explanation quotes PaLM §4.1/Appendix B.

import Foundation
import PalmModel

extension MFUTable {
  /// Output formats of the table.
  public enum Format: String, CaseIterable, Codable, Sendable {
    case markdown, json, svg
  }

  /// Renders `rows` in `format`.
  public static func render(_ rows: [Row], format: Format) throws -> String {
    switch format {
    case .markdown: markdown(rows)
    case .json: try json(rows)
    case .svg: svg(rows)
    }
  }

  /// The explanation printed above the table.
  public static let explanation = """
    MFU (model FLOPs utilization, PaLM §4.1) is the observed throughput divided by the throughput the \
    chips would reach at their peak if they executed only the FLOPs the model needs (forward and \
    backward, no rematerialization). HFU (hardware FLOPs utilization) also counts the FLOPs that \
    rematerialization repeats, so it depends on the implementation; PaLM reports MFU for that reason. \
    Both use one function here, `MFUTable.mfu`:

    ```
    MFU = tokens/s × (6N + 12·L·H·Q·T) / (chips × peak FLOP/s per chip)
    HFU = tokens/s × hardware FLOPs/token / (chips × peak FLOP/s per chip)
    PaLM 540B hardware FLOPs/token = 6N + 12·L·H·Q·T + 0.75·2N + 4·L·H·Q·T
    ```

    N = parameters as each source counts them, L layers, H heads, Q head size, T sequence length \
    (PaLM Appendix B). Attention is counted over the full T (causality not exploited), as PaLM does.
    """

  /// The table as Markdown: the explanation, part one (published runs and reference rows) with
  /// its notes, and part two (rows measured here).
  public static func markdown(_ rows: [Row]) -> String {
    var out = "## MFU comparison: PaLM Table 3 recomputed from published inputs\n\n"
    out += explanation + "\n\n### Part one: published runs\n\n"
    out += "| Model | Params | Chips | Peak/chip (TFLOP/s) | Tokens/s | Model TFLOPs/token "
      + "| MFU w/o attn | MFU | Published MFU | HFU | Published HFU | Reproduced |\n"
    out += "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    var notes: [(String, String)] = []
    for row in rows {
      switch row {
      case .paper(let r):
        let mark = notes.count + 1
        notes.append((r.model, r.note))
        let cells = [
          r.model, params(r.parameters), "\(grouped(Double(r.chips))) × \(r.chip)",
          tflops(r.peakFLOPsPerChip), rate(r.tokensPerSecond), fixed(r.modelFLOPsPerToken / 1e12, 4),
          pct(r.mfuWithoutAttention, 2), pct(r.mfu, 2), pct(r.publishedMFU, 1),
          r.hfu.map { pct($0, 2) } ?? "—", r.publishedHFU.map { pct($0, 1) } ?? "—",
          (r.reproduced ? "yes" : "**NO**") + " [\(mark)]",
        ]
        out += "| " + cells.joined(separator: " | ") + " |\n"
      case .reference(let r):
        let mark = notes.count + 1
        notes.append((r.model, r.note))
        let cells = [
          "\(r.model) *(published reference)*", params(r.parameters), "\(grouped(Double(r.chips))) × \(r.chip)",
          "—", "—", "—", "—", "—", pct(r.publishedMFU, 1), "—", r.publishedHFU.map { pct($0, 1) } ?? "—",
          "not recomputed [\(mark)]",
        ]
        out += "| " + cells.joined(separator: " | ") + " |\n"
      case .measured:
        continue
      }
    }
    out += "\n"
    for (i, note) in notes.enumerated() {
      out += "\(i + 1). \(note.0): \(note.1).\n"
    }

    out += "\n### Part two: measured on this machine\n\n"
    let measured = rows.compactMap { row -> MeasuredRow? in
      if case .measured(let r) = row { return r }
      return nil
    }
    if measured.isEmpty {
      out += "No measured rows in this table: part two is filled by the step benchmark.\n"
      return out
    }
    out += "Peak = the measured peak of the threads used, of the row's precision: the fp32 FMA peak for fp32 rows, the bf16 "
      + "dot-product peak for bf16 rows (column Peak names it); fp32 rows also give their MFU against the bf16 peak, the figure to set beside a bf16 row. "
      + "Hardware FLOPs count this package's "
      + "matmuls under the row's remat policy, attention keys charged as the kernel executes them (column Attention span); MFU counts PaLM's full T. "
      + "HFU full T charges attention over the full T as PaLM's HFU does: compare that one with PaLM's 57.8%.\n\n"
    out += "| Config | Precision | Remat | Threads | Tokens/s | Peak (GFLOP/s) | Model MFLOPs/token | Hardware MFLOPs/token "
      + "| Attention span | MFU | HFU | HFU full T | MFU of bf16 peak | Planned activations (MiB) | Peak RSS (MiB) |\n"
    out += "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n"
    for r in measured {
      let cells = [
        r.config, r.precision.rawValue, r.remat.rawValue, "\(r.threads)", rate(r.tokensPerSecond),
        fixed(r.peakFLOPs / 1e9, 1) + " \(r.peakPrecision.rawValue)",
        fixed(r.modelFLOPsPerToken / 1e6, 2), fixed(r.hardwareFLOPsPerToken / 1e6, 2), r.attention,
        pct(r.mfu, 1), pct(r.hfu, 1), pct(r.hfuFullT, 1), r.mfuOfBF16Peak.map { pct($0, 1) } ?? "—",
        mib(r.plannedActivationBytes), mib(r.peakRSSBytes),
      ]
      out += "| " + cells.joined(separator: " | ") + " |\n"
    }
    return out
  }

  /// The rows as a JSON array, one object per row with a `"kind"` key (`paper`, `reference`,
  /// `measured`) and snake_case keys; fractions stay fractions (0.462, not 46.2).
  public static func json(_ rows: [Row]) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(rows), as: UTF8.self) + "\n"
  }

  /// 540.35e9 → "540.35B", 1e12 → "1T".
  static func params(_ n: Double) -> String {
    func trimmed(_ x: Double) -> String {
      var s = fixed(x, 2)
      while s.hasSuffix("0") { s.removeLast() }
      if s.hasSuffix(".") { s.removeLast() }
      return s
    }
    return n >= 1e12 ? trimmed(n / 1e12) + "T" : n >= 1e9 ? trimmed(n / 1e9) + "B" : trimmed(n / 1e6) + "M"
  }

  /// Tokens/s: one decimal below 1,000, grouped thousands above.
  static func rate(_ tokensPerSecond: Double) -> String {
    tokensPerSecond < 1000 ? fixed(tokensPerSecond, 1) : grouped(tokensPerSecond)
  }

  static func mib(_ bytes: Int) -> String { fixed(Double(bytes) / 1_048_576, 1) }
}
