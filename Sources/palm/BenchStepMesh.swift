// palm bench step --mesh: timed sharded training steps (PalmParallel/ShardedBench.swift) on a mesh,
// in-process or under mpirun; rank 0 prints a ShardedBenchReport (text, or one JSON line that
// `palm bench exchange` reads back from its mpirun child).
import ArgumentParser
import Foundation
import PalmModel
import PalmParallel

extension BenchStep {
  func runMesh(_ text: String) throws {
    let devices = self.devices ?? DeviceBackend.detected
    var c = PalmConfig.presets[config]!
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    let shape: MeshShape
    do {
      shape = try MeshShape(parsing: text)
      _ = try ShardedLayout(config: c, shape: shape, batch: c.batch)  // divisibility, before any work
      try MeshLauncher.check(shape, devices: devices)
    } catch {
      throw MeshCLI.beforeWork(error, devices: devices)
    }
    let threads = threadsPerRank ?? compute.threads ?? MeshLauncher.defaultThreadsPerRank(shape, devices: devices)
    let (cfg, steps, warmup) = (c, self.steps, self.warmup)
    let result: ShardedBenchResult
    do {
      result = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout) { comm in
        try ShardedBench.run(config: cfg, shape: shape, world: comm, batch: cfg.batch, steps: steps, warmup: warmup,
                             threadsPerRank: threads)
      }
    } catch {
      throw MeshCLI.afterStart(error, devices: devices, command: "bench step")
    }
    guard MeshCLI.isReporter(devices) else { return }
    let report = ShardedBenchReport(result, config: c.name, devices: devices.rawValue)
    print(format == .json ? try report.jsonLine() : report.text)
  }
}
