// KernelBench+Report: the kernel microbenchmark results as a Markdown table (also the CLI's text
// output) and as JSON lines, and the GEMM stage's table. Reference: KernelBench.swift.

import Foundation

extension KernelBench {
  /// A Markdown table: one row per result, with the roofline placement when known.
  public static func markdown(_ results: [Result]) -> String {
    var s = "| Kernel | Shape | Threads | Median ms | Min ms | GFLOP/s | GB/s | FLOP/byte | Bound | Attainable GFLOP/s | Fraction of bound |\n"
    s += "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n"
    for r in results {
      let place = r.roofline
      let cells = [
        r.kernel.rawValue, r.shape.name, "\(r.threads)", fixed(r.medianSeconds * 1e3, 3), fixed(r.minSeconds * 1e3, 3),
        fixed(r.gflops, 2), fixed(r.gbs, 2), fixed(r.intensity, 3), place?.bound.rawValue ?? "— (no peak)",
        place.map { fixed($0.attainableGFLOPs, 1) } ?? "—", place.map { pct($0.fraction, 1) } ?? "—",
      ]
      s += "| " + cells.joined(separator: " | ") + " |\n"
    }
    return s
  }
}

/// Encodes values as JSON lines: one compact object per line, sorted keys.
public enum JSONLines {
  public static func encode<T: Encodable>(_ values: [T]) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return try values.map { String(decoding: try encoder.encode($0), as: UTF8.self) + "\n" }.joined()
  }

  /// Decodes every non-empty line of `text`.
  public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> [T] {
    let decoder = JSONDecoder()
    return try text.split(separator: "\n").filter { !$0.isEmpty }.map {
      try decoder.decode(T.self, from: Data($0.utf8))
    }
  }
}
