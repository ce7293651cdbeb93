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

  @Test func searchInputIsBoundedAndHonoured() throws {
    let small = ["--config", "small", "--hardware", "a100"]
    let cases: [([String], String)] = [
      (small + ["--chips", "4611686018427387904"], "--chips must be 1...1048576"),
      (small + ["--chips", "7"], "no mesh of 7 devices fits small"),
      (small + ["--chips", "4", "--micro-batches", "4611686018427387904"], "--micro-batches must be 1...1048576"),
      (small + ["--mesh", "data=2", "--threads-per-device", "4611686018427387904"], "--threads-per-device must be 1...1048576"),
    ]
    for (args, message) in cases {
      let r = try plan(args)
      #expect(r.status == 1 || r.status == 64, "\(args): status \(r.status)")
      #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
    }
    // --top limits the JSON rows too, and the --mesh reference's rank is in it.
    let j = try plan(small + ["--chips", "4", "--format", "json", "--top", "1", "--mesh", "data=2,model=2"])
    #expect(j.status == 0, "\(j.stderr)")
    let o = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any]
    let rows = o?["rows"] as? [[String: Any]] ?? []
    #expect(rows.count == 2 && (o?["reference_rank"] as? Int ?? 0) > 1 && rows.last?["mesh"] as? String == "pod=1,data=2,model=2")
    // Without --mesh, --remat and --micro-batches narrow the search.
    let narrowed = try plan(small + ["--chips", "4", "--remat", "none", "--micro-batches", "2", "--format", "json"])
    let nrows = (try JSONSerialization.jsonObject(with: Data(narrowed.stdout.utf8)) as? [String: Any])?["rows"] as? [[String: Any]] ?? []
    #expect(!nrows.isEmpty && nrows.allSatisfy { $0["remat"] as? String == "none" && $0["microBatches"] as? Int == 2 })
  }

  @Test func helpTeaches() throws {
    let r = try plan(["--help"])
    #expect(r.status == 0)
    #expect(r.stdout.contains("Examples:") && r.stdout.contains("--chips") && r.stdout.contains("tpu-v4"))
  }
}
