// ReferenceModel: an independent fp64 PaLM forward and hand-written backward in plain Swift loops.
//
// The judge of PalmModel.Model: written separately from the fast path (its own SwiGLU, LayerNorm,
// cross-entropy + z-loss; attention is KernelReference's explicit T×T softmax with rotary, the fp64
// formula the kernel tests judge pk_attention by, with its bf16 rounding), for tiny configs only
// (naive loops, slow in debug builds). Conventions it shares with the kernels' headers: rotate-half
// RoPE with base 10000 over the full head dim, LayerNorm eps 1e-5 without bias, columns of w_in
// [q | k | v | gate | up], rows of w_out [attention ; down], logits scaled by 1/√d, z-loss 1e-4·lse².
// Its backward is checked against central finite differences in the tests.

import PalmModel
import PalmTensor

/// A fp64 PaLM forward/backward over named fp64 parameters.
public struct ReferenceModel {
  public let config: PalmConfig
  /// Parameters by safetensors name (same shapes as `Parameters`), flattened row-major.
  public var weights: [String: [Double]]
  public var eps = 1e-5
  public var zcoef = 1e-4
  /// bf16 mixed precision as Model.precision = .bf16 does it: every matmul's two inputs rounded to
  /// fp32 then to bf16 (round to nearest even), the product accumulated in fp64; all else fp64.
  /// Attention's products too, at the operands pk_attention rounds (pk_attention.h, "Precision":
  /// the scaled q, k, v, the per-key-block unnormalised P, dout, dS, and P in the backward).
  public var roundMatmulInputsToBF16 = false

  /// Copies (and widens) the parameters of `params`.
  public init(_ params: Parameters) {
    config = params.config
    var w: [String: [Double]] = [:]
    for (name, t) in params.named { w[name] = t.array.map(Double.init) }
    weights = w
  }

  /// The result of `run`.
  public struct Output {
    public var loss: Double         // mean (CE + z-loss)
    public var crossEntropy: Double
    public var zLoss: Double
    public var gradients: [String: [Double]]
  }

  /// The matmuls of `run`: the helpers below, on bf16-rounded inputs when `roundMatmulInputsToBF16`.
  func rounded(_ x: [Double]) -> [Double] {
    roundMatmulInputsToBF16 ? x.map(KernelReference.bf16) : x
  }
  func mm(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
    ReferenceModel.matmul(rounded(a), rounded(b), m, k, n)
  }
  func mmNT(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
    ReferenceModel.matmulNT(rounded(a), rounded(b), m, k, n)
  }
  func mmTN(_ a: [Double], _ b: [Double], _ k: Int, _ m: Int, _ n: Int) -> [Double] {
    ReferenceModel.matmulTN(rounded(a), rounded(b), k, m, n)
  }

  /// The columns `cols` of the row-major `rows × width` array `a`, densely packed.
  func columns(_ a: [Double], _ cols: Range<Int>, of width: Int) -> [Double] {
    let rows = a.count / width
    var out = [Double](); out.reserveCapacity(rows * cols.count)
    for i in 0..<rows { out += a[(i * width + cols.lowerBound)..<(i * width + cols.upperBound)] }
    return out
  }

  // MARK: - Small dense helpers: C (m, n) = A (m, k) · B (k, n), and the two transposed forms.

  static func matmul(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for p in 0..<k { let av = a[i * k + p]; if av == 0 { continue }
      for j in 0..<n { c[i * n + j] += av * b[p * n + j] } } }
    return c
  }
  /// A (m, k) · B(n, k)ᵀ -> (m, n)
  static func matmulNT(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n { var s = 0.0
      for p in 0..<k { s += a[i * k + p] * b[j * k + p] }
      c[i * n + j] = s } }
    return c
  }
  /// A(k, m)ᵀ · B (k, n) -> (m, n)
  static func matmulTN(_ a: [Double], _ b: [Double], _ k: Int, _ m: Int, _ n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for p in 0..<k { for i in 0..<m { let av = a[p * m + i]; if av == 0 { continue }
      for j in 0..<n { c[i * n + j] += av * b[p * n + j] } } }
    return c
  }

  // MARK: - LayerNorm

  func layerNorm(_ x: [Double], _ scale: [Double], rows: Int, dim: Int) -> (y: [Double], xhat: [Double], rstd: [Double]) {
    var y = x, xhat = x, rstd = [Double](repeating: 0, count: rows)
    for r in 0..<rows {
      var mean = 0.0
      for j in 0..<dim { mean += x[r * dim + j] }
      mean /= Double(dim)
      var v = 0.0
      for j in 0..<dim { let c = x[r * dim + j] - mean; v += c * c }
      v /= Double(dim)
      let rs = 1 / (v + eps).squareRoot()
      rstd[r] = rs
      for j in 0..<dim {
        xhat[r * dim + j] = (x[r * dim + j] - mean) * rs
        y[r * dim + j] = xhat[r * dim + j] * scale[j]
      }
    }
    return (y, xhat, rstd)
  }

  /// Returns dx; adds into dscale.
  func layerNormBackward(_ dy: [Double], _ xhat: [Double], _ rstd: [Double], _ scale: [Double],
                         _ dscale: inout [Double], rows: Int, dim: Int) -> [Double] {
    var dx = [Double](repeating: 0, count: rows * dim)
    for r in 0..<rows {
      var mg = 0.0, mgx = 0.0
      for j in 0..<dim {
        let g = dy[r * dim + j] * scale[j]
        mg += g
        mgx += g * xhat[r * dim + j]
        dscale[j] += dy[r * dim + j] * xhat[r * dim + j]
      }
      mg /= Double(dim); mgx /= Double(dim)
      for j in 0..<dim {
        let g = dy[r * dim + j] * scale[j]
        dx[r * dim + j] = rstd[r] * (g - mg - xhat[r * dim + j] * mgx)
      }
    }
    return dx
  }

  // MARK: - Forward and backward

  struct LayerCache {
    var x: [Double], h: [Double], xhat: [Double], rstd: [Double], proj: [Double]
    var cg: [Double]
  }

  /// Loss and (with `gradients`) every parameter gradient for `tokens`/`targets` (B·T each).
  /// Dropout, when given, as fixed multipliers (0 or 1/(1 − p), (B·T·d) each, e.g. from
  /// `DropoutReference.multipliers`): `embeddingMask` on the embedding output, `residualMasks[l]`
  /// on layer l's branch output [ctx | g] · w_out before the residual add.
  public func run(tokens: [Int32], targets: [Int32], batch B: Int, seqLen T: Int,
                  gradients wantGrads: Bool = true, embeddingMask: [Double]? = nil,
                  residualMasks: [[Double]]? = nil) -> Output {
    let c = config, d = c.dModel, H = c.heads, Q = c.headDim, F = c.dFF, V = c.vocab
    let N = B * T, HQ = H * Q, P = HQ + 2 * Q, Cin = P + 2 * F, Cout = HQ + F
    let E = weights["embed"]!
    var x = [Double](repeating: 0, count: N * d)
    for i in 0..<N { for j in 0..<d { x[i * d + j] = E[Int(tokens[i]) * d + j] } }
    if let m = embeddingMask { for e in 0..<(N * d) { x[e] *= m[e] } }
    var caches: [LayerCache] = []
    for l in 0..<c.layers {
      let scale = weights["layers.\(l).ln.scale"]!, wIn = weights["layers.\(l).w_in"]!
      let wOut = weights["layers.\(l).w_out"]!
      let (h, xhat, rstd) = layerNorm(x, scale, rows: N, dim: d)
      let proj = mm(h, wIn, N, d, Cin)
      // Attention: the kernels' fp64 reference (KernelReference, pk_attention.h) on the q|k|v columns.
      let (ctx, _) = KernelReference.attentionForward(qkv: columns(proj, 0..<P, of: Cin), B: B, T: T, H: H, Q: Q,
                                                      bf16: roundMatmulInputsToBF16)
      var cg = [Double](repeating: 0, count: N * Cout)
      for i in 0..<N { for j in 0..<HQ { cg[i * Cout + j] = ctx[i * HQ + j] } }
      for i in 0..<N { for f in 0..<F {
        let g = proj[i * Cin + P + f], up = proj[i * Cin + P + F + f]
        let sg = 1 / (1 + exp(-g))
        cg[i * Cout + HQ + f] = g * sg * up
      } }
      caches.append(LayerCache(x: x, h: h, xhat: xhat, rstd: rstd, proj: proj, cg: cg))
      let y = mm(cg, wOut, N, Cout, d)
      if let m = residualMasks?[l] {
        for e in 0..<(N * d) { x[e] += y[e] * m[e] }
      } else {
        for e in 0..<(N * d) { x[e] += y[e] }
      }
    }
    let lnf = weights["ln_f.scale"]!
    let (hf, xhatf, rstdf) = layerNorm(x, lnf, rows: N, dim: d)
    let ls = 1 / Double(d).squareRoot()
    var logits = mmNT(hf, E, N, d, V)
    for e in 0..<logits.count { logits[e] *= ls }
    var ce = 0.0, zl = 0.0
    var dlogits = [Double](repeating: 0, count: N * V)
    for i in 0..<N {
      let row = logits[(i * V)..<((i + 1) * V)]
      let m = row.max()!
      var z = 0.0
      for v in row { z += exp(v - m) }
      let lse = m + log(z)
      ce += lse - logits[i * V + Int(targets[i])]
      zl += zcoef * lse * lse
      for j in 0..<V {
        let p = exp(logits[i * V + j] - lse)
        dlogits[i * V + j] = (p * (1 + 2 * zcoef * lse) - (j == Int(targets[i]) ? 1 : 0)) / Double(N)
      }
    }
    ce /= Double(N); zl /= Double(N)
    var out = Output(loss: ce + zl, crossEntropy: ce, zLoss: zl, gradients: [:])
    guard wantGrads else { return out }

    // Backward.
    var grads: [String: [Double]] = [:]
    for (k, v) in weights { grads[k] = [Double](repeating: 0, count: v.count) }
    // logits = ls · hf · Eᵀ
    var dE = mmTN(dlogits, hf, N, V, d)
    for e in 0..<dE.count { dE[e] *= ls }
    var dhf = mm(dlogits, E, N, V, d)
    for e in 0..<dhf.count { dhf[e] *= ls }
    var dlnf = grads["ln_f.scale"]!
    var dx = layerNormBackward(dhf, xhatf, rstdf, lnf, &dlnf, rows: N, dim: d)
    grads["ln_f.scale"] = dlnf
    for l in stride(from: c.layers - 1, through: 0, by: -1) {
      let C = caches[l]
      let scale = weights["layers.\(l).ln.scale"]!, wIn = weights["layers.\(l).w_in"]!
      let wOut = weights["layers.\(l).w_out"]!
      var dy = dx  // the branch output's gradient: dx through the layer's dropout multipliers
      if let m = residualMasks?[l] { for e in 0..<(N * d) { dy[e] *= m[e] } }
      let dcg = mmNT(dy, wOut, N, d, Cout)
      grads["layers.\(l).w_out"] = mmTN(C.cg, dy, N, Cout, d)
      var dproj = [Double](repeating: 0, count: N * Cin)
      // SwiGLU
      for i in 0..<N { for f in 0..<F {
        let g = C.proj[i * Cin + P + f], up = C.proj[i * Cin + P + F + f]
        let sg = 1 / (1 + exp(-g)), dg = dcg[i * Cout + HQ + f]
        dproj[i * Cin + P + f] = dg * up * (sg + g * sg * (1 - sg))
        dproj[i * Cin + P + F + f] = dg * g * sg
      } }
      // Attention: the kernels' fp64 reference backward on the q|k|v columns.
      let dqkv = KernelReference.attentionBackward(dout: columns(dcg, 0..<HQ, of: Cout), qkv: columns(C.proj, 0..<P, of: Cin),
                                                   B: B, T: T, H: H, Q: Q, bf16: roundMatmulInputsToBF16)
      for i in 0..<N { for j in 0..<P { dproj[i * Cin + j] = dqkv[i * P + j] } }
      grads["layers.\(l).w_in"] = mmTN(C.h, dproj, N, d, Cin)
      let dh = mmNT(dproj, wIn, N, Cin, d)
      var dscale = grads["layers.\(l).ln.scale"]!
      let dxl = layerNormBackward(dh, C.xhat, C.rstd, scale, &dscale, rows: N, dim: d)
      grads["layers.\(l).ln.scale"] = dscale
      for e in 0..<(N * d) { dx[e] += dxl[e] }
    }
    if let m = embeddingMask { for e in 0..<(N * d) { dx[e] *= m[e] } }
    for i in 0..<N { for j in 0..<d { dE[Int(tokens[i]) * d + j] += dx[i * d + j] } }
    grads["embed"] = dE
    out.gradients = grads
    return out
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
