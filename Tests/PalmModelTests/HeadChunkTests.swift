// HeadChunkTests: the head computed in row chunks (MemoryPlan.headRows) gives the one-chunk head's
// losses and gradients, and its memory stays bounded at PaLM-sized vocabularies.

import Testing
import PalmTensor
@testable import PalmModel
import _PalmTestSupport

@Suite(.serialized) struct HeadChunkTests {
  init() { Threads.setBlocktime(milliseconds: 0) }

  @Test(arguments: [1, 5, 16, 17])
  func chunkedHeadEqualsOneChunk(rows: Int) throws {
    try withKernelLock {
      Threads.count = 2
      let n = awkward.batch * awkward.seqLen
      let tokens = randomIds(n, vocab: awkward.vocab, seed: 8), targets = randomIds(n, vocab: awkward.vocab, seed: 9)
      let whole = try Model(config: awkward, seed: 7), chunked = try Model(config: awkward, seed: 7, headRows: rows)
      #expect(whole.plan.headRows == n && chunked.plan.headRows == rows)
      #expect(chunked.plan.buffers.first { $0.name == "head.logits" }!.shape == [rows, awkward.vocab])
      whole.gradients.zero(); chunked.gradients.zero()
      let l0 = try whole.forwardBackward(tokens: tokens, targets: targets)
      let l1 = try chunked.forwardBackward(tokens: tokens, targets: targets)
      #expect(abs(l0.total - l1.total) <= 1e-6 * l0.total, "loss \(l0.total) vs \(l1.total)")
      for (name, g) in whole.gradients.named {
        let e = relativeError(chunked.gradients[name]!.array.map(Double.init), g.array.map(Double.init))
        #expect(e <= 1e-6, "\(rows) rows at a time: \(name) differs by \(e)")
      }
      let f0 = try whole.forward(tokens: tokens, targets: targets), f1 = try chunked.forward(tokens: tokens, targets: targets)
      #expect(abs(f0.total - f1.total) <= 1e-6 * f0.total)
      #expect(abs(f0.total - l0.total) <= 1e-6 * l0.total)
    }
  }

  /// issue 14's bar: `small` with a 32k vocabulary plans at most 64 MiB for the head at 8 × 512, and
  /// a 256k vocabulary still plans its logits within the 32 MiB budget (N·V would be 4 GiB).
  @Test func headMemoryIsBoundedAtLargeVocabularies() {
    var c = PalmConfig.small
    for (vocab, limit) in [(32_768, 64 << 20), (262_144, 64 << 20)] {
      c.vocab = vocab
      let plan = MemoryPlan(config: c, policy: .full, batch: 8, seqLen: 512)
      let logits = plan.buffers.first { $0.name == "head.logits" }!
      #expect(logits.floats * 4 <= MemoryPlan.logitsBudgetFloats * 4, "vocab \(vocab): logits \(logits.shape)")
      #expect(plan.floats(.head) * 4 <= limit, "vocab \(vocab): head \(plan.floats(.head) * 4) bytes")
      #expect(plan.headRows < 8 * 512 && plan.headRows >= 1)
    }
    #expect(MemoryPlan.headRows(n: 4096, vocab: 256) == 4096)  // the byte vocabulary: one chunk, as before
    #expect(MemoryPlan.headRows(n: 4096, vocab: 32_768) == 256)
    #expect(MemoryPlan.headRows(n: 10, vocab: 1 << 30) == 1)
  }
}
