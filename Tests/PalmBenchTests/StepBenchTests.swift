// StepBenchTests: StepBench runs a real step and reports consistent figures (no timing is asserted).

import Testing
import PalmBench
import PalmModel

@Suite struct StepBenchTests {
  @Test func reportsConsistentFigures() throws {
    let c = PalmConfig(name: "micro", dModel: 32, layers: 2, heads: 2, headDim: 16, dFF: 48, vocab: 37,
                       seqLen: 9, batch: 2)
    let r = try StepBench.run(config: c, remat: .selective, warmup: 1, steps: 2)
    #expect(r.stepSeconds.count == 2)
    #expect(r.bestSeconds > 0 && r.bestSeconds <= r.medianSeconds)
    // Two steps: the median is their mean (the shared PalmTrain.median), not the slower one.
    #expect(r.medianSeconds == (r.stepSeconds[0] + r.stepSeconds[1]) / 2)
    #expect(abs(r.tokensPerSecond - 18 / r.medianSeconds) <= 1e-9 * r.tokensPerSecond)
    #expect(r.modelFLOPsPerToken == FLOPs.modelPerToken(c))
    #expect(r.plannedActivationBytes == MemoryPlan(config: c, policy: .selective).totalBytes)
    #expect(r.plannedActivationBytes == r.plannedSavedBytes + r.plannedScratchBytes)
    #expect(r.lastLoss.isFinite && r.lastLoss > 0)
    #if os(Linux)
    #expect((r.peakRSSBytes ?? 0) > r.plannedActivationBytes)
    #endif
  }
}
