// PlanCLITests: `palm plan` as a user runs it: PaLM's setting, bad input (one error line, exit 1 or
// 64), --help that shows examples, --format json that parses.
import Foundation
import Testing
import _PalmTestSupport

@Suite(.enabled(if: palmBinary != nil, "needs the palm executable next to the tests (swift build --build-tests builds it)"))
struct PlanCLITests {
  private func plan(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProgramSplit(palmBinary!, ["plan"] + args, deadline: 120)
  }
  private let palm = ["--config", "palm-540b", "--mesh", "pod=2,data=256,model=12", "--hardware", "tpu-v4", "--batch", "2048"]

  @Test func palmSetting() throws {
    let r = try plan(palm + ["--sensitivity"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("MFU") && r.stdout.contains("Pod exchange") && r.stdout.contains("**assumption**"))
    let j = try plan(palm + ["--format", "json"])
    #expect(j.status == 0)
    let object = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any]
    let p = object?["plan"] as? [String: Any]
    #expect((p?["mfu"] as? Double ?? 0) > 0)
    // tpu-v4 carries MaxText's published runs: the plan is calibrated on them unless told not to,
    // and prints the uncalibrated figures with it.
    #expect(r.stdout.contains("## Calibration on published runs") && r.stdout.contains("maxtext-22b")
            && r.stdout.contains("Without the calibration"))
    #expect(p?["calibration"] != nil)
    let raw = try plan(palm + ["--no-calibration"])
    #expect(raw.status == 0 && !raw.stdout.contains("## Calibration"))
  }

  @Test func badInput() throws {
    let cases: [([String], String)] = [
      (["--config", "palm-540b", "--mesh", "model=12", "--hardware", "tpu-v9"], "unknown hardware \"tpu-v9\""),
      (["--config", "palm-540b", "--mesh", "data=2,model=5", "--hardware", "tpu-v4"], "does not divide heads"),
      (["--config", "palm-540b", "--mesh", "data=3", "--hardware", "tpu-v4", "--batch", "2048"], "does not divide batch"),
      (["--config", "palm-9000b", "--mesh", "data=2", "--hardware", "tpu-v4"], "unknown config"),
      (["--config", "palm-540b", "--mesh", "dta=2", "--hardware", "tpu-v4"], "unknown axis"),
      (["--config", "palm-540b", "--hardware", "tpu-v4"], "missing --mesh"),
      (["--profile"], "--profile needs --output"),
      // Accepted and ignored would be a defect: each option outside its mode is refused.
      (["--profile", "--output", "x.json", "--config", "tiny", "--sensitivity"], "--config, --sensitivity would be ignored"),
      (palm + ["--output", "x.json"], "--threads and --output belong to --profile"),
      (palm + ["--top", "3"], "--top needs --chips"),
      (palm + ["--chips", "6144", "--sensitivity"], "--sensitivity applies to one setting"),
      (palm + ["--threads-per-device", "2"], "--threads-per-device applies to CPU hardware only"),
      (["--config", "palm-540b", "--mesh", "pod=2,data=256,model=12", "--hardware", "tpu-v3", "--no-calibration"], "carries no published runs"),
      (["--profile", "--output", "x.json", "--no-calibration"], "--no-calibration would be ignored"),
      (["--profile", "--output", "x.json", "--devices", "mpi"], "--devices would be ignored"),
      (palm + ["--devices", "mpi"], "--devices applies to CPU hardware only"),
    ]
    for (args, message) in cases {
      let r = try plan(args)
      #expect(r.status == 1 || r.status == 64, "\(args): status \(r.status)")
      #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
      #expect(r.stderr.split(separator: "\n").count <= 3, "\(args): \(r.stderr)")
    }
  }

  @Test func helpTeaches() throws {
    let r = try plan(["--help"])
    #expect(r.status == 0)
    #expect(r.stdout.contains("Examples:") && r.stdout.contains("--chips") && r.stdout.contains("tpu-v4"))
  }
}
