// RooflineTests: the roofline classification, the analytic kernel costs, the peak source parsing,
// and the kernel microbenchmark on a micro shape (every kernel runs; no timing is asserted).

import CKernels
import Foundation
import Testing
import PalmBench
import PalmModel
import _PalmTestSupport

@Suite struct RooflineTests {
  let roof = Roofline(peakGFLOPs: 500, bandwidthGBs: 40)  // ridge 12.5 FLOP/byte

  @Test func classifiesBothSidesOfTheRidge() {
    #expect(roof.ridge == 12.5)
    let low = roof.classify(intensity: 0.5, gflops: 15)
    #expect(low.bound == .memory)
    #expect(low.attainableGFLOPs == 20)
    #expect(abs(low.fraction - 0.75) < 1e-12)
    let high = roof.classify(intensity: 100, gflops: 250)
    #expect(high.bound == .compute)
    #expect(high.attainableGFLOPs == 500)
    #expect(abs(high.fraction - 0.5) < 1e-12)
    let justBelow = roof.classify(intensity: 12.4999, gflops: 1)
    #expect(justBelow.bound == .memory)
    #expect(roof.classify(intensity: 12.5, gflops: 1).bound == .compute)
    #expect(roof.attainable(intensity: 12.5) == 500)
  }

  @Test func kernelCostsFollowTheDocumentedCounts() {
    let c = PalmConfig(name: "t", dModel: 8, layers: 1, heads: 2, headDim: 4, dFF: 6, vocab: 5, seqLen: 3, batch: 2)
    let s = KernelBench.Shape(c)
    let n = 6.0
    let ln = KernelBench.cost(.layernormForward, s)
    #expect(ln.bytes == 4 * (2 * n * 8 + 8 + 2 * n))
    #expect(ln.flops == 7 * n * 8)
    let sw = KernelBench.cost(.swigluBackward, s)
    #expect(sw.bytes == 4 * 5 * n * 6)
    let adam = KernelBench.cost(.adamw, s)
    #expect(adam.bytes == 28 * Double(c.parameterCount))
    // Attention: T = 3 fits in one tile, so every query is charged all 3 keys (the tile is computed whole).
    let att = KernelBench.cost(.attentionForward, s)
    #expect(att.flops == 4 * n * 2 * 4 * 3)
    #expect(KernelBench.cost(.attentionBackward, s).flops == 2.5 * att.flops)
    #expect(att.bytes == 4 * (n * (8 + 8) + n * 8 + 2 * 2 * 3))
  }

  @Test func attentionIsComputeBoundAndElementwiseIsMemoryBoundOnTheSmallShape() {
    let s = KernelBench.Shape(.small)
    for k in KernelBench.Kernel.allCases {
      let (flops, bytes) = KernelBench.cost(k, s)
      let bound = roof.classify(intensity: flops / bytes, gflops: 1).bound
      let expected: Roofline.Bound = k == .attentionForward || k == .attentionBackward ? .compute : .memory
      #expect(bound == expected, "\(k.rawValue): intensity \(flops / bytes)")
    }
  }

  @Test func peakSourceParsesOneValueOrAList() throws {
    #expect(try PeakSource.parse("266", threads: 2) == 532)
    #expect(try PeakSource.parse("266,523", threads: 1) == 266)
    #expect(try PeakSource.parse("266, 523", threads: 2) == 523)
    #expect(try PeakSource.parse("266,520", threads: 4) == 1040)
    for bad in ["", "abc", "-5", "0", "266,,1", "nan", "inf"] {
      #expect(throws: PeakSource.Invalid.self, "\(bad)") { try PeakSource.parse(bad, threads: 1) }
    }
    #expect(try PeakSource.fixed(perThreadGFLOPs: 10).gflops(3) == 30)
  }

  @Test func kernelBenchRunsEveryKernelAndEncodesAsJSONLines() throws {
    try withKernelLock { try kernelBenchRunsEveryKernel() }  // it sets the thread count
  }

  func kernelBenchRunsEveryKernel() throws {
    let c = PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 24, vocab: 11, seqLen: 5, batch: 3)
    let results = try KernelBench.run(config: c, threads: 1, repeats: 2, minSampleSeconds: 0, roofline: roof)
    #expect(results.map(\.kernel) == KernelBench.Kernel.allCases)
    for r in results {
      #expect(r.flops > 0 && r.bytes > 0 && r.minSeconds > 0 && r.minSeconds <= r.medianSeconds, "\(r.kernel)")
      #expect(abs(r.gflops - r.flops / r.medianSeconds / 1e9) <= 1e-9 * r.gflops)
      #expect(abs(r.intensity - r.flops / r.bytes) <= 1e-12 * r.intensity)
      #expect(r.roofline == roof.classify(intensity: r.intensity, gflops: r.gflops))
    }
    let text = try JSONLines.encode(results)
    #expect(text.split(separator: "\n").count == results.count)
    let back = try JSONLines.decode(KernelBench.Result.self, from: text)
    #expect(back == results)
    let none = try KernelBench.run(config: c, threads: 1, repeats: 1, minSampleSeconds: 0, kernels: [.adamw])
    #expect(none.count == 1 && none[0].roofline == nil)
  }

  @Test func streamBandwidthIsPositiveAndBadSizesThrow() throws {
    try withKernelLock { try streamBandwidth() }
  }

  func streamBandwidth() throws {
    #expect(try KernelBench.bandwidth(threads: 1, floats: 1 << 14, repeats: 2) > 0)
    #expect(throws: (any Error).self) { try KernelBench.bandwidth(threads: 1, floats: 0) }
    var gbs = -1.0
    #expect(pk_stream_bandwidth(nil, PK_STREAM_COPY, 16, 1) == PK_STATUS_NULL_POINTER)
    #expect(pk_stream_bandwidth(&gbs, PK_STREAM_COPY, 16, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_stream_bandwidth(&gbs, PK_STREAM_COPY, -1, 1) == PK_STATUS_BAD_SIZE)
    #expect(pk_stream_bandwidth(&gbs, pk_stream_kind(rawValue: 7), 16, 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(gbs == -1)  // untouched on error
    #expect(pk_stream_bandwidth(&gbs, PK_STREAM_COPY, 1, 1) == PK_STATUS_OK && gbs >= 0)
  }

  @Test func contentionIsAFractionOfTheCPUs() {
    let (value, foreign) = Contention.measure { () -> Int in
      usleep(UInt32(Contention.minimumSeconds * 1.2e6))
      return 7
    }
    #expect(value == 7)
    #if os(Linux)
    #expect(foreign.map { $0 >= 0 && $0 <= 1 } == true)
    #endif
    #expect(Contention.measure { 1 }.1 == nil)  // too short to judge
  }

  @Test func rooflineSVGIsAStandaloneDocumentWithOnePointPerKernel() {
    let svg = roof.svg([.init(label: "a <b>", intensity: 0.5, gflops: 10), .init(label: "c", intensity: 80, gflops: 300),
                        .init(label: "skipped", intensity: 0, gflops: 1)], title: "t & u")
    #expect(svg.hasPrefix("<?xml"))
    #expect(svg.hasSuffix("</svg>\n"))
    #expect(svg.components(separatedBy: "<circle").count - 1 == 4)  // 2 points + 2 legend dots
    #expect(svg.contains("a &lt;b&gt;") && svg.contains("t &amp; u") && !svg.contains("skipped"))
  }
}
