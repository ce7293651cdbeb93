// SwiGLUTests: pk_swiglu_forward/backward against the fp64 reference and central differences, on
// odd shapes and strided buffers, every ISA; reproducibility and bad arguments.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("SwiGLU", .serialized)
struct SwiGLUTests {
  static let shapes: [(Int, Int)] = [(1, 1), (3, 7), (5, 16), (17, 33), (2, 100)]

  func run(h: [Float], dout: [Float], N: Int, F: Int) throws -> (out: [Float], dh: [Float]) {
    let ldh = 2 * F + 3, ldo = F + 2, lddout = F + 1, lddh = 2 * F + 5
    let hs = strided(h, rows: N, cols: 2 * F, ld: ldh), ds = strided(dout, rows: N, cols: F, ld: lddout)
    var out = [Float](repeating: -3, count: N * ldo), dh = [Float](repeating: -3, count: N * lddh)
    try KernelError.check(pk_swiglu_forward(&out, Int64(ldo), hs, Int64(ldh), Int64(N), Int64(F)), "swiglu_forward")
    try KernelError.check(pk_swiglu_backward(&dh, Int64(lddh), ds, Int64(lddout), hs, Int64(ldh), Int64(N), Int64(F)),
                          "swiglu_backward")
    #expect(paddingUntouched(out, rows: N, cols: F, ld: ldo, fill: -3))
    #expect(paddingUntouched(dh, rows: N, cols: 2 * F, ld: lddh, fill: -3))
    return (dense(out, rows: N, cols: F, ld: ldo), dense(dh, rows: N, cols: 2 * F, ld: lddh))
  }

  @Test("matches the fp64 reference", arguments: shapes)
  func matchesReference(_ shape: (Int, Int)) throws {
    let (N, F) = shape
    var r = TestRandom(seed: UInt64(N * 100 + F))
    var h = r.floats(N * 2 * F, -4, 4)
    if h.count >= 4 { h[0] = -30; h[1] = 25 }  // saturated sigmoid both ways
    let dout = r.floats(N * F)
    let ref = KernelReference.swigluForward(h: f64(h), N: N, F: F)
    let dref = KernelReference.swigluBackward(dout: f64(dout), h: f64(h), N: N, F: F)
    let coords = Array(Set([0, 1, F, 2 * F - 1, N * 2 * F - 1, (N / 2) * 2 * F + F / 2]))
    let numeric = KernelReference.numericGradient(
      { KernelReference.dot(f64(dout), KernelReference.swigluForward(h: $0, N: N, F: F)) },
      at: f64(h), coordinates: coords)
    expectClose(coords.map { dref[$0] }, numeric, tolerance: 1e-7, "analytic reference vs finite differences")
    for isa in ISA.supported {
      let (out, dh) = try withISA(isa) { try run(h: h, dout: dout, N: N, F: F) }
      expectClose(out, ref, tolerance: 1e-6, "N\(N) F\(F) \(isa) out")
      expectClose(dh, dref, tolerance: 1e-6, "N\(N) F\(F) \(isa) dh")
      expectClose(coords.map { dh[$0] }, numeric, tolerance: 1e-5, "N\(N) F\(F) \(isa) dh vs finite differences")
    }
  }

  /// The model runs the backward in place (dh == h: the saved pre-activations become their
  /// gradient); every ISA must give exactly the out-of-place result, tails included.
  @Test("in place (dh == h) equals out of place", arguments: shapes + [(3, 37)])
  func inPlace(_ shape: (Int, Int)) throws {
    let (N, F) = shape
    var r = TestRandom(seed: UInt64(7 * N + F))
    let ld = 2 * F + 3
    let h = strided(r.floats(N * 2 * F, -4, 4), rows: N, cols: 2 * F, ld: ld)
    let dout = r.floats(N * F)
    for isa in ISA.supported {
      var separate = [Float](repeating: 0, count: N * ld)
      var inPlace = h
      try withISA(isa) {
        try KernelError.check(pk_swiglu_backward(&separate, Int64(ld), dout, Int64(F), h, Int64(ld), Int64(N), Int64(F)), "swiglu_backward")
        try inPlace.withUnsafeMutableBufferPointer { p in
          try KernelError.check(pk_swiglu_backward(p.baseAddress, Int64(ld), dout, Int64(F), p.baseAddress, Int64(ld), Int64(N), Int64(F)),
                                "swiglu_backward")
        }
      }
      #expect(bitwiseEqual(dense(separate, rows: N, cols: 2 * F, ld: ld), dense(inPlace, rows: N, cols: 2 * F, ld: ld)), "N\(N) F\(F) \(isa)")
    }
  }

  @Test("bit-identical across runs")
  func reproducible() throws {
    var r = TestRandom(seed: 5)
    let (N, F) = (64, 129)
    let h = r.floats(N * 2 * F, -5, 5), dout = r.floats(N * F)
    for isa in ISA.supported {
      let (a, b) = try withISA(isa, threads: 2) { (try run(h: h, dout: dout, N: N, F: F), try run(h: h, dout: dout, N: N, F: F)) }
      #expect(bitwiseEqual(a.out, b.out) && bitwiseEqual(a.dh, b.dh), "\(isa)")
    }
  }

  @Test("rejects bad arguments")
  func badArguments() {
    var out = [Float](repeating: 0, count: 64)
    let h = [Float](repeating: 0, count: 64)
    #expect(pk_swiglu_forward(&out, 4, h, 8, 2, 4) == PK_STATUS_OK)
    #expect(pk_swiglu_forward(&out, 4, h, 8, -2, 4) == PK_STATUS_BAD_SIZE)
    #expect(pk_swiglu_forward(&out, 4, h, 8, 2, Int64.max / 2 + 1) == PK_STATUS_BAD_SIZE)
    #expect(pk_swiglu_forward(&out, 4, h, 7, 2, 4) == PK_STATUS_BAD_STRIDE)
    #expect(pk_swiglu_forward(&out, 3, h, 8, 2, 4) == PK_STATUS_BAD_STRIDE)
    #expect(pk_swiglu_forward(nil, 4, h, 8, 2, 4) == PK_STATUS_NULL_POINTER)
    #expect(pk_swiglu_forward(nil, 4, nil, 8, 0, 4) == PK_STATUS_OK)
    #expect(pk_swiglu_backward(&out, 8, h, 4, nil, 8, 2, 4) == PK_STATUS_NULL_POINTER)
    #expect(pk_swiglu_backward(&out, 7, h, 4, h, 8, 2, 4) == PK_STATUS_BAD_STRIDE)
    #expect(pk_swiglu_backward(&out, 8, h, 4, h, 8, 2, 1 << 62) == PK_STATUS_BAD_SIZE)
  }
}
