// palm bench step --mesh: timed training updates of the one Trainer (PalmParallel/ShardedBench.swift) on a mesh,
// in-process or under mpirun; rank 0 prints a ShardedBenchReport (text, or one JSON line that
// `palm bench exchange` reads back from its mpirun child).
import ArgumentParser
import Foundation
import PalmModel
import PalmParallel
import PalmTrain

extension BenchStep {
  /// The optimizer settings of `--optimizer` (AdamW by default).
  static func optimizerSettings(_ name: String?) -> OptimizerSettings {
    name == "adafactor" ? .adafactor(AdafactorSettings()) : .adamW(AdamWSettings())
  }

  func runMesh(_ text: String) throws {
    let devices = self.devices ?? DeviceBackend.detected
    var c = PalmConfig.presets[config]!
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    if let vocab { c.vocab = vocab }
    let shape: MeshShape
    do {
      shape = try MeshShape(parsing: text)
      _ = try ShardedLayout(config: c, shape: shape)  // divisibility, before any work
      guard RematPolicy(rawValue: remat) != nil else { throw MeshError("--remat must be none, selective or full") }
      try MeshLauncher.check(shape, devices: devices)
    } catch {
      throw MeshCLI.beforeWork(error, devices: devices)
    }
    let threads = threadsPerRank ?? compute.threads ?? MeshLauncher.defaultThreadsPerRank(shape, devices: devices)
    let (cfg, steps, warmup, policy) = (c, self.steps, self.warmup, RematPolicy(rawValue: remat)!)
    if MeshCLI.isReporter(devices) {
      let memory = try MeshMemory(config: c, shape: shape, remat: policy)
      FileHandle.standardError.write(Data("planned bytes per rank: \(memory.summary)\n".utf8))
    }
    let result: ShardedBenchResult
    do {
      result = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout ?? 300) { comm in
        try ShardedBench.run(config: cfg, shape: shape, world: comm, batch: cfg.batch, steps: steps, warmup: warmup,
                             threadsPerRank: threads, remat: policy, optimizer: BenchStep.optimizerSettings(optimizer),
                             precision: precision)
      }
    } catch {
      throw MeshCLI.afterStart(error, devices: devices, command: "bench step")
    }
    guard MeshCLI.isReporter(devices) else { return }
    let report = ShardedBenchReport(result, config: c.name, devices: devices.rawValue)
    print(format == .json ? try report.jsonLine() : report.text)
  }
}
