// palm train --mesh: the sharded run (PalmParallel/MeshTrainer.swift) on a LocalCluster or as one
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
      try MeshTrainer.validate(options: o, shape: shape)
      try MeshLauncher.check(shape, devices: devices)
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
    let header = "palm train: \(cfg.name) d\(cfg.dModel) L\(cfg.layers) H\(cfg.heads)x\(cfg.headDim) F\(cfg.dFF) T\(cfg.seqLen) "
      + "global batch \(cfg.batch), mesh \(shape) on \(devices) devices, \(threads) thread(s) per rank, adamw; "
      + "data \(dataset.trainCount) train / \(dataset.validationCount) val bytes; peak "
      + "\(options.peakFLOPS.map { String(format: "%.1f GFLOP/s", $0 / 1e9) } ?? "-") (\(peakGflops != nil ? "--peak-gflops" : "\(peakSource) × \(shape.count) ranks"))"
    let outcome: (end: MetricsRecord, history: [MetricsRecord])
    do {
      outcome = try MeshLauncher.run(shape: shape, devices: devices, threadsPerRank: threads, timeout: commTimeout) {
        comm -> (end: MetricsRecord, history: [MetricsRecord]) in
        let prefix = "[rank \(comm.rank)/\(comm.size)] "
        let trainer = try MeshTrainer(options: options, dataset: dataset, world: comm, shape: shape)
        if comm.rank == 0 { Train.say(header) }
        if resume {
          if let s = try trainer.resume() { Train.say(prefix + "resumed from step \(s) in \(checkpointDir!)") }
          else { Train.say(prefix + "no checkpoint in \(checkpointDir!): starting at step 0") }
        }
        // Metrics JSONL from rank 0 only: the losses are global, the other ranks would repeat them.
        var metrics: MetricsLog?
        if comm.rank == 0, let log { metrics = try MetricsLog(path: log, append: resume) }
        let rankMetrics = metrics
        let hang = MeshCLI.hangDrill
        trainer.onRecord = { r in
          rankMetrics?.write(r)
          if r.type != "step" || r.valLoss != nil || r.checkpoint != nil || r.step % printEvery == 0 {
            Train.say(prefix + Train.meshLine(r))
          }
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
    guard MeshCLI.isReporter(devices) else { return }
    if let plot {
      let all = log.map { MetricsLog.read(path: $0) } ?? outcome.history
      let svg = LossPlot.svg(all.isEmpty ? outcome.history : all,
                             title: "palm train \(cfg.name) mesh \(shape): loss (nats/byte) — \(outcome.end.step) updates")
      do { try AtomicFile.write(to: plot, bytes: Array(svg.utf8)) } catch { throw CLIError("cannot write \(plot): \(error)") }
      Train.say("loss plot: \(plot)")
    }
    if let c = outcome.end.checkpoint { Train.say("checkpoint: \(c)") }
  }

  /// One log line of a mesh run (the exchange figures are this rank's).
  static func meshLine(_ r: MetricsRecord) -> String {
    func f(_ x: Double?, _ d: Int = 3) -> String { x.map { String(format: "%.\(d)f", $0) } ?? "-" }
    switch r.type {
    case "end":
      return "done: step \(r.step), \(r.tokens) tokens, \(f(r.seconds, 1)) s, val \(f(r.valLoss)) nats/byte (\(f(r.valBitsPerByte)) bits/byte)"
    default:
      return "step \(r.step) loss \(f(r.crossEntropy)) val \(f(r.valLoss)) | \(Int(r.tokensPerS ?? 0)) tok/s "
        + "MFU \(f(r.mfu.map { $0 * 100 }, 1))% | \(f(r.stepSeconds, 3)) s/step | exchange "
        + "\(String(format: "%.2f", Double(r.exchangeBytes ?? 0) / 1e6)) MB \(f((r.exchangeSeconds ?? 0) * 1e3, 1)) ms "
        + "hidden \(f((r.exchangeHidden ?? 1) * 100, 0))% | lr \(String(format: "%.2e", r.lr ?? 0))"
        + (r.checkpoint.map { " | checkpoint \($0)" } ?? "")
    }
  }
}
