// KernelTestHelpers: small shared pieces of the CKernels tests (tolerance checks, strided copies).

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

/// Expects max |actual − expected| <= tolerance · max(1, max |expected|), printing the error.
func expectClose<A: Collection, B: Collection>(
  _ actual: A, _ expected: B, tolerance: Double, _ what: String,
  sourceLocation: SourceLocation = #_sourceLocation
) where A.Element: BinaryFloatingPoint, B.Element: BinaryFloatingPoint {
  #expect(actual.count == expected.count, "\(what): count", sourceLocation: sourceLocation)
  let (err, scale) = KernelReference.maxError(actual, expected)
  let bound = tolerance * max(1, scale)
  #expect(err <= bound, "\(what): max error \(err) > \(bound) (max |ref| \(scale))",
          sourceLocation: sourceLocation)
}

/// Copies a dense (rows, cols) matrix into a strided buffer of row stride ld, padding with `fill`.
func strided(_ a: [Float], rows: Int, cols: Int, ld: Int, fill: Float = .nan) -> [Float] {
  var s = [Float](repeating: fill, count: rows * ld)
  for i in 0..<rows { for j in 0..<cols { s[i * ld + j] = a[i * cols + j] } }
  return s
}

/// The dense (rows, cols) part of a strided buffer.
func dense(_ s: [Float], rows: Int, cols: Int, ld: Int) -> [Float] {
  (0..<rows).flatMap { i in s[(i * ld)..<(i * ld + cols)] }
}

/// Whether the padding columns [cols, ld) of every row still hold `fill` (NaN-aware).
func paddingUntouched(_ s: [Float], rows: Int, cols: Int, ld: Int, fill: Float) -> Bool {
  for i in 0..<rows {
    for j in cols..<ld {
      let v = s[i * ld + j]
      if fill.isNaN ? !v.isNaN : v != fill { return false }
    }
  }
  return true
}

/// Bitwise equality of two Float arrays (NaN payloads included).
func bitwiseEqual(_ a: [Float], _ b: [Float]) -> Bool {
  a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

/// Widens to fp64.
func f64(_ a: [Float]) -> [Double] { a.map(Double.init) }
