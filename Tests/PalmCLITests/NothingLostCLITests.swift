// NothingLostCLITests: palm train never destroys what a user made and never traps on a number:
// an output path naming the data (however spelled) or an existing log is refused before any work,
// two runs cannot share a checkpoint directory (flock; a killed holder frees it), a byte-data run
// with a vocabulary below 256 fails before its first checkpoint, an infinite --time-budget is one
// line instead of a trap in the ETA, and palm eval's --batch is bounded by the file and the memory.
import Foundation
import PalmTrain
import Testing
import _PalmTestSupport

@Suite("palm train: nothing lost, nothing trapped", .serialized)
struct NothingLostCLITests {
  let dir: String
  let micro = #"{"name":"micro","dModel":32,"layers":1,"heads":2,"headDim":16,"dFF":64,"vocab":256,"seqLen":32,"batch":2}"#

  init() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-lost-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
    // Pseudo-random letters: a text the model cannot learn fast (a repeated line drives the loss
    // down until the spike rule gives the long run up).
    var state: UInt64 = 0x9E37_79B9
    let text = (0..<9000).map { _ -> UInt8 in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt8(97 + Int(state >> 59) % 26)
    }
    try Data(text).write(to: URL(fileURLWithPath: dir + "/data.txt"))
    try micro.write(toFile: dir + "/micro.json", atomically: true, encoding: .utf8)
    try micro.replacingOccurrences(of: "\"vocab\":256", with: "\"vocab\":100").write(toFile: dir + "/v100.json", atomically: true, encoding: .utf8)
  }

  func palm(_ args: [String]) throws -> (status: Int32, out: String) {
    let absolute = args.map { $0.hasPrefix("@") ? dir + "/" + $0.dropFirst() : $0 }
    let r = try runProgramSplit(palmBinary!, absolute, deadline: 120,
                                environment: ["TMPDIR": dir + "/tmp/", "KMP_BLOCKTIME": "0", "PALM_PEAK_GFLOPS": "10"])
    return (r.status, r.stdout + r.stderr)
  }

  func train(_ extra: [String]) throws -> (status: Int32, out: String) {
    try palm(["train", "--config-file", "@micro.json", "--data", "@data.txt", "--threads", "1"] + extra)
  }

  func contents(_ name: String) -> Data? { FileManager.default.contents(atPath: dir + "/" + name) }

  @Test("--log or --plot naming the data (another spelling too), or an existing log: refused, files unchanged")
  func outputsNeverOverwriteInputs() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let data = contents("data.txt")
    for (flag, path) in [("--log", "@data.txt"), ("--plot", "@./data.txt"), ("--log", "@tmp/../data.txt")] {
      let r = try train(["--steps", "2", flag, path])
      #expect(r.status == 1 && r.out.contains("is the --data file"), "\(flag) \(path): \(r.out)")
      #expect(contents("data.txt") == data, "\(flag) \(path) changed the data")
    }
    try "my notes\n".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
    let r = try train(["--steps", "2", "--log", "@notes.txt"])
    #expect(r.status == 1 && r.out.contains("already holds 9 bytes") && r.out.contains("--resume"), "\(r.out)")
    #expect(contents("notes.txt") == Data("my notes\n".utf8))
    let same = try train(["--steps", "2", "--log", "@m.jsonl", "--plot", "@m.jsonl"])
    #expect(same.status == 1 && same.out.contains("the same file"), "\(same.out)")
    // A first run writes its log; the same command again is refused, the first log kept.
    #expect(try train(["--steps", "2", "--log", "@m.jsonl"]).status == 0)
    let first = contents("m.jsonl")
    #expect(try train(["--steps", "2", "--log", "@m.jsonl"]).status == 1)
    #expect(contents("m.jsonl") == first && first?.isEmpty == false)
  }

  @Test("a second run into a checkpoint directory in use is refused naming the holder; a killed holder frees it")
  func oneRunPerCheckpointDirectory() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: palmBinary!)
    p.arguments = ["train", "--config-file", dir + "/micro.json", "--data", dir + "/data.txt", "--threads", "1",
                   "--steps", "100000000", "--checkpoint-dir", dir + "/ck", "--checkpoint-every", "100000000", "--log", dir + "/m.jsonl"]
    p.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": dir + "/tmp/", "KMP_BLOCKTIME": "0", "PALM_PEAK_GFLOPS": "10"]) { $1 }
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    let start = Date()
    while !MetricsLog.read(path: dir + "/m.jsonl").contains(where: { $0.type == "step" }) && p.isRunning
            && Date().timeIntervalSince(start) < 60 { usleep(10_000) }
    #expect(p.isRunning, "the first run ended early")
    // --resume passes the "holds another run" check: only the lock stops this one.
    let second = try train(["--steps", "3", "--checkpoint-dir", "@ck", "--resume", "--allow-changed-settings"])
    #expect(second.status == 1 && second.out.contains("in use by a running palm train (pid \(p.processIdentifier))"), "\(second.out)")
    kill(p.processIdentifier, SIGKILL)
    while p.isRunning { usleep(10_000) }
    let after = try train(["--steps", "3", "--checkpoint-dir", "@ck", "--resume", "--allow-changed-settings"])
    #expect(after.status == 0, "\(after.out)")
  }

  @Test("byte data with vocab < 256 fails before the first checkpoint; --time-budget inf is one line")
  func earlyRefusals() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let v = try palm(["train", "--config-file", "@v100.json", "--data", "@data.txt", "--threads", "1", "--steps", "1", "--checkpoint-dir", "@ckv"])
    #expect(v.status == 1 && v.out.contains("vocab is 100") && v.out.contains(">= 256"), "\(v.out)")
    let held = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/ckv"))?.filter { $0.hasPrefix("step_") } ?? []
    #expect(held.isEmpty, "a checkpoint was written: \(held)")
    for budget in ["inf", "1e300"] {
      let r = try train(["--time-budget", budget])
      #expect(r.status == 1 && r.out.contains("time budget must be in"), "\(budget): \(r.out)")
    }
    let skip = try train(["--steps", "2", "--spike-skip", "9223372036854775807"])
    #expect(skip.status == 1 && skip.out.contains("skip in 0..."), "\(skip.out)")
  }

  @Test("palm eval: a --batch far beyond the file is bounded by its windows, not an out-of-memory trap")
  func evalBatchBounded() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try train(["--steps", "2", "--checkpoint-dir", "@ck"]).status == 0)
    let r = try palm(["eval", "--checkpoint", "@ck", "--data", "@data.txt", "--threads", "1", "--batch", "16777216"])
    #expect(r.status == 0 && r.out.contains("bits per byte"), "\(r.out)")
  }
}
