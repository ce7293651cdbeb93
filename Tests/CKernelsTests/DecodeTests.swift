// pk_decode_attention: one-token multi-query attention over a KV cache, judged against a plain fp64
// reference (rotary rotate-half at the position, 1/sqrt(Q) scaling, causal softmax over the cache)
// on awkward shapes, and its argument errors.
import CKernels
import Foundation
import Testing
import _PalmTestSupport

/// fp64 reference: rotate q heads and every k row at its own position, softmax over rows 0...pos.
private func reference(qkv rows: [[Double]], H: Int, Q: Int) -> [Double] {
  let pos = rows.count - 1, half = Q / 2
  func rot(_ x: ArraySlice<Double>, _ p: Int) -> [Double] {
    let x = Array(x)
    var y = x
    for i in 0..<half {
      let th = Double(p) * pow(10000.0, -2.0 * Double(i) / Double(Q))
      y[i] = x[i] * cos(th) - x[i + half] * sin(th)
      y[i + half] = x[i + half] * cos(th) + x[i] * sin(th)
    }
    return y
  }
  let keys = rows.enumerated().map { rot($1[(H * Q)..<(H * Q + Q)], $0) }
  let vals = rows.map { Array($0[(H * Q + Q)..<(H * Q + 2 * Q)]) }
  var out: [Double] = []
  for h in 0..<H {
    let q = rot(rows[pos][(h * Q)..<((h + 1) * Q)], pos)
    let s = keys.map { k in zip(q, k).map(*).reduce(0, +) / Double(Q).squareRoot() }
    let m = s.max()!
    let e = s.map { exp($0 - m) }, z = e.reduce(0, +)
    for i in 0..<Q { out.append(zip(e, vals).map { $0 / z * $1[i] }.reduce(0, +)) }
  }
  return out
}

@Suite("Decode attention")
struct DecodeAttentionTests {
  @Test("matches an fp64 reference at every position", arguments: [(1, 2, 1), (3, 6, 5), (2, 16, 9), (4, 64, 33)])
  func matchesReference(H: Int, Q: Int, steps: Int) {
    var state = UInt64(H * 100 + Q)
    func uniform() -> Double {  // splitmix64 in [-2, 2)
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return Double((z ^ (z >> 31)) >> 11) * 0x1.0p-53 * 4 - 2
    }
    let width = H * Q + 2 * Q
    let rows = (0..<steps).map { _ in (0..<width).map { _ in Float(uniform()) } }
    var kc = [Float](repeating: .nan, count: steps * Q), vc = kc
    var out = [Float](repeating: .nan, count: H * Q)
    for pos in 0..<steps {
      let st = pk_decode_attention(&out, &kc, &vc, rows[pos], Int64(pos), Int64(steps), Int64(H), Int64(Q))
      #expect(st == PK_STATUS_OK)
      let want = reference(qkv: rows[0...pos].map { $0.map(Double.init) }, H: H, Q: Q)
      expectClose(out, want, tolerance: 1e-5, "H \(H) Q \(Q) pos \(pos)")
    }
  }

  @Test("bad arguments return a status, never crash")
  func badArguments() {
    var out = [Float](repeating: 0, count: 8), kc = out, vc = out
    let qkv = [Float](repeating: 1, count: 8)
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 2, 2, 1, 2) == PK_STATUS_BAD_SIZE)   // pos >= smax
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, -1, 2, 1, 2) == PK_STATUS_BAD_SIZE)
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 0, 2, 0, 2) == PK_STATUS_BAD_SIZE)   // no heads
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 0, 2, 1, 3) == PK_STATUS_BAD_ARGUMENT)  // odd Q
    #expect(pk_decode_attention(nil, &kc, &vc, qkv, 0, 2, 1, 2) == PK_STATUS_NULL_POINTER)
    #expect(pk_decode_attention(&out, &kc, &vc, nil, 0, 2, 1, 2) == PK_STATUS_NULL_POINTER)
  }
}
