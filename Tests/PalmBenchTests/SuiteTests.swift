// SuiteTests: `palm bench` end to end in smoke mode (micro config, one sample): every file is
// written, atomically, and decodes; the step JSON line; GEMM figures; the CLI rejects bad input.

import Foundation
import Testing
import PalmBench
import PalmModel
import _PalmTestSupport

@Suite struct SuiteTests {
  static let expectedFiles = ["machine.json", "roofs.jsonl", "gemm.jsonl", "kernels.jsonl", "steps.jsonl",
                              "mesh.jsonl", "decode.jsonl", "mfu.json", "mfu.svg", "roofline.svg", "report.md"]

  func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-suite-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  @Test func smokeSuiteWritesEveryFileAtomicallyAndTheyDecode() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let out = dir + "/run"
    let lines = LineSink()
    var o = Suite.Options.smoke(outDir: out, peak: .fixed(perThreadGFLOPs: 100))
    o.progress = { lines.append($0) }
    let t0 = Date()
    let outcome = try withKernelLock { try Suite.run(o) }
    #expect(Date().timeIntervalSince(t0) < 60)
    #expect(Set(outcome.files.map { ($0 as NSString).lastPathComponent }) == Set(Self.expectedFiles))
    // Written atomically: only the final names are left, no temporary files.
    let listing = try FileManager.default.contentsOfDirectory(atPath: out)
    #expect(Set(listing) == Set(Self.expectedFiles), "\(listing)")
    #expect(lines.count >= 6)
    #expect(lines.all.allSatisfy { $0.hasPrefix("[") })

    func read(_ name: String) throws -> String { try String(contentsOfFile: out + "/" + name, encoding: .utf8) }
    let roofs = try JSONLines.decode(Suite.Roofs.self, from: try read("roofs.jsonl"))
    #expect(roofs.count == 1 && roofs[0].peakGFLOPs == 100 && roofs[0].triadGBs > 0)
    let kernels = try JSONLines.decode(KernelBench.Result.self, from: try read("kernels.jsonl"))
    #expect(kernels.count == KernelBench.Kernel.allCases.count)
    #expect(kernels.allSatisfy { $0.roofline != nil })
    let gemm = try JSONLines.decode(GEMMStage.Result.self, from: try read("gemm.jsonl"))
    #expect(gemm.count == 3 && gemm.allSatisfy { $0.gflops > 0 && $0.fractionOfPeak != nil })
    let steps = try JSONLines.decode(StepRuns.Measured.self, from: try read("steps.jsonl"))
    #expect(steps.map(\.result.remat) == RematPolicy.allCases)
    for s in steps {
      #expect(s.foreignCPU == nil)  // runs of milliseconds: too short for /proc/stat's 10 ms ticks
      let row = try #require(s.row)
      #expect(abs(row.mfu - s.result.tokensPerSecond * s.result.modelFLOPsPerToken / 100e9) <= 1e-12)
      #expect(row.hfu >= row.mfu * 0.9)
    }
    let rows = try JSONDecoder().decode([MFUTable.Row].self, from: Data(try read("mfu.json").utf8))
    #expect(rows.filter { if case .measured = $0 { true } else { false } }.count == 3)
    _ = try JSONLines.decode(Suite.Machine.self, from: try read("machine.json"))
    // The mesh row: two pods of the one Trainer, MFU against the peak of all their threads.
    let mesh = try JSONLines.decode(Suite.MeshRow.self, from: try read("mesh.jsonl"))
    #expect(mesh.count == 1 && mesh[0].tokensPerSecond > 0 && mesh[0].plannedBytesPerRank > 0)
    #expect(mesh[0].exchangeHidden != nil && mesh[0].precision == "fp32" && mesh[0].peakPrecision == "fp32")
    // Divided by the peak of all the mesh's threads: two pods × 1 thread at 100 GFLOP/s each.
    let micro = o.meshRuns[0].config
    #expect(abs(try #require(mesh[0].mfu) - FLOPs.modelPerToken(micro) * mesh[0].tokensPerSecond / 200e9) <= 1e-12)
    let report = try read("report.md")
    for heading in ["## Peak and memory bandwidth", "## GEMM", "## Kernels and roofline", "## Training steps",
                    "### Part one", "### Part two", "| micro | fp32 | full |", "## Meshes", "| micro | pod=2,data=1,model=1 | full |", "## Decoding", "| micro | 1 | 8 |"] {
      #expect(report.contains(heading), "\(heading)")
    }
    #expect(try read("roofline.svg").hasSuffix("</svg>\n"))

    // A second run into the same folder is refused (it would overwrite this run's files): they stay as they were.
    let before = try read("report.md")
    #expect(throws: Suite.OutDirError.self) { try withKernelLock { try Suite.run(o) } }
    #expect(Set(try FileManager.default.contentsOfDirectory(atPath: out)) == Set(Self.expectedFiles))
    #expect(try read("report.md") == before)
  }

  @Test("--precision bf16 reaches the mesh rows: labelled bf16 and divided by the bf16 peak of all the mesh's threads")
  func bf16MeshRows() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var o = Suite.Options.smoke(outDir: dir, peak: .fixed(perThreadGFLOPs: 100, bf16PerThreadGFLOPs: 250))
    o.precisions = [.bf16]
    _ = try withKernelLock { try Suite.run(o) }
    let mesh = try JSONLines.decode(Suite.MeshRow.self, from: try String(contentsOfFile: dir + "/mesh.jsonl", encoding: .utf8))
    #expect(mesh.count == 1 && mesh[0].precision == "bf16" && mesh[0].peakPrecision == "bf16", "\(mesh)")
    let micro = o.meshRuns[0].config
    #expect(abs(try #require(mesh[0].mfu) - FLOPs.modelPerToken(micro) * mesh[0].tokensPerSecond / 500e9) <= 1e-12)
    let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
    #expect(report.contains("| micro | pod=2,data=1,model=1 | full | bf16 | bf16 |"), "\(report)")
  }

  @Test func unknownPeakSkipsMFUAndTheRooflineChart() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let o = Suite.Options.smoke(outDir: dir, peak: PeakSource(name: "none") { _ in nil })
    let outcome = try withKernelLock { try Suite.run(o) }
    #expect(!outcome.files.contains { $0.hasSuffix("roofline.svg") })
    #expect(outcome.steps.allSatisfy { $0.row == nil })
    #expect(outcome.kernels.allSatisfy { $0.roofline == nil })
    #expect(outcome.mfuMarkdown.contains("No measured rows"))
  }

  @Test func theTimeBudgetSkipsRunsThatWouldNotFitAndSaysSo() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var o = Suite.Options.smoke(outDir: dir, peak: .fixed(perThreadGFLOPs: 100))
    o.timeBudgetSeconds = 0  // already over: only the first run of each config × threads starts
    let outcome = try withKernelLock { try Suite.run(o) }
    #expect(outcome.steps.map(\.result.remat) == [.none])
    let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
    #expect(report.contains("Skipped to stay within the time budget") && report.contains("micro fp32 selective 1T, micro fp32 full 1T"))
  }

  /// A peak far below what the run achieves (as when the probe ran while the machine was busy)
  /// gives MFU above 100%: the suite must say the figures are not a measurement, in the outcome
  /// and at the top of the report.
  @Test func impossibleUtilizationIsFlagged() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let o = Suite.Options.smoke(outDir: dir, peak: .fixed(perThreadGFLOPs: 1e-6))
    let outcome = try withKernelLock { try Suite.run(o) }
    let warning = try #require(outcome.warning)
    #expect(warning.contains("above 100%") && warning.contains("micro none 1T"))
    let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
    #expect(report.contains("**WARNING: these figures do not measure palm alone."))
  }

  @Test func anOutputPathThatIsAFileFails() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let file = dir + "/plain"
    #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
    #expect(throws: (any Error).self) { try withKernelLock { try Suite.run(Suite.Options.smoke(outDir: file + "/sub", peak: .fixed(perThreadGFLOPs: 1))) } }
  }

  /// A run never writes into another run's folder, nor into a file's path: refused before any
  /// stage, with one line naming --out, and nothing there changes.
  @Test func outDirMustBeNewOrEmpty() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let prev = dir + "/prev"
    try FileManager.default.createDirectory(atPath: prev, withIntermediateDirectories: true)
    #expect(FileManager.default.createFile(atPath: prev + "/report.md", contents: Data("mine".utf8)))
    let held = #expect(throws: Suite.OutDirError.self) { try Suite.run(Suite.Options.smoke(outDir: prev, peak: .fixed(perThreadGFLOPs: 1))) }
    #expect(held?.description.contains("--out \(prev) already holds 1 file(s)") == true, "\(String(describing: held))")
    #expect(try FileManager.default.contentsOfDirectory(atPath: prev) == ["report.md"])
    #expect(FileManager.default.contents(atPath: prev + "/report.md") == Data("mine".utf8))
    let file = dir + "/plain"
    #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
    let notDir = #expect(throws: Suite.OutDirError.self) { try Suite.prepareOutDir(file) }
    #expect(notDir?.description == "--out \(file) is a file, not a folder: give a new folder's path")
    // An empty folder (made by the CLI's own check, or by the user) is fine.
    try Suite.prepareOutDir(dir + "/empty")
    try Suite.prepareOutDir(dir + "/empty")
  }

  @Test func stepJSONLineDecodesAndCarriesMFU() throws {
    let c = PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 24, vocab: 11, seqLen: 5, batch: 2)
    let r = try StepBench.run(config: c, remat: .full, warmup: 0, steps: 1)
    let line = try StepRuns.jsonLine(r, config: c, peaks: .init(gflops: 50))
    #expect(!line.contains("\n"))
    let back = try JSONDecoder().decode(StepBench.Result.self, from: Data(line.utf8))
    #expect(back.tokensPerSecond == r.tokensPerSecond && back.remat == .full && back.precision == .fp32)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    let row = try #require(StepRuns.row(r, config: c, peaks: .init(gflops: 50)))
    // JSONSerialization prints the shortest round-trip form; allow its last-ulp difference.
    #expect(abs((object["mfu"] as? Double ?? 0) - row.mfu) <= 1e-15 * row.mfu)
    #expect(abs((object["hfu"] as? Double ?? 0) - row.hfu) <= 1e-15 * row.hfu)
    #expect(row.hfu > row.mfu * 0.99)
    #expect(object["peakPrecision"] as? String == "fp32" && object["mfuOfBF16Peak"] is NSNull)
    let unknown = try StepRuns.jsonLine(r, config: c, peaks: .init(gflops: nil))
    #expect(unknown.contains("\"mfu\":null"))
  }

  /// The decode bound: 4 bytes a parameter plus the mean KV cache, over the bandwidth.
  @Test func decodeBoundIsTheWeightsOverTheBandwidth() {
    let c = PalmConfig.shakespeare
    let r = DecodeBench.result(config: c, threads: 1, tokens: 100, seconds: 0.5, bandwidthGBs: 10)
    let bytes = 4 * Double(c.parameterCount) + 8 * Double(c.layers * c.headDim) * 50
    #expect(r.bytesPerToken == bytes && r.tokensPerSecond == 200)
    #expect(abs(r.boundTokensPerSecond - 1e10 / bytes) < 1e-9 && abs(r.fractionOfBound - 200 * bytes / 1e10) < 1e-12)
    #expect(DecodeBench.summary(r).contains("of the weight-bandwidth bound"))
  }

  /// Each run divides by its own precision's peak, and an fp32 run also reports, labelled, its MFU
  /// against the bf16 peak; where there is no bf16 unit a bf16 run falls back to the fp32 peak, named.
  @Test func utilizationDividesByThePeakOfTheRunsPrecision() throws {
    let c = PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 24, vocab: 11, seqLen: 5, batch: 2)
    let source = PeakSource.fixed(perThreadGFLOPs: 10, bf16PerThreadGFLOPs: 20)
    let r32 = try StepBench.run(config: c, remat: .none, threads: 1, warmup: 0, steps: 1)
    let r16 = try StepBench.run(config: c, remat: .none, threads: 1, warmup: 0, steps: 1, precision: .bf16)
    #expect(r16.precision == .bf16)
    let p32 = try StepRuns.Peaks.of(source, threads: 1, precision: .fp32)
    let p16 = try StepRuns.Peaks.of(source, threads: 1, precision: .bf16)
    #expect(p32 == StepRuns.Peaks(gflops: 10, precision: .fp32, bf16GFLOPs: 20))
    #expect(p16 == StepRuns.Peaks(gflops: 20, precision: .bf16, bf16GFLOPs: nil))
    let row32 = try #require(StepRuns.row(r32, config: c, peaks: p32))
    let row16 = try #require(StepRuns.row(r16, config: c, peaks: p16))
    #expect(row16.peakPrecision == .bf16 && row16.precision == .bf16 && row16.peakFLOPs == 20e9 && row16.mfuOfBF16Peak == nil)
    #expect(abs(row32.mfuOfBF16Peak! - row32.mfu / 2) <= 1e-12 * row32.mfu)
    #expect(StepRuns.utilizationText(r32, config: c, peaks: p32).contains("of the bf16 peak"))
    let none = try StepRuns.Peaks.of(.fixed(perThreadGFLOPs: 10), threads: 1, precision: .bf16)
    #expect(none == StepRuns.Peaks(gflops: 10, precision: .fp32, bf16GFLOPs: nil))
    #expect(StepRuns.utilizationText(r16, config: c, peaks: none).contains("bf16 emulated"))
    // The table labels every row's peak.
    let md = MFUTable.markdown(MFUTable.rows(measured: [row32, row16]))
    #expect(md.contains("| micro | bf16 | none | 1 |") && md.contains(" bf16 | ") && md.contains("MFU of bf16 peak"))
  }

  // MARK: - The command line (the built `palm` next to the test bundle)

  func palm(_ args: [String]) throws -> (status: Int32, stderr: String) {
    let exe = URL(fileURLWithPath: StepRuns.currentExecutable()).deletingLastPathComponent().appendingPathComponent("palm").path
    #expect(FileManager.default.isExecutableFile(atPath: exe), "palm not built at \(exe)")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let data = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
  }

  @Test(arguments: [
    (["bench", "kernels", "--repeats", "0"], "--repeats"),
    (["bench", "kernels", "--config", "palm-540b"], "--config"),
    (["bench", "kernels", "--kernels", "matmul"], "unknown kernel"),
    (["bench", "kernels", "--thread-list", "1,zero"], "--thread-list"),
    (["bench", "step", "--remat", "sometimes"], "--remat"),
    (["bench", "suite", "--steps", "0"], "--steps"),
    (["bench", "suite", "--time-budget", "-1"], "--time-budget"),
    (["bench", "--out", ""], "--out"),
    (["bench", "step", "--config", "micro"], "--config"),
    (["bench", "step", "--precision", "fp16"], "precision"),
    (["bench", "suite", "--precision", "fp32,fp16"], "--precision"),
    (["mfu-table", "--precision", "bf16"], "--measure"),
    (["train", "--precision", "half", "--steps", "1"], "precision"),
    (["eval", "--checkpoint", "/nonexistent/palm-ck", "--data", "/dev/null"], "no checkpoint in /nonexistent/palm-ck"),
  ])
  func badCommandLinesFailWithAMessage(args: [String], mentions: String) throws {
    let (status, stderr) = try palm(args)
    #expect(status != 0, "\(args)")
    #expect(stderr.contains(mentions), "\(args): \(stderr)")
  }

  /// The suite's child runs carry the precision: `palm bench step --precision bf16 --format json`
  /// reports a bf16 step, divided by the peak of its precision.
  @Test func aBF16ChildRunReportsItsPrecision() throws {
    let exe = URL(fileURLWithPath: StepRuns.currentExecutable()).deletingLastPathComponent().appendingPathComponent("palm").path
    var tiny = PalmConfig.tiny
    tiny.batch = 1
    let spec = StepRuns.Spec(config: tiny, remat: .none, threads: 1, warmup: 0, steps: 1, precision: .bf16)
    #expect(spec.arguments.contains("bf16"))
    let r = try StepRuns.childProcess(executable: exe)(spec)
    #expect(r.precision == .bf16 && r.config == "tiny" && r.lastLoss.isFinite)
  }

  @Test func aFailingChildRunIsReportedWithItsCommand() throws {
    let exe = URL(fileURLWithPath: StepRuns.currentExecutable()).deletingLastPathComponent().appendingPathComponent("palm").path
    let micro = PalmConfig(name: "micro", dModel: 16, layers: 1, heads: 2, headDim: 8, dFF: 24, vocab: 11, seqLen: 5, batch: 2)
    let runner = StepRuns.childProcess(executable: exe)
    do {
      _ = try runner(.init(config: micro, remat: .none, threads: 1, warmup: 0, steps: 1))
      Issue.record("a non-preset config must fail in the child")
    } catch let e as StepRuns.ChildFailure {
      #expect(e.status != 0 && e.command.contains("--config micro") && e.stderr.contains("--config"))
    }
  }
}

/// Collects progress lines from the suite.
final class LineSink: @unchecked Sendable {
  private let lock = NSLock()
  private var lines: [String] = []
  func append(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
  var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
  var count: Int { all.count }
}

/// bench/compare/compare.py (the peer comparison) against its stand-ins: standard library only.
@Suite struct CompareScriptTests {
  @Test func compareScriptPassesItsOwnTests() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let script = root.appendingPathComponent("bench/compare/test_compare.py").path
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script]
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    do { try p.run() } catch {
      print("SKIP compare.py tests: python3 not runnable (\(error))")
      return
    }
    let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "\(text)")
    #expect(text.contains("OK"), "\(text)")
  }
}
