// palm bench kernels: the model's non-GEMM kernels (attention, SwiGLU, LayerNorm, cross-entropy,
// embedding, AdamW) timed at the tiny and small step shapes, with GFLOP/s, GB/s, arithmetic
// intensity and the roofline bound (peak from BenchDefaults.peak, bandwidth from STREAM triad).
// Reference: PalmBench/KernelBench.swift (byte and FLOP counts), PalmBench/Roofline.swift.

import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmTensor

struct BenchKernels: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kernels",
    abstract: "Time attention, SwiGLU, LayerNorm, cross-entropy, embedding and AdamW; place each on the roofline.",
    discussion: """
      Bytes are the compulsory traffic (each operand read or written once); the memory roof is the \
      STREAM triad bandwidth measured first, the compute roof the FMA peak measured by the \
      peak probe (or $PALM_PEAK_GFLOPS). Text output is a Markdown table; --format json prints JSON lines.
      """)

  @Option(help: "Model presets whose step shapes to use, comma-separated (tiny, small).")
  var config = "tiny,small"

  @Option(help: "Thread counts, comma-separated (default: 1 and 2, at most the cores).")
  var threadList: String?

  @Option(help: "Timed samples per kernel (median and min reported).")
  var repeats = 5

  @Option(help: "Only these kernels, comma-separated (e.g. attention.forward,adamw.update).")
  var kernels: String?

  @Option(help: "Write an SVG roofline chart (largest thread count) to this file.")
  var svg: String?

  @Option(help: "Output format: text or json.")
  var format: OutputFormat = .text

  @Option(help: "Precision of attention's tile products: fp32 or bf16 (the roofline's compute roof stays the fp32 peak).")
  var precision: GEMMPrecision = .fp32

  func configs() throws -> [PalmConfig] {
    try config.split(separator: ",", omittingEmptySubsequences: false).map {
      guard let c = PalmConfig.presets[String($0)], c.parameterCount < 1 << 30 else {
        throw ValidationError("--config must list tiny and/or small, comma-separated (got \"\(config)\")")
      }
      return c
    }
  }

  func threads() throws -> [Int] {
    try threadList.map(ThreadCounts.parseOption) ?? ThreadCounts.standard
  }

  func selected() throws -> [KernelBench.Kernel] {
    guard let kernels else { return KernelBench.Kernel.allCases }
    return try kernels.split(separator: ",", omittingEmptySubsequences: false).map {
      guard let k = KernelBench.Kernel(rawValue: String($0)) else {
        throw ValidationError("--kernels: unknown kernel \"\($0)\" in \"\(kernels)\"; known: "
                              + KernelBench.Kernel.allCases.map(\.rawValue).joined(separator: ", "))
      }
      return k
    }
  }

  func validate() throws {
    _ = try configs()
    _ = try threads()
    let chosen = try selected()
    if precision == .bf16 && !chosen.contains(where: { $0 == .attentionForward || $0 == .attentionBackward }) {
      throw ValidationError("--precision bf16 changes only attention's tile products; add attention.forward or attention.backward to --kernels, or drop --precision")
    }
    if !(1...BenchStep.maxSteps).contains(repeats) { throw ValidationError("--repeats must be 1...\(BenchStep.maxSteps) (got \(repeats))") }
    if let svg, svg.isEmpty { throw ValidationError("--svg must not be empty") }
  }

  func run() throws {
    Threads.setBlocktime(milliseconds: 0)
    if let svg { try Train.checkWritable(svg, flag: "--svg") }  // before the benchmarks
    let peak = BenchDefaults.peak
    if svg != nil, try peak.gflops(try threads().max() ?? 1) == nil {
      throw BenchError("--svg needs the peak: set \(PeakSource.variable) (GFLOP/s of 1 thread, or of 1,2,... threads)")
    }
    var all: [KernelBench.Result] = []
    var lastRoof: Roofline?
    var lastThreads = 0
    for t in try threads() {
      let bw = try KernelBench.bandwidth(threads: t)
      let p = try peak.gflops(t)
      let roof = p.map { Roofline(peakGFLOPs: $0, bandwidthGBs: bw) }
      if format == .text {
        print("\(t) thread(s), attention \(precision.rawValue): STREAM triad \(String(format: "%.1f", bw)) GB/s, peak "
              + (p.map { String(format: "%.1f GFLOP/s (%@)", $0, peak.name) } ?? "unknown (set \(PeakSource.variable))"))
      }
      if roof != nil { lastRoof = roof; lastThreads = t }
      for c in try configs() {
        all += try KernelBench.run(config: c, threads: t, repeats: repeats, roofline: roof, kernels: try selected(),
                                    precision: precision)
      }
    }
    if format == .json {
      print(try JSONLines.encode(all), terminator: "")
    } else {
      print(KernelBench.markdown(all), terminator: "")
    }
    if let svg {
      guard let roof = lastRoof else {
        throw BenchError("--svg needs the peak: set \(PeakSource.variable) (GFLOP/s of 1 thread, or of 1,2,... threads)")
      }
      let points = all.filter { $0.threads == lastThreads }.map {
        Roofline.Point(label: "\($0.shape.name) \($0.kernel.rawValue)", intensity: $0.intensity, gflops: $0.gflops)
      }
      try AtomicFile.write(to: svg, bytes: Array(roof.svg(points, title: "Roofline, \(lastThreads) thread(s)").utf8))
    }
  }
}
