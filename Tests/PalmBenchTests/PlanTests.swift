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
}
