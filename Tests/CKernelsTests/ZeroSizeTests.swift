// ZeroSizeTests: every row kernel and optimizer kernel with an empty size, on every ISA this CPU
// runs: status OK where the header says "0: nothing to do" (and nothing written), BAD_SIZE where an
// empty row has no meaning (LayerNorm's D, cross-entropy's V with rows). Buffers are real and filled
// with a sentinel, so a kernel that writes anyway is caught.

import CKernels
import PalmTensor
import Testing
import _PalmTestSupport

@Suite("Kernels on empty sizes", .serialized)
struct ZeroSizeTests {
  static let sentinel: Float = -7

  func buffers(_ n: Int = 64) -> [Float] { [Float](repeating: Self.sentinel, count: n) }
  func untouched(_ x: [Float]) -> Bool { x.allSatisfy { $0 == Self.sentinel } }

  @Test("LayerNorm: N = 0 does nothing; D = 0 with rows is BAD_SIZE")
  func layerNorm() throws {
    for isa in ISA.supported {
      try withISA(isa) {
        var y = buffers(), mean = buffers(), rstd = buffers(), dx = buffers(), ds = buffers()
        let x = buffers(), w = buffers(), dy = buffers()
        #expect(pk_layernorm_forward(&y, 8, &mean, &rstd, x, 8, w, 0, 8) == PK_STATUS_OK, "\(isa)")
        #expect(pk_layernorm_backward(&dx, 8, &ds, dy, 8, x, 8, mean, rstd, w, 0, 8) == PK_STATUS_OK, "\(isa)")
        #expect(untouched(y) && untouched(mean) && untouched(rstd) && untouched(dx) && untouched(ds), "\(isa) wrote")
        #expect(pk_layernorm_forward(&y, 8, &mean, &rstd, x, 8, w, 2, 0) == PK_STATUS_BAD_SIZE, "\(isa)")
        #expect(pk_layernorm_backward(&dx, 8, &ds, dy, 8, x, 8, mean, rstd, w, 2, 0) == PK_STATUS_BAD_SIZE, "\(isa)")
      }
    }
  }

  @Test("SwiGLU: N = 0 or F = 0 does nothing, forward and backward")
  func swiglu() throws {
    for isa in ISA.supported {
      try withISA(isa) {
        for (n, f) in [(Int64(0), Int64(4)), (3, 0)] {
          var out = buffers(), dh = buffers()
          let h = buffers(), dout = buffers()
          #expect(pk_swiglu_forward(&out, 8, h, 8, n, f) == PK_STATUS_OK, "\(isa) N \(n) F \(f)")
          #expect(pk_swiglu_backward(&dh, 8, dout, 8, h, 8, n, f) == PK_STATUS_OK, "\(isa) N \(n) F \(f)")
          #expect(untouched(out) && untouched(dh), "\(isa) N \(n) F \(f) wrote")
        }
      }
    }
  }

  @Test("cross-entropy: N = 0 does nothing (forward, backward, fused); V = 0 with rows is BAD_SIZE")
  func crossEntropy() throws {
    for isa in ISA.supported {
      try withISA(isa) {
        var loss: Float = Self.sentinel
        var lse = buffers(), dl = buffers()
        let logits = buffers(), dloss = buffers()
        let targets = [Int32](repeating: 0, count: 8)
        #expect(pk_xent_forward(&loss, &lse, logits, 8, targets, 0, 8, 1e-4) == PK_STATUS_OK, "\(isa)")
        #expect(pk_xent_backward(&dl, 8, logits, 8, lse, targets, dloss, 1, 0, 8, 1e-4) == PK_STATUS_OK, "\(isa)")
        #expect(pk_xent_forward_backward(&loss, &lse, &dl, 8, logits, 8, targets, 1, 0, 8, 1e-4) == PK_STATUS_OK, "\(isa)")
        #expect(untouched(lse) && untouched(dl), "\(isa) wrote")
        #expect(pk_xent_forward(&loss, &lse, logits, 8, targets, 2, 0, 1e-4) == PK_STATUS_BAD_SIZE, "\(isa)")
        #expect(pk_xent_forward_backward(&loss, &lse, &dl, 8, logits, 8, targets, 1, 2, 0, 1e-4) == PK_STATUS_BAD_SIZE, "\(isa)")
      }
    }
  }

  @Test("embedding backward: N = 0 adds nothing to the table")
  func embeddingBackward() throws {
    for isa in ISA.supported {
      try withISA(isa) {
        var table = buffers()
        let dout = buffers(), tokens = [Int32](repeating: 0, count: 8)
        #expect(pk_embedding_backward(&table, dout, 8, tokens, 1, 0, 8, 8) == PK_STATUS_OK, "\(isa)")
        #expect(untouched(table), "\(isa) wrote")
      }
    }
  }

  @Test("Adafactor: n = 0 does nothing (update, sums, apply); step 0 is BAD_SIZE")
  func adafactor() throws {
    for isa in ISA.supported {
      try withISA(isa) {
        var p = buffers(), m = buffers(), v = buffers()
        let g = buffers()
        #expect(pk_adafactor_update(&p, &m, &v, g, 0, 1e-2, 0.9, 0.8, 1e-30, 1e-3, 1, 0, 1) == PK_STATUS_OK, "\(isa)")
        var sp = -1.0, su = -1.0
        #expect(pk_adafactor_sums(&sp, &su, p, &v, g, 0, 0.8, 1e-30, 1) == PK_STATUS_OK, "\(isa)")
        #expect(sp == 0 && su == 0, "\(isa): sums of nothing \(sp), \(su)")
        #expect(pk_adafactor_apply(&p, &m, v, g, 0, 1e-2, 0.9, 1e-3, 1, 0, 1, 1) == PK_STATUS_OK, "\(isa)")
        #expect(untouched(p) && untouched(m) && untouched(v), "\(isa) wrote")
        #expect(pk_adafactor_update(&p, &m, &v, g, 4, 1e-2, 0.9, 0.8, 1e-30, 1e-3, 1, 0, 0) == PK_STATUS_BAD_SIZE, "\(isa)")
      }
    }
  }
}
