// PlanTests: the cost model of `palm plan` (PalmBench/Plan.swift) against the package's own
// accounting (MeshMemory), PaLM 540B's published layout facts, and bad input.
import Foundation
@testable import PalmBench
import PalmModel
import Testing

/// A CPU device with round numbers (no measurement): 100 GFLOP/s, 10 GB/s, 2 cores, 1 thread/device.
private func cpu(memory: Double = 64e9) -> HardwareSpec {
  let n = { (v: Double) in HardwareSpec.Number(v, "test") }
  let net = HardwareSpec.Network(name: "shm", scope: "pod", topology: "switch", domainDevices: n(1e9),
                                 linkBandwidth: n(5e9), linksPerDevice: nil, devicesPerHost: nil,
                                 latency: n(1e-5), efficiency: n(1))
  var pods = net
  pods.scope = "between-pods"
  return HardwareSpec(name: "test-cpu", description: "test", kind: "cpu", precision: "fp32",
                      peakFLOPs: ["fp32": n(100e9)], memoryBytes: n(memory), memoryBandwidth: n(10e9),
                      memoryEfficiency: n(1), gemmCurve: nil, gemmPoints: nil, attentionEfficiency: n(0.5),
                      devicesPerPod: nil, networks: [net, pods], kernels: nil, collectives: nil,
                      threadsPerDevice: 1, cores: 2, cpu: nil)
}

private let meshes = ["pod=1", "pod=2", "data=2", "model=2", "pod=2,data=2,model=2"]

@Suite struct PlanTests {
  @Test func plannedBytesPerRankEqualMeshMemory() throws {
    for config in [PalmConfig.tiny, .small] {
      for text in meshes {
        for remat in RematPolicy.allCases {
          let shape = try MeshShape(parsing: text)
          let plan = try Plan(PlanInputs(config: config, mesh: shape, remat: remat, hardware: cpu()))
          let mem = try MeshMemory(config: config, shape: shape, remat: remat)
          #expect(plan.memory.total == mem.totalBytes, "\(config.name) \(text) \(remat)")
          #expect(plan.memory.activationsSaved + plan.memory.activationScratch == mem.activationBytes)
        }
      }
    }
  }

  @Test func meshMemoryStorageDefaultsAreThePackage() throws {
    // The default storage is what the package allocates: fp32 activations = the MemoryPlan's arena.
    let shape = try MeshShape(data: 2, model: 2)
    let mem = try MeshMemory(config: .tiny, shape: shape, remat: .full)
    let layout = try ShardedLayout(config: .tiny, shape: shape)
    let arena = MemoryPlan(config: layout.local, policy: .full, batch: PalmConfig.tiny.batch / 2,
                           seqLen: PalmConfig.tiny.seqLen, modelParallel: true).totalBytes
    #expect(mem.activationBytes == arena)
    #expect(mem.parameterBytes == layout.shardFloats * 4)
    var half = MeshMemory.Storage()
    half.activation = 2
    #expect(try MeshMemory(config: .tiny, shape: shape, remat: .full, storage: half).activationBytes * 2 == arena)
  }

  private func palm540(_ remat: RematPolicy) throws -> Plan {
    var c = PalmConfig.palm540B
    c.batch = 2048
    return try Plan(PlanInputs(config: c, mesh: MeshShape(pod: 2, data: 256, model: 12), remat: remat,
                               optimizer: "adafactor", hardware: HardwareSpec.load("tpu-v4")))
  }

  @Test func palm540BPodExchangeFromTheLayout() throws {
    let plan = try palm540(.full)
    let x = try #require(plan.podExchange)
    // 2 bytes per gradient element × the chip's shard × 4 chips. The shard is 1/3072 of the 540.35 B
    // parameters except the single K/V head (d × 2Q per layer), which ShardedLayout replicates on the
    // model axis (1/256 of it per chip): 2.3% above an even split.
    let c = PalmConfig.palm540B
    let kv = Double(c.layers * c.dModel * 2 * c.headDim)
    let perChip = (Double(c.parameterCount) - kv) / 3072 + kv / 256
    #expect(abs(x.bytesPerDevice / (2 * perChip) - 1) < 0.002)
    #expect(x.devicesPerHost == 4 && x.hostsPerPod == 768)
    #expect(x.bytesPerHost > 1.3e9 && x.bytesPerHost < 1.5e9)  // PaLM §4: "about 1.3 GB" per host pair
  }

  @Test func palm540BFitsOnlyWithFullRemat() throws {
    #expect(try palm540(.full).memory.fits)
    #expect(try !palm540(.selective).memory.fits)
    #expect(try !palm540(.none).memory.fits)
    #expect(try palm540(.full).memory.available == 34_359_738_368)
  }

  @Test func palm540BPredictionIsPrintedWithItsAssumptions() throws {
    let plan = try palm540(.full)
    #expect(plan.mfu > 0 && plan.mfu < plan.hfu && plan.hfu < 1)
    #expect(plan.flops.modelPerToken == FLOPs.modelPerToken(.palm540B))
    #expect(plan.assumptions.contains { $0.name == "peak_flops.bf16" && $0.value.hasPrefix("275") })
    #expect(plan.assumptions.contains { $0.isAssumption })
    let text = plan.markdown(sensitivity: Plan.sensitivity(PlanInputs(
      config: { var c = PalmConfig.palm540B; c.batch = 2048; return c }(), mesh: try MeshShape(pod: 2, data: 256, model: 12),
      remat: .full, hardware: try HardwareSpec.load("tpu-v4"))))
    #expect(text.contains("## Sensitivity") && text.contains("Assumptions and sources") && text.contains("Pod exchange"))
  }

  @Test func lowerGEMMEfficiencyLowersMFU() throws {
    var c = PalmConfig.palm540B
    c.batch = 2048
    let inputs = PlanInputs(config: c, mesh: try MeshShape(pod: 2, data: 256, model: 12), remat: .full,
                            hardware: try HardwareSpec.load("tpu-v4"))
    let base = try Plan(inputs).mfu
    let s = Plan.sensitivity(inputs)
    let low = try #require(s.first { $0.input == "GEMM efficiency" && $0.alternative == "x 0.8" })
    #expect(low.mfu < base)
    let fast = try #require(s.first { $0.input == "ici bandwidth" && $0.alternative == "x 2" })
    #expect(fast.mfu > base)
  }

  @Test func gemmEfficiencyLookup() throws {
    let tpu = try HardwareSpec.load("tpu-v4")
    #expect(tpu.gemmEfficiency(m: 8192, n: 13824, k: 18432, layout: "nn") == 0.95)
    #expect(tpu.gemmEfficiency(m: 8192, n: 64, k: 18432, layout: "nn") == 0.9)
    #expect(tpu.gemmEfficiency(m: 8, n: 64, k: 18432, layout: "nn") == 0.6)
    var hw = cpu()
    hw.gemmPoints = .init(source: "test", points: [.init(m: 100, n: 100, k: 100, layout: "nn", efficiency: 0.5),
                                                   .init(m: 1000, n: 1000, k: 1000, layout: "nn", efficiency: 0.9)])
    #expect(hw.gemmEfficiency(m: 900, n: 1100, k: 1000, layout: "nn") == 0.9)
    #expect(hw.gemmEfficiency(m: 120, n: 90, k: 100, layout: "tn") == 0.5)
  }

  @Test func badInputIsOneClearError() throws {
    #expect(throws: HardwareSpec.Invalid.self) { try HardwareSpec.load("tpu-v9") }
    do { _ = try HardwareSpec.load("tpu-v9"); Issue.record("no error") } catch {
      #expect("\(error)".contains("unknown hardware \"tpu-v9\"") && "\(error)".contains("tpu-v4"))
    }
    // 48 heads are not a multiple of 5.
    do {
      _ = try Plan(PlanInputs(config: .palm540B, mesh: try MeshShape(data: 2, model: 5), remat: .full,
                              hardware: try HardwareSpec.load("tpu-v4")))
      Issue.record("no error")
    } catch { #expect("\(error)".contains("does not divide heads")) }
    do {
      _ = try Plan(PlanInputs(config: .tiny, mesh: try MeshShape(data: 2), remat: .full, microBatches: 16, hardware: cpu()))
      Issue.record("no error")
    } catch { #expect("\(error)".contains("not a multiple of pod x data x micro-batches")) }
    // A hardware file with a field missing names the field.
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("plan-bad-\(UUID().uuidString).json").path
    try Data("{\"name\": \"x\"}".utf8).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    do { _ = try HardwareSpec.load(path); Issue.record("no error") } catch { #expect("\(error)".contains("missing field")) }
  }

  @Test func hardwareRoundTripsThroughAFile() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("plan-hw-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try cpu().write(to: path)
    #expect(try HardwareSpec.load(path) == cpu())
  }

  @Test func moreRanksThanCoresSlowADeviceDown() throws {
    // 8 one-thread devices on 2 cores: each runs at a quarter of its speed.
    let one = try Plan(PlanInputs(config: .tiny, mesh: MeshShape(pod: 2), remat: .none, hardware: cpu()))
    let eight = try Plan(PlanInputs(config: .tiny, mesh: MeshShape(pod: 8), remat: .none, hardware: cpu()))
    #expect(eight.tokensPerSecond < one.tokensPerSecond)
  }

  @Test func searchRanksFittingSettingsByMFU() throws {
    var c = PalmConfig.palm62B
    c.batch = 512
    let inputs = PlanInputs(config: c, mesh: try MeshShape(data: 64, model: 4), remat: .full, hardware: try HardwareSpec.load("tpu-v4"))
    let (rows, considered) = try PlanSearch.run(inputs, chips: 256)
    #expect(!rows.isEmpty && considered > rows.count)
    #expect(zip(rows, rows.dropFirst()).allSatisfy { $0.mfu >= $1.mfu })
    #expect(rows.allSatisfy { $0.memoryBytes <= 34_359_738_368 })
    let text = PlanSearch.markdown(rows, considered: considered, chips: 256, top: 5, reference: ("pod=1,data=64,model=4", "full", 1))
    #expect(text.contains("← given") && text.contains("ranks"))
  }

  @Test func recomputeRegathersTheModelShardedInputOnlyWhenItRecomputes() throws {
    // PaLM's software saves each layer's input sharded over model; recomputing the layer (selective,
    // full) all-gathers it again: one all-gather of N·d activations per layer on the model axis.
    let tpu = try HardwareSpec.load("tpu-v4")
    func plan(_ mesh: MeshShape, _ remat: RematPolicy, _ sw: PlanSoftware = .xla) throws -> Plan {
      try Plan(PlanInputs(config: .tiny, mesh: mesh, remat: remat, hardware: tpu, software: sw))
    }
    func regather(_ p: Plan) -> Plan.Cost? { p.costs.first { $0.name.hasPrefix("model recompute all-gather") } }
    let model2 = try MeshShape(model: 2)
    let full = try #require(regather(try plan(model2, .full)))
    // α-β over the ICI torus (model alone: all 6 links): latency·(m−1) + bytes·(m−1)/m / bandwidth.
    let c = PalmConfig.tiny, ici = tpu.networks[0]
    let bytes = Double(c.batch * c.seqLen * c.dModel * PlanSoftware.xla.storage.activation)
    let bandwidth = ici.linkBandwidth.value * ici.efficiency.value * 6
    let expected = Double(c.layers) * (ici.latency.value + bytes / 2 / bandwidth)
    #expect(abs(full.seconds / expected - 1) < 1e-9 && full.bytes == Double(c.layers) * bytes)
    #expect(regather(try plan(model2, .selective)) != nil)
    #expect(regather(try plan(model2, .none)) == nil)
    #expect(regather(try plan(try MeshShape(data: 2), .full)) == nil)
    #expect(regather(try plan(model2, .full, .package)) == nil)  // this package saves the whole input
    // It lengthens the step by its own time (it is on the critical path).
    var unsharded = PlanSoftware.xla
    unsharded.storage.shardSavedInputOverModel = false
    let without = try plan(model2, .full, unsharded)
    #expect(abs(try plan(model2, .full).stepSeconds - without.stepSeconds - full.exposedSeconds) < 1e-12)
  }

  @Test func cpuCollectivesTimeShareTheCores() throws {
    // A measured 2-rank all-reduce (2 threads on 2 cores). On a mesh of 8 ranks every rank is in a
    // collective of its axis at once: 8 copying threads on 2 cores take 4 times as long.
    var hw = cpu()
    hw.collectives = [.init(operation: "all-reduce", backend: "in-process", ranks: 2, latency: 1e-4, busBandwidth: 1e9)]
    func modelAllReduce(_ mesh: MeshShape) throws -> Plan.Cost {
      let plan = try Plan(PlanInputs(config: .tiny, mesh: mesh, remat: .none, hardware: hw))
      return try #require(plan.costs.first { $0.name.hasPrefix("model all-reduce") })
    }
    for (mesh, share) in [(try MeshShape(model: 2), 1.0), (try MeshShape(pod: 2, data: 2, model: 2), 4.0)] {
      let cost = try modelAllReduce(mesh)
      // 2 all-reduces per layer; the ring factor 2(n−1)/n is 1 at n = 2.
      let alone = Double(2 * PalmConfig.tiny.layers) * 1e-4 + cost.bytes / 1e9
      #expect(abs(cost.seconds / (share * alone) - 1) < 1e-9, "\(mesh)")
    }
    // The profile's measuring condition is printed with the plan.
    hw.concurrentDevices = 2
    let plan = try Plan(PlanInputs(config: .tiny, mesh: try MeshShape(pod: 2), remat: .none, hardware: hw))
    #expect(plan.assumptions.contains { $0.name == "concurrent_devices" && $0.value.hasPrefix("2 of 1 thread") })
  }

  @Test func theMeshsBackendPicksItsMeasuredCollectives() throws {
    // A profile measures in-process and MPI collectives; --devices mpi plans with the MPI ones.
    var hw = cpu()
    hw.collectives = [.init(operation: "all-reduce", backend: "in-process", ranks: 2, latency: 1e-5, busBandwidth: 4e9),
                      .init(operation: "all-reduce", backend: "mpi", ranks: 2, latency: 1e-4, busBandwidth: 1e9)]
    func modelAllReduce(_ backend: String) throws -> Plan.Cost {
      var i = PlanInputs(config: .tiny, mesh: try MeshShape(model: 2), remat: .none, hardware: hw)
      i.collectiveBackend = backend
      return try #require(try Plan(i).costs.first { $0.name.hasPrefix("model all-reduce") })
    }
    let local = try modelAllReduce("in-process"), mpi = try modelAllReduce("mpi")
    let layers = Double(2 * PalmConfig.tiny.layers)
    #expect(abs(local.seconds - (layers * 1e-5 + local.bytes / 4e9)) < 1e-12)
    #expect(abs(mpi.seconds - (layers * 1e-4 + mpi.bytes / 1e9)) < 1e-12)
    #expect(mpi.note.contains("measured mpi collectives"))
    // A profile without the backend's measurements is one error saying how to get them.
    hw.collectives = [.init(operation: "all-reduce", backend: "in-process", ranks: 2, latency: 1e-5, busBandwidth: 4e9)]
    let error = #expect(throws: PlanError.self) { try modelAllReduce("mpi") }
    #expect("\(error.map { "\($0)" } ?? "")".contains("no mpi collectives measured") == true)
    // ...also with none measured at all (no silent fall back to a network model), and before a search.
    hw.collectives = nil
    #expect(throws: PlanError.self) { try modelAllReduce("mpi") }
    #expect(try modelAllReduce("in-process").seconds > 0)
    var search = PlanInputs(config: .tiny, mesh: try MeshShape(), remat: .none, hardware: hw)
    search.collectiveBackend = "mpi"
    #expect(throws: PlanError.self) { try PlanSearch.run(search, chips: 2) }
  }

  @Test func profileCopiesRunAtOnce() throws {
    // The profile measures a device while the other copies run: each copy must see all of them
    // started (a sequential run would leave the first alone until its deadline).
    final class Count: @unchecked Sendable {
      let lock = NSLock()
      var value = 0
    }
    let started = Count()
    let sawAll = try PlanProfile.concurrently(2, each: [0, 1]) { _ in
      started.lock.withLock { started.value += 1 }
      let deadline = Date().addingTimeInterval(10)
      while Date() < deadline {
        if started.lock.withLock({ started.value }) >= 2 { return true }
        usleep(1000)
      }
      return false
    }
    #expect(sawAll == [true, true])
  }

  @Test func podExchangeBurstIsTheHostsAtTheirNICs() throws {
    // The burst is the per-host bytes over the DCN at each host's bandwidth (2 pods: the ring factor
    // is 1), so the aggregate is hosts × NIC bandwidth × efficiency, less the latency.
    let tpu = try HardwareSpec.load("tpu-v4")
    let dcn = try #require(tpu.networks.first { $0.scope == "between-pods" })
    let x = try #require(try palm540(.full).podExchange)
    let nics = Double(x.hostsPerPod) * dcn.linkBandwidth.value * dcn.efficiency.value * 8
    #expect(x.aggregateBitsPerSecond < nics && x.aggregateBitsPerSecond > 0.99 * nics)
  }


  // MARK: calibration on published runs (PlanCalibration)

  @Test func calibrationRunsReadAsTheirPublisherCountsThem() throws {
    let tpu = try HardwareSpec.load("tpu-v4")
    let runs = try #require(tpu.calibration?.runs)
    let r = try #require(runs.first { $0.name == "maxtext-22b" })
    // MaxText 22B: 48 layers of q, k, v, o (6144 x 6144 each), a ReLU MLP (2 x 6144 x 24576) and
    // one norm scale (a parallel block), the tied 32768 x 6144 embedding and the final norm;
    // train.py's 6N + 6·L·H·Q·T per token.
    let n = 48 * (4 * 6144 * 6144 + 2 * 6144 * 24576 + 6144) + 32768 * 6144 + 6144
    #expect(r.parameters == n)
    let perToken = 6 * Double(n) + 6 * Double(48 * 24 * 256 * 2048)
    #expect(abs(r.tokensPerSecondPerChip - 156e12 / perToken) < 1e-6)
    // The stand-in keeps the matmul parameters per layer (PalmConfig's count less its LayerNorm
    // scale; within 1.5·d of rounding d_ff), so its whole count is the run's.
    for run in runs {
      let (c, mesh) = try run.standIn()
      #expect(abs(c.parametersPerLayer - c.dModel - run.matmulParametersPerLayer) <= 3 * run.embDim / 2, "\(run.name)")
      #expect(abs(c.parameterCount - run.parameters) <= c.layers * 3 * run.embDim / 2, "\(run.name)")
      #expect(c.batch == run.perDeviceBatch * mesh.count && c.dModel == run.embDim && c.heads == run.queryHeads)
    }
  }

  @Test func calibrationMeetsThePublishedRuns() throws {
    let tpu = try HardwareSpec.load("tpu-v4")
    let cal = try #require(try PlanCalibration.solve(tpu))
    // The factor is the geometric mean: the calibrated predictions' log errors cancel...
    let logErrors = cal.rows.map { log($0.predictedCalibrated / $0.measured) }
    #expect(abs(logErrors.reduce(0, +)) < 1e-4)
    // ...and each run's own factor meets that run.
    for row in cal.rows {
      let run = try #require(tpu.calibration?.runs.first { $0.name == row.name })
      let alone = try PlanCalibration.predict(run, on: tpu.scalingComputeRates(by: row.factorAlone))
      #expect(abs(alone / row.measured - 1) < 1e-3, "\(row.name)")
      #expect(abs(row.predictedUncalibrated - row.measured) > 0.01 * row.measured)  // it did move something
    }
    // Applied to PaLM: only the compute rates change, so the collectives keep their times.
    var c = PalmConfig.palm540B
    c.batch = 2048
    let inputs = PlanInputs(config: c, mesh: try MeshShape(pod: 2, data: 256, model: 12), remat: .full, hardware: tpu)
    let (scaled, applied) = try PlanCalibration.apply(inputs)
    let before = try Plan(inputs), after = try Plan(scaled)
    #expect(try #require(applied?.uncalibrated).mfu == before.mfu)
    #expect((after.mfu < before.mfu) == (cal.factor < 1))
    for kind in ["model", "data", "pod"] {
      #expect(before.costs.filter { $0.kind == kind }.map(\.seconds) == after.costs.filter { $0.kind == kind }.map(\.seconds))
    }
    // A description without published runs is left as it is.
    #expect(try PlanCalibration.solve(cpu()) == nil)
  }

  @Test func heldOutRunsArePredictedWithTheCalibratedRates() throws {
    let tpu = try HardwareSpec.load("tpu-v4")
    let cal = try #require(try PlanCalibration.solve(tpu))
    let runs = try #require(tpu.calibration?.checks)
    #expect(cal.checks.count == runs.count && !runs.isEmpty)
    let calibrated = tpu.calibrated(cal)
    for (check, run) in zip(cal.checks, runs) {
      #expect(check.name == run.name && check.measured == run.tokensPerSecondPerChip)
      #expect(abs(check.predicted / check.measured - 1) < 0.05, "\(check.name)")  // as docs/BENCHMARKS.md records
    }
    // The slices of a multi-slice run exchange gradients over the DCN: more slices, fewer tokens/s per chip.
    let slices = cal.checks.filter { $0.name.hasPrefix("maxtext-22b-") }.map(\.predicted)
    let one = try #require(cal.rows.first { $0.name == "maxtext-22b" }).predictedCalibrated
    #expect(slices.count == 3 && slices[0] < one && slices[1] < slices[0] && slices[2] < slices[1])
  }

  @Test func aBadCalibrationRunIsOneErrorNamingIt() throws {
    var tpu = try HardwareSpec.load("tpu-v4")
    tpu.calibration!.runs[0].mesh = "dta=64"
    let error = #expect(throws: PlanError.self) { try PlanCalibration.solve(tpu) }
    let text = "\(error.map { "\($0)" } ?? "")"
    #expect(text.contains("calibration run maxtext-22b") && text.contains("unknown axis") && text.contains("--no-calibration"), "\(text)")
  }
}

/// Every number of a hardware description is checked on load: a bad one is one line naming the
/// field and its range, never a trap, a NaN or a silently free network.
@Suite struct HardwareValidationTests {
  private func refused(_ edit: (inout HardwareSpec) -> Void, _ field: String) throws {
    var hw = try HardwareSpec.load("a100")
    edit(&hw)
    let error = #expect(throws: HardwareSpec.Invalid.self) { try hw.validate("x.json") }
    let text = error.map { "\($0)" } ?? ""
    #expect(text.contains("hardware x.json: \(field) must be"), "\(text)")
  }

  @Test func everyFieldIsBounded() throws {
    try refused({ $0.memoryBytes.value = 1e19 }, "memory_bytes")
    try refused({ $0.networks[2].devicesPerHost?.value = 1e300 }, "networks.infiniband-pods.devices_per_host")
    try refused({ $0.networks[2].devicesPerHost?.value = 0 }, "networks.infiniband-pods.devices_per_host")
    try refused({ $0.networks[2].devicesPerHost?.value = -5 }, "networks.infiniband-pods.devices_per_host")
    try refused({ $0.devicesPerPod?.value = 1e300 }, "devices_per_pod")
    try refused({ $0.devicesPerPod?.value = -1 }, "devices_per_pod")
    for bad in [0.0, -1, 50] { try refused({ $0.gemmCurve!.points[0].efficiency = bad }, "gemm_curve.points[0].efficiency") }
    try refused({ $0.networks[0].linksPerDevice = .init(0, "t") }, "networks.nvlink.links_per_device")
    try refused({ $0.networks[0].latency.value = -1 }, "networks.nvlink.latency")
    try refused({ $0.networks[0].scope = "pood" }, "networks.nvlink.scope")
    try refused({ $0.networks[0].topology = "ring" }, "networks.nvlink.topology")
    try refused({ $0.memoryEfficiency.value = 5 }, "memory_efficiency")
    try refused({ $0.attentionEfficiency.value = 100 }, "attention_efficiency")
    try refused({ $0.peakFLOPs[$0.precision]!.value = 1e-308 }, "peak_flops.\(try HardwareSpec.load("a100").precision)")
    try refused({ $0.threadsPerDevice = 0 }, "threads_per_device")
    try refused({ $0.cores = 0 }, "cores")
    try refused({ $0.kernels = [.init(kernel: "rmsnorm", config: "tiny", tokens: 1, bytesPerSecond: 0, efficiency: 0)] }, "kernels[0].bytes_per_second")
    for (ranks, bw) in [(1, 0.0), (0, 1e9), (-1, 1e9), (1 << 62, 1e9)] {
      try refused({ $0.collectives = [.init(operation: "all-reduce", backend: "in-process", ranks: ranks, latency: 0, busBandwidth: bw)] },
                  bw == 0 ? "collectives[0].bus_bandwidth" : "collectives[0].ranks")
    }
    // The shipped descriptions pass.
    for name in HardwareSpec.builtInNames { _ = try HardwareSpec.load(name) }
  }

  @Test func calibrationRunShapesAreBounded() throws {
    var hw = try HardwareSpec.load("tpu-v4")
    hw.calibration!.runs[0].embDim = 1 << 62
    #expect(throws: HardwareSpec.Invalid.self) { try hw.validate("t.json") }
    hw = try HardwareSpec.load("tpu-v4")
    hw.calibration!.runs[0].perDeviceBatch = 1 << 62
    #expect(throws: HardwareSpec.Invalid.self) { try hw.validate("t.json") }
    hw = try HardwareSpec.load("tpu-v4")
    hw.calibration!.runs[0].kvHeads = 0
    let e = #expect(throws: HardwareSpec.Invalid.self) { try hw.validate("t.json") }
    #expect("\(e.map { "\($0)" } ?? "")".contains("kv_heads must be"))
    hw = try HardwareSpec.load("tpu-v4")
    hw.calibration!.runs[0].mlpDim = 1 << 20; hw.calibration!.runs[0].embDim = 1 << 20; hw.calibration!.runs[0].layers = 1 << 20
    #expect(throws: HardwareSpec.Invalid.self) { try hw.validate("t.json") }
  }

  @Test func aDescriptionThatSkippedValidationGivesAnErrorNotNaN() throws {
    var hw = try HardwareSpec.load("a100")
    hw.gemmCurve!.points = hw.gemmCurve!.points.map { var p = $0; p.efficiency = 0; return p }
    let e = #expect(throws: PlanError.self) {
      try Plan(PlanInputs(config: .small, mesh: try MeshShape(parsing: "data=2"), remat: .full, hardware: hw))
    }
    #expect("\(e.map { "\($0)" } ?? "")".contains("check its rates and efficiencies"))
  }

  @Test func aMeshNeedsItsNetworks() throws {
    var hw = try HardwareSpec.load("a100")
    hw.networks = []
    let e = #expect(throws: PlanError.self) {
      try Plan(PlanInputs(config: .small, mesh: try MeshShape(parsing: "data=2"), remat: .full, hardware: hw))
    }
    #expect("\(e.map { "\($0)" } ?? "")".contains("no \"pod\" network"))
    hw = try HardwareSpec.load("a100")
    hw.networks.removeAll { $0.scope == "between-pods" }
    #expect(throws: PlanError.self) {
      try Plan(PlanInputs(config: .small, mesh: try MeshShape(parsing: "pod=2"), remat: .full, hardware: hw))
    }
    // One device needs no network.
    hw.networks = []
    #expect(try Plan(PlanInputs(config: .small, mesh: try MeshShape(), remat: .full, hardware: hw)).tokensPerSecond > 0)
  }

  @Test func searchIsBoundedAndSaysWhyNothingFits() throws {
    let base = PlanInputs(config: .small, mesh: try MeshShape(), remat: .full, hardware: try HardwareSpec.load("a100"))
    #expect(throws: PlanError.self) { try PlanSearch.run(base, chips: 1 << 62) }
    let e = #expect(throws: PlanError.self) { try PlanSearch.run(base, chips: 7) }
    #expect("\(e.map { "\($0)" } ?? "")".contains("no mesh of 7 devices"))
    var narrowed = base
    narrowed.searchRemat = RematPolicy.none; narrowed.searchMicroBatches = 2
    let rows = try PlanSearch.run(narrowed, chips: 4).fitting
    #expect(!rows.isEmpty && rows.allSatisfy { $0.remat == "none" && $0.microBatches == 2 })
    var k = base
    k.microBatches = 1 << 62
    #expect(throws: PlanError.self) { try Plan(k) }
  }
}

/// A config file names its problem: a wrong type, an unknown key (a typo), too many layers.
@Suite struct ConfigFileTests {
  private func message(_ json: String) -> String {
    do { _ = try JSONDecoder().decode(PalmConfig.self, from: Data(json.utf8)); return "" } catch { return "\(error)" }
  }
  private let good = #""name": "x", "dModel": 256, "layers": 2, "heads": 4, "headDim": 64, "dFF": 1024, "vocab": 256, "seqLen": 64, "batch": 8"#

  @Test func keysAndTypesAreNamed() throws {
    #expect(message("{\(good)}") == "")
    #expect(message("{\(good.replacingOccurrences(of: "\"dModel\": 256", with: "\"dModel\": 256.5"))}").contains("\"dModel\" must be a whole number"))
    let typo = message("{\(good), \"kvHeads\": 1, \"d_model\": 3}")
    #expect(typo.contains("unknown keys \"d_model\", \"kvHeads\"") && typo.contains("the keys: name, dModel"))
    #expect(message("{\(good.replacingOccurrences(of: "\"batch\": 8", with: "\"batch\": \"8\""))}").contains("\"batch\" must be a whole number"))
    // Every preset round-trips through its JSON.
    for (_, c) in PalmConfig.presets {
      #expect(try JSONDecoder().decode(PalmConfig.self, from: try JSONEncoder().encode(c)) == c)
    }
  }

  @Test func layersAreBounded() throws {
    var c = PalmConfig.tiny
    c.layers = 16_777_216
    let e = #expect(throws: PalmConfig.Invalid.self) { try c.validate() }
    #expect("\(e.map { "\($0)" } ?? "")".contains("larger than 4096"))
    for (_, p) in PalmConfig.presets { try p.validate() }
  }

  @Test func aBatchMeshMismatchSaysTheWayOut() throws {
    let e = #expect(throws: MeshError.self) { try MeshShape(parsing: "data=3").validate(config: .small, batch: 8) }
    #expect("\(e.map { "\($0)" } ?? "")".contains("use --batch 6"))
  }
}
