// palm train --mesh: the one Trainer (PalmTrain/Trainer.swift) on a mesh, on a LocalCluster or as one
// rank of an mpirun job. Bad input (a mesh that does not divide the model or the batch, a mesh size
// that is not the number of ranks, an option the sharded trainer lacks) is one error line before any
// work; under mpirun only rank 0 prints it (every rank finds the same error) and all exit non-zero.
import ArgumentParser
import Foundation
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain

extension Train {
  func runMesh(_ cfg: PalmConfig, meshText: String) throws {
    let devices = self.devices ?? DeviceBackend.detected
    var o = trainOptions(cfg)
    let shape: MeshShape
    do {
      shape = try MeshShape(parsing: meshText)
      try Trainer.validate(options: o, shape: shape)
      try MeshLauncher.check(shape, devices: devices)
      // The devices of this machine: all of them as threads, or the mpirun ranks placed here.
      try Trainer.checkMemory(options: o, shape: shape,
                              devicesHere: devices == .local ? shape.count : MPILaunch.localSize ?? 1)
      try preflight()
    } catch {
      throw MeshCLI.beforeWork(error, devices: devices)
    }
    let dataset: TokenDataset
    do { dataset = try openDataset(cfg) } catch { throw MeshCLI.beforeWork(error, devices: devices) }
    let threads = compute.threads ?? MeshLauncher.defaultThreadsPerRank(shape, devices: devices)
    // The MFU denominators: one rank's peaks × ranks; --peak-gflops is the whole mesh's (of --precision).
    Threads.count = threads
    let peakSource = Train.resolvePeaks(nil, precision: precision ?? .fp32, into: &o) + " × \(shape.count) ranks"
    o.peakFLOPS = o.peakFLOPS.map { $0 * Double(shape.count) }
    o.bf16PeakFLOPS = o.bf16PeakFLOPS.map { $0 * Double(shape.count) }
    if let g = peakGflops, g > 0 {
      if (precision ?? .fp32) == .bf16 { o.bf16PeakFLOPS = g * 1e9 } else { o.peakFLOPS = g * 1e9 }
    }

    let (resume, log, printEvery, checkpointDir) = (self.resume, self.log, max(self.printEvery, 1), self.checkpointDir)
    let options = o
    let header = Train.modelSummary(cfg)
      + "global batch \(o.microBatches)x\(cfg.batch), mesh \(shape) on \(devices) devices, \(threads) thread(s) per rank, "
      + "\(o.optimizer.kind), remat \(o.remat); planned bytes per rank: \(Train.rankBytesText(cfg, shape: shape, options: o)); "
      + "\(Train.dataSummary(dataset)); peak fp32 \(Train.peakText(options.peakFLOPS)), bf16 \(Train.peakText(options.bf16PeakFLOPS)) "
      + "(\(peakGflops != nil ? "\((precision ?? .fp32).rawValue): --peak-gflops; other: " : "")\(peakSource))"
    let outcome: (end: MetricsRecord, history: [MetricsRecord])
    do {
      outcome = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout,
                                     phaseTimeout: phaseTimeout) {
        comm -> (end: MetricsRecord, history: [MetricsRecord]) in
        let prefix = "[rank \(comm.rank)/\(comm.size)] "
        let trainer = try Trainer(options: options, dataset: dataset, mesh: try Mesh(shape: shape, world: comm))
        trainer.stopRequested = { Preemption.signal != nil }  // rank 0's answer holds for every rank
        if let slow = MeshCLI.slowCheckpointDrill { trainer.duringCheckpointWrite = { usleep(UInt32(slow * 1e6)) } }
        if comm.rank == 0 { Train.say(header); Train.sayPrecision(trainer.precision) }
        if resume { Train.say(prefix + Train.resumeMessage(try trainer.resume(), directory: checkpointDir!)) }
        // Metrics JSONL from rank 0 only: the losses are global, the other ranks would repeat them.
        let metrics = try comm.rank == 0 ? Train.openMetricsLog(log, append: resume) : nil
        let hang = MeshCLI.hangDrill, kill9 = MeshCLI.killDrill
        trainer.onRecord = { r in
          metrics?.write(r)
          if r.type == "step" && comm.rank == 0 { Preemption.drill(afterStep: r.step) }
          if Train.isMilestone(r) || r.checkpoint != nil || r.step % printEvery == 0 {
            Train.say(prefix + Train.meshLine(r))
          }
          if let kill9, kill9.rank == comm.rank, kill9.step == r.step, r.type == "step" { kill(getpid(), SIGKILL) }
          if let hang, hang.rank == comm.rank, hang.step == r.step, r.type == "step" {
            Train.say(prefix + "fault drill: hanging after step \(r.step)")
            while true { sleep(3600) }
          }
        }
        let end = try trainer.run()
        return (end: end, history: trainer.history)
      }
    } catch {
      throw MeshCLI.afterStart(error, devices: devices, command: "train")
    }
    guard MeshCLI.isReporter(devices) else {
      if let sig = Preemption.signal { throw ExitCode(128 + sig) }
      return
    }
    try finish(end: outcome.end, history: outcome.history,
               title: "palm train \(cfg.name) mesh \(shape): loss (nats/byte) — \(outcome.end.step) updates")
  }

  /// The planned bytes of one rank (MeshMemory): parameters, gradients, optimizer state, gathered
  /// buffers and activations.
  static func rankBytesText(_ cfg: PalmConfig, shape: MeshShape, options o: TrainOptions) -> String {
    guard let m = try? MeshMemory(config: cfg, shape: shape, remat: o.remat) else { return "-" }
    return m.summary
  }

  /// One log line of a mesh run (the exchange figures are this rank's).
  static func meshLine(_ r: MetricsRecord) -> String {
    switch r.type {
    case "end":
      return "done: step \(r.step), \(r.tokens) tokens, \(fmt(r.seconds, 1)) s, val \(fmt(r.valLoss)) nats/token (\(fmt(r.valBitsPerByte)) bits/byte), whole validation split \(fmt(r.valLossFull)) nats/token (\(fmt(r.valBitsPerByteFull)) bits/byte), rollbacks \(r.rollbacks)"
    case "spike":
      return "spike at update \(r.step): \(r.reason ?? "") -> restored step \(r.restoredStep.map(String.init) ?? "-")"
    default:
      return "step \(r.step) loss \(fmt(r.crossEntropy)) val \(fmt(r.valLoss)) | \(Int(r.tokensPerS ?? 0)) tok/s "
        + utilizationText(r) + " | \(fmt(r.stepSeconds, 3)) s/step | exchange "
        + "\(String(format: "%.2f", Double(r.exchangeBytes ?? 0) / 1e6)) MB \(fmt((r.exchangeSeconds ?? 0) * 1e3, 1)) ms "
        + "hidden \(fmt((r.exchangeHidden ?? 1) * 100, 0))% | lr \(String(format: "%.2e", r.lr ?? 0))"
        + (r.checkpoint.map { " | checkpoint \($0)" } ?? "")
    }
  }
}
