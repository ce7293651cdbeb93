// palm bench matmul: GEMM throughput (pk_sgemm, or pk_bgemm with --dtype bf16) on one shape, or
// the standard set (squares and transformer shapes, every layout, 1 and 2 threads), as text or
// JSON lines; see PalmBench.GEMMBench.
import ArgumentParser
import Foundation
import PalmBench
import PalmTensor

extension GEMMPrecision: ExpressibleByArgument {}

enum LayoutChoice: String, ExpressibleByArgument, CaseIterable {
  case nn, nt, tn
  var layout: GEMMLayout {
    switch self {
    case .nn: return .nn
    case .nt: return .nt
    case .tn: return .tn
    }
  }
}

struct BenchMatmul: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "matmul",
    abstract: "Time pk_sgemm (or pk_bgemm, --dtype bf16): one shape, or the standard set (no --m/--n/--k).",
    discussion: """
      C(m,n) = op(A)·op(B) with layout nn (A·B), nt (A·Bᵀ, B stored n×k) or tn (Aᵀ·B, A stored k×m).
      Each figure: one warm-up, --repeat samples of >= 20 ms, median and min time; GFLOP/s from the
      median; fraction of the peak measured at the same thread count just before: the fp32 FMA
      peak, or for --dtype bf16 the vdpbf16ps peak (the fp32 one, labelled, on a CPU without
      AVX512_BF16, where bf16 is emulated).
      Without sizes: squares 256...4096 and the transformer shapes (tokens 4096, d_model 512,
      d_ff 2048), every layout (or --layout), at 1 and 2 threads (or --threads).
      """)

  @Option(help: "Rows of C.") var m: Int?
  @Option(help: "Columns of C.") var n: Int?
  @Option(help: "The shared dimension.") var k: Int?
  @Option(help: "Layout: nn, nt or tn (default: nn for one shape, every layout for the standard set).")
  var layout: LayoutChoice?
  @Option(help: "Multiplications: fp32, or bf16 (operands rounded to bf16, fp32 accumulation).")
  var dtype: GEMMPrecision = .fp32
  @OptionGroup var compute: ComputeOptions
  @Option(help: "Timed samples per figure.") var `repeat`: Int = 5
  @Option(help: "Output format: text or json (one object per line).") var format: OutputFormat = .text

  /// Largest total operand size accepted (A, B and C together), in floats: 4 Gi floats = 16 GiB.
  static let maxFloats = 1 << 32

  func validate() throws {
    if !(1...BenchStep.maxSteps).contains(`repeat`) { throw ValidationError("--repeat must be 1...\(BenchStep.maxSteps) (got \(`repeat`))") }
    let given = [("--m", m), ("--n", n), ("--k", k)].filter { $0.1 != nil }
    if given.isEmpty { return }
    if given.count != 3 { throw ValidationError("give all of --m, --n and --k, or none for the standard set") }
    for (flag, v) in given where v! < 1 {
      throw ValidationError("\(flag) must be at least 1 (got \(v!))")
    }
    let (mm, nn, kk) = (m!, n!, k!)
    var total = 0
    for (x, y) in [(mm, kk), (kk, nn), (mm, nn)] {
      let (p, o1) = x.multipliedReportingOverflow(by: y)
      let (s, o2) = total.addingReportingOverflow(p)
      if o1 || o2 || s > Self.maxFloats {
        throw ValidationError("matrices of \(mm)x\(kk), \(kk)x\(nn) and \(mm)x\(nn) floats are too large (limit \(Self.maxFloats) floats)")
      }
      total = s
    }
  }

  func run() throws {
    try compute.apply()
    let threadCounts = compute.threads.map { [$0] } ?? [1, 2]
    var cases: [GEMMCase] = []
    if let m, let n, let k {
      for t in threadCounts {
        cases.append(GEMMCase(m: m, n: n, k: k, layout: (layout ?? .nn).layout, threads: t,
                              precision: dtype))
      }
    } else {
      for t in threadCounts {
        cases += GEMMBench.standardSet(threads: t, precision: dtype)
          .filter { layout == nil || $0.layout == layout!.layout }
      }
    }
    // bf16 divides by the bf16 peak where the CPU has one (also when --isa makes bf16 emulated).
    let bf16Peak = dtype == .bf16 && ISA.hasBF16
    if dtype == .bf16 && !ISA.bf16Native { BenchStep.noteEmulatedBF16() }
    if ISA.active == .scalar && !bf16Peak {
      // The scalar GEMM is compiled for the x86-64 baseline, which the compiler vectorises (SSE2,
      // 4 lanes); the scalar peak probe is one FMA lane. Say so rather than print >100% unexplained.
      FileHandle.standardError.write(Data("note: --isa scalar: the peak is one fp32 lane, but the scalar GEMM is auto-vectorised (SSE2, 4 lanes): its fraction of that peak can reach about 400%\n".utf8))
    }
    var peaks: [Int: Double] = [:]
    for t in Set(cases.map(\.threads)).sorted() {
      peaks[t] = bf16Peak ? try PeakProbe.bf16(threads: t) : try PeakProbe.fp32(threads: t)
    }

    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if format == .text {
      emit("name                  layout        m      n      k  thr  median ms     min ms   GFLOP/s  of \(bf16Peak ? "bf16" : "fp32") peak  max rel err")
    }
    for (i, c) in cases.enumerated() {
      if cases.count > 1 {
        FileHandle.standardError.write(Data("[\(i + 1)/\(cases.count)] \(c.name) \(c.layout.rawValue) \(c.threads)T\n".utf8))
      }
      let r = try GEMMBench.run(c, repeats: `repeat`, peakGflops: peaks[c.threads], peakKind: bf16Peak ? "bf16" : "fp32")
      switch format {
      case .json:
        emit(String(decoding: try encoder.encode(r), as: UTF8.self))
      case .text:
        emit(String(format: "%-20@  %-6@ %6d %6d %6d %4d %10.3f %10.3f %9.1f %12.1f%% %12.1e",
                     r.name as NSString, r.layout as NSString, r.m, r.n, r.k, r.threads,
                     r.secondsMedian * 1e3, r.secondsMin * 1e3, r.gflops, 100 * (r.fractionOfPeak ?? 0),
                     r.maxRelError))
      }
    }
  }

  /// One line on stdout, unbuffered (a long run shows each figure as it is measured).
  private func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
  }
}
