// References: plain fp64 forward and backward of every CKernels op, the judges of the C kernels.
//
// Naive loops written from the formulas in the kernels' headers (pk_attention.h, pk_swiglu.h,
// pk_norm.h, pk_xent.h, pk_embed.h), row-major and densely packed, plus a central-difference
// gradient helper that checks the hand-written backwards. Small shapes only (debug builds).

import Foundation
import PalmTensor

/// fp64 references of the C kernels (dense row-major arrays, no strides).
public enum KernelReference {
  // MARK: - Rotary multi-query causal attention

  /// Rotates one head vector `x` (Q) at position `pos` (rotate-half RoPE, base 10000).
  public static func rope(_ x: ArraySlice<Double>, pos: Int, inverse: Bool = false) -> [Double] {
    let q = x.count, half = q / 2, x0 = x.startIndex
    var y = [Double](repeating: 0, count: q)
    for i in 0..<half {
      let theta = Double(pos) * pow(10000.0, -2.0 * Double(i) / Double(q))
      let c = cos(theta), s = inverse ? -sin(theta) : sin(theta)
      let a = x[x0 + i], b = x[x0 + i + half]
      y[i] = a * c - b * s
      y[i + half] = b * c + a * s
    }
    return y
  }

  /// `x` as the kernels round it: to fp32, then to the nearest bf16 (ties to even).
  public static func bf16(_ x: Double) -> Double { Double(Kernels.roundBF16(Float(x))) }

  /// The key block of the kernels' online softmax (pk_attention.h): the running max is updated
  /// after each block of this many keys, counted from key 0.
  public static let attentionKeyBlock = 64

  /// The weights w with out = Σ_u w[u] · bf16(v_u) for one query row of scores `s` (keys 0...t):
  /// bf16(exp(s_u − m_j)) · exp(m_j − m) / Σ exp(s − m), where m_j is the running max after key
  /// block j = u / 64 (the unnormalised probability the kernel rounds) and m the row's max; and lse.
  public static func bf16ContextWeights(scores s: [Double]) -> (weights: [Double], lse: Double) {
    let m = s.max() ?? 0
    let z = s.reduce(0) { $0 + exp($1 - m) }
    var running = -Double.infinity
    var w = [Double](repeating: 0, count: s.count)
    for start in stride(from: 0, to: s.count, by: attentionKeyBlock) {
      let block = start..<min(start + attentionKeyBlock, s.count)
      running = max(running, s[block].max()!)
      for u in block { w[u] = bf16(exp(s[u] - running)) * exp(running - m) / z }
    }
    return (w, m + log(z))
  }

  /// Attention forward: `qkv` (B·T, H·Q + 2·Q) -> out (B·T, H·Q), lse (B, H, T).
  ///
  /// `bf16`: with pk_attention's bf16 products (pk_attention.h, "Precision"): S = bf16(q'·scale)·
  /// bf16(k')ᵀ, out = Σ bf16(P̃)·bf16(v) / l (bf16ContextWeights); all else fp64.
  public static func attentionForward(
    qkv: [Double], B: Int, T: Int, H: Int, Q: Int, bf16 rounding: Bool = false
  ) -> (out: [Double], lse: [Double]) {
    let w = H * Q + 2 * Q, scale = 1 / Double(Q).squareRoot()
    let r: (Double) -> Double = rounding ? { KernelReference.bf16($0) } : { $0 }
    var out = [Double](repeating: 0, count: B * T * H * Q)
    var lse = [Double](repeating: 0, count: B * H * T)
    for b in 0..<B {
      let k = (0..<T).map { rope(qkv[((b * T + $0) * w + H * Q)...].prefix(Q), pos: $0).map(r) }
      let v = (0..<T).map { qkv[((b * T + $0) * w + H * Q + Q)...].prefix(Q).map(r) }
      for t in 0..<T {
        for h in 0..<H {
          let q = rope(qkv[((b * T + t) * w + h * Q)...].prefix(Q), pos: t).map { r($0 * scale) }
          let s = (0...t).map { j in zip(q, k[j]).reduce(0) { $0 + $1.0 * $1.1 } }
          let m = s.max() ?? 0
          let z = s.reduce(0) { $0 + exp($1 - m) }
          let p = rounding ? bf16ContextWeights(scores: s).weights : s.map { exp($0 - m) / z }
          lse[(b * H + h) * T + t] = m + log(z)
          for j in 0...t {
            for d in 0..<Q { out[(b * T + t) * H * Q + h * Q + d] += p[j] * v[j][d] }
          }
        }
      }
    }
    return (out, lse)
  }

  /// Attention backward (analytic): d loss / d qkv (B·T, H·Q + 2·Q) from dout (B·T, H·Q). P =
  /// exp(S − lse), D = Σ dout ⊙ out (both from `attentionForward`), dS = P ⊙ (dP − D).
  ///
  /// `bf16`: with pk_attention's bf16 products: dP = bf16(dout)·bf16(v)ᵀ, dq' = scale·bf16(dS)·
  /// bf16(k'), dk' = bf16(dS)ᵀ·bf16(q'·scale), dv = bf16(P)ᵀ·bf16(dout), on the bf16 forward's S.
  public static func attentionBackward(
    dout: [Double], qkv: [Double], B: Int, T: Int, H: Int, Q: Int, bf16 rounding: Bool = false
  ) -> [Double] {
    let w = H * Q + 2 * Q, scale = 1 / Double(Q).squareRoot()
    let r: (Double) -> Double = rounding ? { KernelReference.bf16($0) } : { $0 }
    let (out, lse) = attentionForward(qkv: qkv, B: B, T: T, H: H, Q: Q, bf16: rounding)
    var dqkv = [Double](repeating: 0, count: B * T * w)
    for b in 0..<B {
      let k = (0..<T).map { rope(qkv[((b * T + $0) * w + H * Q)...].prefix(Q), pos: $0).map(r) }
      let v = (0..<T).map { qkv[((b * T + $0) * w + H * Q + Q)...].prefix(Q).map(r) }
      var dk = [[Double]](repeating: [Double](repeating: 0, count: Q), count: T)
      for t in 0..<T {
        for h in 0..<H {
          let q = rope(qkv[((b * T + t) * w + h * Q)...].prefix(Q), pos: t).map { r($0 * scale) }
          let row = (b * T + t) * H * Q + h * Q
          let g = Array(dout[row..<(row + Q)]), gr = g.map(r)
          let dsum = zip(g, out[row..<(row + Q)]).reduce(0) { $0 + $1.0 * $1.1 }
          var dq = [Double](repeating: 0, count: Q)
          for j in 0...t {
            let p = exp(zip(q, k[j]).reduce(0) { $0 + $1.0 * $1.1 } - lse[(b * H + h) * T + t])
            let dp = zip(gr, v[j]).reduce(0) { $0 + $1.0 * $1.1 }
            let ds = r(p * (dp - dsum)), pr = r(p)
            for d in 0..<Q {
              dq[d] += ds * k[j][d] * scale
              dk[j][d] += ds * q[d]
              dqkv[(b * T + j) * w + H * Q + Q + d] += pr * gr[d]
            }
          }
          let dqu = rope(dq[...], pos: t, inverse: true)
          for d in 0..<Q { dqkv[(b * T + t) * w + h * Q + d] = dqu[d] }
        }
      }
      for t in 0..<T {
        let dku = rope(dk[t][...], pos: t, inverse: true)
        for d in 0..<Q { dqkv[(b * T + t) * w + H * Q + d] = dku[d] }
      }
    }
    return dqkv
  }

  // MARK: - SwiGLU

  /// out (N, F) = swish(gate) ⊙ up, h = [gate | up] (N, 2·F).
  public static func swigluForward(h: [Double], N: Int, F: Int) -> [Double] {
    var out = [Double](repeating: 0, count: N * F)
    for i in 0..<N {
      for j in 0..<F {
        let g = h[i * 2 * F + j], u = h[i * 2 * F + F + j]
        out[i * F + j] = g / (1 + exp(-g)) * u
      }
    }
    return out
  }

  /// dh (N, 2·F) from dout (N, F).
  public static func swigluBackward(dout: [Double], h: [Double], N: Int, F: Int) -> [Double] {
    var dh = [Double](repeating: 0, count: N * 2 * F)
    for i in 0..<N {
      for j in 0..<F {
        let g = h[i * 2 * F + j], u = h[i * 2 * F + F + j], dy = dout[i * F + j]
        let sig = 1 / (1 + exp(-g))
        dh[i * 2 * F + j] = dy * u * (sig + g * sig * (1 - sig))
        dh[i * 2 * F + F + j] = dy * g * sig
      }
    }
    return dh
  }

  // MARK: - LayerNorm without bias

  /// y (N, D), mean (N), rstd (N).
  public static func layerNormForward(
    x: [Double], scale: [Double], N: Int, D: Int, eps: Double = 1e-5
  ) -> (y: [Double], mean: [Double], rstd: [Double]) {
    var y = [Double](repeating: 0, count: N * D), mean = [Double](repeating: 0, count: N)
    var rstd = mean
    for i in 0..<N {
      let row = x[(i * D)..<(i * D + D)]
      let mu = row.reduce(0, +) / Double(D)
      let v = row.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(D)
      let rs = 1 / (v + eps).squareRoot()
      for j in 0..<D { y[i * D + j] = (x[i * D + j] - mu) * rs * scale[j] }
      mean[i] = mu
      rstd[i] = rs
    }
    return (y, mean, rstd)
  }

  /// dx (N, D) and dscale (D) (fresh, not accumulated) from dy (N, D).
  public static func layerNormBackward(
    dy: [Double], x: [Double], scale: [Double], N: Int, D: Int, eps: Double = 1e-5
  ) -> (dx: [Double], dscale: [Double]) {
    let (_, mean, rstd) = layerNormForward(x: x, scale: scale, N: N, D: D, eps: eps)
    var dx = [Double](repeating: 0, count: N * D), dscale = [Double](repeating: 0, count: D)
    for i in 0..<N {
      var sg = 0.0, sgx = 0.0
      for j in 0..<D {
        let xh = (x[i * D + j] - mean[i]) * rstd[i], g = dy[i * D + j] * scale[j]
        sg += g
        sgx += g * xh
        dscale[j] += dy[i * D + j] * xh
      }
      for j in 0..<D {
        let xh = (x[i * D + j] - mean[i]) * rstd[i], g = dy[i * D + j] * scale[j]
        dx[i * D + j] = rstd[i] * (g - sg / Double(D) - xh * sgx / Double(D))
      }
    }
    return (dx, dscale)
  }

  // MARK: - Cross-entropy with z-loss

  /// Per-row loss (N) and lse (N) of logits (N, V).
  public static func xentForward(
    logits: [Double], targets: [Int32], N: Int, V: Int, zcoef: Double
  ) -> (loss: [Double], lse: [Double]) {
    var loss = [Double](repeating: 0, count: N), lse = loss
    for i in 0..<N {
      let row = logits[(i * V)..<(i * V + V)]
      let m = row.max() ?? 0
      let l = m + log(row.reduce(0) { $0 + exp($1 - m) })
      lse[i] = l
      loss[i] = l - logits[i * V + Int(targets[i])] + zcoef * l * l
    }
    return (loss, lse)
  }

  /// dlogits (N, V) of Σ_i w_i · loss_i.
  public static func xentBackward(
    logits: [Double], targets: [Int32], weights: [Double], N: Int, V: Int, zcoef: Double
  ) -> [Double] {
    let (_, lse) = xentForward(logits: logits, targets: targets, N: N, V: V, zcoef: zcoef)
    var d = [Double](repeating: 0, count: N * V)
    for i in 0..<N {
      for j in 0..<V {
        d[i * V + j] = exp(logits[i * V + j] - lse[i]) * (1 + 2 * zcoef * lse[i]) * weights[i]
      }
      d[i * V + Int(targets[i])] -= weights[i]
    }
    return d
  }

  // MARK: - Embedding

  /// out (N, D) = scale · table[tokens].
  public static func embeddingForward(
    tokens: [Int32], table: [Double], D: Int, scale: Double
  ) -> [Double] {
    tokens.flatMap { t in table[(Int(t) * D)..<(Int(t) * D + D)].map { $0 * scale } }
  }

  /// dtable (V, D) (fresh) from dout (N, D).
  public static func embeddingBackward(
    dout: [Double], tokens: [Int32], V: Int, D: Int, scale: Double
  ) -> [Double] {
    var d = [Double](repeating: 0, count: V * D)
    for (i, t) in tokens.enumerated() {
      for j in 0..<D { d[Int(t) * D + j] += dout[i * D + j] * scale }
    }
    return d
  }

  // MARK: - Checks

  /// Central differences of the scalar `f` at `x` for the coordinates `at`, step `h`.
  public static func numericGradient(
    _ f: ([Double]) -> Double, at x: [Double], coordinates at: [Int], h: Double = 1e-5
  ) -> [Double] {
    var xp = x
    return at.map { i in
      let x0 = xp[i]
      xp[i] = x0 + h
      let fp = f(xp)
      xp[i] = x0 - h
      let fm = f(xp)
      xp[i] = x0
      return (fp - fm) / (2 * h)
    }
  }

  /// Σ a ⊙ b.
  public static func dot(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
  }

  /// max |a − b| and max |b| (the scale for a relative tolerance).
  public static func maxError<A: Collection, B: Collection>(
    _ a: A, _ b: B
  ) -> (error: Double, scale: Double) where A.Element: BinaryFloatingPoint, B.Element: BinaryFloatingPoint {
    var e = 0.0, s = 0.0
    for (x, y) in zip(a, b) {
      let d = abs(Double(x) - Double(y))
      e = d.isNaN ? .infinity : max(e, d)
      s = max(s, abs(Double(y)))
    }
    return (e, s)
  }
}

/// A reproducible uniform generator for test data (64-bit LCG; the same numbers on every run).
public struct TestRandom {
  private var state: UInt64

  public init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1 }

  /// A value uniform in [lo, hi).
  public mutating func uniform(_ lo: Double = -1, _ hi: Double = 1) -> Double {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return lo + (hi - lo) * Double(state >> 11) / Double(1 << 53)
  }

  /// `n` Float values uniform in [lo, hi).
  public mutating func floats(_ n: Int, _ lo: Double = -1, _ hi: Double = 1) -> [Float] {
    (0..<n).map { _ in Float(uniform(lo, hi)) }
  }

  /// `n` integers uniform in 0..<bound.
  public mutating func ints(_ n: Int, below bound: Int) -> [Int32] {
    (0..<n).map { _ in Int32(min(bound - 1, Int(uniform(0, Double(bound))))) }
  }
}
