// palm peak: measures this machine's fp32 FMA peak at 1...N threads and the bf16 dot-product peak
// (the MFU denominator), with CKernels/peak.c through PalmBench.PeakProbe.
import ArgumentParser
import Foundation
import PalmBench
import PalmTensor

struct Peak: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure this machine's FMA peak (the MFU denominator).",
    discussion: """
      Prints the fp32 FMA peak (vector width of the active ISA) at 1, 2, ... --threads threads, and
      the AVX512-BF16 dot-product peak where the CPU has it. Best of --repeat runs of ~40 ms each.
      """)
  @OptionGroup var compute: ComputeOptions

  @Option(help: "Output format: text or json (one object per thread count).")
  var format: OutputFormat = .text

  @Option(help: "Runs per figure; the best counts.")
  var `repeat`: Int = 3

  func validate() throws {
    if !(1...BenchStep.maxSteps).contains(`repeat`) { throw ValidationError("--repeat must be 1...\(BenchStep.maxSteps) (got \(`repeat`))") }
  }

  func run() throws {
    try compute.apply()
    let results = try PeakProbe.measure(maxThreads: compute.threads ?? Threads.count, repeats: `repeat`)
    switch format {
    case .json:
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      for r in results { print(String(decoding: try encoder.encode(r), as: UTF8.self)) }
    case .text:
      if ISA.hasBF16 && !ISA.bf16Native {
        print("bf16: emulated at --isa \(ISA.active) (fp32 FMAs, at most the fp32 peak); the vdpbf16ps peak needs --isa avx512bf16")
      }
      print("threads  isa      fp32 GFLOP/s  per thread   bf16 GFLOP/s")
      for r in results {
        let bf16 = r.bf16Gflops.map { String(format: "%12.1f", $0) } ?? "           -"
        print(String(format: "%7d  %-7@ %13.1f %11.1f", r.threads, r.isa as NSString, r.fp32Gflops,
                     r.fp32Gflops / Double(r.threads)) + "   " + bf16)
      }
    }
  }
}
