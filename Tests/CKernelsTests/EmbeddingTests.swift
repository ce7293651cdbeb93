// EmbeddingTests: pk_embedding_forward/backward (gather, scatter-add) against the fp64 reference
// and central differences, with repeated tokens and accumulation, every ISA and thread count
// (the backward is bit-identical for any thread count), and bad token ids.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("Token embedding", .serialized)
struct EmbeddingTests {
  static let shapes: [(Int, Int, Int)] = [(1, 1, 1), (5, 3, 8), (33, 7, 17), (200, 11, 130)]  // (N, V, D)

  func run(tokens: [Int32], table: [Float], dout: [Float], dtable0: [Float], scale: Float,
           N: Int, V: Int, D: Int) throws -> (out: [Float], dtable: [Float]) {
    let ldo = D + 2, lddout = D + 1
    var out = [Float](repeating: -1, count: N * ldo), dtable = dtable0
    let ds = strided(dout, rows: N, cols: D, ld: lddout)
    try KernelError.check(pk_embedding_forward(&out, Int64(ldo), tokens, table, scale, Int64(N), Int64(V), Int64(D)), "fwd")
    try KernelError.check(pk_embedding_backward(&dtable, ds, Int64(lddout), tokens, scale, Int64(N), Int64(V), Int64(D)), "bwd")
    #expect(paddingUntouched(out, rows: N, cols: D, ld: ldo, fill: -1))
    return (dense(out, rows: N, cols: D, ld: ldo), dtable)
  }

  @Test("matches the fp64 reference and accumulates", arguments: shapes)
  func matchesReference(_ shape: (Int, Int, Int)) throws {
    let (N, V, D) = shape
    var r = TestRandom(seed: UInt64(N * 100 + V * 10 + D))
    let tokens = r.ints(N, below: V), table = r.floats(V * D), dout = r.floats(N * D), dt0 = r.floats(V * D)
    for scale in [Float(1), 0.75] {
      let ref = KernelReference.embeddingForward(tokens: tokens, table: f64(table), D: D, scale: Double(scale))
      let dref = KernelReference.embeddingBackward(dout: f64(dout), tokens: tokens, V: V, D: D, scale: Double(scale))
      let coords = Array(Set([0, Int(tokens[0]) * D + D - 1, V * D - 1]))
      let numeric = KernelReference.numericGradient(
        { KernelReference.dot(f64(dout), KernelReference.embeddingForward(tokens: tokens, table: $0, D: D, scale: Double(scale))) },
        at: f64(table), coordinates: coords)
      expectClose(coords.map { dref[$0] }, numeric, tolerance: 1e-7, "analytic reference vs finite differences")
      for isa in ISA.supported {
        for threads in [1, 2] {
          let res = try withISA(isa, threads: threads) {
            try run(tokens: tokens, table: table, dout: dout, dtable0: dt0, scale: scale, N: N, V: V, D: D)
          }
          let tag = "N\(N) V\(V) D\(D) scale \(scale) \(isa) \(threads) threads"
          expectClose(res.out, ref, tolerance: 1e-7, "\(tag) out")
          let dt = zip(res.dtable, dt0).map { Double($0) - Double($1) }
          expectClose(dt, dref, tolerance: 1e-5, "\(tag) dtable (accumulated)")
          expectClose(coords.map { dt[$0] }, numeric, tolerance: 1e-5, "\(tag) dtable vs finite differences")
        }
      }
    }
  }

  @Test("backward is bit-identical for any thread count")
  func reproducible() throws {
    var r = TestRandom(seed: 13)
    let (N, V, D) = (4000, 5, 96)  // many repeats of few tokens
    let tokens = r.ints(N, below: V), table = r.floats(V * D), dout = r.floats(N * D)
    let zero = [Float](repeating: 0, count: V * D)
    let a = try withISA(.scalar, threads: 1) { try run(tokens: tokens, table: table, dout: dout, dtable0: zero, scale: 1, N: N, V: V, D: D) }
    let b = try withISA(.scalar, threads: 2) { try run(tokens: tokens, table: table, dout: dout, dtable0: zero, scale: 1, N: N, V: V, D: D) }
    #expect(bitwiseEqual(a.dtable, b.dtable))
  }

  @Test("rejects bad arguments before writing")
  func badArguments() {
    let table = [Float](repeating: 1, count: 12)
    var out = [Float](repeating: 42, count: 12), dt = out
    #expect(pk_embedding_forward(&out, 4, [0, 2, 1], table, 1, 3, 3, 4) == PK_STATUS_OK)
    out = [Float](repeating: 42, count: 12)
    #expect(pk_embedding_forward(&out, 4, [0, 3, 1], table, 1, 3, 3, 4) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_embedding_forward(&out, 4, [0, -1, 1], table, 1, 3, 3, 4) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_embedding_backward(&dt, out, 4, [0, 1, 7], 1, 3, 3, 4) == PK_STATUS_BAD_ARGUMENT)
    #expect(out.allSatisfy { $0 == 42 } && dt.allSatisfy { $0 == 42 }, "wrote before rejecting a token")
    #expect(pk_embedding_forward(&out, 4, [0, 1, 1], table, 1, -3, 3, 4) == PK_STATUS_BAD_SIZE)
    #expect(pk_embedding_forward(&out, 3, [0, 1, 1], table, 1, 3, 3, 4) == PK_STATUS_BAD_STRIDE)
    #expect(pk_embedding_forward(&out, 4, nil, table, 1, 3, 3, 4) == PK_STATUS_NULL_POINTER)
    #expect(pk_embedding_forward(&out, 4, [0, 1, 1], nil, 1, 3, 3, 4) == PK_STATUS_NULL_POINTER)
    #expect(pk_embedding_backward(&dt, out, 4, [0, 1, 1], 1, 3, Int64.max / 2, 4) == PK_STATUS_BAD_SIZE)
    #expect(pk_embedding_forward(nil, 4, nil, nil, 1, 0, 0, 4) == PK_STATUS_OK)
  }
}
