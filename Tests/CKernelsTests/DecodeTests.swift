// pk_decode_attention: one-token multi-query attention over a KV cache, judged against a plain fp64
// reference (rotary rotate-half at the position, 1/sqrt(Q) scaling, causal softmax over the cache)
// on awkward shapes, and its argument errors. pk_decode_token: the same bits as the kernels it
// fuses run one after the other, on every ISA and on 1, 2 and 3 threads.
import CKernels
import Foundation
import PalmTensor
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

/// The scalar float arithmetic of one-token attention, step by step as a plain C loop does it (the
/// rotary row in double rounded to float; each score a dot product in order, multiply and add
/// rounded apart; libm expf; the sum in double; the weighted sum of V in order): what
/// pk_decode_attention must reproduce bit for bit on every ISA.
private func floatMirror(qkv rows: [[Float]], H: Int, Q: Int) -> [Float] {
  let pos = rows.count - 1, half = Q / 2
  func rot(_ x: ArraySlice<Float>, _ p: Int, _ scale: Float) -> [Float] {
    let x = Array(x)
    var y = x
    for i in 0..<half {
      let th = Double(p) * pow(10000.0, -2.0 * Double(i) / Double(Q))
      let c = Float(cos(th)), sn = Float(sin(th))
      y[i] = (x[i] * c - x[i + half] * sn) * scale
      y[i + half] = (x[i + half] * c + x[i] * sn) * scale
    }
    return y
  }
  let keys = rows.enumerated().map { rot($1[(H * Q)..<(H * Q + Q)], $0, 1) }
  let vals = rows.map { Array($0[(H * Q + Q)..<(H * Q + 2 * Q)]) }
  var out: [Float] = []
  for h in 0..<H {
    let q = rot(rows[pos][(h * Q)..<((h + 1) * Q)], pos, 1 / Float(Q).squareRoot())
    var scores = keys.map { k -> Float in
      var acc: Float = 0
      for i in 0..<Q { acc += q[i] * k[i] }
      return acc
    }
    let mx = scores.max()!
    var sum = 0.0
    for s in scores.indices {
      scores[s] = expf(scores[s] - mx)
      sum += Double(scores[s])
    }
    let inv = Float(1.0 / sum)
    var o = [Float](repeating: 0, count: Q)
    for s in scores.indices {
      let p = scores[s] * inv
      for i in 0..<Q { o[i] += p * vals[s][i] }
    }
    out += o
  }
  return out
}

@Suite("Decode attention")
struct DecodeAttentionTests {
  @Test("matches an fp64 reference at every position", arguments: [(1, 2, 1), (3, 6, 5), (2, 16, 9), (3, 6, 17), (4, 64, 33)])
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
    var kc = [Float](repeating: .nan, count: Int(pk_decode_kcache_floats(Int64(steps), Int64(Q))))
    var vc = [Float](repeating: .nan, count: steps * Q)
    var out = [Float](repeating: .nan, count: H * Q)
    for pos in 0..<steps {
      let st = pk_decode_attention(&out, &kc, &vc, rows[pos], Int64(pos), Int64(steps), Int64(H), Int64(Q))
      #expect(st == PK_STATUS_OK)
      let want = reference(qkv: rows[0...pos].map { $0.map(Double.init) }, H: H, Q: Q)
      expectClose(out, want, tolerance: 1e-5, "H \(H) Q \(Q) pos \(pos)")
    }
  }

  /// The scores of 16 cached positions are computed as 16 vector lanes (decode.c), yet each is the
  /// scalar dot product's arithmetic: the output is the plain float loop's, bit for bit, on every
  /// ISA (so the vectorized kernel decodes exactly as the scalar one it replaced).
  @Test("the same bits as the scalar float loop, on every ISA", arguments: [(1, 2, 3), (3, 6, 17), (4, 64, 40)])
  func bitwiseScalar(H: Int, Q: Int, steps: Int) throws {
    var state: UInt64 = UInt64(H * 1000 + Q * 10 + steps)
    func uniform() -> Float {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      return Float(state >> 40) / Float(1 << 24) * 4 - 2
    }
    let rows = (0..<steps).map { _ in (0..<(H * Q + 2 * Q)).map { _ in uniform() } }
    for isa in ISA.supported {
      try withISA(isa) {
        var kc = [Float](repeating: .nan, count: Int(pk_decode_kcache_floats(Int64(steps), Int64(Q))))
        var vc = [Float](repeating: .nan, count: steps * Q), out = [Float](repeating: .nan, count: H * Q)
        for pos in 0..<steps {
          #expect(pk_decode_attention(&out, &kc, &vc, rows[pos], Int64(pos), Int64(steps), Int64(H), Int64(Q)) == PK_STATUS_OK)
          let want = floatMirror(qkv: Array(rows[0...pos]), H: H, Q: Q)
          if out != want {
            Issue.record("\(isa) H \(H) Q \(Q) pos \(pos): differs by up to \(zip(out, want).map { abs($0 - $1) }.max()!)")
          }
        }
      }
    }
  }

  @Test("bad arguments return a status, never crash")
  func badArguments() {
    var out = [Float](repeating: 0, count: 8), kc = [Float](repeating: 0, count: 64), vc = out
    let qkv = [Float](repeating: 1, count: 8)
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 2, 2, 1, 2) == PK_STATUS_BAD_SIZE)   // pos >= smax
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, -1, 2, 1, 2) == PK_STATUS_BAD_SIZE)
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 0, 2, 0, 2) == PK_STATUS_BAD_SIZE)   // no heads
    #expect(pk_decode_attention(&out, &kc, &vc, qkv, 0, 2, 1, 3) == PK_STATUS_BAD_ARGUMENT)  // odd Q
    #expect(pk_decode_attention(nil, &kc, &vc, qkv, 0, 2, 1, 2) == PK_STATUS_NULL_POINTER)
    #expect(pk_decode_attention(&out, &kc, &vc, nil, 0, 2, 1, 2) == PK_STATUS_NULL_POINTER)
  }
}

/// A random model for pk_decode_token: L layers of [ln | w_in | w_out], the final LN, the embedding.
private struct TinyDecoder {
  let d = 48, H = 3, Q = 8, F = 40, L = 2, V = 37, capacity = 21  // F and V not multiples of 16; 2 K blocks
  var hq: Int { H * Q }
  var cin: Int { hq + 2 * Q + 2 * F }
  var cout: Int { hq + F }
  let ln: [[Float]], wIn: [[Float]], wOut: [[Float]], lnFinal: [Float], embed: [Float]

  init() {
    var state: UInt64 = 99
    func u(_ scale: Float) -> Float {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
    let (d, cin, cout) = (48, 3 * 8 + 2 * 8 + 2 * 40, 3 * 8 + 40)
    ln = (0..<2).map { _ in (0..<d).map { _ in 1 + u(0.2) } }
    wIn = (0..<2).map { _ in (0..<(d * cin)).map { _ in u(0.3) } }
    wOut = (0..<2).map { _ in (0..<(cout * d)).map { _ in u(0.2) } }
    lnFinal = (0..<d).map { _ in 1 + u(0.2) }
    embed = (0..<(37 * d)).map { _ in u(1) }
  }

  /// The logits of `tokens`, one position at a time, through pk_decode_token.
  func fused(_ tokens: [Int]) -> [[Float]] {
    var kc = [Float](repeating: .nan, count: L * Int(pk_decode_kcache_floats(Int64(capacity), Int64(Q))))
    var vc = [Float](repeating: .nan, count: L * capacity * Q)
    var x = [Float](repeating: 0, count: d), h = x, proj = [Float](repeating: 0, count: cin), cg = [Float](repeating: 0, count: cout)
    var logits = [Float](repeating: 0, count: V)
    var out: [[Float]] = []
    ln.withUnsafeBufferPointers { lnp in
      wIn.withUnsafeBufferPointers { wip in
        wOut.withUnsafeBufferPointers { wop in
          let layers = (0..<L).map { pk_decode_layer(ln_scale: lnp[$0], w_in: wip[$0], w_out: wop[$0]) }
          for (pos, t) in tokens.enumerated() {
            let st = pk_decode_token(&logits, &x, &h, &proj, &cg, &kc, &vc, Int64(capacity), Int64(pos), layers, Int64(L),
                                     lnFinal, embed, Int64(t), Int64(d), Int64(H), Int64(Q), Int64(F), Int64(V))
            #expect(st == PK_STATUS_OK)
            out.append(logits)
          }
        }
      }
    }
    return out
  }

  /// One pk_decode_token call on fresh buffers with these arguments (for the error paths).
  func status(pos: Int, token: Int, Q q: Int? = nil, nullEmbed: Bool = false) -> pk_status {
    let q = q ?? Q
    var kc = [Float](repeating: 0, count: L * Int(pk_decode_kcache_floats(Int64(capacity), Int64(max(q, 2)))) + 64)
    var vc = [Float](repeating: 0, count: L * capacity * max(q, 2) + 64)
    var x = [Float](repeating: 0, count: d), h = x, proj = [Float](repeating: 0, count: cin + 64), cg = [Float](repeating: 0, count: cout + 64)
    var logits = [Float](repeating: 0, count: V)
    return ln.withUnsafeBufferPointers { lnp in
      wIn.withUnsafeBufferPointers { wip in
        wOut.withUnsafeBufferPointers { wop in
          let layers = (0..<L).map { pk_decode_layer(ln_scale: lnp[$0], w_in: wip[$0], w_out: wop[$0]) }
          return embed.withUnsafeBufferPointer { e in
            pk_decode_token(&logits, &x, &h, &proj, &cg, &kc, &vc, Int64(capacity), Int64(pos), layers, Int64(L),
                            lnFinal, nullEmbed ? nil : e.baseAddress, Int64(token), Int64(d), Int64(H), Int64(q), Int64(F), Int64(V))
          }
        }
      }
    }
  }

  /// The same, kernel by kernel: LayerNorm, the m = 1 GEMM, pk_decode_attention, SwiGLU, the GEMM.
  func separate(_ tokens: [Int]) -> [[Float]] {
    let ks = Int(pk_decode_kcache_floats(Int64(capacity), Int64(Q)))
    var kc = [[Float]](repeating: [Float](repeating: .nan, count: ks), count: L)
    var vc = [[Float]](repeating: [Float](repeating: .nan, count: capacity * Q), count: L)
    var out: [[Float]] = []
    var mean: Float = 0, rstd: Float = 0
    for (pos, t) in tokens.enumerated() {
      var x = Array(embed[(t * d)..<((t + 1) * d)]), h = [Float](repeating: 0, count: d)
      for l in 0..<L {
        var proj = [Float](repeating: 0, count: cin), cg = [Float](repeating: 0, count: cout)
        #expect(pk_layernorm_forward(&h, Int64(d), &mean, &rstd, x, Int64(d), ln[l], 1, Int64(d)) == PK_STATUS_OK)
        #expect(pk_sgemm(PK_LAYOUT_NN, 1, Int64(cin), Int64(d), 1, h, Int64(d), wIn[l], Int64(cin), 0, &proj, Int64(cin)) == PK_STATUS_OK)
        #expect(pk_decode_attention(&cg, &kc[l], &vc[l], proj, Int64(pos), Int64(capacity), Int64(H), Int64(Q)) == PK_STATUS_OK)
        cg.withUnsafeMutableBufferPointer { c in
          proj.withUnsafeBufferPointer { p in
            #expect(pk_swiglu_forward(c.baseAddress! + hq, Int64(F), p.baseAddress! + hq + 2 * Q, Int64(2 * F), 1, Int64(F)) == PK_STATUS_OK)
          }
        }
        #expect(pk_sgemm(PK_LAYOUT_NN, 1, Int64(d), Int64(cout), 1, cg, Int64(cout), wOut[l], Int64(d), 1, &x, Int64(d)) == PK_STATUS_OK)
      }
      #expect(pk_layernorm_forward(&h, Int64(d), &mean, &rstd, x, Int64(d), lnFinal, 1, Int64(d)) == PK_STATUS_OK)
      var logits = [Float](repeating: 0, count: V)
      #expect(pk_sgemm(PK_LAYOUT_NT, 1, Int64(V), Int64(d), 1 / Float(d).squareRoot(), h, Int64(d), embed, Int64(d), 0, &logits, Int64(V)) == PK_STATUS_OK)
      out.append(logits)
    }
    return out
  }
}

extension Array where Element == [Float] {
  /// Pointers to each inner array for the duration of `body` (the arrays do not move meanwhile).
  fileprivate func withUnsafeBufferPointers<R>(_ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
    func go(_ i: Int, _ acc: [UnsafePointer<Float>]) throws -> R {
      if i == count { return try body(acc) }
      return try self[i].withUnsafeBufferPointer { try go(i + 1, acc + [$0.baseAddress!]) }
    }
    return try go(0, [])
  }
}

@Suite("Decode token")
struct DecodeTokenTests {
  /// The fused token splits LayerNorm (each thread its own), the GEMVs' columns, attention's heads
  /// (3 heads over 2 or 3 threads) and SwiGLU's columns over the team: every logit at every
  /// position is the same float as the kernels run one after the other, on every ISA and thread
  /// count (so decoding is identical to the unfused path and reproducible across machines' cores).
  @Test("the same bits as the kernels one after the other, on every ISA and on 1, 2 and 3 threads")
  func fusedEqualsSeparate() throws {
    let m = TinyDecoder()
    let tokens = (0..<m.capacity).map { ($0 * 7 + 3) % m.V }
    for isa in ISA.supported {
      let want = try withISA(isa, threads: 1) { m.separate(tokens) }
      #expect(want.allSatisfy { $0.allSatisfy(\.isFinite) } && Set(want.map { $0.firstIndex(of: $0.max()!)! }).count > 1)
      for threads in [1, 2, 3] {
        let got = try withISA(isa, threads: threads) { m.fused(tokens) }
        for pos in 0..<tokens.count where got[pos] != want[pos] {
          let e = zip(got[pos], want[pos]).map { abs($0 - $1) }.max()!
          Issue.record("\(isa), \(threads) threads, position \(pos): logits differ by up to \(e)")
        }
      }
    }
  }

  @Test("bad arguments: a position outside the cache, a token outside the vocabulary, odd Q, a NULL buffer")
  func badArguments() {
    let m = TinyDecoder()
    #expect(m.status(pos: 0, token: 0) == PK_STATUS_OK)
    #expect(m.status(pos: m.capacity - 1, token: m.V - 1) == PK_STATUS_OK)
    #expect(m.status(pos: m.capacity, token: 0) == PK_STATUS_BAD_ARGUMENT)
    #expect(m.status(pos: -1, token: 0) == PK_STATUS_BAD_ARGUMENT)
    #expect(m.status(pos: 0, token: m.V) == PK_STATUS_BAD_ARGUMENT)
    #expect(m.status(pos: 0, token: -1) == PK_STATUS_BAD_ARGUMENT)
    #expect(m.status(pos: 0, token: 0, Q: 7) == PK_STATUS_BAD_ARGUMENT)
    #expect(m.status(pos: 0, token: 0, nullEmbed: true) == PK_STATUS_NULL_POINTER)
  }
}
