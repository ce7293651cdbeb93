// GEMMBench: times pk_sgemm or pk_bgemm (bf16) on one shape/layout/thread count (warm-up, R
// samples, median and min), checks a sample of the result against fp64 dot products (of the
// bf16-rounded operands for bf16), and reports GFLOP/s and the fraction of the measured peak (the
// caller's: fp32 FMA for fp32, vdpbf16ps for bf16). The standard set is the square sizes and the transformer
// shapes of /work/shared/anchors/sgemm.py (tokens 4096, d_model 512, d_ff 2048), so the figures
// sit next to numpy/OpenBLAS (bench/compare/numpy_gemm.py).

import CKernels
import Foundation
import PalmTensor
import PalmTrain

/// One GEMM to time: `C(m, n) = op(A)(m, k) · op(B)(k, n)` in `layout`, on `threads` threads,
/// with fp32 or bf16 multiplications (`precision`).
public struct GEMMCase: Sendable, Equatable {
  public var name: String
  public var m: Int, n: Int, k: Int
  public var layout: GEMMLayout
  public var threads: Int
  public var precision: GEMMPrecision

  public init(name: String? = nil, m: Int, n: Int, k: Int, layout: GEMMLayout = .nn, threads: Int = 1,
              precision: GEMMPrecision = .fp32) {
    self.name = name ?? "\(m)x\(n)x\(k)"
    self.m = m; self.n = n; self.k = k; self.layout = layout; self.threads = threads
    self.precision = precision
  }

  /// Multiply-adds counted twice: `2·m·n·k`.
  public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
}

/// The measurement of one `GEMMCase` (one JSON object per line in `palm bench matmul`).
public struct GEMMResult: Codable, Sendable {
  public var kernel: String
  /// "fp32" or "bf16" (the multiplications; accumulation and C are fp32 in both).
  public var dtype: String
  public var name: String
  public var m: Int, n: Int, k: Int
  public var layout: String
  public var threads: Int
  /// The ISA level; "avx512bf16" for native bf16.
  public var isa: String
  /// Timed samples; each sample runs the product `inner` times and counts the mean.
  public var repeats: Int
  public var inner: Int
  public var secondsMedian: Double
  public var secondsMin: Double
  /// From the median time.
  public var gflops: Double
  /// From the best time.
  public var gflopsMax: Double
  public var peakGflops: Double?
  /// What `peakGflops` measured: "fp32" (FMA) or "bf16" (vdpbf16ps).
  public var peakKind: String?
  /// `gflops / peakGflops`.
  public var fractionOfPeak: Double?
  /// Largest |C - C_fp64| / sum_p |a_ip b_pj| over the sampled entries (bf16: of the rounded a, b).
  public var maxRelError: Double
  /// Largest share of the machine's CPU time other processes used during a kept sample.
  public var foreignCPU: Double
  /// Samples taken (disturbed ones are retaken).
  public var attempts: Int

  enum CodingKeys: String, CodingKey {
    case kernel, dtype, name, m, n, k, layout, threads, isa, repeats, inner
    case secondsMedian = "seconds_median", secondsMin = "seconds_min", gflops
    case gflopsMax = "gflops_max", peakGflops = "peak_gflops", peakKind = "peak_kind"
    case fractionOfPeak = "fraction_of_peak"
    case maxRelError = "max_rel_error", foreignCPU = "foreign_cpu", attempts
  }
}

/// Times `pk_sgemm` or `pk_bgemm` (see `GEMMCase`, `GEMMResult`).
///
/// ```swift
/// let r = try GEMMBench.run(GEMMCase(m: 2048, n: 2048, k: 2048, threads: 1), repeats: 5,
///                           peakGflops: try PeakProbe.fp32(threads: 1))
/// print(r.gflops, r.fractionOfPeak ?? 0)
/// ```
public enum GEMMBench {
  /// Transformer sizes of the standard set (PaLM-style block at the anchor's scale).
  public static let tokens = 4096, dModel = 512, dFF = 2048

  /// The standard set at one thread count: squares 256...4096 and the three transformer products
  /// in every layout: NN is the forward `X·W`, NT the input gradient `dY·Wᵀ`, TN the weight
  /// gradient `Xᵀ·dY` (K = tokens).
  public static func standardSet(threads: Int, precision: GEMMPrecision = .fp32) -> [GEMMCase] {
    var cases: [GEMMCase] = []
    for s in [256, 512, 1024, 2048, 4096] {
      for l in GEMMLayout.allCases {
        cases.append(GEMMCase(name: "square \(s)", m: s, n: s, k: s, layout: l, threads: threads))
      }
    }
    let (t, d, f) = (tokens, dModel, dFF)
    // (name, m, k, n) of the forward products X·W.
    let forward = [("X.W1", t, d, f), ("H.W2", t, f, d), ("X.Wp", t, d, d)]
    for (name, m, k, n) in forward {
      cases.append(GEMMCase(name: "fwd \(name)", m: m, n: n, k: k, layout: .nn, threads: threads))
    }
    for (name, m, k, n) in forward {  // dX = dY·Wᵀ: (m, n) · (k, n)ᵀ gives (m, k)
      cases.append(GEMMCase(name: "bwd dX of \(name)", m: m, n: k, k: n, layout: .nt, threads: threads))
    }
    for (name, m, k, n) in forward {  // dW = Xᵀ·dY: (m, k)ᵀ · (m, n) gives (k, n)
      cases.append(GEMMCase(name: "bwd dW of \(name)", m: k, n: n, k: m, layout: .tn, threads: threads))
    }
    return cases.map { var c = $0; c.precision = precision; return c }
  }

  /// Runs one case: `warmup` untimed products, then `repeats` samples of `inner` products each
  /// (`inner` chosen so that a sample lasts at least `minSampleSeconds`); `peakKind` names what
  /// `peakGflops` measured ("fp32" or "bf16"). Samples during which
  /// other processes used more than `maxForeignCPU` of the machine are retaken (see `ForeignCPU`).
  /// - Throws: `KernelError` if the kernel rejects the shape.
  public static func run(
    _ c: GEMMCase, repeats: Int = 5, warmup: Int = 1, minSampleSeconds: Double = 0.02,
    peakGflops: Double? = nil, peakKind: String = "fp32", maxForeignCPU: Double = 0.05
  ) throws -> GEMMResult {
    let (aRows, aCols) = c.layout == .tn ? (c.k, c.m) : (c.m, c.k)
    let (bRows, bCols) = c.layout == .nt ? (c.n, c.k) : (c.k, c.n)
    let a = Tensor(shape: [aRows, aCols]), b = Tensor(shape: [bRows, bCols]), out = Tensor(shape: [c.m, c.n])
    var rng = SplitMix(seed: 0x5EED ^ UInt64(c.m * 31 + c.n * 7 + c.k))
    for i in 0..<a.count { a.pointer[i] = rng.uniform() }
    for i in 0..<b.count { b.pointer[i] = rng.uniform() }

    let saved = Threads.count
    Threads.count = c.threads
    defer { Threads.count = saved }
    let gemm = c.precision == .bf16 ? Kernels.bgemm : Kernels.sgemm
    func product() throws {
      try gemm(c.layout, c.m, c.n, c.k, 1, a.pointer, aCols, b.pointer, bCols, 0, out.pointer, c.n, false)
    }
    for _ in 0..<max(1, warmup) { try product() }
    let t0 = pk_now_seconds()
    try product()
    let one = pk_now_seconds() - t0
    let inner = max(1, Int(minSampleSeconds / max(one, 1e-7)))
    // A sample counts only if other processes used <= maxForeignCPU of the machine meanwhile
    // (shared machine); after 10 x repeats attempts the least disturbed samples are kept.
    var clean: [Double] = [], all: [(foreign: Double, seconds: Double)] = []
    var attempts = 0
    while clean.count < max(1, repeats) && attempts < 10 * max(1, repeats) {
      attempts += 1
      let probe = ForeignCPU()
      let s = pk_now_seconds()
      for _ in 0..<inner { try product() }
      let seconds = (pk_now_seconds() - s) / Double(inner)
      let foreign = probe.fraction()
      all.append((foreign, seconds))
      if foreign <= maxForeignCPU { clean.append(seconds) } else { usleep(100_000) }
    }
    var samples = clean.count >= max(1, repeats)
      ? clean : all.sorted { $0.foreign < $1.foreign }.prefix(max(1, repeats)).map(\.seconds)
    let foreignMax = clean.count >= max(1, repeats) ? all.filter { $0.foreign <= maxForeignCPU }.map(\.foreign).max() ?? 0
      : all.sorted { $0.foreign < $1.foreign }.prefix(max(1, repeats)).map(\.foreign).max() ?? 0
    samples.sort()
    let median = PalmTrain.median(samples) ?? samples[0]
    let gflops = c.flops / median / 1e9

    // Correctness of what was timed: 64 sampled entries against fp64 dot products (of the operands
    // as the kernel rounds them, for bf16).
    let operand: (Float) -> Double = c.precision == .bf16 ? { Double(Kernels.roundBF16($0)) } : { Double($0) }
    var maxErr = 0.0
    if c.m > 0 && c.n > 0 {
      for _ in 0..<64 {
        let i = Int(rng.next() % UInt64(c.m)), j = Int(rng.next() % UInt64(c.n))
        var sum = 0.0, mag = 0.0
        for p in 0..<c.k {
          let av = operand(c.layout == .tn ? a.pointer[p * aCols + i] : a.pointer[i * aCols + p])
          let bv = operand(c.layout == .nt ? b.pointer[j * bCols + p] : b.pointer[p * bCols + j])
          sum += av * bv
          mag += abs(av * bv)
        }
        let err = abs(Double(out.pointer[i * c.n + j]) - sum) / max(mag, Double.leastNormalMagnitude)
        maxErr = max(maxErr, err.isNaN ? .infinity : err)
      }
    }
    return GEMMResult(
      kernel: c.precision == .bf16 ? "pk_bgemm" : "pk_sgemm", dtype: c.precision.rawValue, name: c.name,
      m: c.m, n: c.n, k: c.k, layout: c.layout.rawValue, threads: c.threads,
      isa: c.precision == .bf16 && ISA.bf16Native ? "avx512bf16" : ISA.active.description,
      repeats: samples.count, inner: inner,
      secondsMedian: median, secondsMin: samples[0], gflops: gflops, gflopsMax: c.flops / samples[0] / 1e9,
      peakGflops: peakGflops, peakKind: peakGflops == nil ? nil : peakKind, fractionOfPeak: peakGflops.map { gflops / $0 }, maxRelError: maxErr,
      foreignCPU: foreignMax, attempts: attempts)
  }
}

/// SplitMix64: a small deterministic generator for benchmark operands.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  /// Uniform in [-1, 1).
  mutating func uniform() -> Float { Float(Int64(next() >> 40) - (1 << 23)) / Float(1 << 23) }
}

/// CPU time other processes used since `init`, as a share of the machine (all CPUs), from
/// /proc/stat busy ticks minus this process's own user+system time (the anchors' clean-sample rule).
struct ForeignCPU {
  let busy0: Double, self0: Double, wall0: Double

  init() { (busy0, self0, wall0) = (Self.busySeconds(), Self.selfSeconds(), pk_now_seconds()) }

  /// Foreign CPU share since `init` (0 where /proc/stat cannot be read).
  func fraction() -> Double {
    let wall = pk_now_seconds() - wall0
    let cpus = Double(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    let foreign = (Self.busySeconds() - busy0) - (Self.selfSeconds() - self0)
    return wall > 0 ? max(0, foreign) / (wall * cpus) : 0
  }

  static func busySeconds() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
      let line = text.split(separator: "\n").first else { return 0 }
    let f = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard f.count >= 8 else { return 0 }
    let ticks = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]  // user nice system irq softirq steal
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
  }

  static func selfSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_utime.tv_sec) + 1e-6 * Double(ru.ru_utime.tv_usec)
      + Double(ru.ru_stime.tv_sec) + 1e-6 * Double(ru.ru_stime.tv_usec)
  }
}
