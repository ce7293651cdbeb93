// MeshTrainTests: `palm train --mesh`. The one Trainer on a LocalCluster mesh equals the
// single-device Trainer; its checkpoints are the single-device layout in both directions
// ((1,2,2) mesh -> single-device Model, single-device checkpoint -> mesh resume); bad input is
// refused before any work. Then the palm executable itself: --devices local runs, bad meshes give
// one error line and a non-zero exit, bench step / bench exchange print their JSON, and a real
// `mpirun -np 2 palm train --mesh pod=2` when mpirun is available.

import Foundation
import PalmBench
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain
import Testing
import _PalmTestSupport

/// Bytes below the debug config's vocabulary (64), deterministic, with some structure.
private func syntheticBytes(_ count: Int, vocab: Int = 64) -> [UInt8] {
  var state: UInt64 = 0x1234_5678
  return (0..<count).map { i in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return UInt8((Int(state >> 59) + i % 7) % vocab)
  }
}

private func tempDirectory(_ tag: String) -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-mesh-\(tag)-\(UUID().uuidString)").path
  try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  return dir
}

/// A short run of the debug config (d 64, 2 layers, 4 heads, d_ff 128, vocab 64, T 16, batch 4).
private func debugOptions(steps: Int, checkpointDirectory: String?) -> TrainOptions {
  var o = TrainOptions(config: ShardedEquivalence.debugConfig)
  o.maxSteps = steps
  o.evalEvery = 0
  o.evalWindows = 2
  o.checkpointDirectory = checkpointDirectory
  o.checkpointEvery = 0
  o.learningRate = .steps(.constant(2e-3))  // palm train's default peak
  o.seed = 3
  return o
}

/// Runs a MeshTrainer on every rank of `shape` (one OpenMP thread each); returns rank 0's gathered
/// parameters (flat) and losses.
private func meshRun(_ options: TrainOptions, _ data: TokenDataset, _ shape: MeshShape,
                     resume: Bool = false) throws -> (params: [Float], losses: [Double], norms: [Double]) {
  try LocalCluster(size: shape.count, timeout: 120).run { comm -> (params: [Float], losses: [Double], norms: [Double]) in
    Threads.count = 1
    let t = try Trainer(options: options, dataset: data, mesh: try Mesh(shape: shape, world: comm))
    if resume { _ = try t.resume() }
    _ = try t.run()
    let p = try Parameters(config: t.model.config)
    try t.model.forEachFullTensor { name, x in p[name]!.copy(from: x) }
    let steps = t.history.filter { $0.type == "step" }
    return (params: p.flat.array, losses: steps.compactMap(\.loss), norms: steps.compactMap(\.gradNorm))
  }[0]
}

private func maxRelative(_ a: [Float], _ b: [Float]) -> Double {
  var diff = 0.0, scale = 0.0
  for i in a.indices {
    diff += Double(a[i] - b[i]) * Double(a[i] - b[i])
    scale += Double(b[i]) * Double(b[i])
  }
  return (diff / max(scale, 1e-30)).squareRoot()
}

@Suite("palm train --mesh (the one Trainer on a mesh)", .serialized)
struct MeshTrainerTests {
  let data: TokenDataset

  init() throws {
    data = try TokenDataset(bytes: syntheticBytes(8000), name: "synthetic", sequenceLength: 16)
  }

  @Test("a (1,2,2) mesh run equals the single-device Trainer ((1,1,1): bit for bit), and its checkpoint loads into a single-device Model bit for bit")
  func meshCheckpointToSingleDevice() throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let meshDir = tempDirectory("mesh"), singleDir = tempDirectory("single")
    defer { try? FileManager.default.removeItem(atPath: meshDir); try? FileManager.default.removeItem(atPath: singleDir) }
    let (params, losses, norms) = try meshRun(debugOptions(steps: 3, checkpointDirectory: meshDir), data,
                                       try MeshShape(pod: 1, data: 2, model: 2))
    // The checkpoint is the single-device layout: a plain Model reads it, with the gathered values.
    let ck = try #require(CheckpointStore.latest(in: meshDir))
    #expect(ck.manifest.step == 3)
    #expect(ck.manifest.optimizer?.kind == "adamw" && ck.manifest.optimizerStep == 3)
    let model = try Model(config: ShardedEquivalence.debugConfig)
    try ck.restore(config: model.config, parameters: model.parameters.named)
    #expect(model.parameters.flat.array == params)
    // Same data, schedule, clipping and AdamW as a single-device run of the same options.
    let single = try Trainer(options: debugOptions(steps: 3, checkpointDirectory: singleDir), dataset: data)
    _ = try single.run()
    let singleLosses = single.history.compactMap { $0.type == "step" ? $0.loss : nil }
    let singleNorms = single.history.compactMap { $0.type == "step" ? $0.gradNorm : nil }
    #expect(losses.count == 3 && singleLosses.count == 3 && norms.count == 3 && singleNorms.count == 3)
    for (a, b) in zip(losses, singleLosses) { #expect(abs(a - b) <= 1e-5 * abs(b), "loss \(a) vs \(b)") }
    // AdamW's update is blind to a gradient's scale: the gradient norms catch a wrong factor.
    for (a, b) in zip(norms, singleNorms) { #expect(abs(a - b) <= 1e-4 * abs(b), "gradient norm \(a) vs \(b)") }
    // Sharded sums round differently and AdamW's 1/√v amplifies that for tiny gradients (about
    // 4e-6 here at lr 2e-3, 2e-5 at lr 1e-2); on a (1,1,1) mesh nothing is sharded and the loop
    // (data, schedule, clipping, update) must match the single-device Trainer bit for bit.
    let rel = maxRelative(params, single.model.parameters.flat.array)
    #expect(rel <= 1e-5, "parameters differ by \(rel)")
    let (unsharded, _, _) = try meshRun(debugOptions(steps: 3, checkpointDirectory: nil), data, try MeshShape())
    #expect(unsharded == single.model.parameters.flat.array)
    // The single-device trainer resumes from the mesh checkpoint (parameters, moments, step, data).
    var more = debugOptions(steps: 3, checkpointDirectory: meshDir)
    more.maxSteps = 3
    let resumed = try Trainer(options: more, dataset: data)
    #expect(try resumed.resume() == 3)
    #expect(resumed.model.parameters.flat.array == params)
    #expect(resumed.optimizer.step == 3)
  }

  /// Issue 13 item 13: rank 0's checkpoint write longer than the communicator's timeout made the
  /// waiting ranks abort the healthy run, blaming rank 0 as dead.
  @Test("a checkpoint write 3x longer than the comm timeout: the (1,2,1) mesh run completes, every checkpoint written")
  func slowCheckpointWrite() throws {
    let dir = tempDirectory("slow-ck")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var o = debugOptions(steps: 2, checkpointDirectory: dir)
    o.checkpointEvery = 1
    let shape = try MeshShape(parsing: "data=2")
    let data = self.data, options = o
    let steps = try LocalCluster(size: shape.count, timeout: 1).run { comm -> Int in
      Threads.count = 1
      let t = try Trainer(options: options, dataset: data, mesh: try Mesh(shape: shape, world: comm))
      t.duringCheckpointWrite = { Thread.sleep(forTimeInterval: 3) }
      return try t.run().step
    }
    #expect(steps == [2, 2])
    #expect(CheckpointStore(directory: dir, keepLast: 0).stepDirectories().map(\.step).sorted() == [0, 1, 2])
  }

  @Test("a mesh run resumes from a single-device checkpoint: same parameters, then the same next update")
  func singleDeviceCheckpointToMesh() throws {
    let old = Threads.count
    Threads.count = 1
    defer { Threads.count = old }
    let singleDir = tempDirectory("single"), meshDir = tempDirectory("mesh")
    defer { try? FileManager.default.removeItem(atPath: singleDir); try? FileManager.default.removeItem(atPath: meshDir) }
    let first = try Trainer(options: debugOptions(steps: 2, checkpointDirectory: singleDir), dataset: data)
    _ = try first.run()
    let atTwo = first.model.parameters.flat.array
    try FileManager.default.removeItem(atPath: meshDir)
    try FileManager.default.copyItem(atPath: singleDir, toPath: meshDir)
    let shape = try MeshShape(pod: 1, data: 2, model: 2)
    // Resumed with nothing left to do: the mesh holds exactly the checkpoint's parameters.
    let (loaded, _, _) = try meshRun(debugOptions(steps: 2, checkpointDirectory: meshDir), data, shape, resume: true)
    #expect(loaded == atTwo)
    // One more update on the mesh and on one device, both from the step-2 checkpoint.
    let (meshThree, meshLosses, meshNorms) = try meshRun(debugOptions(steps: 3, checkpointDirectory: meshDir), data,
                                              try MeshShape(pod: 2, data: 1, model: 2), resume: true)
    let second = try Trainer(options: debugOptions(steps: 3, checkpointDirectory: singleDir), dataset: data)
    #expect(try second.resume() == 2)
    _ = try second.run()
    let singleLosses = second.history.compactMap { $0.type == "step" ? $0.loss : nil }
    let singleNorms = second.history.compactMap { $0.type == "step" ? $0.gradNorm : nil }
    #expect(meshLosses.count == 1 && singleLosses.count == 1 && meshNorms.count == 1 && singleNorms.count == 1)
    if let a = meshLosses.first, let b = singleLosses.first { #expect(abs(a - b) <= 1e-5 * abs(b), "loss \(a) vs \(b)") }
    if let a = meshNorms.first, let b = singleNorms.first { #expect(abs(a - b) <= 1e-4 * abs(b), "gradient norm \(a) vs \(b)") }
    let rel = maxRelative(meshThree, second.model.parameters.flat.array)
    #expect(rel <= 1e-5, "parameters differ by \(rel)")
  }

  @Test("bad input is refused before any work with an error naming it",
        arguments: [((1, 1, 3), "heads"), ((1, 3, 1), "batch"), ((3, 1, 1), "batch")])
  func badMesh(axes: (Int, Int, Int), fragment: String) throws {
    let shape = try MeshShape(pod: axes.0, data: axes.1, model: axes.2)
    #expect(throws: TrainError.self) { try Trainer.validate(options: debugOptions(steps: 1, checkpointDirectory: nil), shape: shape) }
    do { try Trainer.validate(options: debugOptions(steps: 1, checkpointDirectory: nil), shape: shape) } catch {
      #expect("\(error)".contains(fragment), "\(error)")
    }
  }

  @Test("Adafactor, micro-batches and remat are accepted on a mesh; d_ff and a mesh larger than the MPI job are refused")
  func otherRefusals() throws {
    var o = debugOptions(steps: 1, checkpointDirectory: nil)
    o.optimizer = .adafactor(AdafactorSettings())
    o.microBatches = 2
    o.remat = .full
    try Trainer.validate(options: o, shape: try MeshShape(data: 2, model: 2))
    o = debugOptions(steps: 1, checkpointDirectory: nil)
    o.config.heads = 2
    o.config.dFF = 129
    do { try Trainer.validate(options: o, shape: try MeshShape(model: 2)); Issue.record("d_ff 129 on model=2 accepted") } catch {
      #expect("\(error)".contains("d_ff"), "\(error)")
    }
    if MPILaunch.worldSize == nil {
      do { try MeshLauncher.check(try MeshShape(pod: 2), devices: .mpi); Issue.record("pod=2 accepted outside mpirun") } catch {
        #expect("\(error)".contains("2 devices") && "\(error)".contains("mpirun -np 2"), "\(error)")
      }
      try MeshLauncher.check(try MeshShape(pod: 2), devices: .local)
    }
  }
}

// MARK: - The palm executable

private let mpirunPath = ChildProcess.which("mpirun")

/// `output` without Open MPI's banners: blocks that start and end with a line of dashes, with the
/// newline after them, so that a line the banner was written into is whole again.
func withoutMPIBanners(_ output: String) -> String {
  output.replacingOccurrences(of: #"-{20,}\n[\s\S]*?\n-{20,}\n?"#, with: "", options: .regularExpression)
}

/// A tiny-config run: byte data (vocab 256), 4 sequences of 32 bytes.
private let tinyArguments = ["--config", "tiny", "--batch", "4", "--seq-len", "32", "--eval-every", "0",
                             "--eval-windows", "1", "--peak-gflops", "100", "--threads", "1"]

private func dataFile() throws -> String {
  let path = tempDirectory("data") + "/bytes.txt"
  try Data(syntheticBytes(20_000, vocab: 256)).write(to: URL(fileURLWithPath: path))
  return path
}

@Suite("palm CLI: --mesh", .serialized,
       .enabled(if: palmBinary != nil, "needs the palm executable next to the tests (swift build --build-tests builds it)"))
struct MeshCLITests {
  @Test("bad input: one error line before any work, non-zero exit",
        arguments: [(["--mesh", "model=3"], "does not divide heads"),
                    (["--mesh", "data=3"], "does not divide batch"),
                    (["--mesh", "data=2", "--optimizer", "adafactor", "--micro-batches", "2", "--batch", "3"], "does not divide batch"),
                    (["--mesh", "pod=2", "--devices", "mpi"], "has 2 devices but"),
                    (["--mesh", "pods=2"], "unknown axis")])
  func badInput(extra: [String], fragment: String) throws {
    let data = try dataFile()
    let start = Date()
    let (status, output) = try runProgram(palmBinary!, ["train", "--data", data, "--steps", "1"] + tinyArguments + extra, deadline: 60)
    #expect(status != 0, "\(output)")
    #expect(output.contains(fragment), "\(output)")
    #expect(output.split(separator: "\n").filter { $0.contains("Error") || $0.contains("error") }.count == 1, "\(output)")
    #expect(!output.contains("step 1"), "\(output)")
    #expect(Date().timeIntervalSince(start) < 30)
  }

  @Test("one launch: palm train without --mesh and with --mesh pod=1,data=1,model=1 log the same updates bit for bit and print the same lines")
  func oneLaunch() throws {
    let data = try dataFile()
    let dir = tempDirectory("one-launch")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var logs: [[MetricsRecord]] = [], outputs: [[String]] = []
    for (i, extra) in [[], ["--mesh", "pod=1,data=1,model=1", "--devices", "local"]].enumerated() {
      let log = dir + "/m\(i).jsonl"
      let (status, output) = try runProgram(palmBinary!, ["train", "--data", data, "--steps", "3", "--log", log,
                                                          "--print-every", "1", "--dropout", "0.1"] + tinyArguments + extra)
      #expect(status == 0, "\(output)")
      logs.append(MetricsLog.read(path: log))
      // The lines without their numbers: what is printed, not how fast.
      outputs.append(output.split(separator: "\n").map { String($0.prefix(while: { $0 != "|" })) }
                       .map { $0.replacingOccurrences(of: #"[0-9.]+"#, with: "#", options: .regularExpression) })
    }
    #expect(logs[0].count == 4 && logs[0].count == logs[1].count, "\(logs)")
    for (a, b) in zip(logs[0], logs[1]) {
      #expect(a.type == b.type && a.step == b.step && a.crossEntropy == b.crossEntropy && a.gradNorm == b.gradNorm, "\(a) \(b)")
    }
    #expect(outputs[0] == outputs[1], "\(outputs[0])\n\(outputs[1])")
    #expect(outputs[0].contains { $0.hasPrefix("dropout: ") }, "\(outputs[0])")
  }

  @Test("--devices local on (1,2,2) with Adafactor and remat full: every rank logs, rank 0 writes a checkpoint palm sample reads, and --resume continues")
  func localRun() throws {
    let data = try dataFile()
    let dir = tempDirectory("cli-ck"), log = dir + "/m.jsonl"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // PaLM's recipe on the mesh: Adafactor and full rematerialization (refused before the one trainer).
    let args = ["train", "--data", data, "--steps", "2", "--mesh", "pod=1,data=2,model=2", "--devices", "local",
                "--checkpoint-dir", dir, "--log", log, "--print-every", "1", "--optimizer", "adafactor",
                "--remat", "full"] + tinyArguments
    let (status, output) = try runProgram(palmBinary!, args)
    #expect(status == 0, "\(output)")
    for r in 0..<4 { #expect(output.contains("[rank \(r)/4] step 2"), "\(output)") }
    #expect(FileManager.default.fileExists(atPath: dir + "/step_00000002/model.safetensors"))
    let records = MetricsLog.read(path: log)
    #expect(records.filter { $0.type == "step" }.count == 2, "rank 0 alone writes the metrics")
    #expect(records.first?.exchangeBytes == 0)  // pod = 1: nothing crosses pods
    let (s2, out2) = try runProgram(palmBinary!, ["sample", "--checkpoint", dir, "--max-tokens", "4", "--temperature", "0", "--threads", "1"])
    #expect(s2 == 0, "\(out2)")
    let (s3, out3) = try runProgram(palmBinary!, args.map { $0 == "2" ? "3" : $0 } + ["--resume"])
    #expect(s3 == 0 && out3.contains("resumed from step 2") && out3.contains("[rank 0/4] step 3"), "\(out3)")
  }

  @Test("--devices local, rank 0's checkpoint write (PALM_FAULT_SLOW_CHECKPOINT=3) longer than --comm-timeout 1: the run completes")
  func slowCheckpointLocal() throws {
    let data = try dataFile()
    let dir = tempDirectory("cli-slow")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (status, output) = try runProgram(
      palmBinary!, ["train", "--data", data, "--steps", "1", "--mesh", "data=2", "--devices", "local", "--comm-timeout", "1",
                    "--checkpoint-dir", dir, "--checkpoint-every", "1"] + tinyArguments,
      deadline: 90, environment: ["PALM_FAULT_SLOW_CHECKPOINT": "3"])
    #expect(status == 0, "\(output)")
    #expect(output.contains("[rank 1/2] done: step 1"), "\(output)")
  }

  @Test("mpirun -np 2: rank 0's checkpoint write longer than --comm-timeout (heartbeats) does not stop the job",
        .enabled(if: mpirunPath != nil, "needs mpirun"))
  func slowCheckpointMPI() throws {
    let data = try dataFile()
    let dir = tempDirectory("mpi-slow")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (status, output) = try runProgram(
      mpirunPath!, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", palmBinary!, "train",
                    "--data", data, "--steps", "1", "--checkpoint-dir", dir, "--checkpoint-every", "1",
                    "--mesh", "pod=2", "--comm-timeout", "1"] + tinyArguments,
      deadline: 120, environment: ["PALM_FAULT_SLOW_CHECKPOINT": "3"])
    #expect(status == 0, "exit \(status):\n\(output)")
    #expect(output.contains("[rank 1/2] done: step 1"), "\(output)")
  }

  @Test("bench exchange and bench step refuse an option the chosen part does not read, in one line",
        arguments: [(["bench", "exchange", "--part", "collectives", "--steps", "1"], "--steps sets the pods comparison"),
                    (["bench", "exchange", "--part", "collectives", "--config", "tiny"], "--config sets the pods comparison"),
                    (["bench", "exchange", "--part", "pods", "--repeats", "2"], "--repeats sets the collective measurements"),
                    (["bench", "step", "--comm-timeout", "5"], "need --mesh")])
  func benchRefusals(args: [String], fragment: String) throws {
    let (status, output) = try runProgram(palmBinary!, args, deadline: 30)
    #expect(status != 0 && output.contains(fragment), "\(status) \(output)")
    #expect(output.split(separator: "\n").filter { $0.contains("Error") }.count == 1, "\(output)")
  }

  /// Issue 13: a rank hung inside its checkpoint write kept the job waiting for ever.
  @Test("rank 0's checkpoint write (PALM_FAULT_SLOW_CHECKPOINT=60) longer than --phase-timeout 3, --devices local and mpirun -np 2: the job stops within seconds, naming rank 0 and the phase",
        arguments: ["local", "mpi"])
  func slowCheckpointPastPhaseTimeout(devices: String) throws {
    if devices == "mpi" && mpirunPath == nil { return }
    let data = try dataFile()
    let dir = tempDirectory("phase-\(devices)")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let train = ["train", "--data", data, "--steps", "1", "--checkpoint-dir", dir, "--checkpoint-every", "1",
                 "--comm-timeout", "1", "--phase-timeout", "3"] + tinyArguments
    let start = Date()
    let (status, output) = devices == "local"
      ? try runProgram(palmBinary!, train + ["--mesh", "data=2", "--devices", "local"],
                       deadline: 120, environment: ["PALM_FAULT_SLOW_CHECKPOINT": "60"])
      : try runProgram(mpirunPath!, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", palmBinary!]
                         + train + ["--mesh", "pod=2"],
                       deadline: 120, environment: ["PALM_FAULT_SLOW_CHECKPOINT": "60"])
    #expect(status != 0 && status != -2, "exit \(status):\n\(output)")
    #expect(output.contains("rank 0 has been in its checkpoint write") && output.contains("phase timeout of 3.0 s")
            && output.contains("--phase-timeout"), "\(output)")
    // Start-up takes seconds (more on a busy machine); the write would take 60.
    #expect(Date().timeIntervalSince(start) < 50, "the job waited out the slow write:\n\(output)")
    #expect(!output.contains("done: step 1"), "\(output)")
  }

  @Test("bench step --mesh and bench exchange (local) print their JSON")
  func benches() throws {
    let (s1, out1) = try runProgram(palmBinary!, ["bench", "step", "--config", "tiny", "--batch", "2", "--seq-len", "32",
                                                  "--mesh", "pod=2", "--devices", "local", "--threads-per-rank", "1",
                                                  "--steps", "1", "--warmup", "0", "--format", "json"])
    #expect(s1 == 0, "\(out1)")
    let r = try #require(ShardedBenchReport.parse(lastOf: out1), "\(out1)")
    #expect(r.mesh == "pod=2,data=1,model=1" && r.exchangeBytes > 0 && r.tokensPerSecond > 0)
    #expect((0...1).contains(r.hiddenFraction))
    let (s2, out2) = try runProgram(palmBinary!, ["bench", "exchange", "--devices", "local", "--config", "tiny", "--batch", "2",
                                                  "--seq-len", "32", "--steps", "1", "--warmup", "0", "--rounds", "1",
                                                  "--max-bytes", "4096", "--repeats", "1", "--format", "json"])
    #expect(s2 == 0, "\(out2)")
    let line = try #require(out2.split(separator: "\n").last { $0.hasPrefix("{") }, "\(out2)")
    let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    let collectives = try #require(json["collectives"] as? [[String: Any]])
    #expect(Set(collectives.compactMap { $0["operation"] as? String }) == ["all-reduce", "all-gather", "reduce-scatter", "send-recv"])
    #expect(collectives.allSatisfy { ($0["correct"] as? Bool) == true })
    let comparison = try #require(json["comparison"] as? [String: Any])
    #expect((comparison["ratio"] as? Double ?? 0) > 0)
    #expect(out2.contains("palm bench exchange: round 1/1"))  // progress on stderr
  }

  @Test("withoutMPIBanners rejoins a line that mpirun's banner was written into")
  func bannerRemoval() {
    let dashes = String(repeating: "-", count: 74)
    let banner = dashes + "\nPrimary job  terminated normally, but 1 process returned\na non-zero exit code.\n" + dashes + "\n"
    #expect(withoutMPIBanners("a\nE" + banner + "rror: x\nb\n") == "a\nError: x\nb\n")
    #expect(withoutMPIBanners("Error: x\n" + banner + "b\n") == "Error: x\nb\n")
    #expect(withoutMPIBanners("no banner ---\n") == "no banner ---\n")
  }

  @Test("mpirun -np 2 palm train --mesh pod=2: both ranks train; a mesh of 4 on 2 ranks is one error line",
        .enabled(if: mpirunPath != nil, "needs mpirun"))
  func mpirunSmoke() throws {
    let data = try dataFile()
    let dir = tempDirectory("mpi-ck")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", palmBinary!, "train", "--data", data,
                "--steps", "2", "--checkpoint-dir", dir, "--print-every", "1"] + tinyArguments
    let (status, output) = try runProgram(mpirunPath!, base + ["--mesh", "pod=2,data=1,model=1"])
    #expect(status == 0, "\(output)")
    #expect(output.contains("[rank 0/2] step 2") && output.contains("[rank 1/2] step 2"), "\(output)")
    #expect(FileManager.default.fileExists(atPath: dir + "/step_00000002/manifest.json"))
    let (bad, badOutput) = try runProgram(mpirunPath!, base + ["--mesh", "pod=4"], deadline: 60)
    #expect(bad != 0, "\(badOutput)")
    // mpirun writes its own "a process returned a non-zero exit code" banner into the same stream,
    // and it can land inside our line ("E<banner>rror: ..."); count the line with the banners cut out.
    let ours = withoutMPIBanners(badOutput)
    #expect(ours.components(separatedBy: "Error: mesh pod=4,data=1,model=1 has 4 devices").count == 2, "\(badOutput)")
    // Without --mesh the run is one device: two ranks of it would be two runs in one directory.
    let (single, singleOutput) = try runProgram(mpirunPath!, base, deadline: 60)
    #expect(single != 0, "\(singleOutput)")
    #expect(withoutMPIBanners(singleOutput).components(separatedBy: "Error: mpirun started 2 ranks, but without --mesh").count == 2,
            "\(singleOutput)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/step_00000001"), "the refused run wrote nothing")
  }

  @Test("mpirun -np 2: a rank that hangs after update 1 stops the job within the timeout, naming it; the checkpoint stays loadable",
        .enabled(if: mpirunPath != nil, "needs mpirun"))
  func mpirunHungTrainRank() throws {
    let data = try dataFile()
    let dir = tempDirectory("mpi-hang")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let start = Date()
    let (status, output) = try runProgram(
      mpirunPath!, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", palmBinary!, "train",
                    "--data", data, "--steps", "5", "--checkpoint-dir", dir, "--checkpoint-every", "1",
                    "--mesh", "pod=2", "--comm-timeout", "3"] + tinyArguments,
      deadline: 90, environment: ["PALM_FAULT_HANG": "1:1"])
    #expect(status != 0 && status != -2, "exit \(status):\n\(output)")
    #expect(output.contains("palm train [rank 0]: error:") && output.contains("rank 1"), "\(output)")
    #expect(Date().timeIntervalSince(start) < 60)
    let latest = CheckpointStore.latest(in: dir, warn: { _ in })
    let ck = try #require(latest, "no loadable checkpoint:\n\(output)")
    #expect(ck.manifest.step == 1)
  }

  @Test("mpirun -np 2: kill -9 of one rank after update 2 ends the job non-zero within the timeout, naming it; the last checkpoint loads and --resume on another mesh continues",
        .enabled(if: mpirunPath != nil, "needs mpirun"))
  func mpirunKilledTrainRank() throws {
    let data = try dataFile()
    let dir = tempDirectory("mpi-kill")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let start = Date()
    let (status, output) = try runProgram(
      mpirunPath!, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", palmBinary!, "train",
                    "--data", data, "--steps", "6", "--checkpoint-dir", dir, "--checkpoint-every", "1",
                    "--mesh", "pod=2", "--comm-timeout", "5", "--print-every", "1"] + tinyArguments,
      deadline: 90, environment: ["PALM_FAULT_KILL": "1:2"])
    #expect(status != 0 && status != -2, "exit \(status):\n\(output)")
    #expect(Date().timeIntervalSince(start) < 60)
    #expect(!output.contains("[rank 0/2] step 6"), "\(output)")
    // mpirun names the killed rank: "mpirun noticed that process rank 1 ... exited on signal 9".
    #expect(output.contains("process rank 1") && output.contains("signal 9"), "\(output)")
    let latest = CheckpointStore.latest(in: dir, warn: { _ in })
    let ck = try #require(latest, "no loadable checkpoint:\n\(output)")
    #expect((1...2).contains(ck.manifest.step))
    // The run continues on a mesh of another shape, in-process.
    let (s2, out2) = try runProgram(palmBinary!, ["train", "--data", data, "--steps", "4", "--checkpoint-dir", dir,
                                                  "--resume", "--allow-changed-settings", "--mesh", "data=2,model=2", "--devices", "local",
                                                  "--print-every", "1"] + tinyArguments)
    #expect(s2 == 0 && out2.contains("resumed from step \(ck.manifest.step)") && out2.contains("[rank 0/4] step 4"), "\(out2)")
  }
}
