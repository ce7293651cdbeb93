// Judges for CKernels/optim.c (AdamW, unfactored Adafactor, sums of squares, scale) against fp64
// references of the formulas in pk_optim.h, on awkward sizes, both ISA paths; and for sha256.c
// against the FIPS 180-4 test vectors.
import CKernels
import Foundation
import Testing
import PalmTensor
import _PalmTestSupport

/// A seeded stream of floats (SplitMix64) for test inputs.
private struct Stream {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  /// Uniform in [-scale, scale).
  mutating func float(_ scale: Float = 1) -> Float { (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
  mutating func floats(_ n: Int, _ scale: Float = 1) -> [Float] { (0..<n).map { _ in float(scale) } }
}

/// Max |a - b| / (atol + rtol·|b|) over the arrays; ≤ 1 passes.
private func worst(_ a: [Float], _ b: [Double], atol: Double, rtol: Double) -> (ratio: Double, index: Int) {
  var r = 0.0, at = -1
  for i in a.indices {
    let e = abs(Double(a[i]) - b[i]) / (atol + rtol * abs(b[i]))
    if !(e <= r) { r = e; at = i }
  }
  return (r, at)
}

private struct Hyper {
  var lr: Float = 3e-3, beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, wd: Float = 0.1
  var decayExponent: Float = 0.8, eps1: Float = 1e-30, eps2: Float = 1e-3, clip: Float = 1.0
}

/// fp64 AdamW over `steps` steps (pk_optim.h formula).
private func adamwReference(p: [Float], grads: [[Float]], h: Hyper) -> [Double] {
  var p = p.map(Double.init), m = [Double](repeating: 0, count: p.count), v = m
  let (lr, b1, b2, eps, wd) = (Double(h.lr), Double(h.beta1), Double(h.beta2), Double(h.eps), Double(h.wd))
  for (t0, g) in grads.enumerated() {
    let t = Double(t0 + 1)
    for i in p.indices {
      let gi = Double(g[i])
      m[i] = b1 * m[i] + (1 - b1) * gi
      v[i] = b2 * v[i] + (1 - b2) * gi * gi
      let mh = m[i] / (1 - pow(b1, t)), vh = v[i] / (1 - pow(b2, t))
      p[i] = p[i] - lr * wd * p[i] - lr * mh / (vh.squareRoot() + eps)
    }
  }
  return p
}

/// fp64 Adafactor (T5X apply_param_gradient, unfactored) over `steps` steps; weight decay lr².
private func adafactorReference(p: [Float], grads: [[Float]], h: Hyper) -> [Double] {
  var p = p.map(Double.init), m = [Double](repeating: 0, count: p.count), v = m
  let n = Double(p.count), lr = Double(h.lr), wd = Double(h.lr) * Double(h.lr)
  for (t0, g) in grads.enumerated() {
    let k = Double(t0 + 1)
    let beta2 = 1 - pow(k, -Double(h.decayExponent))
    let rmsP = (p.reduce(0) { $0 + $1 * $1 } / n).squareRoot()
    let scale = lr * max(Double(h.eps2), rmsP)
    var y = [Double](repeating: 0, count: p.count)
    for i in p.indices {
      let gi = Double(g[i])
      v[i] = beta2 * v[i] + (1 - beta2) * (gi * gi + Double(h.eps1))
      y[i] = gi / v[i].squareRoot()
    }
    let rmsY = (y.reduce(0) { $0 + $1 * $1 } / n).squareRoot()
    let clip = max(1, rmsY / Double(h.clip))
    for i in p.indices {
      m[i] = Double(h.beta1) * m[i] + (1 - Double(h.beta1)) * scale * (y[i] / clip)
      p[i] = (1 - wd) * p[i] - m[i]
    }
  }
  return p
}

private enum Kind { case adamw, adafactor }

/// Runs `steps` updates of the kernel on a copy of p; returns the final parameters.
private func runKernel(_ kind: Kind, p p0: [Float], grads: [[Float]], h: Hyper, scalar: Bool) throws -> [Float] {
  var p = p0, m = [Float](repeating: 0, count: p0.count), v = m
  try withISA(scalar ? .scalar : ISA.detected) {  // the scalar path, or the best this CPU has
    for (t0, g) in grads.enumerated() {
      let n = Int64(p.count), k = Int64(t0 + 1)
      let status = p.withUnsafeMutableBufferPointer { pp in
        m.withUnsafeMutableBufferPointer { mp in
          v.withUnsafeMutableBufferPointer { vp in
            g.withUnsafeBufferPointer { gp in
              switch kind {
              case .adamw:
                pk_adamw_update(pp.baseAddress, mp.baseAddress, vp.baseAddress, gp.baseAddress, n,
                                h.lr, h.beta1, h.beta2, h.eps, h.wd, k)
              case .adafactor:
                pk_adafactor_update(pp.baseAddress, mp.baseAddress, vp.baseAddress, gp.baseAddress, n,
                                    h.lr, h.beta1, h.decayExponent, h.eps1, h.eps2, h.clip, h.lr * h.lr, k)
              }
            }
          }
        }
      }
      try KernelError.check(status, "\(kind)")
    }
  }
  return p
}

@Suite("Optimizer kernels")
struct OptimKernelTests {
  static let sizes = [1, 17, 1000, 40_003]

  /// Inputs: parameters ~ U(-1,1)·0.05 (like a 1/√n init), 3 steps of gradients at varied scales,
  /// a few exact zeros (g = 0 must give a finite update).
  private func inputs(_ n: Int, seed: UInt64) -> (p: [Float], grads: [[Float]]) {
    var s = Stream(state: seed)
    let p = s.floats(n, 0.05)
    let grads = (0..<3).map { step -> [Float] in
      var g = s.floats(n, step == 1 ? 30 : 0.01)
      if n > 5 { g[3] = 0 }
      return g
    }
    return (p, grads)
  }

  @Test("AdamW matches the fp64 formula", arguments: sizes)
  func adamwMatchesReference(n: Int) throws {
    let (p, grads) = inputs(n, seed: UInt64(n))
    let h = Hyper()
    let ref = adamwReference(p: p, grads: grads, h: h)
    for scalar in [true, false] {
      let got = try runKernel(.adamw, p: p, grads: grads, h: h, scalar: scalar)
      let (r, at) = worst(got, ref, atol: 1e-7, rtol: 1e-5)
      #expect(r <= 1, "adamw n=\(n) scalar=\(scalar): worst ratio \(r) at \(at): \(at >= 0 ? got[at] : 0) vs \(at >= 0 ? ref[at] : 0)")
      #expect(got.allSatisfy { $0.isFinite })
    }
  }

  @Test("Adafactor matches the fp64 formula (clipping active and inactive)", arguments: sizes)
  func adafactorMatchesReference(n: Int) throws {
    let (p, grads) = inputs(n, seed: UInt64(n) + 100)
    for clip: Float in [1.0, 1000.0, 0.0] {  // 1: PaLM; 1000: never clips; 0: disabled
      var h = Hyper()
      h.clip = clip
      var ref = adafactorReference(p: p, grads: grads, h: h)
      if clip == 0 {  // the reference treats "disabled" as an infinite threshold
        h.clip = .infinity
        ref = adafactorReference(p: p, grads: grads, h: h)
        h.clip = 0
      }
      for scalar in [true, false] {
        let got = try runKernel(.adafactor, p: p, grads: grads, h: h, scalar: scalar)
        let (r, at) = worst(got, ref, atol: 1e-7, rtol: 1e-5)
        #expect(r <= 1, "adafactor n=\(n) clip=\(clip) scalar=\(scalar): worst ratio \(r) at \(at): \(at >= 0 ? got[at] : 0) vs \(at >= 0 ? ref[at] : 0)")
      }
    }
  }

  @Test("Adafactor in parts (a mesh shard's pieces): sums added over the parts, then apply, equals the whole-tensor update")
  func adafactorInParts() throws {
    let n = 40_003, cut = 12_345
    let (p0, grads) = inputs(n, seed: 9)
    var whole = p0, mw = [Float](repeating: 0, count: n), vw = mw
    var parts = p0, mp = mw, vp = mw
    for (k, g) in grads.enumerated() {
      let step = Int64(k + 1)
      #expect(pk_adafactor_update(&whole, &mw, &vw, g, Int64(n), 1e-2, 0.9, 0.8, 1e-30, 1e-3, 1.0, 1e-4, step) == PK_STATUS_OK)
      var sp = 0.0, sy = 0.0
      for r in [0..<cut, cut..<n] {
        var a = 0.0, b = 0.0
        try parts.withUnsafeMutableBufferPointer { pp in
          try vp.withUnsafeMutableBufferPointer { vv in
            try g.withUnsafeBufferPointer { gg in
              try #require(pk_adafactor_sums(&a, &b, pp.baseAddress! + r.lowerBound, vv.baseAddress! + r.lowerBound,
                                             gg.baseAddress! + r.lowerBound, Int64(r.count), 0.8, 1e-30, step) == PK_STATUS_OK)
            }
          }
        }
        sp += a; sy += b
      }
      let rmsP = (sp / Double(n)).squareRoot(), rmsY = (sy / Double(n)).squareRoot()
      for r in [0..<cut, cut..<n] {
        parts.withUnsafeMutableBufferPointer { pp in
          mp.withUnsafeMutableBufferPointer { mm in
            vp.withUnsafeBufferPointer { vv in
              g.withUnsafeBufferPointer { gg in
                #expect(pk_adafactor_apply(pp.baseAddress! + r.lowerBound, mm.baseAddress! + r.lowerBound,
                                           vv.baseAddress! + r.lowerBound, gg.baseAddress! + r.lowerBound, Int64(r.count),
                                           1e-2, 0.9, 1e-3, 1.0, 1e-4, rmsP, rmsY) == PK_STATUS_OK)
              }
            }
          }
        }
      }
    }
    // Only the order of the fp64 sums differs: the parameters agree to float rounding, and moved.
    let d = zip(whole, parts).map { abs($0 - $1) }.max()!
    #expect(d <= 2e-8, "max difference \(d)")
    #expect(zip(whole, p0).map { abs($0 - $1) }.max()! > 1e-5)
    var x = 0.0, y = 0.0
    #expect(pk_adafactor_apply(&parts, &mp, vp, grads[0], Int64(n), 1e-2, 0.9, 1e-3, 1.0, 0, -1, 0) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_adafactor_sums(&x, &y, parts, &vp, grads[0], -1, 0.8, 1e-30, 1) == PK_STATUS_BAD_SIZE)
  }

  @Test("Adafactor update clipping bounds the update RMS by lr·scale·d")
  func adafactorClipBoundsUpdate() throws {
    // First step: beta2 = 0 so |y| = 1 everywhere (RMS 1): with d = 0.5 the update is halved.
    let n = 999
    var s = Stream(state: 7)
    let p = s.floats(n, 1), g = s.floats(n, 5)
    var h = Hyper()
    h.beta1 = 0
    h.lr = 0.01
    h.clip = 0.5
    let got = try runKernel(.adafactor, p: p, grads: [g], h: h, scalar: true)
    let rmsP = (p.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n)).squareRoot()
    let keep = 1 - Double(h.lr * h.lr)
    var worstErr = 0.0
    for i in 0..<n {
      let expected = keep * Double(p[i]) - 0.01 * rmsP * 0.5 * (g[i] > 0 ? 1 : -1)
      worstErr = max(worstErr, abs(Double(got[i]) - expected))
    }
    #expect(worstErr < 1e-6, "max error \(worstErr)")
  }

  @Test("AVX-512 and scalar paths agree", .enabled(if: ISA.detected == .avx512), arguments: sizes)
  func pathsAgree(n: Int) throws {
    let (p, grads) = inputs(n, seed: 99)
    try withKernelLock {  // no other test may lower the process-wide ISA meanwhile
      #expect(ISA.active == .avx512, "the AVX-512 path is not active")
      for kind in [Kind.adamw, .adafactor] {
        let a = try runKernel(kind, p: p, grads: grads, h: Hyper(), scalar: true)
        let b = try runKernel(kind, p: p, grads: grads, h: Hyper(), scalar: false)
        let (r, at) = worst(b, a.map(Double.init), atol: 1e-7, rtol: 2e-6)
        #expect(r <= 1, "\(kind) n=\(n): worst ratio \(r) at \(at)")
      }
    }
  }

  @Test("Updates and norms are bit-identical across runs and thread counts")
  func deterministic() throws {
    let n = 100_003  // several blocks: the parallel path
    let (p, grads) = inputs(n, seed: 5)
    func differing(_ x: [Float], _ y: [Float]) -> Int { zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count }
    try withKernelLock {  // the ISA and thread count must not change under us
      let saved = Threads.count
      defer { Threads.count = saved }
      for kind in [Kind.adamw, .adafactor] {
        for scalar in [true, false] {
          Threads.count = 2
          let a = try runKernel(kind, p: p, grads: grads, h: Hyper(), scalar: scalar)
          let b = try runKernel(kind, p: p, grads: grads, h: Hyper(), scalar: scalar)
          Threads.count = 1
          let c = try runKernel(kind, p: p, grads: grads, h: Hyper(), scalar: scalar)
          #expect(differing(a, b) == 0, "\(kind) scalar=\(scalar): two runs differ in \(differing(a, b)) elements")
          #expect(differing(a, c) == 0, "\(kind) scalar=\(scalar): 1 and 2 threads differ in \(differing(a, c)) elements")
        }
      }
      var norms: [Double] = []
      for threads in [1, 2, 1] {
        Threads.count = threads
        var out = 0.0
        try KernelError.check(grads[0].withUnsafeBufferPointer { pk_sum_squares(&out, $0.baseAddress, Int64(n)) }, "ssq")
        norms.append(out)
      }
      #expect(Set(norms.map(\.bitPattern)).count == 1, "sum of squares varies: \(norms)")
    }
  }

  @Test("Global norm equals the fp64 sum over tensors")
  func globalNorm() throws {
    var s = Stream(state: 11)
    let tensors = [1, 17, 1000, 0, 40_003, 3].map { s.floats($0, 3) }
    let ref = tensors.joined().reduce(0.0) { $0 + Double($1) * Double($1) }
    for scalar in [true, false] {
      try withISA(scalar ? .scalar : ISA.detected) {
        var pointers: [UnsafePointer<Float>?] = []
        var out = 0.0
        var counts = tensors.map { Int64($0.count) }
        // Keep the arrays alive while their pointers are used.
        let buffers = tensors.map { t -> UnsafeMutableBufferPointer<Float> in
          let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(t.count, 1))
          _ = b.initialize(from: t)
          return b
        }
        defer { buffers.forEach { $0.deallocate() } }
        pointers = buffers.map { UnsafePointer($0.baseAddress) }
        try KernelError.check(pk_global_norm_squared(&out, &pointers, &counts, Int64(tensors.count)), "global_norm")
        #expect(abs(out - ref) <= 1e-12 * ref, "scalar=\(scalar): \(out) vs \(ref)")
      }
    }
  }

  @Test("Scale in place is exact; sizes 0..odd")
  func scale() throws {
    var s = Stream(state: 3)
    for n in [0, 1, 17, 40_003] {
      for scalar in [true, false] {
        try withISA(scalar ? .scalar : ISA.detected) {
          let x = s.floats(n)
          var y = x
          try KernelError.check(y.withUnsafeMutableBufferPointer { pk_scale_inplace($0.baseAddress, Int64(n), 0.37) }, "scale")
          #expect(zip(x, y).allSatisfy { $0 * 0.37 == $1 }, "n=\(n) scalar=\(scalar)")
        }
      }
    }
  }

  @Test("Bad arguments are rejected with a status")
  func badArguments() {
    var p: [Float] = [1, 2], m: [Float] = [0, 0], v: [Float] = [0, 0], g: [Float] = [1, 1]
    #expect(pk_adamw_update(&p, &m, &v, &g, -1, 0.1, 0.9, 0.99, 1e-8, 0, 1) == PK_STATUS_BAD_SIZE)
    #expect(pk_adamw_update(&p, &m, &v, &g, 2, 0.1, 0.9, 0.99, 1e-8, 0, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_adamw_update(&p, &m, &v, &g, 2, 0.1, 1.0, 0.99, 1e-8, 0, 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_adamw_update(&p, &m, &v, &g, 2, .nan, 0.9, 0.99, 1e-8, 0, 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_adamw_update(nil, &m, &v, &g, 2, 0.1, 0.9, 0.99, 1e-8, 0, 1) == PK_STATUS_NULL_POINTER)
    #expect(pk_adamw_update(nil, nil, nil, nil, 0, 0.1, 0.9, 0.99, 1e-8, 0, 1) == PK_STATUS_OK)
    #expect(pk_adafactor_update(&p, &m, &v, &g, 2, 0.1, 0.9, 0.8, 1e-30, 1e-3, 1, 0, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_adafactor_update(&p, &m, &v, &g, 2, 0.1, -0.1, 0.8, 1e-30, 1e-3, 1, 0, 1) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_adafactor_update(&p, &m, nil, &g, 2, 0.1, 0.9, 0.8, 1e-30, 1e-3, 1, 0, 1) == PK_STATUS_NULL_POINTER)
    var out = 0.0
    #expect(pk_sum_squares(&out, nil, 3) == PK_STATUS_NULL_POINTER)
    #expect(pk_sum_squares(nil, &g, 2) == PK_STATUS_NULL_POINTER)
    #expect(pk_sum_squares(&out, &g, -2) == PK_STATUS_BAD_SIZE)
    #expect(pk_scale_inplace(&g, -1, 2) == PK_STATUS_BAD_SIZE)
    #expect(p == [1, 2], "a rejected call must not touch the parameters")
  }
}

@Suite("SHA-256")
struct SHA256KernelTests {
  private func hex(_ bytes: [UInt8]) -> String {
    var ctx = pk_sha256_ctx()
    pk_sha256_init(&ctx)
    _ = bytes.withUnsafeBytes { pk_sha256_update(&ctx, $0.baseAddress, $0.count) }
    var d = [UInt8](repeating: 0, count: 32)
    pk_sha256_final(&ctx, &d)
    return d.map { String(format2: $0) }.joined()
  }

  @Test("FIPS 180-4 vectors")
  func vectors() {
    #expect(hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    #expect(hex([UInt8](repeating: 0x61, count: 1_000_000))
            == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }

  @Test("Streaming in odd pieces equals one call")
  func streaming() {
    let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    var ctx = pk_sha256_ctx()
    pk_sha256_init(&ctx)
    var i = 0, piece = 1
    while i < data.count {
      let n = min(piece, data.count - i)
      _ = data[i..<i + n].withUnsafeBytes { pk_sha256_update(&ctx, $0.baseAddress, n) }
      i += n
      piece = piece * 3 % 67 + 1
    }
    var d = [UInt8](repeating: 0, count: 32)
    pk_sha256_final(&ctx, &d)
    #expect(d.map { String(format2: $0) }.joined() == hex(data))
  }
}

extension String {
  /// Two lower-case hex digits.
  fileprivate init(format2 b: UInt8) {
    let s = String(b, radix: 16)
    self = s.count == 1 ? "0" + s : s
  }
}
