// Plan: a first-principles cost model of one training step of a PaLM-style model on a mesh of
// devices (`palm plan`): memory per device, FLOPs, time per kernel class and per collective, and
// the tokens/s, MFU and HFU that follow. It reuses the package's accounting and does not restate it:
// memory is MeshMemory (ShardedLayout + MemoryPlan), FLOPs are FLOPs.hardware / FLOPs.modelPerToken,
// element-wise traffic is KernelBench.cost, the collectives' traffic factors are nccl-tests' (as in
// CollectiveBench). What the model knows of a device comes from a HardwareSpec (PlanHardware.swift);
// what it assumes of the software (byte widths, overlap) is a PlanSoftware, printed with the plan.
// It is not a simulator: no pipelining, no contention between axes, no stragglers.

import Foundation
import PalmModel
import PalmTrain

/// What the plan assumes of the software that runs the step: byte widths, what is sharded, what
/// overlaps what. Two presets: `package` (this package on a CPU, what MeshMemory allocates) and
/// `xla` (PaLM's T5X/GSPMD on TPU as §4 of the paper describes it).
public struct PlanSoftware: Codable, Sendable, Equatable {
  public var name: String
  /// Byte widths and sharding of memory (the one accounting: MeshMemory).
  public var storage: MeshMemory.Storage
  /// Bytes per gradient element on the wire (reduce-scatter over data, the pod exchange).
  public var wireGradientBytes: Int
  /// Charge attention over the full T (a dense masked kernel, as XLA's) instead of this package's
  /// causal tiles.
  public var attentionFullSpan: Bool
  /// Fraction of each layer's data-axis collectives that may hide behind that layer's compute
  /// (0: the collective blocks, as this package's all-gather; 1: prefetched, as XLA schedules it).
  public var dataOverlap: Double
  /// The pod exchange starts only after the whole backward (PaLM §4) instead of per layer bucket.
  public var podAfterBackward: Bool
  /// Torus links (of the device's `links_per_device`) the model axis uses when data > 1 too.
  public var modelAxisLinks: Double
  /// Where each choice comes from, by field name.
  public var sources: [String: String]

  /// This package on a CPU: fp32 everywhere, replicated head and block input on `model`, blocking
  /// all-gathers, the bucketed non-blocking pod exchange (docs/ARCHITECTURE.md, "One training step
  /// on a mesh").
  public static let package = PlanSoftware(
    name: "package", storage: .package, wireGradientBytes: 4, attentionFullSpan: false, dataOverlap: 0,
    podAfterBackward: false, modelAxisLinks: 2,
    sources: [
      "storage": "MeshMemory: fp32 weights, gradients, moments, gathered weights and activations (what this package allocates)",
      "wireGradientBytes": "this package reduces fp32 gradients",
      "attentionFullSpan": "pk_attention skips the key tiles above the diagonal (FLOPs.AttentionSpan.kernel)",
      "dataOverlap": "ShardStorage gathers a layer's weights just before it runs (blocking)",
      "podAfterBackward": "ShardStorage starts each layer's pod all-reduce after its backward (iAllReduce)",
      "modelAxisLinks": "unused on a CPU",
    ])

  /// PaLM's T5X/GSPMD on TPU v4, as far as the paper describes it.
  public static let xla: PlanSoftware = {
    var s = MeshMemory.Storage()
    s.activation = 2
    s.gathered = 2
    s.shardEmbeddingOverModel = true
    s.shardSavedInputOverModel = true
    return PlanSoftware(
      name: "xla", storage: s, wireGradientBytes: 2, attentionFullSpan: true, dataOverlap: 1,
      podAfterBackward: true, modelAxisLinks: 2,
      sources: [
        "storage.activation": "UNCONFIRMED: PaLM never names its precision; bf16 activations as Gopher (Rae et al. 2021)",
        "storage.gathered": "UNCONFIRMED: weights all-gathered as bf16",
        "storage.weight+gradient+moment": "assumption: fp32 master weights, gradients and Adafactor moments",
        "wireGradientBytes": "UNCONFIRMED: 16-bit gradients; 2 B x 540.35e9 / 768 hosts = 1.31 GiB matches PaLM's '1.3 GB per host'",
        "storage.shardEmbeddingOverModel": "assumption: GSPMD '2D finalized' shards every weight over both axes (PaLM §4: each weight tensor is split over the 3072 chips)",
        "storage.shardSavedInputOverModel": "PaLM §4: 'one fully sharded activation tensor is saved per layer'",
        "attentionFullSpan": "assumption: XLA computes the masked T x T scores densely",
        "dataOverlap": "assumption: XLA prefetches each layer's all-gather behind the previous layer's compute",
        "podAfterBackward": "PaLM §4: the cross-pod transfer starts only after all gradients are computed",
        "modelAxisLinks": "assumption: the 12-way model axis lies along one torus dimension (2 of 6 links)",
      ])
  }()
}

/// The inputs of one plan.
public struct PlanInputs: Sendable {
  /// The model; `config.batch` is the global batch in sequences.
  public var config: PalmConfig
  public var mesh: MeshShape
  public var remat: RematPolicy
  /// Gradient-accumulation micro-batches per step (each device runs batch/(pod·data·k) rows at a time).
  public var microBatches: Int
  /// "adamw" or "adafactor" (PaLM's unfactored Adafactor): both keep two moments per parameter.
  public var optimizer: String
  public var hardware: HardwareSpec
  public var software: PlanSoftware
  /// CPU only: OpenMP threads per device (default: the machine's cores / devices, as MeshLauncher).
  public var threadsPerDevice: Int?
  /// CPU only: whose measured collectives the mesh uses: "in-process" (`--devices local`) or "mpi"
  /// (ranks under mpirun), as `palm plan --profile` recorded them.
  public var collectiveBackend: String = PlanProfile.inProcess
  /// `--chips` only: the remat policy and micro-batching to search (nil: all of them).
  public var searchRemat: RematPolicy? = nil
  public var searchMicroBatches: Int? = nil

  public init(config: PalmConfig, mesh: MeshShape, remat: RematPolicy, microBatches: Int = 1,
              optimizer: String = "adamw", hardware: HardwareSpec, software: PlanSoftware? = nil,
              threadsPerDevice: Int? = nil) {
    self.config = config
    self.mesh = mesh
    self.remat = remat
    self.microBatches = microBatches
    self.optimizer = optimizer
    self.hardware = hardware
    self.software = software ?? (hardware.kind == "cpu" ? .package : .xla)
    self.threadsPerDevice = threadsPerDevice
  }

  /// Moments per parameter of the optimizer.
  public static let optimizerMoments = ["adamw": 2, "adafactor": 2]

  /// Throws `PlanError` when the hardware has measured collectives but none of `collectiveBackend`,
  /// or when MPI is asked of a description without MPI measurements (it would fall back to a
  /// network model that is not MPI's).
  public func checkCollectiveBackend() throws {
    let cs = hardware.collectives ?? []
    guard !cs.contains(where: { $0.backend == collectiveBackend }) else { return }
    guard !cs.isEmpty || collectiveBackend == PlanProfile.mpi else { return }
    let have = cs.isEmpty ? "none" : Set(cs.map(\.backend)).sorted().joined(separator: ", ")
    throw PlanError("hardware \(hardware.name) has no \(collectiveBackend) collectives measured (it has: \(have)); "
                    + (collectiveBackend == PlanProfile.mpi ? "profile again with mpirun on PATH (palm plan --profile measures MPI then), or plan --devices local"
                                                  : "plan with the backend it has"))
  }
}

/// A bad plan input (one line for the CLI).
public struct PlanError: Error, CustomStringConvertible, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// The predicted step: memory, FLOPs, time, throughput.
public struct Plan: Codable, Sendable {
  public struct Memory: Codable, Sendable {
    public var weights: Int, gradients: Int, optimizer: Int, optimizerName: String
    /// Gathered weights and their gradients (data > 1), and the activation scratch and backward buffers.
    public var gathered: Int, activationScratch: Int
    /// Activations kept from forward to backward under the remat policy.
    public var activationsSaved: Int
    public var total: Int
    /// The memory one device may use (a CPU's memory is shared by its in-process devices).
    public var available: Int
    public var fits: Bool
  }

  public struct FLOPsSummary: Codable, Sendable {
    /// PaLM Appendix B per token (MFU numerator): 6N + 12·L·H·Q·T.
    public var modelPerToken: Double
    /// What the devices execute per token of the global batch, recomputation and replication included.
    public var hardwarePerToken: Double
    /// PaLM's own rule (App. B: 75% of non-attention forward and all attention forward recomputed).
    public var palmRulePerToken: Double
    /// Per device per step.
    public var modelPerDevice: Double, hardwarePerDevice: Double
  }

  /// One line of the time breakdown.
  public struct Cost: Codable, Sendable {
    public var name: String
    /// "compute", "memory", "model", "data", "pod".
    public var kind: String
    /// Per step per device.
    public var seconds: Double
    /// On the critical path (after overlap).
    public var exposedSeconds: Double
    /// Bytes per device per step (collectives; element-wise traffic for memory).
    public var bytes: Double
    public var note: String
  }

  public struct PodExchange: Codable, Sendable {
    public var bytesPerDevice: Double, bytesPerHost: Double
    public var devicesPerHost: Int, hostsPerPod: Int
    public var burstSeconds: Double
    /// hosts per pod × per-host bytes × 8 / burst seconds (one direction of every host pair).
    public var aggregateBitsPerSecond: Double
  }

  public var config: String, mesh: String, remat: String, hardware: String, software: String
  public var devices: Int, globalBatch: Int, seqLen: Int, microBatches: Int, rowsPerMicroBatch: Int
  public var threadsPerDevice: Int?
  public var peakPerDevice: Double, precision: String
  public var memory: Memory
  public var flops: FLOPsSummary
  public var costs: [Cost]
  public var stepSeconds: Double
  public var tokensPerSecond: Double
  public var mfu: Double, hfu: Double
  public var podExchange: PodExchange?
  /// Every assumption, with its value and its source.
  public var assumptions: [Assumption]
  /// The calibration of the hardware's compute rates on its published runs, when it was applied.
  public var calibration: PlanCalibration? = nil

  public struct Assumption: Codable, Sendable, Equatable {
    public var name: String, value: String, source: String, isAssumption: Bool
  }
}

extension Plan {
  /// Computes the plan. Throws `PlanError`, `MeshError` or `PalmConfig.Invalid` for bad input.
  public init(_ inputs: PlanInputs) throws {
    let c = inputs.config, mesh = inputs.mesh, hw = inputs.hardware, sw = inputs.software
    let (p, dAxis, m) = (mesh.pod, mesh.data, mesh.model)
    let k = inputs.microBatches
    guard (1...TrainOptions.maxMicroBatches).contains(k) else {
      throw PlanError("--micro-batches must be 1...\(TrainOptions.maxMicroBatches) (2^20, as palm train) (got \(k))")
    }
    if let t = inputs.threadsPerDevice, !(1...HardwareSpec.maxCount).contains(t) {
      throw PlanError("--threads-per-device must be 1...\(HardwareSpec.maxCount) (got \(t))")
    }
    guard let moments = PlanInputs.optimizerMoments[inputs.optimizer] else {
      throw PlanError("unknown optimizer \"\(inputs.optimizer)\" (use adamw or adafactor)")
    }
    let layout = try ShardedLayout(config: c, shape: mesh)  // validates config and divisibility
    guard c.batch % (p * dAxis * k) == 0 else {
      throw PlanError("batch \(c.batch) is not a multiple of pod x data x micro-batches = \(p * dAxis * k): give --batch a multiple of it, or fewer --micro-batches")
    }
    try PlanNetwork(hardware: hw, software: inputs.software, mesh: mesh).checkNetworks()
    let devices = mesh.count
    let rows = c.batch / (p * dAxis * k)
    let n = rows * c.seqLen  // tokens per device per micro-batch
    let local = layout.local
    let isCPU = hw.kind == "cpu"

    // CPU: a device is a rank of T threads, all ranks on this machine. The profile measured a
    // device's rates with the machine full (PlanProfile: cores / T ranks at once, sharing memory
    // bandwidth and caches); a mesh of more ranks × threads than cores time-shares the cores, each
    // rank running cores / (ranks × T) of the time.
    var speed = 1.0, peakDenominator = hw.peak, threads: Int? = nil
    if isCPU {
      let cores = max(1, hw.cores ?? 1), measured = max(1, hw.threadsPerDevice ?? 1)
      let t = inputs.threadsPerDevice ?? max(1, cores / devices)
      threads = t
      let timeShare = hw.timeShare(ranks: devices, threadsPerRank: t)
      speed = Double(t) / Double(measured) * timeShare
      peakDenominator = hw.peak / Double(measured) * Double(min(t, cores)) * timeShare
    }
    let peak = hw.peak * speed

    // MARK: memory (MeshMemory, with the software's byte widths)
    let mem = try MeshMemory(config: c, shape: mesh, remat: inputs.remat, optimizer: moments, microBatches: k, storage: sw.storage)
    let available = Int(hw.memoryBytes.value) / (isCPU ? devices : 1)
    memory = Memory(weights: mem.parameterBytes, gradients: mem.gradientBytes, optimizer: mem.optimizerBytes,
                    optimizerName: "\(inputs.optimizer) (\(moments) moments x \(sw.storage.moment) B)",
                    gathered: mem.gatheredBytes, activationScratch: mem.scratchActivationBytes,
                    activationsSaved: mem.savedActivationBytes, total: mem.totalBytes, available: available,
                    fits: mem.totalBytes <= available)

    // MARK: FLOPs (FLOPs.swift)
    let span: FLOPs.AttentionSpan? = sw.attentionFullSpan ? .full : nil
    var breakdown = FLOPs.hardware(local, remat: inputs.remat, attention: span)
    let headShare = sw.storage.shardEmbeddingOverModel ? 1 / Double(m) : 1
    for i in breakdown.matmuls.indices where breakdown.matmuls[i].name == "logits" {
      breakdown.matmuls[i].forward *= headShare
      breakdown.matmuls[i].backward *= headShare
    }
    let tokensPerDevice = Double(c.batch * c.seqLen) / Double(p * dAxis)
    let modelPerToken = FLOPs.modelPerToken(c)
    let hardwarePerToken = Double(m) * breakdown.total
    flops = FLOPsSummary(
      modelPerToken: modelPerToken, hardwarePerToken: hardwarePerToken,
      palmRulePerToken: FLOPs.palmHardwarePerToken(c, recomputedNonAttentionFraction: inputs.remat == .full ? 0.75 : 0),
      modelPerDevice: modelPerToken * tokensPerDevice / Double(m), hardwarePerDevice: breakdown.total * tokensPerDevice)

    // MARK: compute per micro-batch, by kernel class
    let d = c.dModel, cin = local.inputProjectionColumns, cout = local.outputProjectionRows
    let vocab = sw.storage.shardEmbeddingOverModel ? (c.vocab + m - 1) / m : c.vocab
    let headRows = MemoryPlan.headRows(n: n, vocab: c.vocab)
    func gemm(_ flops: Double, _ mm: Int, _ nn: Int, _ kk: Int, _ layout: String) -> Double {
      flops / (peak * hw.gemmEfficiency(m: mm, n: nn, k: kk, layout: layout))
    }
    func attentionEfficiency(_ kernel: String) -> Double {
      hw.kernelRate(kernel, config: c.name, tokens: n)?.efficiency ?? hw.attentionEfficiency.value
    }
    var costs: [Cost] = []
    var computeMB = 0.0, backwardMB = 0.0
    let nd = Double(n)
    for mm in breakdown.matmuls {
      let f = mm.forward * nd, b = mm.backward * nd, r = mm.recompute * nd
      let fwd: Double, bwd: Double, rec: Double, note: String
      switch mm.name {
      case "qkv_proj+mlpwi":
        fwd = gemm(f, n, cin, d, "nn"); rec = gemm(r, n, cin, d, "nn")
        bwd = gemm(b / 2, n, d, cin, "nt") + gemm(b / 2, d, cin, n, "tn")
        note = "(\(n) x \(d)) . (\(d) x \(cin)) at \(pct(hw.gemmEfficiency(m: n, n: cin, k: d, layout: "nn")))"
      case "out_proj+mlpwo":
        fwd = gemm(f, n, d, cout, "nn"); rec = gemm(r, n, d, cout, "nn")
        bwd = gemm(b / 2, n, cout, d, "nt") + gemm(b / 2, cout, d, n, "tn")
        note = "(\(n) x \(cout)) . (\(cout) x \(d)) at \(pct(hw.gemmEfficiency(m: n, n: d, k: cout, layout: "nn")))"
      case "logits":
        fwd = gemm(f, headRows, vocab, d, "nn"); rec = 0
        bwd = gemm(b / 2, headRows, d, vocab, "nt") + gemm(b / 2, vocab, d, headRows, "tn")
        note = "(\(headRows) x \(d)) . (\(d) x \(vocab)) row chunks at \(pct(hw.gemmEfficiency(m: headRows, n: vocab, k: d, layout: "nn")))"
      default:  // attention_scores, context
        let ef = attentionEfficiency("attention.forward"), eb = attentionEfficiency("attention.backward")
        fwd = f / (peak * ef); rec = r / (peak * ef); bwd = b / (peak * eb)
        note = "attention at \(pct(ef)) forward, \(pct(eb)) backward of peak"
      }
      computeMB += fwd + bwd + rec
      backwardMB += bwd + rec
      costs.append(Cost(name: mm.name, kind: "compute", seconds: Double(k) * (fwd + bwd + rec),
                        exposedSeconds: Double(k) * (fwd + bwd + rec), bytes: 0, note: note))
    }

    // MARK: element-wise kernels (KernelBench.cost: compulsory bytes at the shard's shapes)
    var shape = KernelBench.Shape(local)
    shape.batch = rows
    shape.vocab = vocab
    let actScale = Double(sw.storage.activation) / 4
    func rate(_ kernel: KernelBench.Kernel) -> Double {
      if let r = hw.kernelRate(kernel.rawValue, config: c.name, tokens: n) { return r.bytesPerSecond * speed }
      return hw.memoryBandwidth.value * hw.memoryEfficiency.value * speed
    }
    let forwards = inputs.remat == .none ? 1.0 : 2.0  // selective and full recompute LayerNorm and SwiGLU
    let perLayer: [(KernelBench.Kernel, Double)] = [
      (.layernormForward, forwards), (.layernormBackward, 1), (.swigluForward, forwards), (.swigluBackward, 1)]
    let head: [(KernelBench.Kernel, Double)] = [
      (.layernormForward, 1), (.layernormBackward, 1), (.xentForwardBackward, 1), (.embeddingForward, 1), (.embeddingBackward, 1)]
    var elementMB = 0.0, elementBytes = 0.0
    for (kernel, calls) in perLayer {
      let bytes = KernelBench.cost(kernel, shape).bytes * actScale * calls * Double(c.layers)
      elementMB += bytes / rate(kernel); elementBytes += bytes
    }
    for (kernel, calls) in head {
      let bytes = KernelBench.cost(kernel, shape).bytes * actScale * calls
      elementMB += bytes / rate(kernel); elementBytes += bytes
    }
    backwardMB += elementMB / 2
    costs.append(Cost(name: "layernorm+swiglu+loss+embedding", kind: "memory", seconds: Double(k) * elementMB,
                      exposedSeconds: Double(k) * elementMB, bytes: Double(k) * elementBytes,
                      note: "compulsory bytes (KernelBench.cost) at \(rateText(rate(.layernormForward)))"))
    // The optimizer update (AdamW: 7 fp32 per parameter) and the global-norm clip (read, scale: 3).
    var optShape = shape
    optShape.parameters = mem.shardFloats
    let optBytes = KernelBench.cost(.adamw, optShape).bytes + 12 * Double(mem.shardFloats)
    let optSeconds = optBytes / rate(.adamw)
    costs.append(Cost(name: "optimizer+clip", kind: "memory", seconds: optSeconds, exposedSeconds: optSeconds,
                      bytes: optBytes, note: "\(inputs.optimizer) on the \(mem.shardFloats)-float shard + global-norm clip"))

    // MARK: collectives
    try inputs.checkCollectiveBackend()
    let net = PlanNetwork(hardware: hw, software: sw, mesh: mesh, backend: inputs.collectiveBackend)
    var exposedMB = 0.0
    if m > 1 {
      let actBytes = Double(sw.storage.activation)
      let fwdBytes = nd * Double(d) * actBytes
      let bwdBytes = (nd * Double(d) + Double(d * 2 * c.headDim)) * actBytes
      let t = Double(c.layers) * (net.seconds("all-reduce", bytes: fwdBytes, axis: .model)
                                  + net.seconds("all-reduce", bytes: bwdBytes, axis: .model))
      exposedMB += t
      costs.append(Cost(name: "model all-reduce x \(2 * c.layers)", kind: "model", seconds: Double(k) * t,
                        exposedSeconds: Double(k) * t, bytes: Double(k * c.layers) * (fwdBytes + bwdBytes),
                        note: "block output (forward) and input gradient + K/V gradient (backward), per layer, on the critical path; \(net.describe(.model))"))
    }
    // Recomputing a layer (selective, full) starts from its saved input. Saved sharded over model
    // (PaLM §4: "one fully sharded activation tensor is saved per layer"), it is all-gathered again
    // first: the forward's all-gather half repeated. The out-projection's reduce-scatter half is
    // not: the backward never needs the block's output (FLOPs.hardware recomputes no out_proj).
    if m > 1 && inputs.remat != .none && sw.storage.shardSavedInputOverModel {
      let bytes = nd * Double(d) * Double(sw.storage.activation)
      let t = Double(c.layers) * net.seconds("all-gather", bytes: bytes, axis: .model)
      exposedMB += t
      costs.append(Cost(name: "model recompute all-gather x \(c.layers)", kind: "model", seconds: Double(k) * t,
                        exposedSeconds: Double(k) * t, bytes: Double(k * c.layers) * bytes,
                        note: "each layer's model-sharded saved input gathered again for its recompute, on the critical path; \(net.describe(.model))"))
    }
    if dAxis > 1 {
      let layerFloats = Double(layout.layerGatherFloats)
      let headFloats = Double(layout.gatheredFloats(ShardedLayout.headBucket)) * headShare
      let gather = Double(sw.storage.gathered), grad = Double(sw.wireGradientBytes)
      let perLayerComm = 2 * net.seconds("all-gather", bytes: layerFloats * gather, axis: .data)
        + net.seconds("reduce-scatter", bytes: layerFloats * grad, axis: .data)
      let headComm = net.seconds("all-gather", bytes: headFloats * gather, axis: .data)
        + net.seconds("reduce-scatter", bytes: headFloats * grad, axis: .data)
      let layerCompute = (computeMB + elementMB) / Double(c.layers)
      let h = min(max(sw.dataOverlap, 0), 1)
      let exposedLayer = (1 - h) * perLayerComm + h * max(0, perLayerComm - layerCompute)
      let total = Double(c.layers) * perLayerComm + headComm
      let exposed = Double(c.layers) * exposedLayer + headComm
      exposedMB += exposed
      costs.append(Cost(name: "data all-gather x \(2 * c.layers + 1), reduce-scatter x \(c.layers + 1)", kind: "data",
                        seconds: Double(k) * total, exposedSeconds: Double(k) * exposed,
                        bytes: Double(k) * ((Double(c.layers) * layerFloats + headFloats) * (gather + grad) + Double(c.layers) * layerFloats * gather),
                        note: "each layer's weights gathered for its forward and its backward, its gradient reduce-scattered; \(Int(h * 100))% may hide behind the layer's compute; \(net.describe(.data))"))
    }
    var pod: PodExchange? = nil
    var podExposed = 0.0
    if p > 1 {
      let bytes = Double(mem.shardFloats) * Double(sw.wireGradientBytes)
      let t = net.seconds("all-reduce", bytes: bytes, axis: .pod)
      let headFraction = Double(layout.chunkFloats[ShardedLayout.headBucket]) * headShare / Double(mem.shardFloats)
      podExposed = sw.podAfterBackward ? t : max(0, t * (1 - headFraction) - backwardMB) + t * headFraction
      costs.append(Cost(name: "pod all-reduce", kind: "pod", seconds: t, exposedSeconds: podExposed, bytes: bytes,
                        note: (sw.podAfterBackward ? "after the whole backward (not overlapped)" : "per layer bucket, behind the rest of the backward (the head's last)") + "; \(net.describe(.pod))"))
      let perHost = max(1, net.devicesPerHost)
      let hostsPerPod = max(1, (dAxis * m) / perHost)
      let hostBytes = bytes * Double(perHost)
      pod = PodExchange(bytesPerDevice: bytes, bytesPerHost: hostBytes, devicesPerHost: perHost, hostsPerPod: hostsPerPod,
                        burstSeconds: t, aggregateBitsPerSecond: t > 0 ? Double(hostsPerPod) * hostBytes * 8 / t : 0)
    }
    podExchange = pod

    let step = Double(k) * (computeMB + elementMB + exposedMB) + optSeconds + podExposed
    stepSeconds = step
    tokensPerSecond = Double(c.batch * c.seqLen) / step
    mfu = tokensPerSecond * modelPerToken / (Double(devices) * peakDenominator)
    hfu = tokensPerSecond * hardwarePerToken / (Double(devices) * peakDenominator)
    self.costs = costs
    config = c.name; self.mesh = mesh.description; remat = inputs.remat.rawValue; hardware = hw.name
    software = sw.name; self.devices = devices; globalBatch = c.batch; seqLen = c.seqLen; microBatches = k
    rowsPerMicroBatch = rows; threadsPerDevice = threads; peakPerDevice = peakDenominator; precision = hw.precision
    assumptions = Plan.assumptions(hw, sw)
    // Every figure printed or written is a number: a NaN or infinity is the description's fault.
    let figures: [(String, Double)] = [("step time", stepSeconds), ("tokens/s", tokensPerSecond), ("MFU", mfu), ("HFU", hfu),
                                       ("peak per device", peakDenominator)] + costs.map { ("\($0.name) seconds", $0.seconds) }
    if let bad = figures.first(where: { !$0.1.isFinite || $0.1 < 0 }) {
      throw PlanError("hardware \(hw.name) gives a \(bad.0) of \(bad.1) on mesh \(mesh): check its rates and efficiencies")
    }
  }

  /// Every hardware number and software choice the plan used, with its source.
  static func assumptions(_ hw: HardwareSpec, _ sw: PlanSoftware) -> [Assumption] {
    var a: [Assumption] = []
    func add(_ name: String, _ n: HardwareSpec.Number?, _ unit: String = "") {
      guard let n else { return }
      a.append(Assumption(name: name, value: "\(PlanText.number(n.value))\(unit)", source: n.source, isAssumption: n.assumption ?? false))
    }
    add("peak_flops.\(hw.precision)", hw.peakFLOPs[hw.precision], " FLOP/s")
    add("memory_bytes", hw.memoryBytes, " B")
    add("memory_bandwidth", hw.memoryBandwidth, " B/s")
    add("memory_efficiency", hw.memoryEfficiency)
    if let g = hw.gemmCurve {
      a.append(Assumption(name: "gemm_curve", value: g.points.map { ">=\($0.minDim): \($0.efficiency)" }.joined(separator: ", "),
                          source: g.source, isAssumption: g.assumption ?? false))
    }
    if let g = hw.gemmPoints {
      a.append(Assumption(name: "gemm_points", value: "\(g.points.count) measured shapes", source: g.source, isAssumption: false))
    }
    if let ks = hw.kernels, !ks.isEmpty {
      a.append(Assumption(name: "kernels", value: "\(ks.count) measured kernel rates", source: "palm plan --profile (KernelBench)", isAssumption: false))
    }
    if let cs = hw.collectives, !cs.isEmpty {
      let backends = Set(cs.map(\.backend)).sorted().map { b in "\(b) \(cs.filter { $0.backend == b }.count)" }.joined(separator: ", ")
      a.append(Assumption(name: "collectives", value: "measured (latency, busbw): \(backends)", source: "palm plan --profile (CollectiveBench; mpi: over mpirun)", isAssumption: false))
    }
    if let n = hw.concurrentDevices {
      a.append(Assumption(name: "concurrent_devices", value: "\(n) of \(hw.threadsPerDevice ?? 1) thread(s) on \(hw.cores ?? 1) cores",
                          source: "palm plan --profile: the rates were measured with this many devices running at once", isAssumption: false))
    }
    add("attention_efficiency", hw.attentionEfficiency)
    for n in hw.networks {
      add("\(n.name).link_bandwidth", n.linkBandwidth, " B/s")
      add("\(n.name).links_per_device", n.linksPerDevice)
      add("\(n.name).devices_per_host", n.devicesPerHost)
      add("\(n.name).latency", n.latency, " s")
      add("\(n.name).efficiency", n.efficiency)
    }
    let s = sw.storage
    let values: [(String, String)] = [
      ("storage.activation", "\(s.activation) B"), ("storage.gathered", "\(s.gathered) B"),
      ("storage.weight+gradient+moment", "\(s.weight) / \(s.gradient) / \(s.moment) B"),
      ("wireGradientBytes", "\(sw.wireGradientBytes) B"),
      ("storage.shardEmbeddingOverModel", "\(s.shardEmbeddingOverModel)"),
      ("storage.shardSavedInputOverModel", "\(s.shardSavedInputOverModel)"),
      ("attentionFullSpan", "\(sw.attentionFullSpan)"), ("dataOverlap", "\(sw.dataOverlap)"),
      ("podAfterBackward", "\(sw.podAfterBackward)"), ("modelAxisLinks", "\(sw.modelAxisLinks)"),
    ]
    for (name, value) in values {
      let source = sw.sources[name] ?? sw.sources[name.components(separatedBy: ".").first ?? name] ?? "software preset \(sw.name)"
      a.append(Assumption(name: "software.\(name)", value: value, source: source,
                          isAssumption: source.hasPrefix("assumption") || source.hasPrefix("UNCONFIRMED")))
    }
    return a
  }
}

/// How the plan's mesh axes map onto the device's networks, and the α-β time of a collective.
///
/// ```
/// t = latency · steps + bytes · factor / bandwidth        bytes = the whole buffer (nccl-tests)
/// all-reduce: factor 2(n−1)/n, steps 2(n−1);  all-gather, reduce-scatter: (n−1)/n, n−1
/// bandwidth per device: torus: links · link_bandwidth · efficiency (the model axis takes
///   `modelAxisLinks` of them when data > 1, data the rest); switch: link_bandwidth · efficiency;
///   host-nic: link_bandwidth · efficiency / devices_per_host; measured: the profile's busbw
/// ```
struct PlanNetwork {
  enum Axis: String { case model, data, pod }
  let hardware: HardwareSpec, software: PlanSoftware, mesh: MeshShape
  /// Whose measured collectives to use ("in-process" or "mpi"), when the hardware has measurements.
  let backend: String

  init(hardware: HardwareSpec, software: PlanSoftware, mesh: MeshShape, backend: String = PlanProfile.inProcess) {
    self.hardware = hardware; self.software = software; self.mesh = mesh; self.backend = backend
  }

  /// Throws `PlanError` naming the network an axis of the mesh needs and the description lacks
  /// (without one its collectives would cost nothing). Measured collectives need none.
  func checkNetworks() throws {
    if let cs = hardware.collectives, !cs.isEmpty { return }
    let pod = hardware.networks.filter { $0.scope == "pod" }, between = hardware.networks.filter { $0.scope == "between-pods" }
    if mesh.model * mesh.data > 1 && pod.isEmpty {
      throw PlanError("hardware \(hardware.name) has no \"pod\" network for mesh \(mesh)'s data/model axes: add one to its networks, or plan on model=1,data=1")
    }
    if mesh.pod > 1 && between.isEmpty {
      throw PlanError("hardware \(hardware.name) has no \"between-pods\" network for mesh \(mesh)'s pod axis: add one to its networks, or plan on pod=1")
    }
  }

  func size(_ axis: Axis) -> Int {
    switch axis { case .model: mesh.model; case .data: mesh.data; case .pod: mesh.pod }
  }

  /// The network an axis uses.
  func network(_ axis: Axis) -> HardwareSpec.Network? {
    let inPod = hardware.networks.filter { $0.scope == "pod" }
    switch axis {
    case .pod:
      return hardware.networks.first { $0.scope == "between-pods" }
    case .model, .data:
      let span = axis == .model ? mesh.model : mesh.model * mesh.data
      return inPod.first { $0.domainDevices.value >= Double(span) } ?? inPod.last
    }
  }

  var devicesPerHost: Int { Int(network(.pod)?.devicesPerHost?.value ?? 1) }

  /// Bytes per second one device moves on `axis`.
  func bandwidth(_ axis: Axis) -> Double {
    guard let n = network(axis) else { return .infinity }
    let raw = n.linkBandwidth.value * n.efficiency.value
    switch n.topology {
    case "torus3d", "torus2d":
      let links = n.linksPerDevice?.value ?? 2
      let shared = network(.model)?.name == network(.data)?.name && mesh.model > 1 && mesh.data > 1
      let modelLinks = min(software.modelAxisLinks, links)
      let mine = !shared ? links : (axis == .model ? modelLinks : max(1, links - modelLinks))
      return raw * mine
    case "host-nic":
      return raw / max(1, n.devicesPerHost?.value ?? 1)
    default:
      return raw
    }
  }

  /// Seconds of one collective `operation` of `bytes` (the whole buffer) over `axis`.
  func seconds(_ operation: String, bytes: Double, axis: Axis) -> Double {
    let ranks = size(axis)
    guard ranks > 1 else { return 0 }
    let r = Double(ranks)
    let factor = operation == "all-reduce" ? 2 * (r - 1) / r : (r - 1) / r
    let steps = operation == "all-reduce" ? 2 * (r - 1) : r - 1
    if let measured = hardware.collectives?.filter({ $0.operation == operation && $0.backend == backend }), !measured.isEmpty {
      let best = measured.min { abs(log(Double($0.ranks) / r)) < abs(log(Double($1.ranks) / r)) }!
      // A rank copies on one thread. The measurement ran `best.ranks` of them; on a CPU every rank
      // of the mesh is in a collective of its axis at once, so more ranks than cores time-share.
      let slowdown = hardware.timeShare(ranks: best.ranks, threadsPerRank: 1) / hardware.timeShare(ranks: mesh.count, threadsPerRank: 1)
      return slowdown * (best.latency + bytes * factor / best.busBandwidth)
    }
    guard let n = network(axis) else { return 0 }
    return n.latency.value * steps + bytes * factor / bandwidth(axis)
  }

  func describe(_ axis: Axis) -> String {
    if let cs = hardware.collectives, !cs.isEmpty { return "measured \(backend) collectives at \(size(axis)) ranks" }
    guard let n = network(axis) else { return "no network" }
    return "\(n.name) at \(PlanText.bytesRate(bandwidth(axis))) per device"
  }
}

/// Number formatting shared by the plan's text.
enum PlanText {
  static func number(_ x: Double) -> String {
    if x == x.rounded() && abs(x) < 1e15 { return String(Int(x)) }
    if abs(x) >= 1e4 || abs(x) < 1e-3 { return String(format: "%.4g", x) }
    return String(format: "%.4g", x)
  }
  static func bytesRate(_ x: Double) -> String {
    x >= 1e9 ? String(format: "%.1f GB/s", x / 1e9) : String(format: "%.1f MB/s", x / 1e6)
  }
}

private func pct(_ x: Double) -> String { String(format: "%.0f%%", x * 100) }
private func rateText(_ x: Double) -> String { PlanText.bytesRate(x) }
