// DropoutTests: pk_dropout_* against the plain-Swift mask (DropoutReference) on awkward sizes, every
// ISA and 1/2 threads (bit-identical masks), counter offsets, statistics (fraction dropped, mean
// preserved), the residual add, p = 0 as a no-op and bad arguments.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("Dropout", .serialized)
struct DropoutTests {
  static let sizes = [0, 1, 7, 1_000_003]
  static let rates: [Float] = [0, 0.1, 0.5]

  func forward(_ x: [Float], p: Float, seed: UInt64 = 9, stream: UInt64 = 3, offset: Int = 0) throws -> [Float] {
    var y = [Float](repeating: -7, count: x.count)
    try KernelError.check(pk_dropout_forward(&y, x, Int64(x.count), p, seed, stream, Int64(offset)), "dropout_forward")
    return y
  }

  func mask(_ n: Int, p: Float, seed: UInt64 = 9, stream: UInt64 = 3, offset: Int = 0) throws -> [UInt8] {
    var m = [UInt8](repeating: 7, count: n)
    try KernelError.check(pk_dropout_mask(&m, Int64(n), p, seed, stream, Int64(offset)), "dropout_mask")
    return m
  }

  /// Calls `body` with one pointer to `a`'s elements (for in-place calls).
  func aliased(_ a: inout [Float], _ body: (UnsafeMutablePointer<Float>?) -> pk_status) -> pk_status {
    a.withUnsafeMutableBufferPointer { body($0.baseAddress) }
  }

  @Test("matches the plain reference on every ISA: forward, in place, backward, add, mask", arguments: sizes)
  func matchesReference(_ n: Int) throws {
    var r = TestRandom(seed: UInt64(n) + 1)
    let x = r.floats(n, -3, 3), res = r.floats(n, -2, 2)
    for p in DropoutTests.rates {
      for offset in n > 1000 ? [0, 7] : [0, 1, 7, 1 << 40] {
        let m = DropoutReference.multipliers(count: n, p: p, seed: 9, stream: 3, offset: offset)
        let want = zip(x, m).map { $0 * $1 }
        let wantAdd = (0..<n).map { res[$0] + x[$0] * m[$0] }
        // Every ISA on the short sizes (their tails and masks); the long one on the detected ISA
        // (threadAndISAIndependent holds the long forward and mask equal on every ISA).
        for isa in n > 1000 ? [ISA.detected] : ISA.supported {
          try withISA(isa) {
            let what = "\(isa) n \(n) p \(p) offset \(offset)"
            #expect(bitwiseEqual(try forward(x, p: p, offset: offset), want), "\(what): forward")
            var inPlace = x
            try KernelError.check(aliased(&inPlace) { pk_dropout_forward($0, $0, Int64(n), p, 9, 3, Int64(offset)) }, "")
            #expect(bitwiseEqual(inPlace, want), "\(what): in place")
            var dx = [Float](repeating: 5, count: n)
            try KernelError.check(pk_dropout_backward(&dx, x, Int64(n), p, 9, 3, Int64(offset)), "")
            #expect(bitwiseEqual(dx, want), "\(what): backward = forward")
            var y = [Float](repeating: 5, count: n)
            try KernelError.check(pk_dropout_add(&y, res, x, Int64(n), p, 9, 3, Int64(offset)), "")
            #expect(bitwiseEqual(y, wantAdd), "\(what): add")
            var yr = res  // y aliases the residual
            try KernelError.check(aliased(&yr) { pk_dropout_add($0, $0, x, Int64(n), p, 9, 3, Int64(offset)) }, "")
            #expect(bitwiseEqual(yr, wantAdd), "\(what): add in place (residual)")
            var yb = x  // y aliases the branch
            try KernelError.check(aliased(&yb) { pk_dropout_add($0, res, $0, Int64(n), p, 9, 3, Int64(offset)) }, "")
            #expect(bitwiseEqual(yb, wantAdd), "\(what): add in place (branch)")
            let keep = try mask(n, p: p, offset: offset)
            #expect(keep == m.map { $0 != 0 ? 1 : 0 }, "\(what): mask")
          }
        }
      }
    }
  }

  @Test("the same mask for every ISA and for 1 and 2 threads")
  func threadAndISAIndependent() throws {
    var r = TestRandom(seed: 4)
    let n = 300_001
    let x = r.floats(n)
    let want = try withISA(.scalar, threads: 1) { (try forward(x, p: 0.3, offset: 11), try mask(n, p: 0.3, offset: 11)) }
    for isa in ISA.supported {
      for threads in [1, 2] {
        let got = try withISA(isa, threads: threads) { (try forward(x, p: 0.3, offset: 11), try mask(n, p: 0.3, offset: 11)) }
        #expect(bitwiseEqual(got.0, want.0), "\(isa) \(threads) threads: values")
        #expect(got.1 == want.1, "\(isa) \(threads) threads: mask")
      }
    }
  }

  @Test("counters: a call at offset k draws the tail of the call at offset 0; keys separate streams")
  func countersAndStreams() throws {
    let n = 10_000, k = 2_345
    let whole = try mask(n + k, p: 0.5)
    for off in [k, k + 1] {
      #expect(try mask(n + k - off, p: 0.5, offset: off) == Array(whole[off...]), "offset \(off)")
    }
    #expect(try mask(n, p: 0.5, seed: 9, stream: 4) != (try mask(n, p: 0.5, seed: 9, stream: 3)))
    #expect(try mask(n, p: 0.5, seed: 10, stream: 3) != (try mask(n, p: 0.5, seed: 9, stream: 3)))
    #expect(pk_dropout_key(9, 3) == DropoutReference.key(seed: 9, stream: 3))
    #expect(pk_dropout_key(9, 3) != pk_dropout_key(3, 9))
  }

  @Test("fraction dropped and mean within statistical bounds", arguments: [Float(0.1), 0.5, 0.9])
  func statistics(_ p: Float) throws {
    let n = 1_000_003
    for seed: UInt64 in [1, 2] {
      let keep = try mask(n, p: p, seed: seed)
      let dropped = Double(keep.reduce(0) { $0 + (1 - Int($1)) }) / Double(n)
      let sigma = (Double(p) * (1 - Double(p)) / Double(n)).squareRoot()
      #expect(abs(dropped - Double(p)) < 6 * sigma, "p \(p) seed \(seed): dropped fraction \(dropped)")
      // Inverted dropout keeps the mean: E[x·m/(1−p)] = x.
      let y = try forward([Float](repeating: 1, count: n), p: p, seed: seed)
      let mean = y.reduce(0.0) { $0 + Double($1) } / Double(n)
      let sd = (Double(p) / (1 - Double(p)) / Double(n)).squareRoot()
      #expect(abs(mean - 1) < 6 * sd, "p \(p) seed \(seed): mean \(mean)")
      // Pairs of neighbouring counters (the two halves of one hash) are not correlated.
      var both = 0
      for i in stride(from: 0, to: n - 1, by: 2) where keep[i] == 0 && keep[i + 1] == 0 { both += 1 }
      let pairs = Double(n / 2), pp = Double(p) * Double(p)
      #expect(abs(Double(both) / pairs - pp) < 6 * (pp * (1 - pp) / pairs).squareRoot(), "p \(p): pair correlation")
    }
  }

  @Test("p = 0 is a no-op")
  func zeroRateIsNoOp() throws {
    var r = TestRandom(seed: 2)
    let x = r.floats(1001), res = r.floats(1001)
    #expect(bitwiseEqual(try forward(x, p: 0), x))
    var y = x
    let count = Int64(y.count)
    #expect(aliased(&y) { pk_dropout_forward($0, $0, count, 0, 1, 2, 0) } == PK_STATUS_OK)
    #expect(bitwiseEqual(y, x))
    var s = [Float](repeating: 0, count: x.count)
    #expect(pk_dropout_add(&s, res, x, Int64(x.count), 0, 1, 2, 0) == PK_STATUS_OK)
    #expect(bitwiseEqual(s, zip(res, x).map { $0 + $1 }))
    #expect(try mask(1001, p: 0).allSatisfy { $0 == 1 })
  }

  @Test("rejects bad arguments")
  func badArguments() {
    var y = [Float](repeating: 0, count: 8)
    let x = [Float](repeating: 1, count: 8)
    for p: Float in [1, 1.5, -0.1, .nan, .infinity] {
      #expect(pk_dropout_forward(&y, x, 8, p, 0, 0, 0) == PK_STATUS_BAD_ARGUMENT, "p \(p)")
      #expect(pk_dropout_add(&y, x, x, 8, p, 0, 0, 0) == PK_STATUS_BAD_ARGUMENT, "p \(p)")
    }
    #expect(pk_dropout_forward(&y, x, -1, 0.1, 0, 0, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_dropout_forward(&y, x, 8, 0.1, 0, 0, -1) == PK_STATUS_BAD_SIZE)
    #expect(pk_dropout_forward(&y, x, 8, 0.1, 0, 0, Int64.max - 3) == PK_STATUS_BAD_SIZE)
    #expect(pk_dropout_forward(&y, x, Int64.max / 2, 0.1, 0, 0, 0) == PK_STATUS_BAD_SIZE)
    #expect(pk_dropout_forward(nil, x, 8, 0.1, 0, 0, 0) == PK_STATUS_NULL_POINTER)
    #expect(pk_dropout_backward(&y, nil, 8, 0.1, 0, 0, 0) == PK_STATUS_NULL_POINTER)
    #expect(pk_dropout_add(&y, nil, x, 8, 0.1, 0, 0, 0) == PK_STATUS_NULL_POINTER)
    #expect(pk_dropout_mask(nil, 8, 0.1, 0, 0, 0) == PK_STATUS_NULL_POINTER)
    #expect(pk_dropout_forward(nil, nil, 0, 0.1, 0, 0, 0) == PK_STATUS_OK)
    #expect(y.allSatisfy { $0 == 0 }, "a rejected call wrote")
  }
}
