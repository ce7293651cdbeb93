// Peak: the measured arithmetic peak of this machine (fp32 FMA per ISA, bf16 dot product), the
// denominator of every "fraction of peak", MFU and HFU figure. Thin Swift layer over
// CKernels/peak.c (see pk_peak.h for what is counted).

import CKernels
import PalmTensor

/// Measures the FMA peak of this machine with the C probe in `peak.c`.
///
/// Each thread runs independent register-only chains of vector FMAs, so the figure is what the
/// FMA pipes deliver at the current clock, summed over the team:
///
/// ```
/// fp32: 16 zmm FMA chains x 16 lanes x 2 FLOP per trip (AVX-512), 12 ymm x 8 x 2 (AVX2)
/// bf16: 16 vdpbf16ps chains x 32 bf16 pairs x 2 FLOP per trip
/// ```
///
/// ```swift
/// let one = try PeakProbe.fp32(threads: 1)          // e.g. 270 GFLOP/s on one Zen 5 core
/// let bf16 = try PeakProbe.bf16(threads: 1)         // nil without AVX512-BF16
/// ```
public enum PeakProbe {
  /// Loop trips per thread of one measurement (about 40 ms for fp32 zmm on a 4 GHz core).
  public static let defaultIterations = 20_000_000

  /// The fp32 FMA peak in GFLOP/s on `threads` threads, best of `repeats` runs.
  /// - Parameters:
  ///   - threads: OpenMP team size (>= 1).
  ///   - isa: which vectors to use (default: the level the kernels use now).
  ///   - iterations: loop trips per thread and run.
  ///   - repeats: runs; the best one counts (a shared machine only ever makes a run slower), and
  ///     runs while other processes used more than 5% of the machine are retaken (up to 10x).
  /// - Throws: `KernelError` for bad arguments or an ISA the CPU lacks.
  public static func fp32(
    threads: Int, isa: ISA = .active, iterations: Int = defaultIterations, repeats: Int = 3
  ) throws -> Double {
    let level = pk_isa(rawValue: UInt32(isa.rawValue))
    let trips = isa == .scalar ? (iterations + 7) / 8 : iterations  // scalar: 8x slower per trip
    return try bestClean(repeats: repeats) { g in
      try KernelError.check(pk_peak_fp32(&g, level, Int32(clamping: threads), Int64(trips), 1), "peak_fp32")
    }
  }

  /// Best of `repeats` runs during which other processes used <= 5% of the machine (a shared
  /// machine only ever slows a run down); after 10 x repeats tries, the best run of all.
  static func bestClean(repeats: Int, _ run: (inout Double) throws -> Void) throws -> Double {
    guard repeats >= 1 else { throw KernelError(status: PK_STATUS_BAD_SIZE, kernel: "peak") }
    var clean = 0, bestClean = 0.0, bestAny = 0.0
    for _ in 0..<(10 * repeats) where clean < repeats {
      let probe = ForeignCPU()
      var g = 0.0
      try run(&g)
      bestAny = max(bestAny, g)
      if probe.fraction() <= 0.05 {
        clean += 1
        bestClean = max(bestClean, g)
      }
    }
    return clean > 0 ? bestClean : bestAny
  }

  /// The bf16 dot-product peak (`_mm512_dpbf16_ps`) in GFLOP/s, or nil if the CPU lacks AVX512-BF16.
  public static func bf16(threads: Int, iterations: Int = defaultIterations, repeats: Int = 3) throws -> Double? {
    guard pk_cpu_has_avx512_bf16() != 0 else { return nil }
    return try bestClean(repeats: repeats) { g in
      try KernelError.check(pk_peak_bf16(&g, Int32(clamping: threads), Int64(iterations), 1), "peak_bf16")
    }
  }

  /// One row of `palm peak`: the peaks at one thread count.
  public struct Result: Codable, Sendable, Equatable {
    public var threads: Int
    public var isa: String
    public var fp32Gflops: Double
    public var bf16Gflops: Double?

    enum CodingKeys: String, CodingKey {
      case threads, isa, fp32Gflops = "fp32_gflops", bf16Gflops = "bf16_gflops"
    }
  }

  /// Peaks at 1...maxThreads threads (fp32 at the active ISA; bf16 where it runs natively at the
  /// active level: below it, e.g. `--isa scalar`, bf16 is emulated on the fp32 FMAs and the
  /// vdpbf16ps peak is not what that level's code can reach, so it is nil).
  public static func measure(maxThreads: Int, repeats: Int = 3) throws -> [Result] {
    try (1...max(1, maxThreads)).map { t in
      Result(
        threads: t, isa: ISA.active.description, fp32Gflops: try fp32(threads: t, repeats: repeats),
        bf16Gflops: ISA.bf16Native ? try bf16(threads: t, repeats: repeats) : nil)
    }
  }
}
