// NormTests: pk_layernorm_forward/backward (no bias) against the fp64 reference and central
// differences, every ISA, strided buffers, accumulation semantics, reproducibility, bad arguments.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("LayerNorm without bias", .serialized)
struct NormTests {
  static let shapes: [(Int, Int)] = [(1, 1), (1, 8), (3, 17), (7, 64), (5, 130), (33, 48)]

  struct Result { var y: [Float], mean: [Float], rstd: [Float], dx: [Float], dscale: [Float] }

  /// Forward, then backward into dx = dx0 and dscale = ds0 (to check accumulation).
  func run(x: [Float], scale: [Float], dy: [Float], dx0: [Float], ds0: [Float], N: Int, D: Int) throws -> Result {
    let ldx = D + 3, ldy = D + 1, lddy = D + 2, lddx = D + 4
    let xs = strided(x, rows: N, cols: D, ld: ldx), dys = strided(dy, rows: N, cols: D, ld: lddy)
    var y = [Float](repeating: -5, count: N * ldy), mean = [Float](repeating: 0, count: N), rstd = mean
    var dx = strided(dx0, rows: N, cols: D, ld: lddx, fill: -5), dscale = ds0
    try KernelError.check(pk_layernorm_forward(&y, Int64(ldy), &mean, &rstd, xs, Int64(ldx), scale, Int64(N), Int64(D)),
                          "layernorm_forward")
    try KernelError.check(pk_layernorm_backward(&dx, Int64(lddx), &dscale, dys, Int64(lddy), xs, Int64(ldx), mean, rstd,
                                                scale, Int64(N), Int64(D)), "layernorm_backward")
    #expect(paddingUntouched(y, rows: N, cols: D, ld: ldy, fill: -5))
    #expect(paddingUntouched(dx, rows: N, cols: D, ld: lddx, fill: -5))
    return Result(y: dense(y, rows: N, cols: D, ld: ldy), mean: mean, rstd: rstd,
                  dx: dense(dx, rows: N, cols: D, ld: lddx), dscale: dscale)
  }

  @Test("matches the fp64 reference and accumulates gradients", arguments: shapes)
  func matchesReference(_ shape: (Int, Int)) throws {
    let (N, D) = shape
    var r = TestRandom(seed: UInt64(N * 1000 + D))
    let x = r.floats(N * D, -2, 3), scale = r.floats(D, 0.5, 1.5), dy = r.floats(N * D)
    let dx0 = r.floats(N * D), ds0 = r.floats(D)
    let (xd, sd, dyd) = (f64(x), f64(scale), f64(dy))
    let ref = KernelReference.layerNormForward(x: xd, scale: sd, N: N, D: D)
    let dref = KernelReference.layerNormBackward(dy: dyd, x: xd, scale: sd, N: N, D: D)
    let coords = Array(Set([0, D - 1, N * D - 1, (N / 2) * D + D / 2]))
    let numX = KernelReference.numericGradient(
      { KernelReference.dot(dyd, KernelReference.layerNormForward(x: $0, scale: sd, N: N, D: D).y) },
      at: xd, coordinates: coords)
    let sCoords = Array(Set([0, D / 2, D - 1]))
    let numS = KernelReference.numericGradient(
      { KernelReference.dot(dyd, KernelReference.layerNormForward(x: xd, scale: $0, N: N, D: D).y) },
      at: sd, coordinates: sCoords)
    expectClose(coords.map { dref.dx[$0] }, numX, tolerance: 1e-6, "analytic dx vs finite differences")
    expectClose(sCoords.map { dref.dscale[$0] }, numS, tolerance: 1e-6, "analytic dscale vs finite differences")
    for isa in ISA.supported {
      let res = try withISA(isa) { try run(x: x, scale: scale, dy: dy, dx0: dx0, ds0: ds0, N: N, D: D) }
      let tag = "N\(N) D\(D) \(isa)"
      expectClose(res.y, ref.y, tolerance: 2e-6, "\(tag) y")
      expectClose(res.mean, ref.mean, tolerance: 1e-6, "\(tag) mean")
      expectClose(res.rstd, ref.rstd, tolerance: 2e-6, "\(tag) rstd")
      let dx = zip(res.dx, dx0).map { Double($0) - Double($1) }
      let ds = zip(res.dscale, ds0).map { Double($0) - Double($1) }
      expectClose(dx, dref.dx, tolerance: 1e-5, "\(tag) dx (accumulated)")
      expectClose(ds, dref.dscale, tolerance: 1e-5, "\(tag) dscale (accumulated)")
      expectClose(coords.map { dx[$0] }, numX, tolerance: 1e-5, "\(tag) dx vs finite differences")
    }
  }

  @Test("bit-identical across runs at a fixed thread count")
  func reproducible() throws {
    var r = TestRandom(seed: 9)
    let (N, D) = (301, 96)
    let x = r.floats(N * D), scale = r.floats(D), dy = r.floats(N * D)
    let zeros = [Float](repeating: 0, count: N * D), dz = [Float](repeating: 0, count: D)
    for isa in ISA.supported {
      for threads in [1, 2] {
        let (a, b) = try withISA(isa, threads: threads) {
          (try run(x: x, scale: scale, dy: dy, dx0: zeros, ds0: dz, N: N, D: D),
           try run(x: x, scale: scale, dy: dy, dx0: zeros, ds0: dz, N: N, D: D))
        }
        #expect(bitwiseEqual(a.y, b.y) && bitwiseEqual(a.dx, b.dx) && bitwiseEqual(a.dscale, b.dscale),
                "\(isa) \(threads) threads")
      }
    }
  }

  @Test("forward works in place (y == x)")
  func inPlace() throws {
    var r = TestRandom(seed: 21)
    let (N, D) = (9, 37)
    let x = r.floats(N * D, -3, 3), scale = r.floats(D, 0.5, 1.5)
    let ref = KernelReference.layerNormForward(x: f64(x), scale: f64(scale), N: N, D: D)
    for isa in ISA.supported {
      var buf = x, mean = [Float](repeating: 0, count: N), rstd = mean
      try withISA(isa) {
        try buf.withUnsafeMutableBufferPointer { p in
          try KernelError.check(pk_layernorm_forward(p.baseAddress, Int64(D), &mean, &rstd, p.baseAddress, Int64(D),
                                                     scale, Int64(N), Int64(D)), "in place")
        }
      }
      expectClose(buf, ref.y, tolerance: 2e-6, "\(isa) in-place y")
    }
  }

  @Test("rejects bad arguments")
  func badArguments() {
    var y = [Float](repeating: 0, count: 64), m = [Float](repeating: 0, count: 8), s = m
    let x = [Float](repeating: 1, count: 64), w = [Float](repeating: 1, count: 8)
    #expect(pk_layernorm_forward(&y, 8, &m, &s, x, 8, w, 4, 8) == PK_STATUS_OK)
    #expect(pk_layernorm_forward(&y, 8, &m, &s, x, 8, w, -4, 8) == PK_STATUS_BAD_SIZE)
    #expect(pk_layernorm_forward(&y, 8, &m, &s, x, 8, w, 4, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_layernorm_forward(&y, 8, &m, &s, x, 7, w, 4, 8) == PK_STATUS_BAD_STRIDE)
    #expect(pk_layernorm_forward(&y, 8, &m, &s, x, 8, nil, 4, 8) == PK_STATUS_NULL_POINTER)
    #expect(pk_layernorm_forward(&y, 8, nil, &s, x, 8, w, 4, 8) == PK_STATUS_NULL_POINTER)
    #expect(pk_layernorm_forward(&y, Int64.max / 2, &m, &s, x, 8, w, 4, 8) == PK_STATUS_BAD_SIZE)
    var ds = w
    #expect(pk_layernorm_backward(&y, 8, &ds, x, 8, x, 8, m, s, w, 4, 8) == PK_STATUS_OK)
    #expect(pk_layernorm_backward(&y, 8, nil, x, 8, x, 8, m, s, w, 4, 8) == PK_STATUS_NULL_POINTER)
    #expect(pk_layernorm_backward(&y, 8, &ds, x, 3, x, 8, m, s, w, 4, 8) == PK_STATUS_BAD_STRIDE)
  }
}
