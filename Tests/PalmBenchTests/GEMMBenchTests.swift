// GEMMBenchTests: the GEMM benchmark's standard set, its JSON shape and correctness check, and the
// peak probe's argument handling (timings themselves are never asserted: the machine is shared).

import Foundation
import Testing
import PalmBench
import PalmTensor

@Suite struct GEMMBenchTests {
  @Test func standardSetHasTheTransformerShapesInEveryLayout() {
    let cases = GEMMBench.standardSet(threads: 2)
    #expect(cases.allSatisfy { $0.threads == 2 })
    #expect(cases.count == 5 * 3 + 9)
    // fwd H·W2: (4096×2048)·(2048×512); its input gradient dH = dY·W2ᵀ; its weight gradient Hᵀ·dY.
    #expect(cases.contains { $0.layout == .nn && ($0.m, $0.n, $0.k) == (4096, 512, 2048) })
    #expect(cases.contains { $0.layout == .nt && ($0.m, $0.n, $0.k) == (4096, 2048, 512) })
    #expect(cases.contains { $0.layout == .tn && ($0.m, $0.n, $0.k) == (2048, 512, 4096) })
  }

  @Test(arguments: GEMMLayout.allCases)
  func smallCaseIsCorrectAndEncodesSnakeCase(layout: GEMMLayout) throws {
    let r = try GEMMBench.run(GEMMCase(m: 33, n: 17, k: 29, layout: layout, threads: 1), repeats: 1,
                              minSampleSeconds: 0, peakGflops: 100)
    #expect(r.maxRelError < 1e-5, "max rel error \(r.maxRelError)")
    #expect(r.secondsMin <= r.secondsMedian && r.secondsMin > 0)
    #expect(abs(r.fractionOfPeak! - r.gflops / 100) < 1e-12)
    let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(r)) as! [String: Any]
    for key in ["kernel", "m", "n", "k", "layout", "threads", "seconds_median", "seconds_min", "gflops",
                "peak_gflops", "fraction_of_peak", "isa"] {
      #expect(json[key] != nil, "missing JSON key \(key)")
    }
    #expect(json["layout"] as? String == layout.rawValue)
  }

  @Test func peakProbeMeasuresAndRejectsBadArguments() throws {
    let g = try PeakProbe.fp32(threads: 1, iterations: 10_000, repeats: 1)
    #expect(g > 0)
    #expect(throws: KernelError.self) { try PeakProbe.fp32(threads: 0, iterations: 10, repeats: 1) }
    #expect(throws: KernelError.self) { try PeakProbe.fp32(threads: 1, iterations: 0, repeats: 1) }
    if let bf = try PeakProbe.bf16(threads: 1, iterations: 10_000, repeats: 1) { #expect(bf > 0) }
  }
}
