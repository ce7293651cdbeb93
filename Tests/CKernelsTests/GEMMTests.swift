// GEMMTests: pk_sgemm against the fp64 reference (ReferenceGEMM) on awkward shapes, every layout,
// alpha/beta, strided operands, NaN/Inf, each ISA this CPU runs, 1 and 2 threads, and bad input.

import CKernels
import Testing
import _PalmTestSupport
@testable import PalmTensor

/// One product to check; operands are random, ld = columns + pad.
struct GEMMShape: CustomStringConvertible, Sendable {
  var m: Int, n: Int, k: Int
  var pad = 0
  var description: String { "\(m)x\(n)x\(k)" + (pad > 0 ? " pad \(pad)" : "") }
}

/// Runs pk_sgemm (or pk_sgemm_reference, the plain triple loop) and the fp64 reference on the same
/// operands; returns the max relative error, and checks that C's padding (columns n..<ldc) is untouched.
func checkGEMM(
  _ layout: GEMMLayout, _ s: GEMMShape, alpha: Float = 1, beta: Float = 0, threads: Int = 1,
  seed: UInt64 = 1, reference: Bool = false
) throws -> Double {
  var rng = GEMMRandom(seed: seed &* 7919 &+ UInt64(s.m * 1_000_003 + s.n * 1009 + s.k))
  let (aRows, aCols) = layout == .tn ? (s.k, s.m) : (s.m, s.k)
  let (bRows, bCols) = layout == .nt ? (s.n, s.k) : (s.k, s.n)
  let lda = max(aCols, 1) + s.pad, ldb = max(bCols, 1) + s.pad + 1, ldc = max(s.n, 1) + s.pad + 2
  let a = rng.floats(aRows * lda), b = rng.floats(bRows * ldb)
  let sentinel: Float = -12345
  var c = (0..<(s.m * ldc)).map { i in i % ldc < s.n ? rng.uniform() : sentinel }
  let want = ReferenceGEMM.compute(layout, m: s.m, n: s.n, k: s.k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                                   beta: beta, c: c, ldc: ldc)
  let saved = Threads.count
  Threads.count = threads
  defer { Threads.count = saved }
  try a.withUnsafeBufferPointer { a in
    try b.withUnsafeBufferPointer { b in
      try c.withUnsafeMutableBufferPointer { c in
        try Kernels.sgemm(layout, m: s.m, n: s.n, k: s.k, alpha: alpha, a: a.baseAddress, lda: lda,
                          b: b.baseAddress, ldb: ldb, beta: beta, c: c.baseAddress, ldc: ldc, reference: reference)
      }
    }
  }
  let padIntact = (0..<(s.m * ldc)).allSatisfy { $0 % ldc < s.n || c[$0] == sentinel }
  #expect(padIntact, "\(layout) \(s): C written outside its n columns")
  return ReferenceGEMM.maxRelativeError(c, ldc: ldc, m: s.m, n: s.n, want: want)
}

/// fp32 accumulation over k terms: a few ulps per term of the error scale, at least 1e-6.
func tolerance(k: Int) -> Double { 1e-6 * (1 + Double(k) / 16) }

@Suite(.serialized) struct GEMMTests {
  static let small: [GEMMShape] = [
    GEMMShape(m: 1, n: 1, k: 1), GEMMShape(m: 1, n: 7, k: 3), GEMMShape(m: 7, n: 1, k: 5),
    GEMMShape(m: 7, n: 7, k: 7), GEMMShape(m: 14, n: 32, k: 16), GEMMShape(m: 31, n: 33, k: 17, pad: 3),
    GEMMShape(m: 33, n: 31, k: 1), GEMMShape(m: 15, n: 47, k: 257, pad: 1), GEMMShape(m: 29, n: 65, k: 31),
  ]
  /// Big enough for several MC/KC blocks, a second JC block (n > 4096), or a 2-thread team; the
  /// fifth and sixth take 2-3 passes over k at AVX-512's KC (1024 for NN/NT, 512 for TN); the last
  /// is wide enough (>= 32 column panels a thread) for 2 threads to split the columns.
  static let blocked: [GEMMShape] = [
    GEMMShape(m: 200, n: 45, k: 600, pad: 5), GEMMShape(m: 3, n: 4100, k: 200),
    GEMMShape(m: 1000, n: 3, k: 513), GEMMShape(m: 1000, n: 5, k: 513, pad: 2),
    GEMMShape(m: 61, n: 77, k: 2100, pad: 1), GEMMShape(m: 130, n: 40, k: 1030),
    GEMMShape(m: 120, n: 2050, k: 40, pad: 2),
  ]

  @Test(arguments: ISA.supported)
  func everyLayoutSmallShapes(isa: ISA) throws {
    try ISALock.with(isa) {
      for layout in GEMMLayout.allCases {
        for s in Self.small {
          for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-1.5, 0.5)] {
            let err = try checkGEMM(layout, s, alpha: alpha, beta: beta)
            #expect(err <= tolerance(k: s.k), "\(isa) \(layout) \(s) alpha \(alpha) beta \(beta): max rel error \(err)")
          }
        }
      }
    }
  }

  /// The C baseline (gemm_reference.c) against the fp64 reference: the same awkward shapes, empty
  /// ones included, every layout and (alpha, beta).
  @Test func plainReferenceLoop() throws {
    for layout in GEMMLayout.allCases {
      for s in Self.small + [GEMMShape(m: 0, n: 3, k: 2), GEMMShape(m: 3, n: 0, k: 2), GEMMShape(m: 3, n: 2, k: 0)] {
        for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-1.5, 0.5)] {
          let err = try checkGEMM(layout, s, alpha: alpha, beta: beta, reference: true)
          #expect(err <= tolerance(k: s.k), "reference \(layout) \(s) alpha \(alpha) beta \(beta): max rel error \(err)")
        }
      }
    }
  }

  @Test(arguments: ISA.supported, [1, 2])
  func blockedShapesAndThreads(isa: ISA, threads: Int) throws {
    try ISALock.with(isa) {
      for layout in GEMMLayout.allCases {
        for (i, s) in Self.blocked.enumerated() {
          let (alpha, beta): (Float, Float) = i % 2 == 0 ? (1, 0) : (0.75, -2)
          let err = try checkGEMM(layout, s, alpha: alpha, beta: beta, threads: threads)
          #expect(err <= tolerance(k: s.k), "\(isa) \(threads)T \(layout) \(s): max rel error \(err)")
        }
      }
    }
  }

  @Test func largeSquareTwoThreads() throws {
    let s = GEMMShape(m: 257, n: 257, k: 257)
    let err = try checkGEMM(.nn, s, alpha: 1, beta: 1, threads: 2)
    #expect(err <= tolerance(k: s.k), "\(ISA.active) 257^3 2T: max rel error \(err)")
  }

  @Test(arguments: GEMMLayout.allCases)
  func emptyShapes(layout: GEMMLayout) throws {
    // K = 0: C = beta·C; M or N = 0: nothing to do (and C's padding is checked untouched).
    for beta in [Float(0), 1, 0.5] {
      let err = try checkGEMM(layout, GEMMShape(m: 5, n: 9, k: 0), alpha: 2, beta: beta)
      #expect(err == 0, "\(layout) K=0 beta \(beta): max rel error \(err)")
    }
    var c: [Float] = [.nan, .nan]
    try Kernels.sgemm(layout, m: 1, n: 2, k: 0, a: nil, lda: 1, b: nil, ldb: 2, beta: 0, c: &c, ldc: 2)
    #expect(c == [0, 0], "K=0, beta=0 must overwrite NaN in C: \(c)")
    #expect(try checkGEMM(layout, GEMMShape(m: 0, n: 9, k: 4)) == 0)
    #expect(try checkGEMM(layout, GEMMShape(m: 6, n: 0, k: 4)) == 0)
    try Kernels.sgemm(layout, m: 0, n: 0, k: 0, a: nil, lda: 1, b: nil, ldb: 1, c: nil, ldc: 1)
  }

  @Test(arguments: ISA.supported)
  func nanAndInf(isa: ISA) throws {
    try ISALock.with(isa) {
      for layout in GEMMLayout.allCases {
        let (m, n, k) = (17, 35, 9)
        var a = [Float](repeating: 0.5, count: m * k)
        let b = [Float](repeating: 0.25, count: k * n)
        // NaN in C with beta == 0 must not propagate; NaN in row 3 of op(A) and +Inf in row 5 must.
        var c = [Float](repeating: .nan, count: m * n)
        let lda = layout == .tn ? m : k, ldb = layout == .nt ? k : n
        func aIndex(_ i: Int, _ p: Int) -> Int { layout == .tn ? p * lda + i : i * lda + p }
        a[aIndex(3, 4)] = .nan
        a[aIndex(5, 0)] = .infinity
        try Kernels.sgemm(layout, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: 0, c: &c, ldc: n)
        var wrong: [String] = []
        for i in 0..<m {
          for j in 0..<n {
            let v = c[i * n + j]
            let ok = i == 3 ? v.isNaN : i == 5 ? v == .infinity : v == Float(k) * 0.125
            if !ok { wrong.append("C(\(i),\(j)) = \(v)") }
          }
        }
        let wrongCount = wrong.count
        #expect(wrongCount == 0, "\(isa) \(layout): \(wrong.prefix(5))")
        // beta == 1 accumulates into C: running the product again doubles the clean rows.
        try Kernels.sgemm(layout, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: 1, c: &c, ldc: n)
        #expect(c[0] == 2 * Float(k) * 0.125, "\(isa) \(layout): beta 1 gave \(c[0])")
      }
    }
  }

  /// m <= PK_GEMV_MAX_M in NN and NT takes the unpacked path (gemv.c, decoding): every remainder
  /// of k mod 4 and of n mod 16, column chunks past 1024, a 2-thread column split, strides,
  /// alpha/beta; and NaN/Inf: B's k % 4 tail rows must not be multiplied by a zero weight (0·Inf).
  @Test(arguments: ISA.supported, [1, 2])
  func fewRowsTakeTheUnpackedPath(isa: ISA, threads: Int) throws {
    try ISALock.with(isa) {
      for layout in [GEMMLayout.nn, .nt] {
        for m in 1...4 {
          for (n, k) in [(1, 1), (15, 3), (17, 4), (33, 5), (1030, 130), (2051, 1027), (3000, 64)] {
            for (alpha, beta) in [(Float(1), Float(0)), (-1.5, 0.5)] {
              let s = GEMMShape(m: m, n: n, k: k, pad: (n + k) % 3)
              let err = try checkGEMM(layout, s, alpha: alpha, beta: beta, threads: threads)
              #expect(err <= tolerance(k: k), "\(isa) \(threads)T \(layout) \(s) alpha \(alpha) beta \(beta): \(err)")
            }
          }
        }
        // C = NaN with beta 0 is overwritten; an Inf in B's last row (a k % 4 tail row) reaches only its column.
        let (m, n, k) = (2, 19, 7)
        let a = [Float](repeating: 0.5, count: m * k)
        var b = [Float](repeating: 0.25, count: k * n)
        let inf = layout == .nn ? (k - 1) * n + 3 : 3 * k + (k - 1)  // B(k-1, 3) in NN, B(3, k-1) in NT
        b[inf] = .infinity
        var c = [Float](repeating: .nan, count: m * n)
        let saved = Threads.count
        Threads.count = threads
        defer { Threads.count = saved }
        try Kernels.sgemm(layout, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: layout == .nt ? k : n, beta: 0, c: &c, ldc: n)
        for i in 0..<m {
          for j in 0..<n {
            let ok = j == 3 ? c[i * n + j] == .infinity : c[i * n + j] == Float(k) * 0.125
            #expect(ok, "\(isa) \(layout) C(\(i),\(j)) = \(c[i * n + j])")
          }
        }
      }
    }
  }

  @Test func badInput() {
    let a = [Float](repeating: 1, count: 64), b = a
    var c = a
    func status(_ layout: pk_layout = PK_LAYOUT_NN, m: Int64 = 4, n: Int64 = 4, k: Int64 = 4, lda: Int64 = 4,
                ldb: Int64 = 4, ldc: Int64 = 4, nullA: Bool = false, nullB: Bool = false, nullC: Bool = false) -> pk_status {
      c.withUnsafeMutableBufferPointer { cp in
        pk_sgemm(layout, m, n, k, 1, nullA ? nil : a, lda, nullB ? nil : b, ldb, 0, nullC ? nil : cp.baseAddress, ldc)
      }
    }
    #expect(status(m: -1) == PK_STATUS_BAD_SIZE)
    #expect(status(n: -3) == PK_STATUS_BAD_SIZE)
    #expect(status(k: -1) == PK_STATUS_BAD_SIZE)
    #expect(status(lda: 3) == PK_STATUS_BAD_STRIDE)
    #expect(status(ldb: 2) == PK_STATUS_BAD_STRIDE)
    #expect(status(ldc: 3) == PK_STATUS_BAD_STRIDE)
    #expect(status(PK_LAYOUT_TN, m: 5, lda: 4) == PK_STATUS_BAD_STRIDE)  // A is k x m: lda >= m
    #expect(status(PK_LAYOUT_NT, k: 5, lda: 5, ldb: 4) == PK_STATUS_BAD_STRIDE)  // B is n x k: ldb >= k
    #expect(status(nullA: true) == PK_STATUS_NULL_POINTER)
    #expect(status(nullB: true) == PK_STATUS_NULL_POINTER)
    #expect(status(nullC: true) == PK_STATUS_NULL_POINTER)
    #expect(status(m: 1 << 40, n: 1 << 40, k: 4, lda: 4, ldb: 1 << 40, ldc: 1 << 40) == PK_STATUS_BAD_SIZE)
    // The few-row path called directly: only NN and NT, only m <= PK_GEMV_MAX_M.
    func gemv(_ layout: pk_layout, _ m: Int64) -> pk_status {
      c.withUnsafeMutableBufferPointer { cp in pk_gemv_small_m(layout, m, 4, 4, 1, a, 4, b, 4, 0, cp.baseAddress, 4) }
    }
    #expect(gemv(PK_LAYOUT_NN, Int64(PK_GEMV_MAX_M)) == PK_STATUS_OK)
    #expect(gemv(PK_LAYOUT_NT, 1) == PK_STATUS_OK)
    #expect(gemv(PK_LAYOUT_TN, 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(gemv(PK_LAYOUT_NN, Int64(PK_GEMV_MAX_M) + 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(status(m: Int64.max / 2, n: 4, k: 4) == PK_STATUS_BAD_SIZE)
    #expect(status(pk_layout(rawValue: 7)) == PK_STATUS_BAD_ARGUMENT)
    #expect(throws: KernelError.self) {
      try Kernels.sgemm(.nn, m: -1, n: 1, k: 1, a: a, lda: 1, b: b, ldb: 1, c: &c, ldc: 1)
    }
  }
}
