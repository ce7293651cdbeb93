// palm mfu-table --measure: part two of the table, the rows measured on this machine, from the
// step benchmark run in child processes (StepRuns.standardSpecs), the peak from BenchDefaults.peak.

import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmTensor

extension MFUTable {
  /// Runs the standard step set and returns the rows; progress on standard error.
  func measuredRows() throws -> [MeasuredRow] {
    let precisions = try precision.map { try PrecisionList.parseOption($0) } ?? [.fp32]
    if precisions.contains(.bf16) && !ISA.bf16Native { BenchStep.noteEmulatedBF16() }
    let specs = StepRuns.standardSpecs(threads: ThreadCounts.standard, precisions: precisions)
    guard try BenchDefaults.peak.gflops(1) != nil else {
      throw BenchError("--measure needs the peak FLOP/s: set \(PeakSource.variable) (GFLOP/s of 1 thread, or of 1,2,... threads)")
    }
    let measured = try StepRuns.measure(
      specs, runner: StepRuns.childProcess(executable: StepRuns.currentExecutable()), peak: BenchDefaults.peak,
      progress: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
    return measured.compactMap(\.row)
  }
}
