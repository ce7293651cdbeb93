// BenchStepCLITests: `palm bench step` as a user runs it: a utilization above 100% (a disturbed or
// wrong peak) is flagged on stderr, never printed as if it were a result.
import Foundation
import Testing
import _PalmTestSupport

@Suite(.enabled(if: palmBinary != nil, "needs the palm executable next to the tests (swift build --build-tests builds it)"))
struct BenchStepCLITests {
  private func step(peak: Double) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProgramSplit(palmBinary!, ["bench", "step", "--config", "tiny", "--batch", "2", "--seq-len", "32",
                                      "--steps", "1", "--warmup", "0", "--threads", "1", "--peak", "\(peak)"],
                        deadline: 120, environment: ["KMP_BLOCKTIME": "0"])
  }

  @Test func utilizationAboveOneIsFlagged() throws {
    let low = try step(peak: 1e-3)  // no CPU is this slow: MFU far above 100%
    #expect(low.status == 0, "\(low.stderr)")
    #expect(low.stderr.contains("WARNING: MFU or HFU above 100%") && low.stderr.contains("--peak given"), "\(low.stderr)")
    let high = try step(peak: 1e6)  // a peak no 2-core CPU reaches: utilization far below 100%
    #expect(high.status == 0, "\(high.stderr)")
    #expect(!high.stderr.contains("above 100%"), "\(high.stderr)")
    // A peak from the environment is named with its variable and value.
    let env = try runProgramSplit(palmBinary!, ["bench", "step", "--config", "tiny", "--batch", "2", "--seq-len", "32",
                                                "--steps", "1", "--warmup", "0", "--threads", "1"],
                                  deadline: 120, environment: ["KMP_BLOCKTIME": "0", "PALM_PEAK_GFLOPS": "0.001"])
    #expect(env.status == 0 && env.stderr.contains("the peak set by PALM_PEAK_GFLOPS=0.001"), "\(env.stderr)")
  }
}
