// AttentionTests: pk_attention_forward/backward judged by the fp64 KernelReference (forward,
// analytic backward, central differences) on awkward shapes, on every ISA, with strided buffers;
// run-to-run bit reproducibility, FLOP counting, and bad arguments.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

struct AttentionShape: Sendable, CustomStringConvertible {
  var B: Int, T: Int, H: Int, Q: Int
  /// Also check against central differences (small shapes only: each coordinate costs two fp64
  /// forwards in a debug build).
  var finiteDifferences: Bool
  var description: String { "B\(B) T\(T) H\(H) Q\(Q)" }
  var width: Int { H * Q + 2 * Q }
}

/// Buffers of one attention case; strides are deliberately wider than the rows.
struct AttentionCase {
  let s: AttentionShape
  let ldqkv: Int, ldo: Int, lddout: Int, lddqkv: Int
  let qkv: [Float], dout: [Float]  // dense
  let qkvStrided: [Float], doutStrided: [Float]

  init(_ s: AttentionShape, seed: UInt64) {
    self.s = s
    var r = TestRandom(seed: seed)
    ldqkv = s.width + 3
    ldo = s.H * s.Q + 5
    lddout = s.H * s.Q + 1
    lddqkv = s.width + 7
    qkv = r.floats(s.B * s.T * s.width, -1.5, 1.5)
    dout = r.floats(s.B * s.T * s.H * s.Q)
    qkvStrided = strided(qkv, rows: s.B * s.T, cols: s.width, ld: ldqkv)
    doutStrided = strided(dout, rows: s.B * s.T, cols: s.H * s.Q, ld: lddout)
  }

  /// Runs forward then backward in `precision`; returns strided out, lse and strided dqkv.
  func run(precision: pk_precision = PK_PRECISION_FP32) throws -> (out: [Float], lse: [Float], dqkv: [Float]) {
    let (B, T, H, Q) = (Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.Q))
    var out = [Float](repeating: -7, count: s.B * s.T * ldo)
    var lse = [Float](repeating: .nan, count: s.B * s.H * s.T)
    var dqkv = [Float](repeating: -7, count: s.B * s.T * lddqkv)
    try KernelError.check(
      pk_attention_forward(&out, Int64(ldo), &lse, qkvStrided, Int64(ldqkv), B, T, H, Q, precision),
      "attention_forward")
    try KernelError.check(
      pk_attention_backward(&dqkv, Int64(lddqkv), doutStrided, Int64(lddout), qkvStrided,
                            Int64(ldqkv), out, Int64(ldo), lse, B, T, H, Q, precision),
      "attention_backward")
    return (out, lse, dqkv)
  }
}

@Suite("Rotary multi-query causal attention", .serialized)
struct AttentionTests {
  static let shapes: [AttentionShape] = [
    .init(B: 1, T: 1, H: 1, Q: 8, finiteDifferences: true),
    .init(B: 2, T: 5, H: 1, Q: 8, finiteDifferences: true),
    .init(B: 1, T: 70, H: 3, Q: 8, finiteDifferences: true),     // T not a multiple of any block
    .init(B: 1, T: 130, H: 1, Q: 8, finiteDifferences: false),   // crosses the 128-token tile
    .init(B: 1, T: 1, H: 2, Q: 64, finiteDifferences: true),
    .init(B: 1, T: 67, H: 4, Q: 64, finiteDifferences: false),
    .init(B: 1, T: 9, H: 2, Q: 64, finiteDifferences: true),
    .init(B: 1, T: 33, H: 2, Q: 128, finiteDifferences: false),
    .init(B: 1, T: 4, H: 1, Q: 128, finiteDifferences: true),
    .init(B: 2, T: 7, H: 3, Q: 6, finiteDifferences: true),      // Q under one AVX2 vector: P·V's masked last lanes
    .init(B: 1, T: 70, H: 2, Q: 10, finiteDifferences: false),   // Q = 8 + 2 past a key block
  ]

  /// The rotary table is cached per thread and (T, Q) (attention.c, rope_table_cached): calls that
  /// change T, then Q, then return to the first shape, one after another on one thread, must each
  /// use their own table.
  @Test("the cached rotary table follows the shape from call to call")
  func rotaryTableFollowsShape() throws {
    let sequence: [AttentionShape] = [
      .init(B: 1, T: 9, H: 2, Q: 16, finiteDifferences: false),
      .init(B: 1, T: 20, H: 2, Q: 16, finiteDifferences: false),  // longer T: a bigger table
      .init(B: 1, T: 5, H: 2, Q: 16, finiteDifferences: false),   // shorter T: a stale prefix would pass unnoticed but for Q
      .init(B: 1, T: 9, H: 2, Q: 8, finiteDifferences: false),    // same T, other Q
      .init(B: 1, T: 9, H: 2, Q: 16, finiteDifferences: false),   // back to the first
    ]
    for (i, s) in sequence.enumerated() {
      let c = AttentionCase(s, seed: UInt64(100 + i))
      let qkv = f64(c.qkv), dout = f64(c.dout)
      let ref = KernelReference.attentionForward(qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
      let dref = KernelReference.attentionBackward(dout: dout, qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
      let r = try c.run()
      expectClose(dense(r.out, rows: s.B * s.T, cols: s.H * s.Q, ld: c.ldo), ref.out, tolerance: 2e-6, "call \(i) \(s) out")
      expectClose(dense(r.dqkv, rows: s.B * s.T, cols: s.width, ld: c.lddqkv), dref, tolerance: 1e-5, "call \(i) \(s) dqkv")
    }
  }

  @Test("matches the fp64 reference", arguments: shapes)
  func matchesReference(_ s: AttentionShape) throws {
    let c = AttentionCase(s, seed: UInt64(s.B * 1000 + s.T * 10 + s.Q))
    let qkv = f64(c.qkv), dout = f64(c.dout)
    let ref = KernelReference.attentionForward(qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
    let dref = KernelReference.attentionBackward(dout: dout, qkv: qkv, B: s.B, T: s.T, H: s.H, Q: s.Q)
    let rows = s.B * s.T, hq = s.H * s.Q
    for isa in ISA.supported {
      let r = try withISA(isa) { try c.run() }
      expectClose(dense(r.out, rows: rows, cols: hq, ld: c.ldo), ref.out, tolerance: 2e-6, "\(s) \(isa) out")
      expectClose(r.lse, ref.lse, tolerance: 2e-6, "\(s) \(isa) lse")
      let dqkv = dense(r.dqkv, rows: rows, cols: s.width, ld: c.lddqkv)
      expectClose(dqkv, dref, tolerance: 1e-5, "\(s) \(isa) dqkv vs analytic")
      #expect(paddingUntouched(r.out, rows: rows, cols: hq, ld: c.ldo, fill: -7), "\(s) out padding")
      #expect(paddingUntouched(r.dqkv, rows: rows, cols: s.width, ld: c.lddqkv, fill: -7), "\(s) dqkv padding")

      if s.finiteDifferences {
        // L(qkv) = Σ dout ⊙ out(qkv); probe q, k and v columns of the first, middle and last rows.
        let f: ([Double]) -> Double = { x in
          KernelReference.dot(dout, KernelReference.attentionForward(qkv: x, B: s.B, T: s.T, H: s.H, Q: s.Q).out)
        }
        var coords: [Int] = []
        for row in Set([0, rows / 2, rows - 1]) {
          for col in Set([0, s.Q / 2 + 1, (s.H - 1) * s.Q + s.Q - 1, s.H * s.Q + 1, s.H * s.Q + s.Q - 2,
                          s.H * s.Q + s.Q, s.width - 1]) {
            coords.append(row * s.width + col)
          }
        }
        let numeric = KernelReference.numericGradient(f, at: qkv, coordinates: coords)
        expectClose(coords.map { dqkv[$0] }, numeric, tolerance: 5e-5, "\(s) \(isa) dqkv vs finite differences")
        expectClose(coords.map { dref[$0] }, numeric, tolerance: 1e-7, "\(s) analytic reference vs finite differences")
      }
    }
  }

  @Test("bit-identical across runs at a fixed thread count")
  func reproducible() throws {
    let c = AttentionCase(AttentionShape(B: 3, T: 100, H: 3, Q: 16, finiteDifferences: false), seed: 7)
    for isa in ISA.supported {
      for threads in [1, 2] {
        let (a, b) = try withISA(isa, threads: threads) { (try c.run(), try c.run()) }
        #expect(bitwiseEqual(a.out, b.out), "\(isa) \(threads) threads: out differs")
        #expect(bitwiseEqual(a.lse, b.lse), "\(isa) \(threads) threads: lse differs")
        #expect(bitwiseEqual(a.dqkv, b.dqkv), "\(isa) \(threads) threads: dqkv differs")
      }
    }
  }

  @Test("counts the executed QKᵀ and PV products")
  func flopCount() throws {
    let s = AttentionShape(B: 2, T: 150, H: 3, Q: 16, finiteDifferences: false)
    let c = AttentionCase(s, seed: 3)
    // Other suites may call counting kernels at the same time; a polluted reading only adds, so
    // take the smallest of a few.
    var fwd = Double.infinity, total = Double.infinity
    try withKernelLock {
      for _ in 0..<3 {
        pk_flops_reset()
        pk_flops_count_enable(1)
        var out = [Float](repeating: 0, count: s.B * s.T * c.ldo), lse = [Float](repeating: 0, count: s.B * s.H * s.T)
        try KernelError.check(pk_attention_forward(&out, Int64(c.ldo), &lse, c.qkvStrided, Int64(c.ldqkv),
                                                   Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.Q), PK_PRECISION_FP32), "fwd")
        fwd = min(fwd, pk_flops_counted())
        _ = try c.run()
        total = min(total, pk_flops_counted())
        pk_flops_count_enable(0)
        pk_flops_reset()
      }
      _ = try c.run()
      #expect(pk_flops_counted() == 0, "counting while disabled")
    }
    let (B, T, H, Q) = (Double(s.B), Double(s.T), Double(s.H), Double(s.Q))
    let causal = 4 * B * H * Q * T * (T + 1) / 2, full = 4 * B * H * Q * T * T
    #expect(fwd >= causal && fwd <= full, "forward FLOPs \(fwd) outside [\(causal), \(full)]")
    // forward, then forward + backward: the backward executes five products to the forward's two.
    #expect(total == fwd * 4.5, "forward+forward+backward FLOPs \(total) != 4.5 × forward \(fwd)")
  }

  @Test("rejects bad arguments")
  func badArguments() {
    var out = [Float](repeating: 0, count: 64 * 64), lse = [Float](repeating: 0, count: 64)
    let qkv = [Float](repeating: 0, count: 64 * 64)
    var d = [Float](repeating: 0, count: 64 * 64)
    // B=1, T=4, H=2, Q=8: width 32, H·Q 16.
    func fwd(_ ld: Int64, _ ldo: Int64, B: Int64 = 1, T: Int64 = 4, H: Int64 = 2, Q: Int64 = 8,
             nullQKV: Bool = false) -> pk_status {
      nullQKV ? pk_attention_forward(&out, ldo, &lse, nil, ld, B, T, H, Q, PK_PRECISION_FP32)
        : pk_attention_forward(&out, ldo, &lse, qkv, ld, B, T, H, Q, PK_PRECISION_FP32)
    }
    #expect(fwd(32, 16) == PK_STATUS_OK)
    #expect(fwd(32, 16, B: -1) == PK_STATUS_BAD_SIZE)
    #expect(fwd(32, 16, Q: -2) == PK_STATUS_BAD_SIZE)
    #expect(fwd(32, 16, T: Int64.max / 2, H: 1 << 40) == PK_STATUS_BAD_SIZE)
    #expect(fwd(31, 16) == PK_STATUS_BAD_STRIDE)
    #expect(fwd(32, 15) == PK_STATUS_BAD_STRIDE)
    #expect(fwd(32, 16, nullQKV: true) == PK_STATUS_NULL_POINTER)
    #expect(fwd(28, 14, Q: 7) == PK_STATUS_BAD_ARGUMENT)
    #expect(fwd(32, 16, B: 0, nullQKV: true) == PK_STATUS_OK)
    // Zero sizes with real buffers: nothing to do, nothing written (the backward as well).
    for (b, t, h) in [(Int64(0), Int64(4), Int64(2)), (1, 0, 2), (1, 4, 0)] {
      out = [Float](repeating: -7, count: out.count)
      d = [Float](repeating: -7, count: d.count)
      #expect(pk_attention_forward(&out, 16, &lse, qkv, 32, b, t, h, 8, PK_PRECISION_FP32) == PK_STATUS_OK)
      #expect(pk_attention_backward(&d, 32, out, 16, qkv, 32, out, 16, lse, b, t, h, 8, PK_PRECISION_BF16) == PK_STATUS_OK)
      #expect(out.allSatisfy { $0 == -7 } && d.allSatisfy { $0 == -7 }, "B \(b) T \(t) H \(h) wrote")
    }
    #expect(pk_attention_forward(&out, 16, nil, qkv, 32, 1, 4, 2, 8, PK_PRECISION_FP32) == PK_STATUS_NULL_POINTER)
    #expect(pk_attention_backward(&d, 32, out, 16, qkv, 32, out, 16, lse, 1, 4, 2, 8, PK_PRECISION_FP32) == PK_STATUS_OK)
    #expect(pk_attention_backward(&d, 31, out, 16, qkv, 32, out, 16, lse, 1, 4, 2, 8, PK_PRECISION_FP32) == PK_STATUS_BAD_STRIDE)
    #expect(pk_attention_backward(&d, 32, nil, 16, qkv, 32, out, 16, lse, 1, 4, 2, 8, PK_PRECISION_FP32) == PK_STATUS_NULL_POINTER)
    #expect(pk_attention_backward(&d, 32, out, 16, qkv, 32, out, 16, lse, 1, -4, 2, 8, PK_PRECISION_FP32) == PK_STATUS_BAD_SIZE)
    #expect(pk_attention_backward(&d, 36, out, 18, qkv, 36, out, 18, lse, 1, 4, 2, 9, PK_PRECISION_FP32) == PK_STATUS_BAD_ARGUMENT)
  }
}
