// HostileInputTests: the built `palm` executable on the inputs of issue 13 and the classes they
// stand for, as a hostile or careless user would give them. Each case checks the exit code (1, or
// 64 for a usage error: never a trap, whose signal the status would show), the one error line,
// and the files on disk before and after. Preemption (SIGTERM / SIGINT) uses the
// PALM_FAULT_SIGNAL drill, so no case depends on timing.
import Foundation
import PalmModel
import PalmTrain
import Testing
import _PalmTestSupport

/// Deterministic bytes over the whole byte range.
private func bytes(_ count: Int) -> [UInt8] {
  var state: UInt64 = 0x9E37_79B9
  return (0..<count).map { i in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return UInt8(truncatingIfNeeded: Int(state >> 56) ^ (i % 13))
  }
}

/// A fresh directory holding data.txt.
private func workspace() throws -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-cli-\(UUID().uuidString)").path
  try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
  try Data(bytes(20_000)).write(to: URL(fileURLWithPath: dir + "/data.txt"))
  return dir
}

/// Every file under `dir` with its bytes, and every directory (to show nothing on disk changed).
private func snapshot(_ dir: String) -> [String: Data] {
  var out: [String: Data] = [:]
  let fm = FileManager.default
  for p in (fm.enumerator(atPath: dir)?.allObjects as? [String]) ?? [] {
    var isDir: ObjCBool = false
    if fm.fileExists(atPath: "\(dir)/\(p)", isDirectory: &isDir) { out[p] = isDir.boolValue ? Data("dir".utf8) : fm.contents(atPath: "\(dir)/\(p)") }
  }
  return out
}

/// A tiny model on 4 sequences of 32 bytes, one thread, no peak probe.
private let tiny = ["--config", "tiny", "--batch", "4", "--seq-len", "32", "--eval-every", "0", "--eval-windows", "1",
                    "--peak-gflops", "100", "--threads", "1"]

/// Runs palm in `dir` (paths relative to it) with TMPDIR = dir/tmp.
private func palm(_ dir: String, _ args: [String], environment: [String: String] = [:])
  throws -> (status: Int32, stdout: String, stderr: String) {
  let absolute = args.map { $0.hasPrefix("@") ? dir + "/" + $0.dropFirst() : $0 }
  return try runProgramSplit(palmBinary!, absolute, deadline: 120,
                             environment: environment.merging(["TMPDIR": dir + "/tmp/"]) { $1 })
}

/// The one error line of a refused command, after checking that it is refused cleanly.
private func refusal(_ r: (status: Int32, stdout: String, stderr: String), sourceLocation: SourceLocation = #_sourceLocation) -> String {
  let all = r.stdout + r.stderr
  #expect(r.status == 1 || r.status == 64, "exit \(r.status): \(all)", sourceLocation: sourceLocation)
  let errors = all.split(separator: "\n").filter { $0.contains("rror") }
  #expect(errors.count == 1, "\(all)", sourceLocation: sourceLocation)
  #expect(!all.contains("Fatal error") && !all.contains("backtrace") && !all.contains("Stack dump"), "\(all)",
          sourceLocation: sourceLocation)
  return errors.first.map(String.init) ?? ""
}

/// Step losses by step, from a metrics log (the last record of each step).
private func losses(_ path: String) -> [Int: Double] {
  var out: [Int: Double] = [:]
  for r in MetricsLog.read(path: path) where r.type == "step" { out[r.step] = r.loss }
  return out
}

@Suite("palm CLI: hostile input", .serialized,
       .enabled(if: palmBinary != nil, "needs the palm executable next to the tests (swift build --build-tests builds it)"))
struct HostileInputTests {
  @Test("bad sizes and values: one line naming the problem, exit 1 or 64, nothing written",
        arguments: [
          (["--steps", "-1"], "steps must be >= 0 (got -1)"),
          (["--steps", "1", "--lr", "-2e-3"], "must be finite and >= 0"),
          (["--steps", "1", "--weight-decay", "-1"], "weight decay -1.0 must be >= 0"),
          (["--steps", "1", "--threads", "3000000000"], "--threads must be 1..."),
          (["--steps", "1", "--threads", "1000"], "--threads must be 1..."),
          (["--steps", "1", "--micro-batches", "9223372036854775807"], "micro-batches must be in 1...1048576"),
          (["--steps", "1", "--micro-batches", "1048576", "--batch", "16777216"], "more than 2^40 tokens"),
          (["--steps", "1", "--batch", "16777216"], "this machine has"),
          (["--steps", "1", "--data", "/dev/null"], "is not a regular file"),  // as /dev/stdin on a pipe or terminal
          (["--steps", "1", "--plot", "@tmp"], "is a directory"),
          (["--steps", "1", "--resume", "--checkpoint-dir", "@typo"], "does not exist (drop --resume"),
          // Flags only another setting reads: refused, never accepted and ignored.
          (["--steps", "1", "--optimizer", "adafactor", "--weight-decay", "0.5"], "--weight-decay is AdamW's"),
          (["--steps", "1", "--schedule", "constant", "--warmup", "10"], "--warmup is the cosine schedule's"),
          (["--steps", "1", "--optimizer", "adafactor", "--warmup", "10"], "the palm schedule has none"),
          (["--steps", "1", "--constant-steps", "5"], "--constant-steps is the palm schedule's"),
          (["--steps", "1", "--keep", "2"], "--keep needs --checkpoint-dir"),
          (["--steps", "1", "--comm-timeout", "5"], "--comm-timeout needs --mesh"),
          (["--steps", "1", "--print-every", "0"], "--print-every must be at least 1"),
          (["--steps", "1", "--peak-gflops", "0"], "--peak-gflops must be a positive number"),
          (["--steps", "1", "--peak-gflops", "inf"], "--peak-gflops must be a positive number"),
          (["--steps", "1", "--warmup", "5"], "--warmup 5 must be below --steps 1"),
          (["--steps", "1", "--phase-timeout", "60"], "--phase-timeout needs --mesh"),
          (["--steps", "1", "--mesh", "data=2", "--phase-timeout", "0"], "--phase-timeout must be > 0 seconds"),
          (["--steps", "1", "--mesh", "data=2", "--phase-timeout", "10"], "is shorter than --comm-timeout 300.0"),
        ])
  func badValues(extra: [String], fragment: String) throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let before = snapshot(dir)
    var args = ["train", "--data", "@data.txt"] + tiny
    // A later option wins over the same earlier one (--threads, --batch, --data).
    args += extra
    let line = refusal(try palm(dir, args))
    #expect(line.contains(fragment), "\(line)")
    #expect(snapshot(dir) == before)
  }

  @Test("sizes that cannot be allocated: palm-540b, a config file whose sizes overflow, bench matmul -1")
  func impossibleSizes() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let before = snapshot(dir)
    let big = refusal(try palm(dir, ["train", "--config", "palm-540b", "--data", "@data.txt", "--steps", "1", "--threads", "1"]))
    #expect(big.contains("training palm-540b") && big.contains("TiB, this machine has"), "\(big)")
    let cfg = #"{"name":"huge","dModel":16777216,"layers":16777216,"heads":16,"headDim":64,"dFF":16777216,"vocab":256,"seqLen":32,"batch":4}"#
    try Data(cfg.utf8).write(to: URL(fileURLWithPath: dir + "/huge.json"))
    let snap = snapshot(dir)
    let overflow = refusal(try palm(dir, ["train", "--config-file", "@huge.json", "--data", "@data.txt", "--steps", "1"]))
    #expect(overflow.contains("would be more than 2^48 floats"), "\(overflow)")
    #expect(snapshot(dir) == snap)
    let matmul = refusal(try palm(dir, ["bench", "matmul", "--m", "-1", "--n", "2", "--k", "2"]))
    #expect(matmul.contains("--m must be at least 1 (got -1)"), "\(matmul)")
    _ = before
  }

  @Test("a new run into another run's directory is refused; nothing changes, the log is not truncated; --log makes its directories")
  func otherRunsDirectory() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let first = try palm(dir, ["train", "--data", "@data.txt", "--steps", "2", "--seed", "7", "--checkpoint-dir", "@runs/x",
                               "--log", "@logs/a/m.jsonl"] + tiny)
    #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
    #expect(MetricsLog.read(path: dir + "/logs/a/m.jsonl").count == 3)
    let before = snapshot(dir)
    let line = refusal(try palm(dir, ["train", "--data", "@data.txt", "--steps", "2", "--checkpoint-dir", "@runs/x",
                                      "--log", "@logs/a/m.jsonl"] + tiny))
    #expect(line == "Error: \(dir)/runs/x holds another run (step 2, seed 7): pass --resume to continue it, or another --checkpoint-dir", "\(line)")
    #expect(snapshot(dir) == before)

    // --resume with other settings: refused, listing them; allowed with the flag.
    let changed = refusal(try palm(dir, ["train", "--data", "@data.txt", "--steps", "2", "--checkpoint-dir", "@runs/x",
                                         "--resume", "--lr", "1e-3", "--seed", "8"] + tiny))
    #expect(changed.contains("seed 7 -> 8") && changed.contains("lr 0.002 -> 0.001") && changed.contains("--allow-changed-settings"),
            "\(changed)")
    #expect(snapshot(dir) == before)
    let allowed = try palm(dir, ["train", "--data", "@data.txt", "--steps", "3", "--checkpoint-dir", "@runs/x", "--resume",
                                 "--allow-changed-settings", "--seed", "7", "--schedule", "constant"] + tiny)
    #expect(allowed.status == 0 && allowed.stderr.contains("continuing") && allowed.stderr.contains("schedule cosine -> constant"),
            "\(allowed.stdout)\(allowed.stderr)")
    #expect(FileManager.default.fileExists(atPath: dir + "/runs/x/step_00000003/manifest.json"))
  }

  @Test("hand-edited manifests: recent_losses -1 / NaN / 1e300 on --resume, d_model 2^24 and vocab 300 on palm sample")
  func hostileManifests() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let run = try palm(dir, ["train", "--data", "@data.txt", "--steps", "1", "--checkpoint-dir", "@ck"] + tiny)
    #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
    let store = CheckpointStore(directory: dir + "/ck")
    /// Rewrites every manifest of the directory with `edit` applied.
    func edit(_ change: (inout [String: Any]) -> Void) throws {
      for (_, path) in store.stepDirectories() {
        let url = URL(fileURLWithPath: path + "/manifest.json")
        var m = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        change(&m)
        try JSONSerialization.data(withJSONObject: m).write(to: url)
      }
    }
    for value in [-1, "nan", 1e300] as [Any] {
      try edit { m in var x = m["metrics"] as! [String: Any]; x["recent_losses"] = value; m["metrics"] = x }
      let before = snapshot(dir)
      let line = refusal(try palm(dir, ["train", "--data", "@data.txt", "--steps", "2", "--checkpoint-dir", "@ck", "--resume"] + tiny))
      #expect(line.contains("is corrupt") && line.contains("recent_losses"), "\(line)")
      #expect(snapshot(dir) == before)
    }
    try edit { m in var x = m["metrics"] as! [String: Any]; x["recent_losses"] = 1; m["metrics"] = x
      var c = m["config"] as! [String: Any]; c["dModel"] = 1 << 24; m["config"] = c }
    let huge = refusal(try palm(dir, ["sample", "--checkpoint", "@ck", "--max-tokens", "2", "--threads", "1"]))
    #expect(huge.contains("needs") && huge.contains("this machine has"), "\(huge)")

    // A model of vocab 300 trains (bytes are below 300), but palm sample decodes bytes.
    let cfg = #"{"name":"v300","dModel":32,"layers":1,"heads":2,"headDim":16,"dFF":64,"vocab":300,"seqLen":32,"batch":4}"#
    try Data(cfg.utf8).write(to: URL(fileURLWithPath: dir + "/v300.json"))
    let v = try palm(dir, ["train", "--config-file", "@v300.json", "--data", "@data.txt", "--steps", "1", "--checkpoint-dir", "@v",
                           "--eval-every", "0", "--eval-windows", "1", "--peak-gflops", "100", "--threads", "1"])
    #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
    let vocab = refusal(try palm(dir, ["sample", "--checkpoint", "@v", "--max-tokens", "2", "--threads", "1"]))
    #expect(vocab.contains("vocabulary of 300 tokens"), "\(vocab)")
    // Greedy decoding reads neither --top-k nor --seed: refused, not ignored (before the checkpoint is read).
    let greedy = refusal(try palm(dir, ["sample", "--checkpoint", "@v", "--temperature", "0", "--top-k", "5"]))
    #expect(greedy.contains("--temperature 0 is greedy"), "\(greedy)")
    // bench kernels --precision reaches attention only: without an attention kernel it is refused.
    let kprec = refusal(try palm(dir, ["bench", "kernels", "--config", "tiny", "--kernels", "layernorm.forward", "--precision", "bf16"]))
    #expect(kprec.contains("changes only attention"), "\(kprec)")
  }

  @Test("no temporary checkpoint is left behind without --checkpoint-dir: on success, on an error, on SIGTERM")
  func noTemporaryLeftovers() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let ok = try palm(dir, ["train", "--data", "@data.txt", "--steps", "2"] + tiny)
    #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp") == [])
    _ = refusal(try palm(dir, ["train", "--data", "@data.txt", "--steps", "2", "--log", "/proc/palm-test/m.jsonl"] + tiny))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp") == [])
    let term = try palm(dir, ["train", "--data", "@data.txt", "--steps", "4"] + tiny, environment: ["PALM_FAULT_SIGNAL": "1:15:1"])
    #expect(term.status == 143 && term.stderr.contains("SIGTERM: stopped at step 1, no --checkpoint-dir, nothing saved"),
            "\(term.status) \(term.stderr)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp") == [])
  }

  @Test("SIGTERM finishes the update in flight, checkpoints, exits 143 (on a mesh too), and --resume continues to the uninterrupted run's losses; a second SIGINT exits 130 at once with the last checkpoint intact")
  func preemption() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let common = ["train", "--data", "@data.txt", "--steps", "4", "--checkpoint-every", "0"] + tiny
    let reference = try palm(dir, common + ["--log", "@ref.jsonl"])
    #expect(reference.status == 0, "\(reference.stdout)\(reference.stderr)")
    let stopped = try palm(dir, common + ["--checkpoint-dir", "@ck", "--log", "@m.jsonl"], environment: ["PALM_FAULT_SIGNAL": "2:15:1"])
    #expect(stopped.status == 143, "\(stopped.status) \(stopped.stderr)")
    #expect(stopped.stderr.contains("palm train: SIGTERM: stopped at step 2, checkpoint \(dir)/ck/step_00000002 written"), "\(stopped.stderr)")
    #expect(CheckpointStore(directory: dir + "/ck").latest()?.manifest.step == 2)
    let resumed = try palm(dir, common + ["--checkpoint-dir", "@ck", "--log", "@m.jsonl", "--resume"])
    #expect(resumed.status == 0 && resumed.stderr.contains("resumed from step 2"), "\(resumed.stdout)\(resumed.stderr)")
    let want = losses(dir + "/ref.jsonl"), got = losses(dir + "/m.jsonl")
    #expect(want.count == 4 && got.mapValues(\.bitPattern) == want.mapValues(\.bitPattern), "\(want) vs \(got)")

    // On a mesh every rank stops at the same update (rank 0's request is broadcast).
    let mesh = try palm(dir, common + ["--checkpoint-dir", "@ckm", "--mesh", "data=2", "--devices", "local"],
                        environment: ["PALM_FAULT_SIGNAL": "1:15:1"])
    #expect(mesh.status == 143 && mesh.stdout.contains("[rank 1/2] done: step 1"), "\(mesh.status) \(mesh.stdout)\(mesh.stderr)")
    #expect(CheckpointStore(directory: dir + "/ckm").latest()?.manifest.step == 1)

    let twice = try palm(dir, common + ["--checkpoint-dir", "@ck2"], environment: ["PALM_FAULT_SIGNAL": "1:2:2"])
    #expect(twice.status == 130 && twice.stderr.contains("second signal (SIGINT): exiting now"), "\(twice.status) \(twice.stderr)")
    #expect(CheckpointStore(directory: dir + "/ck2").latest()?.manifest.step == 0)
  }

  /// Issue 13 item 14: the data file was memory-mapped, so truncating it during a run killed
  /// `palm train` with SIGBUS (exit by signal, no message). Now the next batch fails with one line.
  @Test("the data file truncated during palm train: exit 1 with one line naming the file and --resume, no SIGBUS")
  func dataTruncatedDuringRun() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: palmBinary!)
    p.arguments = ["train", "--data", dir + "/data.txt", "--steps", "1000000", "--log", dir + "/m.jsonl"] + tiny
    p.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": dir + "/tmp/", "KMP_BLOCKTIME": "0"]) { $1 }
    #expect(FileManager.default.createFile(atPath: dir + "/out.txt", contents: nil))
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out.txt"))
    p.standardOutput = out
    p.standardError = out
    try p.run()
    // Foundation reaps the child itself: poll isRunning (waitpid here would race it).
    let start = Date()
    // Truncate once the run has made a step (the file is open and read by then).
    while !MetricsLog.read(path: dir + "/m.jsonl").contains(where: { $0.type == "step" }) && Date().timeIntervalSince(start) < 60
            && p.isRunning {
      usleep(10_000)
    }
    #expect(p.isRunning, "palm train ended before the truncation")
    #expect(truncate(dir + "/data.txt", 100) == 0)
    while p.isRunning && Date().timeIntervalSince(start) < 90 { usleep(10_000) }
    let ended = !p.isRunning
    if !ended { kill(p.processIdentifier, SIGKILL) }
    while p.isRunning { usleep(10_000) }
    try out.close()
    let output = String(decoding: FileManager.default.contents(atPath: dir + "/out.txt") ?? Data(), as: UTF8.self)
    #expect(ended, "still running 90 s after the truncation: \(output)")
    // Exited (not ended by a signal: SIGBUS before) with status 1.
    #expect(p.terminationReason == .exit && p.terminationStatus == 1,
            "\(p.terminationReason == .exit ? "exit" : "signal") \(p.terminationStatus): \(output)")
    let errors = output.split(separator: "\n").filter { $0.contains("rror") }
    #expect(errors.count == 1, "\(output)")
    #expect(errors.first?.contains("dataset \(dir)/data.txt changed while in use: it is now 100 bytes, it was 20000") == true
            && errors.first?.contains("--resume") == true, "\(output)")
  }

  @Test("palm data fetch: --max-bytes below the data set's size, or not positive: one line, nothing created")
  func dataFetchCap() throws {
    let dir = try workspace()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let before = snapshot(dir)
    let small = refusal(try palm(dir, ["data", "fetch", "tinyshakespeare", "--cache-dir", "@cache", "--max-bytes", "1000",
                                       "--url", "http://127.0.0.1:1/none"]))
    #expect(small.contains("data set tinyshakespeare is 1115394 bytes, more than --max-bytes 1000: raise --max-bytes to at least 1115394"),
            "\(small)")
    let zero = refusal(try palm(dir, ["data", "fetch", "tinyshakespeare", "--cache-dir", "@cache", "--max-bytes", "-5"]))
    #expect(zero.contains("--max-bytes must be at least 1 (got -5)"), "\(zero)")
    #expect(snapshot(dir) == before)
  }
}
