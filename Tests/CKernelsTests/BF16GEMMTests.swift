// BF16GEMMTests: pk_bgemm against the fp64 product of the bf16-rounded operands on awkward shapes,
// every layout, alpha/beta, strided operands, NaN/Inf, 1 and 2 threads, on every path this CPU
// runs (native vdpbf16ps, and emulated on AVX-512, AVX2, scalar), and the rounding itself
// (pk_round_bf16) against an independent nearest-value rule.

import CKernels
import Testing
import _PalmTestSupport
@testable import PalmTensor

/// Where pk_bgemm runs: natively (AVX512_BF16) or emulated on an ISA level.
enum BF16Path: CustomStringConvertible, Sendable {
  case native
  case emulated(ISA)

  var description: String {
    switch self {
    case .native: return "native bf16"
    case .emulated(let isa): return "emulated on \(isa)"
    }
  }

  /// Every path this CPU runs, the native one first where it exists.
  static var all: [BF16Path] { (ISA.hasBF16 ? [.native] : []) + ISA.supported.reversed().map { .emulated($0) } }

  /// Runs `body` with the kernels on this path (under the kernel-settings lock, as `withISA`);
  /// restores the native-bf16 switch afterwards.
  func with<R>(threads: Int? = nil, _ body: () throws -> R) throws -> R {
    var isa = ISA.avx512, native = false
    switch self {
    case .native: native = true
    case .emulated(let i): isa = i
    }
    return try withKernelLock {
      // The switch itself shows at the detected level (AVX-512 wherever bf16 exists).
      let allowed = try withISA(.detected) { ISA.bf16Native }
      defer { try? ISA.forceBF16(allowed) }
      return try withISA(isa, threads: threads) {
        try ISA.forceBF16(native)
        #expect(ISA.bf16Native == native, "\(self): native bf16 is \(ISA.bf16Native ? "on" : "off")")
        return try body()
      }
    }
  }
}

/// The nearest bf16 to `x` (ties to the even significand), from the two bf16 neighbours of x
/// compared in fp64: a rule independent of pk_round_bf16's add-and-truncate. A magnitude at or past
/// the halfway point to 2^128 rounds to infinity; NaN is returned as is (checked separately).
func nearestBF16(_ x: Float) -> Float {
  if x.isNaN || x.isInfinite { return x }
  let toward = x.bitPattern & 0xFFFF_0000, away = toward &+ 0x1_0000
  let lo = Double(Float(bitPattern: toward)).magnitude
  let hi = away & 0x7FFF_FFFF == 0x7F80_0000 ? 0x1p128 : Double(Float(bitPattern: away)).magnitude
  let d = Double(x).magnitude
  let pickAway = d - lo > hi - d || (d - lo == hi - d && toward & 0x1_0000 != 0)
  return Float(bitPattern: pickAway ? away : toward)
}

/// Runs pk_bgemm and the fp64 reference of the bf16-rounded operands (rounded by `nearestBF16`);
/// returns the max relative error, and checks that C's padding (columns n..<ldc) is untouched.
/// `unrounded`: compare with the fp64 product of the fp32 operands instead.
func checkBGEMM(
  _ layout: GEMMLayout, _ s: GEMMShape, alpha: Float = 1, beta: Float = 0, threads: Int = 1,
  unrounded: Bool = false
) throws -> Double {
  var rng = GEMMRandom(seed: 7919 &+ UInt64(s.m * 1_000_003 + s.n * 1009 + s.k))
  let (aRows, aCols) = layout == .tn ? (s.k, s.m) : (s.m, s.k)
  let (bRows, bCols) = layout == .nt ? (s.n, s.k) : (s.k, s.n)
  let lda = max(aCols, 1) + s.pad, ldb = max(bCols, 1) + s.pad + 1, ldc = max(s.n, 1) + s.pad + 2
  let a = rng.floats(aRows * lda), b = rng.floats(bRows * ldb)
  let sentinel: Float = -12345
  var c = (0..<(s.m * ldc)).map { i in i % ldc < s.n ? rng.uniform() : sentinel }
  let round = { (x: Float) -> Float in unrounded ? x : nearestBF16(x) }
  let want = ReferenceGEMM.compute(layout, m: s.m, n: s.n, k: s.k, alpha: alpha, a: a.map(round), lda: lda,
                                   b: b.map(round), ldb: ldb, beta: beta, c: c, ldc: ldc)
  let saved = Threads.count
  Threads.count = threads
  defer { Threads.count = saved }
  try Kernels.bgemm(layout, m: s.m, n: s.n, k: s.k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
                    c: &c, ldc: ldc)
  let padIntact = (0..<(s.m * ldc)).allSatisfy { $0 % ldc < s.n || c[$0] == sentinel }
  #expect(padIntact, "\(layout) \(s): C written outside its n columns")
  return ReferenceGEMM.maxRelativeError(c, ldc: ldc, m: s.m, n: s.n, want: want)
}

@Suite(.serialized) struct BF16GEMMTests {
  /// GEMMTests' shapes, plus odd k past one native KC block (1024; TN: 512), so the last block
  /// ends in a half-empty pair.
  static let blocked = GEMMTests.blocked + [GEMMShape(m: 45, n: 70, k: 1025, pad: 3), GEMMShape(m: 17, n: 33, k: 515)]

  @Test(arguments: BF16Path.all)
  func everyLayoutSmallShapes(path: BF16Path) throws {
    try path.with {
      for layout in GEMMLayout.allCases {
        for s in GEMMTests.small {
          for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-1.5, 0.5)] {
            let err = try checkBGEMM(layout, s, alpha: alpha, beta: beta)
            #expect(err <= tolerance(k: s.k), "\(path) \(layout) \(s) alpha \(alpha) beta \(beta): max rel error \(err)")
          }
        }
      }
    }
  }

  @Test(arguments: BF16Path.all, [1, 2])
  func blockedShapesAndThreads(path: BF16Path, threads: Int) throws {
    try path.with {
      for layout in GEMMLayout.allCases {
        for (i, s) in Self.blocked.enumerated() {
          let (alpha, beta): (Float, Float) = i % 2 == 0 ? (1, 0) : (0.75, -2)
          let err = try checkBGEMM(layout, s, alpha: alpha, beta: beta, threads: threads)
          #expect(err <= tolerance(k: s.k), "\(path) \(threads)T \(layout) \(s): max rel error \(err)")
        }
      }
    }
  }

  /// The judge can tell bf16 from fp32: the product of the unrounded operands is far outside the
  /// tolerance (bf16 keeps 8 significant bits), so a kernel that skipped the rounding would fail.
  @Test(arguments: BF16Path.all)
  func resultIsTheRoundedProduct(path: BF16Path) throws {
    try path.with {
      for layout in GEMMLayout.allCases {
        let s = GEMMShape(m: 31, n: 33, k: 64, pad: 1)
        let err = try checkBGEMM(layout, s, unrounded: true)
        #expect(err > 100 * tolerance(k: s.k), "\(path) \(layout): error against the fp32 operands only \(err)")
      }
    }
  }

  @Test(arguments: GEMMLayout.allCases)
  func emptyShapes(layout: GEMMLayout) throws {
    // K = 0: C = beta·C; M or N = 0: nothing to do (and C's padding is checked untouched).
    for beta in [Float(0), 1, 0.5] {
      let err = try checkBGEMM(layout, GEMMShape(m: 5, n: 9, k: 0), alpha: 2, beta: beta)
      #expect(err == 0, "\(layout) K=0 beta \(beta): max rel error \(err)")
    }
    var c: [Float] = [.nan, .nan]
    try Kernels.bgemm(layout, m: 1, n: 2, k: 0, a: nil, lda: 1, b: nil, ldb: 2, beta: 0, c: &c, ldc: 2)
    #expect(c == [0, 0], "K=0, beta=0 must overwrite NaN in C: \(c)")
    #expect(try checkBGEMM(layout, GEMMShape(m: 0, n: 9, k: 4)) == 0)
    #expect(try checkBGEMM(layout, GEMMShape(m: 6, n: 0, k: 4)) == 0)
    try Kernels.bgemm(layout, m: 0, n: 0, k: 0, a: nil, lda: 1, b: nil, ldb: 1, c: nil, ldc: 1)
  }

  @Test(arguments: BF16Path.all)
  func nanAndInf(path: BF16Path) throws {
    try path.with {
      for layout in GEMMLayout.allCases {
        let (m, n, k) = (17, 35, 9)
        var a = [Float](repeating: 0.5, count: m * k)
        let b = [Float](repeating: 0.25, count: k * n)
        // NaN in C with beta == 0 must not propagate; NaN in row 3 of op(A) and +Inf in row 5 must;
        // the largest fp32 in row 6 rounds to +Inf in bf16 (its fp32 product is finite).
        var c = [Float](repeating: .nan, count: m * n)
        let lda = layout == .tn ? m : k, ldb = layout == .nt ? k : n
        func aIndex(_ i: Int, _ p: Int) -> Int { layout == .tn ? p * lda + i : i * lda + p }
        a[aIndex(3, 4)] = .nan
        a[aIndex(5, 0)] = .infinity
        a[aIndex(6, 8)] = .greatestFiniteMagnitude
        try Kernels.bgemm(layout, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: 0, c: &c, ldc: n)
        var wrong: [String] = []
        for i in 0..<m {
          for j in 0..<n {
            let v = c[i * n + j]
            let ok = i == 3 ? v.isNaN : i == 5 || i == 6 ? v == .infinity : v == Float(k) * 0.125
            if !ok { wrong.append("C(\(i),\(j)) = \(v)") }
          }
        }
        let wrongCount = wrong.count
        #expect(wrongCount == 0, "\(path) \(layout): \(wrong.prefix(5))")
        // beta == 1 accumulates into C: running the product again doubles the clean rows.
        try Kernels.bgemm(layout, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: 1, c: &c, ldc: n)
        #expect(c[0] == 2 * Float(k) * 0.125, "\(path) \(layout): beta 1 gave \(c[0])")
      }
    }
  }

  @Test func referenceMatchesTheFP64Judge() throws {
    // pk_bgemm_reference (the C triple loop) on the same operands as checkBGEMM's judge.
    var rng = GEMMRandom(seed: 11)
    let (m, n, k) = (9, 13, 40)
    let a = rng.floats(m * k), b = rng.floats(k * n)
    var c = [Float](repeating: .nan, count: m * n)
    try Kernels.bgemm(.nn, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n, reference: true)
    let want = ReferenceGEMM.compute(.nn, m: m, n: n, k: k, alpha: 1, a: a.map(nearestBF16), lda: k,
                                     b: b.map(nearestBF16), ldb: n, beta: 0, c: c, ldc: n)
    let err = ReferenceGEMM.maxRelativeError(c, ldc: n, m: m, n: n, want: want)
    #expect(err <= tolerance(k: k), "pk_bgemm_reference: max rel error \(err)")
  }

  @Test func badInput() {
    let a = [Float](repeating: 1, count: 64), b = a
    var c = a
    func status(_ layout: pk_layout = PK_LAYOUT_NN, m: Int64 = 4, k: Int64 = 4, lda: Int64 = 4, ldc: Int64 = 4,
                nullA: Bool = false, nullC: Bool = false) -> pk_status {
      c.withUnsafeMutableBufferPointer { cp in
        pk_bgemm(layout, m, 4, k, 1, nullA ? nil : a, lda, b, 4, 0, nullC ? nil : cp.baseAddress, ldc)
      }
    }
    #expect(status(m: -1) == PK_STATUS_BAD_SIZE)
    #expect(status(lda: 3) == PK_STATUS_BAD_STRIDE)
    #expect(status(ldc: 3) == PK_STATUS_BAD_STRIDE)
    #expect(status(PK_LAYOUT_TN, m: 5, lda: 4) == PK_STATUS_BAD_STRIDE)  // A is k x m: lda >= m
    #expect(status(nullA: true) == PK_STATUS_NULL_POINTER)
    #expect(status(nullC: true) == PK_STATUS_NULL_POINTER)
    #expect(status(m: Int64.max / 2) == PK_STATUS_BAD_SIZE)
    #expect(status(pk_layout(rawValue: 7)) == PK_STATUS_BAD_ARGUMENT)
    #expect(throws: KernelError.self) {
      try Kernels.bgemm(.nn, m: -1, n: 1, k: 1, a: a, lda: 1, b: b, ldb: 1, c: &c, ldc: 1)
    }
    #expect(pk_round_bf16_array(nil, a, 4) == PK_STATUS_NULL_POINTER)
    #expect(pk_round_bf16_array(&c, a, -1) == PK_STATUS_BAD_SIZE)
  }
}

@Suite struct BF16RoundingTests {
  /// (fp32 bits in, bf16 bits out as fp32 bits).
  static let cases: [(UInt32, UInt32, String)] = [
    (0x3F80_0000, 0x3F80_0000, "1 is exact"),
    (0x3F80_8000, 0x3F80_0000, "1 + 2^-8: tie, down to the even 1"),
    (0x3F81_8000, 0x3F82_0000, "1 + 3·2^-8: tie, up to the even neighbour"),
    (0x3F80_8001, 0x3F81_0000, "just above the tie: up"),
    (0x3F80_7FFF, 0x3F80_0000, "just below the tie: down"),
    (0xBF81_8000, 0xBF82_0000, "negative tie: to even, sign kept"),
    (0x7F7F_FFFF, 0x7F80_0000, "largest fp32 overflows to +Inf"),
    (0xFF7F_FFFF, 0xFF80_0000, "and its negative to -Inf"),
    (0x7F7F_8000, 0x7F80_0000, "tie above the largest bf16 (odd): to Inf"),
    (0x7F7F_7FFF, 0x7F7F_0000, "below it: the largest bf16"),
    (0x7F80_0000, 0x7F80_0000, "+Inf"),
    (0xFF80_0000, 0xFF80_0000, "-Inf"),
    (0x8000_0000, 0x8000_0000, "-0"),
    (0x0001_0000, 0x0001_0000, "smallest bf16 denormal is kept (no flush)"),
    (0x8001_0000, 0x8001_0000, "and its negative"),
    (0x0000_8000, 0x0000_0000, "denormal tie: down to the even 0"),
    (0x0001_8000, 0x0002_0000, "denormal tie: up to the even neighbour"),
    (0x0000_C000, 0x0001_0000, "denormal above the tie: up"),
    (0x0000_0001, 0x0000_0000, "smallest fp32 denormal: 0"),
    (0x007F_FFFF, 0x0080_0000, "largest fp32 denormal rounds up to the smallest normal"),
  ]

  @Test func tiesToEvenOverflowAndDenormals() {
    for (x, want, what) in Self.cases {
      let got = Kernels.roundBF16(Float(bitPattern: x)).bitPattern
      #expect(got == want, "\(what): \(String(x, radix: 16)) -> \(String(got, radix: 16)), want \(String(want, radix: 16))")
      #expect(nearestBF16(Float(bitPattern: x)).bitPattern == want, "the test's own rule on \(what)")
    }
  }

  @Test func nanStaysQuietNaN() {
    // (in, out): quiet bit set, sign and the top 7 payload bits kept, the low 16 bits cleared.
    for (x, want): (UInt32, UInt32) in [
      (0x7F80_0001, 0x7FC0_0000), (0xFF80_0001, 0xFFC0_0000), (0x7FC0_0000, 0x7FC0_0000),
      (0xFFC1_2345, 0xFFC1_0000), (0x7FFF_FFFF, 0x7FFF_0000), (0x7FA0_0000, 0x7FE0_0000),
    ] {
      let got = Kernels.roundBF16(Float(bitPattern: x))
      #expect(got.isNaN && got.bitPattern == want, "NaN \(String(x, radix: 16)) -> \(String(got.bitPattern, radix: 16))")
    }
  }

  @Test func randomBitPatternsAndTheArrayVersion() throws {
    var rng = GEMMRandom(seed: 2024)
    // Random bits cover every exponent (denormals, the overflow edge, NaN) and every tie pattern.
    var x = (0..<200_000).map { i in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())
                                                      & (i % 4 == 0 ? 0xFFFF_8000 : 0xFFFF_FFFF)) }
    x += [.nan, .infinity, -.infinity, 0, -0.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude]
    var bad: [String] = []
    for v in x {
      let got = Kernels.roundBF16(v)
      let ok = v.isNaN ? got.isNaN : got.bitPattern == nearestBF16(v).bitPattern
      if !ok { bad.append("\(String(v.bitPattern, radix: 16)) -> \(String(got.bitPattern, radix: 16))") }
    }
    let badCount = bad.count
    #expect(badCount == 0, "\(badCount) values rounded wrongly, e.g. \(bad.prefix(5))")
    var out = [Float](repeating: 0, count: x.count)
    try KernelError.check(pk_round_bf16_array(&out, x, Int64(x.count)), "round_bf16_array")
    #expect(bitwiseEqual(out, x.map(Kernels.roundBF16)), "array version differs from the scalar one")
    try x.withUnsafeMutableBufferPointer { p in
      try KernelError.check(pk_round_bf16_array(p.baseAddress, p.baseAddress, Int64(p.count)), "round_bf16_array in place")
    }
    #expect(bitwiseEqual(x, out), "in-place rounding differs")
  }
}
