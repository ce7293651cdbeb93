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
    // The MFU denominator: --peak-gflops is the whole mesh's; otherwise one rank's peak × ranks.
    Threads.count = threads
    let (rankPeak, peakSource) = peakGflops != nil ? (nil, "") : Train.resolvePeak(nil)
    o.peakFLOPS = peakGflops.map { $0 * 1e9 } ?? rankPeak.map { $0 * Double(shape.count) }

    let (resume, log, printEvery, checkpointDir) = (self.resume, self.log, max(self.printEvery, 1), self.checkpointDir)
    let options = o
    let header = Train.modelSummary(cfg)
      + "global batch \(o.microBatches)x\(cfg.batch), mesh \(shape) on \(devices) devices, \(threads) thread(s) per rank, "
      + "\(o.optimizer.kind), remat \(o.remat); planned bytes per rank: \(Train.rankBytesText(cfg, shape: shape, options: o)); "
      + "\(Train.dataSummary(dataset)); peak \(Train.peakText(options.peakFLOPS)) "
      + "(\(peakGflops != nil ? "--peak-gflops" : "\(peakSource) × \(shape.count) ranks"))"
    let outcome: (end: MetricsRecord, history: [MetricsRecord])
    do {
      outcome = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout) {
        comm -> (end: MetricsRecord, history: [MetricsRecord]) in
        let prefix = "[rank \(comm.rank)/\(comm.size)] "
        let trainer = try Trainer(options: options, dataset: dataset, mesh: try Mesh(shape: shape, world: comm))
        trainer.stopRequested = { Preemption.signal != nil }  // rank 0's answer holds for every rank
        if comm.rank == 0 { Train.say(header) }
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
      return "done: step \(r.step), \(r.tokens) tokens, \(fmt(r.seconds, 1)) s, val \(fmt(r.valLoss)) nats/byte (\(fmt(r.valBitsPerByte)) bits/byte), whole validation split \(fmt(r.valLossFull)) nats/byte, rollbacks \(r.rollbacks)"
    case "spike":
      return "spike at update \(r.step): \(r.reason ?? "") -> restored step \(r.restoredStep.map(String.init) ?? "-")"
    default:
      return "step \(r.step) loss \(fmt(r.crossEntropy)) val \(fmt(r.valLoss)) | \(Int(r.tokensPerS ?? 0)) tok/s "
        + "MFU \(fmt(r.mfu.map { $0 * 100 }, 1))% HFU \(fmt(r.hfu.map { $0 * 100 }, 1))% | \(fmt(r.stepSeconds, 3)) s/step | exchange "
        + "\(String(format: "%.2f", Double(r.exchangeBytes ?? 0) / 1e6)) MB \(fmt((r.exchangeSeconds ?? 0) * 1e3, 1)) ms "
        + "hidden \(fmt((r.exchangeHidden ?? 1) * 100, 0))% | lr \(String(format: "%.2e", r.lr ?? 0))"
        + (r.checkpoint.map { " | checkpoint \($0)" } ?? "")
    }
  }
}
