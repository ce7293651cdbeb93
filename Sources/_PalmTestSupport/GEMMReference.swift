// GEMMReference: the fp64 judge for pk_sgemm (Tests/CKernelsTests/GEMMTests.swift) and a lock for
// tests that switch the kernels' ISA. Plain loops in the obvious order; keep shapes small (this
// module is built in debug under `swift test`).

import PalmTensor

/// `C = alpha·op(A)·op(B) + beta·C` in fp64, with the error scale of every entry.
public enum ReferenceGEMM {
  /// The exact-ish product and, per entry, `|alpha|·Σ_p |a_ip b_pj| + |beta·c_ij|` (the size a
  /// rounding error is measured against). `c` is read only when `beta != 0`, as BLAS does.
  public static func compute(
    _ layout: GEMMLayout, m: Int, n: Int, k: Int, alpha: Float, a: [Float], lda: Int, b: [Float], ldb: Int,
    beta: Float, c: [Float], ldc: Int
  ) -> (value: [Double], scale: [Double]) {
    var value = [Double](repeating: 0, count: m * n), scale = [Double](repeating: 0, count: m * n)
    a.withUnsafeBufferPointer { a in
      b.withUnsafeBufferPointer { b in
        for i in 0..<m {
          for j in 0..<n {
            var sum = 0.0, mag = 0.0
            for p in 0..<k {
              let av = Double(layout == .tn ? a[p * lda + i] : a[i * lda + p])
              let bv = Double(layout == .nt ? b[j * ldb + p] : b[p * ldb + j])
              sum += av * bv
              mag += abs(av * bv)
            }
            var v = Double(alpha) * sum, s = abs(Double(alpha)) * mag
            if beta != 0 {
              v += Double(beta) * Double(c[i * ldc + j])
              s += abs(Double(beta) * Double(c[i * ldc + j]))
            }
            value[i * n + j] = v
            scale[i * n + j] = s
          }
        }
      }
    }
    return (value, scale)
  }

  /// Largest `|got - want| / max(scale, tiny)` over the m×n entries of `got` (row stride `ldc`);
  /// a NaN or an infinity where the reference is finite counts as infinite error.
  public static func maxRelativeError(
    _ got: [Float], ldc: Int, m: Int, n: Int, want: (value: [Double], scale: [Double])
  ) -> Double {
    var worst = 0.0
    for i in 0..<m {
      for j in 0..<n {
        let g = Double(got[i * ldc + j]), w = want.value[i * n + j]
        let e = abs(g - w) / max(want.scale[i * n + j], 1e-30)
        worst = max(worst, e.isNaN ? .infinity : e)
      }
    }
    return worst
  }
}

/// Deterministic operands for tests: uniform in [-1, 1).
public struct GEMMRandom {
  var state: UInt64
  public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  public mutating func uniform() -> Float { Float(Int64(next() >> 40) - (1 << 23)) / Float(1 << 23) }
  public mutating func floats(_ count: Int) -> [Float] { (0..<count).map { _ in uniform() } }
}

/// Serialises tests that change the process-wide kernel ISA (`ISA.force`) and restores it after:
/// the same global lock as `withISA` (KernelSettings.swift), so GEMM tests and kernel tests never
/// see each other's forced ISA.
public enum ISALock {
  /// Runs `body` with the kernels forced to `isa`, holding the lock; restores the previous level.
  public static func with<T>(_ isa: ISA, _ body: () throws -> T) throws -> T {
    try withISA(isa, body)
  }
}
