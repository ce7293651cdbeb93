// BenchInputCLITests: the benchmark commands (`palm bench …`, `palm peak`, `palm mfu-table`,
// `palm plan --profile`) on hostile input: every refusal is one error line naming the option and
// its bound, at parse time (before any measuring), never a trap, an OpenMP abort or a hang; a
// suite never writes into another run's folder.
import Foundation
import Testing
import PalmBench
import _PalmTestSupport

@Suite(.enabled(if: palmBinary != nil, "needs the palm executable next to the tests (swift build --build-tests builds it)"))
struct BenchInputCLITests {
  private let dir: String = {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("palm-bench-input-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
  }()

  private func palm(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProgramSplit(palmBinary!, args.map { $0.hasPrefix("@") ? dir + "/" + $0.dropFirst() : $0 }, deadline: 60,
                        environment: ["KMP_BLOCKTIME": "0", "PALM_PEAK_GFLOPS": "10"])
  }

  /// The one error line of a refused command (exit 1 or 64, no trap).
  private func refusal(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let r = try palm(args)
    let all = r.stdout + r.stderr
    #expect(r.status == 1 || r.status == 64, "exit \(r.status): \(all)", sourceLocation: sourceLocation)
    let errors = all.split(separator: "\n").filter { $0.contains("rror") }
    #expect(errors.count == 1, "\(all)", sourceLocation: sourceLocation)
    #expect(!all.contains("Fatal error") && !all.contains("OMP") && !all.contains("backtrace"), "\(all)", sourceLocation: sourceLocation)
    return errors.first.map(String.init) ?? ""
  }

  static let huge = "4611686018427387904"
  static let step = ["bench", "step", "--config", "tiny", "--warmup", "0", "--steps", "1", "--batch", "2", "--seq-len", "8"]
  static let exchange = ["bench", "exchange", "--part", "pods", "--devices", "local", "--config", "tiny", "--batch", "2",
                         "--seq-len", "4", "--steps", "1", "--warmup", "0", "--rounds", "1"]
  static let collectives = ["bench", "exchange", "--part", "collectives", "--devices", "local", "--repeats", "1", "--max-bytes", "1024"]

  /// Every thread option shares the bound 1...4 × cores (it trapped in Int32(_:) or aborted OpenMP).
  @Test func threadOptionsAreBounded() throws {
    let bound = "1...\(ThreadCounts.maxThreads) (4 × the "
    let cases: [([String], String)] = [
      (["bench", "kernels", "--thread-list", Self.huge, "--config", "tiny", "--kernels", "layernorm.forward", "--repeats", "1"], "--thread-list must be "),
      (["bench", "kernels", "--thread-list", "\(ThreadCounts.maxThreads + 1)", "--config", "tiny"], "--thread-list must be "),
      (Self.step + ["--mesh", "pod=2", "--threads-per-rank", Self.huge], "--threads-per-rank must be "),
      (Self.exchange + ["--threads", Self.huge], "--threads must be "),
      (["plan", "--profile", "--threads", Self.huge, "--output", "@x.json"], "--threads must be "),
      (["bench", "suite", "--thread-list", "100000", "--out", "@s4"], "--thread-list must be "),
    ]
    for (args, prefix) in cases {
      let line = try refusal(args)
      #expect(line.contains(prefix + bound), "\(args): \(line)")
    }
    #expect(!FileManager.default.fileExists(atPath: dir + "/s4"))
  }

  /// --comm-timeout beyond a day trapped in NSCondition.wait(until:); 0 / nan named LocalCluster.
  @Test(arguments: ["1e300", "0", "nan", "-1"])
  func commTimeoutIsBounded(value: String) throws {
    for args in [Self.step + ["--mesh", "pod=2", "--comm-timeout", value], Self.collectives + ["--comm-timeout", value]] {
      let line = try refusal(args)
      #expect(line.contains("--comm-timeout must be in (0, 86400] seconds"), "\(line)")
    }
  }

  /// A peak that is no denominator (0, negative, nan, inf) is refused; a tiny one reports, never traps.
  @Test func peakMustBePositiveAndFinite() throws {
    for p in ["0", "-5", "nan", "inf"] {
      let line = try refusal(Self.step + ["--threads", "1", "--peak", p])
      #expect(line.contains("--peak must be a positive number of GFLOP/s"), "\(p): \(line)")
    }
    let tiny = try palm(Self.step + ["--threads", "1", "--peak", "1e-300"])
    #expect(tiny.status == 0 && tiny.stderr.contains("WARNING: MFU or HFU above 100%"), "\(tiny.stdout)\(tiny.stderr)")
  }

  /// `bench suite --out` never writes into a folder holding files, nor into a file's path.
  @Test func suiteOutMustBeNewOrEmpty() throws {
    try FileManager.default.createDirectory(atPath: dir + "/prev", withIntermediateDirectories: true)
    #expect(FileManager.default.createFile(atPath: dir + "/prev/report.md", contents: Data("mine".utf8)))
    let held = try refusal(["bench", "suite", "--smoke", "--out", "@prev"])
    #expect(held.contains("already holds 1 file(s)") && held.contains("new or empty folder"), "\(held)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/prev") == ["report.md"])
    let file = try refusal(["bench", "suite", "--smoke", "--out", "@prev/report.md"])
    #expect(file.contains("is a file, not a folder"), "\(file)")
    #expect(FileManager.default.contents(atPath: dir + "/prev/report.md") == Data("mine".utf8))
  }

  /// Options --smoke would ignore, an exchange cap that was silently applied, empty lists, output
  /// paths that fail only after the work, and counts that run forever: refused at once.
  @Test func ignoredOrUnboundedOptionsAreRefused() throws {
    let cases: [([String], String)] = [
      (["bench", "suite", "--smoke", "--out", "@s2", "--steps", "7"], "--steps does not apply to --smoke"),
      (["bench", "suite", "--smoke", "--out", "@s2", "--thread-list", "2"], "--thread-list does not apply to --smoke"),
      (["bench", "suite", "--smoke", "--out", "@s2", "--time-budget", "0.001"], "--time-budget does not apply to --smoke"),
      (Self.collectives.dropLast() + ["\(128 << 20)"], "--max-bytes must be 1024...67108864"),
      (Self.collectives + ["--child-timeout", "5"], "--child-timeout bounds the child mpirun of --devices mpi"),
      (Self.collectives.filter { $0 != "--devices" && $0 != "local" } + ["--devices", "mpi", "--child-timeout", "-5"], "--child-timeout must be in (0, 86400]"),
      (["bench", "kernels", "--config", ""], "--config must list tiny and/or small"),
      (["bench", "kernels", "--kernels", ""], "--kernels: unknown kernel"),
      (["bench", "kernels", "--kernels", ","], "--kernels: unknown kernel"),
      (["bench", "kernels", "--config", "tiny", "--kernels", "layernorm.forward", "--repeats", "1", "--thread-list", "1", "--svg", "@"], "--svg "),
      (["mfu-table", "--output", "@"], "--output "),
      (["plan", "--profile", "--threads", "1", "--output", "@"], "--output "),
      (Self.step + ["--steps", Self.huge], "--steps must be 1...10000"),
      (Self.step + ["--warmup", Self.huge], "--warmup 0...10000"),
      (["peak", "--repeat", Self.huge], "--repeat must be 1...10000"),
      (["bench", "matmul", "--m", "8", "--n", "8", "--k", "8", "--repeat", Self.huge], "--repeat must be 1...10000"),
    ]
    for (args, fragment) in cases {
      let line = try refusal(Array(args))
      #expect(line.contains(fragment), "\(args): \(line)")
    }
    #expect(!FileManager.default.fileExists(atPath: dir + "/s2"))
  }

  /// --isa scalar: the matmul's fraction of the one-lane peak is explained, never a bare >100%;
  /// `palm peak` prints no native bf16 peak for a level that emulates bf16.
  @Test func scalarLevelPeaksAreLabelled() throws {
    let m = try palm(["bench", "matmul", "--m", "64", "--n", "64", "--k", "64", "--threads", "1", "--repeat", "1", "--isa", "scalar"])
    #expect(m.status == 0, "\(m.stderr)")
    #expect(m.stderr.contains("the scalar GEMM is auto-vectorised (SSE2, 4 lanes)"), "\(m.stderr)")
    let p = try palm(["peak", "--isa", "scalar", "--threads", "1", "--repeat", "1"])
    #expect(p.status == 0, "\(p.stderr)")
    let row = p.stdout.split(separator: "\n").last.map(String.init) ?? ""
    #expect(row.hasSuffix("-"), "\(p.stdout)")  // no vdpbf16ps figure at the scalar level
  }
}
