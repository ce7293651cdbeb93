// XentTests: pk_xent_forward/backward/forward_backward (softmax cross-entropy + z-loss) against the
// fp64 reference and central differences, every ISA, strided and in-place buffers, per-row dloss
// weights, reproducibility, and bad arguments (targets out of range before any write).

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("Cross-entropy with z-loss", .serialized)
struct XentTests {
  static let shapes: [(Int, Int)] = [(1, 1), (1, 2), (3, 7), (5, 63), (9, 257), (2, 1000)]
  static let z = 1e-4

  @Test("matches the fp64 reference (separate, fused and in-place)", arguments: shapes)
  func matchesReference(_ shape: (Int, Int)) throws {
    let (N, V) = shape
    var r = TestRandom(seed: UInt64(N * 10_000 + V))
    let logits = r.floats(N * V, -6, 9), targets = r.ints(N, below: V), dloss = r.floats(N, 0.5, 2)
    let scale = 0.37
    let ld = V + 3, lddl = V + 2
    let ls = strided(logits, rows: N, cols: V, ld: ld, fill: 1e30)  // padding would dominate any lse
    let xd = f64(logits)
    let ref = KernelReference.xentForward(logits: xd, targets: targets, N: N, V: V, zcoef: Self.z)
    let w = dloss.map { Double($0) * scale }
    let dref = KernelReference.xentBackward(logits: xd, targets: targets, weights: w, N: N, V: V, zcoef: Self.z)
    let wFused = [Double](repeating: scale, count: N)
    let dFused = KernelReference.xentBackward(logits: xd, targets: targets, weights: wFused, N: N, V: V, zcoef: Self.z)
    let coords = Array(Set([0, V - 1, N * V - 1, (N / 2) * V + Int(targets[N / 2])]))
    let numeric = KernelReference.numericGradient(
      { x in KernelReference.dot(w, KernelReference.xentForward(logits: x, targets: targets, N: N, V: V, zcoef: Self.z).loss) },
      at: xd, coordinates: coords)
    expectClose(coords.map { dref[$0] }, numeric, tolerance: 1e-7, "analytic reference vs finite differences")

    for isa in ISA.supported {
      let tag = "N\(N) V\(V) \(isa)"
      try withISA(isa) {
        var loss = [Float](repeating: 0, count: N), lse = loss
        try KernelError.check(pk_xent_forward(&loss, &lse, ls, Int64(ld), targets, Int64(N), Int64(V), Float(Self.z)), "fwd")
        expectClose(loss, ref.loss, tolerance: 2e-6, "\(tag) loss")
        expectClose(lse, ref.lse, tolerance: 2e-6, "\(tag) lse")

        var d = [Float](repeating: -9, count: N * lddl)
        try KernelError.check(pk_xent_backward(&d, Int64(lddl), ls, Int64(ld), lse, targets, dloss, Float(scale),
                                               Int64(N), Int64(V), Float(Self.z)), "bwd")
        #expect(paddingUntouched(d, rows: N, cols: V, ld: lddl, fill: -9))
        let dd = dense(d, rows: N, cols: V, ld: lddl)
        expectClose(dd, dref, tolerance: 1e-6, "\(tag) dlogits")
        expectClose(coords.map { dd[$0] }, numeric, tolerance: 1e-5, "\(tag) dlogits vs finite differences")

        // Backward in place on a copy of the logits.
        var inPlace = ls
        try inPlace.withUnsafeMutableBufferPointer { p in
          try KernelError.check(pk_xent_backward(p.baseAddress, Int64(ld), p.baseAddress, Int64(ld), lse, targets, dloss,
                                                 Float(scale), Int64(N), Int64(V), Float(Self.z)), "bwd in place")
        }
        #expect(bitwiseEqual(dense(inPlace, rows: N, cols: V, ld: ld), dd), "\(tag) in-place backward differs")

        // Fused forward+backward, in place.
        var fused = ls, loss2 = [Float](repeating: 0, count: N), lse2 = loss2
        try fused.withUnsafeMutableBufferPointer { p in
          try KernelError.check(pk_xent_forward_backward(&loss2, &lse2, p.baseAddress, Int64(ld), p.baseAddress, Int64(ld),
                                                         targets, Float(scale), Int64(N), Int64(V), Float(Self.z)), "fused")
        }
        #expect(bitwiseEqual(loss2, loss) && bitwiseEqual(lse2, lse), "\(tag) fused loss differs from forward")
        #expect(paddingUntouched(fused, rows: N, cols: V, ld: ld, fill: 1e30), "\(tag) fused wrote past a row")
        expectClose(dense(fused, rows: N, cols: V, ld: ld), dFused, tolerance: 1e-6, "\(tag) fused dlogits")
      }
    }
  }

  @Test("bit-identical across runs")
  func reproducible() throws {
    var r = TestRandom(seed: 11)
    let (N, V) = (37, 515)
    let logits = r.floats(N * V, -5, 5), targets = r.ints(N, below: V)
    for isa in ISA.supported {
      try withISA(isa, threads: 2) {
        var outs: [[Float]] = []
        for _ in 0..<2 {
          var loss = [Float](repeating: 0, count: N), lse = loss, d = logits
          try KernelError.check(pk_xent_forward_backward(&loss, &lse, &d, Int64(V), logits, Int64(V), targets, 0.5,
                                                         Int64(N), Int64(V), 1e-4), "fused")
          outs.append(loss + lse + d)
        }
        #expect(bitwiseEqual(outs[0], outs[1]), "\(isa)")
      }
    }
  }

  @Test("a NaN logit gives a NaN loss and gradient row, and leaves the other rows alone")
  func nanPropagates() throws {
    // Rows of 37 (vector body and tail); the NaN sits at the front, in the middle and in the tail.
    let (N, V) = (4, 37)
    var r = TestRandom(seed: 5)
    var logits = r.floats(N * V, -3, 3)
    for (row, col) in [(0, 0), (1, 17), (2, 36)] { logits[row * V + col] = .nan }
    let targets: [Int32] = [1, 2, 3, 4]
    for isa in ISA.supported {
      try withISA(isa) {
        var loss = [Float](repeating: 0, count: N), lse = loss, d = logits
        try KernelError.check(pk_xent_forward_backward(&loss, &lse, &d, Int64(V), logits, Int64(V), targets, 1,
                                                       Int64(N), Int64(V), 1e-4), "fused")
        var loss1 = [Float](repeating: 0, count: N), lse1 = loss1
        try KernelError.check(pk_xent_forward(&loss1, &lse1, logits, Int64(V), targets, Int64(N), Int64(V), 1e-4), "fwd")
        for row in 0..<3 {
          #expect(loss[row].isNaN && loss1[row].isNaN && lse[row].isNaN, "\(isa) row \(row): loss \(loss[row])")
          #expect(d[row * V..<(row + 1) * V].allSatisfy { $0.isNaN }, "\(isa) row \(row): gradient not all NaN")
        }
        #expect(loss[3].isFinite && d[3 * V..<4 * V].allSatisfy { $0.isFinite }, "\(isa): the clean row is affected")
      }
    }
  }

  @Test("rejects bad arguments before writing")
  func badArguments() {
    let logits = [Float](repeating: 0, count: 12)
    var loss = [Float](repeating: 42, count: 3), lse = loss, d = [Float](repeating: 42, count: 12)
    #expect(pk_xent_forward(&loss, &lse, logits, 4, [0, 3, 1], 3, 4, 1e-4) == PK_STATUS_OK)
    loss = [42, 42, 42]
    #expect(pk_xent_forward(&loss, &lse, logits, 4, [0, 4, 1], 3, 4, 1e-4) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_xent_forward(&loss, &lse, logits, 4, [0, -1, 1], 3, 4, 1e-4) == PK_STATUS_BAD_ARGUMENT)
    #expect(loss == [42, 42, 42], "forward wrote before rejecting a target")
    #expect(pk_xent_backward(&d, 4, logits, 4, lse, [0, 9, 1], nil, 1, 3, 4, 1e-4) == PK_STATUS_BAD_ARGUMENT)
    #expect(pk_xent_forward_backward(&loss, &lse, &d, 4, logits, 4, [0, 1, 4], 1, 3, 4, 1e-4) == PK_STATUS_BAD_ARGUMENT)
    #expect(d.allSatisfy { $0 == 42 }, "backward wrote before rejecting a target")
    #expect(pk_xent_forward(&loss, &lse, logits, 4, [0, 1, 1], -3, 4, 1e-4) == PK_STATUS_BAD_SIZE)
    #expect(pk_xent_forward(&loss, &lse, logits, 4, [0, 1, 1], 3, 0, 1e-4) == PK_STATUS_BAD_SIZE)
    #expect(pk_xent_forward(&loss, &lse, logits, 3, [0, 1, 1], 3, 4, 1e-4) == PK_STATUS_BAD_STRIDE)
    #expect(pk_xent_forward(&loss, &lse, logits, 4, nil, 3, 4, 1e-4) == PK_STATUS_NULL_POINTER)
    #expect(pk_xent_forward(&loss, nil, logits, 4, [0, 1, 1], 3, 4, 1e-4) == PK_STATUS_NULL_POINTER)
    #expect(pk_xent_backward(&d, 4, logits, Int64.max / 2, lse, [0, 1, 1], nil, 1, 3, 4, 1e-4) == PK_STATUS_BAD_SIZE)
    #expect(pk_xent_forward(&loss, &lse, nil, 4, nil, 0, 4, 1e-4) == PK_STATUS_OK)
  }
}
