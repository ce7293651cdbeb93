// GEMMStage: a reduced GEMM set for `palm bench` (the suite): the forward products of a training
// step of each config plus one square, timed through pk_sgemm (whatever fast path is built in).
// `palm bench matmul` (PalmBench GEMM benchmark, merged separately) has the full standard set.

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// The suite's GEMM measurements.
public enum GEMMStage {
  /// One product C (m×n) = A (m×k) · B, with B stored k×n (NN) or n×k (NT).
  public struct Shape: Codable, Equatable, Sendable {
    public var name: String
    public var m: Int, n: Int, k: Int
    public var transposedB: Bool

    public init(name: String, m: Int, n: Int, k: Int, transposedB: Bool = false) {
      self.name = name
      self.m = m; self.n = n; self.k = k
      self.transposedB = transposedB
    }

    enum CodingKeys: String, CodingKey { case name, m, n, k; case transposedB = "transposed_b" }
  }

  /// The forward products of one step of `c`: fused input projection, fused output projection,
  /// logits (NT against the shared embedding).
  public static func shapes(for c: PalmConfig) -> [Shape] {
    let n = c.batch * c.seqLen, cin = c.inputProjectionColumns, cout = c.outputProjectionRows
    return [
      Shape(name: "\(c.name) qkv_proj+mlpwi", m: n, n: cin, k: c.dModel),
      Shape(name: "\(c.name) out_proj+mlpwo", m: n, n: c.dModel, k: cout),
      Shape(name: "\(c.name) logits", m: n, n: c.vocab, k: c.dModel, transposedB: true),
    ]
  }

  public struct Result: Codable, Equatable, Sendable {
    public var shape: Shape
    public var threads: Int
    public var samples: Int
    public var medianSeconds: Double
    public var minSeconds: Double
    /// 2·m·n·k / median.
    public var gflops: Double
    /// gflops / peak of the threads, nil when the peak is unknown.
    public var fractionOfPeak: Double?

    enum CodingKeys: String, CodingKey {
      case shape, threads, samples
      case medianSeconds = "median_seconds", minSeconds = "min_seconds"
      case gflops
      case fractionOfPeak = "fraction_of_peak"
    }
  }

  /// Times each shape (one untimed call, then `samples` timed calls) at `threads` threads.
  public static func run(_ shapes: [Shape], threads: Int, samples: Int = 3, peakGFLOPs: Double?) throws -> [Result] {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = threads
    var results: [Result] = []
    for s in shapes {
      let a = Tensor(shape: [s.m, s.k]), b = Tensor(shape: [s.transposedB ? s.n : s.k, s.transposedB ? s.k : s.n])
      let c = Tensor(shape: [s.m, s.n])
      for i in 0..<a.count { a.storage.base[i] = Float(i % 7) * 0.01 }
      for i in 0..<b.count { b.storage.base[i] = Float(i % 5) * 0.01 }
      let layout = s.transposedB ? PK_LAYOUT_NT : PK_LAYOUT_NN
      let ldb = Int64(s.transposedB ? s.k : s.n)
      func call() throws {
        try KernelError.check(pk_sgemm(layout, Int64(s.m), Int64(s.n), Int64(s.k), 1, a.storage.base, Int64(s.k),
                                       b.storage.base, ldb, 0, c.storage.base, Int64(s.n)), "sgemm")
      }
      try call()
      var times: [Double] = []
      for _ in 0..<max(samples, 1) {
        let t0 = pk_now_seconds()
        try call()
        times.append(pk_now_seconds() - t0)
      }
      times.sort()
      let median = PalmTrain.median(times) ?? times[0]
      let g = 2 * Double(s.m) * Double(s.n) * Double(s.k) / median / 1e9
      results.append(Result(shape: s, threads: threads, samples: times.count, medianSeconds: median,
                            minSeconds: times[0], gflops: g, fractionOfPeak: peakGFLOPs.map { g / $0 }))
    }
    return results
  }

  /// A Markdown table of results.
  public static func markdown(_ results: [Result]) -> String {
    var s = "| Product | m×n×k | B | Threads | Median ms | GFLOP/s | Fraction of peak |\n|---|---|---|---:|---:|---:|---:|\n"
    for r in results {
      s += "| \(r.shape.name) | \(r.shape.m)×\(r.shape.n)×\(r.shape.k) | \(r.shape.transposedB ? "NT" : "NN") | \(r.threads) | "
        + "\(fixed(r.medianSeconds * 1e3, 2)) | \(fixed(r.gflops, 1)) | \(r.fractionOfPeak.map { pct($0, 1) } ?? "—") |\n"
    }
    return s
  }
}
