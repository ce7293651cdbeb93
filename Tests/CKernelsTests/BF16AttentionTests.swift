// BF16AttentionTests: pk_attention_forward/backward with PK_PRECISION_BF16 judged by the fp64
// reference that rounds the same operands to bf16 (KernelReference.attentionForward and
// attentionBackward with bf16: true, pk_attention.h "Precision"), on awkward shapes and on every path this CPU
// runs (native vdpbf16ps, emulated on AVX-512, AVX2, scalar); each check also shows the result is
// measurably NOT the unrounded fp64 attention, so it fails if the products ran in fp32.

import CKernels
import Foundation
import Testing
import _PalmTestSupport
@testable import PalmTensor

@Suite("bf16 attention", .serialized)
struct BF16AttentionTests {
  static let shapes: [AttentionShape] = [
    .init(B: 1, T: 1, H: 1, Q: 8, finiteDifferences: false),     // one token
    .init(B: 2, T: 5, H: 1, Q: 6, finiteDifferences: false),     // odd T, Q/2 odd
    .init(B: 1, T: 70, H: 3, Q: 10, finiteDifferences: false),   // T past one 64-key block, odd tile rows
    .init(B: 1, T: 130, H: 1, Q: 8, finiteDifferences: false),   // crosses the 128-token tile, 3 key blocks
    .init(B: 1, T: 67, H: 4, Q: 64, finiteDifferences: false),
    .init(B: 2, T: 9, H: 2, Q: 64, finiteDifferences: false),
    .init(B: 1, T: 33, H: 2, Q: 128, finiteDifferences: false),  // 1/sqrt(Q) not a power of two
  ]

  /// Measured on these shapes (relative to max |ref|): out 5e-8..1.5e-7 and dqkv 3e-11..1e-6 from
  /// the rounding reference on every path, but 3e-3..7e-3 from the unrounded attention. The
  /// exception is an element whose fp32 value (the kernel's) and fp64 value (the reference's) round
  /// to neighbouring bf16: one term of a sum moves by 2^-8 of itself (B1 T67 H4 Q64: out 1.5e-5,
  /// dqkv 3e-5). So: every element within 5e-5, nearly all within 1e-6.
  @Test("matches the fp64 reference of the bf16-rounded operands", arguments: shapes)
  func matchesRoundingReference(_ s: AttentionShape) throws {
    let c = AttentionCase(s, seed: UInt64(s.B * 1000 + s.T * 10 + s.Q + 1))
    let qkv = f64(c.qkv), dout = f64(c.dout)
    let ref = KernelReference.attentionForward(qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q, bf16: true)
    let dref = KernelReference.attentionBackward(dout: dout, qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q, bf16: true)
    let exact = KernelReference.attentionForward(qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
    let dexact = KernelReference.attentionBackward(dout: dout, qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
    let rows = s.B * s.T, hq = s.H * s.Q
    for path in BF16Path.all {
      let r = try path.with(threads: 2) { try c.run(precision: PK_PRECISION_BF16) }
      let out = dense(r.out, rows: rows, cols: hq, ld: c.ldo)
      let dqkv = dense(r.dqkv, rows: rows, cols: s.width, ld: c.lddqkv)
      expectClose(out, ref.out, tolerance: 5e-5, "\(s) \(path) out")
      expectClose(r.lse, ref.lse, tolerance: 2e-6, "\(s) \(path) lse")
      expectClose(dqkv, dref, tolerance: 5e-5, "\(s) \(path) dqkv")
      #expect(fractionOff(out, ref.out, 1e-6) <= 0.01, "\(s) \(path): more than 1% of out off by over 1e-6")
      #expect(fractionOff(dqkv, dref, 1e-6) <= 0.01, "\(s) \(path): more than 1% of dqkv off by over 1e-6")
      #expect(paddingUntouched(r.out, rows: rows, cols: hq, ld: c.ldo, fill: -7), "\(s) out padding")
      #expect(paddingUntouched(r.dqkv, rows: rows, cols: s.width, ld: c.lddqkv, fill: -7), "\(s) dqkv padding")
      // The rounding shows: T = 1 has a single key (out = v, rounded: 2^-9 relative at most).
      let e = KernelReference.maxError(out, ref.out).0, off = KernelReference.maxError(out, exact.out).0
      #expect(off > 10 * e, "\(s) \(path): out is as close to the unrounded attention (\(off)) as to the rounding reference (\(e))")
      let de = KernelReference.maxError(dqkv, dref).0, doff = KernelReference.maxError(dqkv, dexact).0
      #expect(doff > 10 * de, "\(s) \(path): dqkv is as close to the unrounded gradient (\(doff)) as to the rounding reference (\(de))")
    }
  }

  /// The share of elements further than `tolerance` · max(1, max |ref|) from the reference.
  func fractionOff(_ a: [Float], _ ref: [Double], _ tolerance: Double) -> Double {
    let bound = tolerance * max(1, ref.map(\.magnitude).max() ?? 0)
    return Double(zip(a, ref).filter { abs(Double($0) - $1) > bound }.count) / Double(max(ref.count, 1))
  }

  /// The online softmax's rounding point: with keys in more than one block and a row whose max
  /// grows in a later block, rounding the unnormalised P of each block (what the kernel does)
  /// differs from rounding the final probabilities; the reference must model the former.
  @Test("rounds the unnormalised probabilities of each key block")
  func roundsPerKeyBlock() throws {
    let s = AttentionShape(B: 1, T: 100, H: 1, Q: 8, finiteDifferences: false)
    let c = AttentionCase(s, seed: 77)
    let qkv = f64(c.qkv)
    let ref = KernelReference.attentionForward(qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q, bf16: true)
    let r = try withKernelLock { try c.run(precision: PK_PRECISION_BF16) }
    let out = dense(r.out, rows: s.T, cols: s.Q, ld: c.ldo)
    // The same reference with the probabilities rounded after normalising (one block of T keys).
    var naive = [Double](repeating: 0, count: s.T * s.Q)
    let w = s.width, scale = 1 / Double(s.Q).squareRoot()
    let k = (0..<s.T).map { KernelReference.rope(qkv[($0 * w + s.Q)...].prefix(s.Q), pos: $0).map(KernelReference.bf16) }
    for t in 0..<s.T {
      let q = KernelReference.rope(qkv[(t * w)...].prefix(s.Q), pos: t).map { KernelReference.bf16($0 * scale) }
      let sc = (0...t).map { j in zip(q, k[j]).reduce(0) { $0 + $1.0 * $1.1 } }
      let m = sc.max()!, z = sc.reduce(0) { $0 + exp($1 - m) }
      for j in 0...t {
        let p = KernelReference.bf16(exp(sc[j] - m)) / z
        for d in 0..<s.Q { naive[t * s.Q + d] += p * KernelReference.bf16(qkv[j * w + 2 * s.Q + d]) }
      }
    }
    let e = KernelReference.maxError(out, ref.out).0, off = KernelReference.maxError(out, naive).0
    #expect(e < 5e-6, "out vs the per-block rounding reference: \(e)")
    #expect(off > 10 * e, "the per-block and after-normalising references are not told apart (\(off) vs \(e))")
  }

  @Test("bit-identical across runs at a fixed thread count, on every path")
  func reproducible() throws {
    let c = AttentionCase(AttentionShape(B: 3, T: 100, H: 3, Q: 16, finiteDifferences: false), seed: 7)
    for path in BF16Path.all {
      for threads in [1, 2] {
        let (a, b) = try path.with(threads: threads) { (try c.run(precision: PK_PRECISION_BF16), try c.run(precision: PK_PRECISION_BF16)) }
        #expect(bitwiseEqual(a.out, b.out), "\(path) \(threads) threads: out differs")
        #expect(bitwiseEqual(a.dqkv, b.dqkv), "\(path) \(threads) threads: dqkv differs")
      }
    }
  }

  /// bf16 executes and counts the same tile products as fp32 (pk_attention.h, "FLOP counting").
  @Test("counts the same FLOPs as fp32")
  func flopCount() throws {
    let c = AttentionCase(AttentionShape(B: 2, T: 150, H: 3, Q: 16, finiteDifferences: false), seed: 3)
    // Other suites may count at the same time; a polluted reading only adds: take the smallest.
    func counted(_ p: pk_precision) throws -> Double {
      var least = Double.infinity
      for _ in 0..<3 {
        pk_flops_reset()
        pk_flops_count_enable(1)
        _ = try c.run(precision: p)
        least = min(least, pk_flops_counted())
        pk_flops_count_enable(0)
        pk_flops_reset()
      }
      return least
    }
    let (f32, b16) = try withKernelLock { (try counted(PK_PRECISION_FP32), try counted(PK_PRECISION_BF16)) }
    #expect(f32 > 0 && b16 == f32, "bf16 counted \(b16) FLOPs, fp32 \(f32)")
  }

  /// fp32 is untouched by the precision argument: the same as before (the fp32 suite's fp64
  /// tolerances), and not the bf16 numbers.
  @Test("fp32 stays fp32; an unknown precision is refused")
  func precisionArgument() throws {
    let s = AttentionShape(B: 1, T: 40, H: 2, Q: 16, finiteDifferences: false)
    let c = AttentionCase(s, seed: 5)
    let ref = KernelReference.attentionForward(qkv: f64(c.qkv), B: s.B, T: s.T, H: s.H, Q: s.Q)
    let (f, b) = try withKernelLock { (try c.run(precision: PK_PRECISION_FP32), try c.run(precision: PK_PRECISION_BF16)) }
    expectClose(dense(f.out, rows: s.T, cols: s.H * s.Q, ld: c.ldo), ref.out, tolerance: 2e-6, "fp32 out")
    #expect(!bitwiseEqual(f.out, b.out), "fp32 and bf16 give the same out")
    var out = [Float](repeating: 0, count: 64 * 64), lse = [Float](repeating: 0, count: 64), d = out
    let qkv = [Float](repeating: 0, count: 64 * 64)
    let bad = pk_precision(rawValue: 2)
    #expect(pk_attention_forward(&out, 16, &lse, qkv, 32, 1, 4, 2, 8, bad) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_attention_backward(&d, 32, out, 16, qkv, 32, out, 16, lse, 1, 4, 2, 8, bad) == PK_STATUS_BAD_ARGUMENT)
  }
}
