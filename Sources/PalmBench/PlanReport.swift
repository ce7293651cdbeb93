// PlanReport: the plan as Markdown or JSON, the sensitivity of its prediction to each assumption
// (each input moved to a stated alternative, everything else fixed), and the search over meshes ×
// remat policies × micro-batches (`palm plan --chips N`).

import Foundation
import PalmModel

/// One row of the sensitivity table: an input moved to `alternative` and the prediction that results.
public struct PlanSensitivity: Codable, Sendable {
  public var input: String, base: String, alternative: String
  public var mfu: Double, hfu: Double, fits: Bool
}

extension Plan {
  /// Recomputes the plan with each assumption moved to an alternative value.
  public static func sensitivity(_ inputs: PlanInputs) -> [PlanSensitivity] {
    typealias Change = (String, String, String, (inout HardwareSpec, inout PlanSoftware) -> Void)
    var changes: [Change] = []
    func scaleGEMM(_ f: Double) -> (inout HardwareSpec, inout PlanSoftware) -> Void {
      { hw, _ in hw = hw.scalingGEMM(by: f) }
    }
    changes.append(("GEMM efficiency", "as given", "x 0.8", scaleGEMM(0.8)))
    changes.append(("GEMM efficiency", "as given", "x 1.05 (at most 1)", scaleGEMM(1.05)))
    changes.append(("attention efficiency", "as given", "x 0.5", { hw, _ in
      hw.attentionEfficiency.value *= 0.5
      if var ks = hw.kernels { for i in ks.indices where ks[i].kernel.hasPrefix("attention") { ks[i].efficiency *= 0.5 }; hw.kernels = ks }
    }))
    changes.append(("memory efficiency", "as given", "x 0.5", { hw, _ in
      hw.memoryEfficiency.value *= 0.5
      if var ks = hw.kernels { for i in ks.indices { ks[i].bytesPerSecond *= 0.5 }; hw.kernels = ks }
    }))
    for (i, n) in inputs.hardware.networks.enumerated() {
      changes.append(("\(n.name) bandwidth", PlanText.bytesRate(n.linkBandwidth.value), "x 0.5", { hw, _ in hw.networks[i].linkBandwidth.value *= 0.5 }))
      changes.append(("\(n.name) bandwidth", PlanText.bytesRate(n.linkBandwidth.value), "x 2", { hw, _ in hw.networks[i].linkBandwidth.value *= 2 }))
      changes.append(("\(n.name) latency", PlanText.number(n.latency.value) + " s", "x 10", { hw, _ in hw.networks[i].latency.value *= 10 }))
    }
    if inputs.hardware.collectives?.isEmpty == false {
      changes.append(("measured collective bandwidth", "as measured", "x 0.5", { hw, _ in
        hw.collectives = hw.collectives?.map { var c = $0; c.busBandwidth *= 0.5; return c }
      }))
    }
    let s = inputs.software
    changes.append(("activation bytes", "\(s.storage.activation)", s.storage.activation == 2 ? "4" : "2", { _, sw in sw.storage.activation = sw.storage.activation == 2 ? 4 : 2 }))
    changes.append(("gathered-weight bytes", "\(s.storage.gathered)", s.storage.gathered == 2 ? "4" : "2", { _, sw in sw.storage.gathered = sw.storage.gathered == 2 ? 4 : 2 }))
    changes.append(("gradient bytes on the wire", "\(s.wireGradientBytes)", s.wireGradientBytes == 2 ? "4" : "2", { _, sw in sw.wireGradientBytes = sw.wireGradientBytes == 2 ? 4 : 2 }))
    changes.append(("embedding sharded over model", "\(s.storage.shardEmbeddingOverModel)", "\(!s.storage.shardEmbeddingOverModel)", { _, sw in sw.storage.shardEmbeddingOverModel.toggle() }))
    changes.append(("saved block input sharded over model", "\(s.storage.shardSavedInputOverModel)", "\(!s.storage.shardSavedInputOverModel)", { _, sw in sw.storage.shardSavedInputOverModel.toggle() }))
    changes.append(("attention over full T", "\(s.attentionFullSpan)", "\(!s.attentionFullSpan)", { _, sw in sw.attentionFullSpan.toggle() }))
    changes.append(("data collectives hidden", "\(s.dataOverlap)", s.dataOverlap > 0 ? "0" : "1", { _, sw in sw.dataOverlap = sw.dataOverlap > 0 ? 0 : 1 }))
    changes.append(("pod exchange after backward", "\(s.podAfterBackward)", "\(!s.podAfterBackward)", { _, sw in sw.podAfterBackward.toggle() }))
    changes.append(("model-axis torus links", PlanText.number(s.modelAxisLinks), "4", { _, sw in sw.modelAxisLinks = 4 }))
    return changes.compactMap { name, base, alt, apply in
      var i = inputs
      apply(&i.hardware, &i.software)
      guard let plan = try? Plan(i) else { return nil }
      return PlanSensitivity(input: name, base: base, alternative: alt, mfu: plan.mfu, hfu: plan.hfu, fits: plan.memory.fits)
    }
  }

  /// The plan as Markdown: inputs, memory, FLOPs, time, throughput, the pod exchange, assumptions.
  public func markdown(sensitivity: [PlanSensitivity] = []) -> String {
    func gib(_ b: Int) -> String { MemoryBudget.text(b) }
    func ms(_ s: Double) -> String { s >= 1 ? String(format: "%.3f s", s) : String(format: "%.2f ms", s * 1e3) }
    func p(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
    var o = "# palm plan: \(config) on \(mesh) \(hardware) (\(devices) devices), remat \(remat)\n\n"
    o += "Global batch \(globalBatch) x \(seqLen) tokens, \(microBatches) micro-batch(es) of \(rowsPerMicroBatch) rows per device; software preset `\(software)`"
    if let t = threadsPerDevice { o += "; \(t) thread(s) per device" }
    o += "; peak \(PlanText.number(peakPerDevice / 1e12)) TFLOP/s \(precision) per device.\n\n"
    o += "## Memory per device\n\n| | bytes |\n|---|---:|\n"
    o += "| weights | \(gib(memory.weights)) |\n| gradients | \(gib(memory.gradients)) |\n"
    o += "| optimizer state: \(memory.optimizerName) | \(gib(memory.optimizer)) |\n"
    o += "| activations saved (remat \(remat)) | \(gib(memory.activationsSaved)) |\n"
    o += "| scratch: gathered weights + gradients | \(gib(memory.gathered)) |\n"
    o += "| scratch: activation temporaries + backward buffers | \(gib(memory.activationScratch)) |\n"
    o += "| **total** | **\(gib(memory.total))** of \(gib(memory.available)): \(memory.fits ? "fits" : "does NOT fit") |\n\n"
    o += "## FLOPs\n\n"
    o += String(format: "- model FLOPs/token (MFU numerator, PaLM App. B 6N + 12LHQT): %.4g\n", flops.modelPerToken)
    o += String(format: "- hardware FLOPs/token (HFU numerator: what the devices execute, recomputation and model-axis replication included): %.4g (%.3f x model)\n", flops.hardwarePerToken, flops.hardwarePerToken / flops.modelPerToken)
    o += "- PaLM's hardware rule (App. B, f = \(remat == "full" ? "0.75" : "0")): " + String(format: "%.4g\n", flops.palmRulePerToken)
    o += String(format: "- per device per step: model %.4g, hardware %.4g\n\n", flops.modelPerDevice, flops.hardwarePerDevice)
    o += "## Time per step (per device)\n\n| part | kind | time | on the critical path | bytes | how |\n|---|---|---:|---:|---:|---|\n"
    for c in costs {
      o += "| \(c.name) | \(c.kind) | \(ms(c.seconds)) | \(ms(c.exposedSeconds)) | \(c.bytes > 0 ? gib(Int(c.bytes)) : "") | \(c.note) |\n"
    }
    o += "| **step** | | | **\(ms(stepSeconds))** | | |\n\n"
    o += String(format: "**%.4g tokens/s, ", tokensPerSecond) + "MFU \(p(mfu)), HFU \(p(hfu))** " + String(format: "(%.1f tokens/s per device)\n\n", tokensPerSecond / Double(devices))
    if let cal = calibration {
      o += "## Calibration on published runs\n\n"
      o += String(format: "The device's compute rates (GEMM, attention and element-wise efficiencies) are multiplied by **%.3f**, ", cal.factor)
      o += "solved so that the description predicts these published runs (geometric mean; each run planned as the PaLM-shaped stand-in with its matmul parameters per layer). Source: \(cal.source).\n\n"
      o += "| run | stand-in d_ff | published tokens/s per chip | predicted, stand-in rates | predicted, calibrated | factor from this run alone |\n|---|---:|---:|---:|---:|---:|\n"
      for r in cal.rows {
        o += "| \(r.name) | \(r.standInFF) | " + String(format: "%.1f | %.1f (%+.1f%%) | %.1f | %.3f |\n", r.measured, r.predictedUncalibrated,
                                                    (r.predictedUncalibrated / r.measured - 1) * 100, r.predictedCalibrated, r.factorAlone)
      }
      if !cal.checks.isEmpty {
        o += "\nHeld-out published runs (not calibrated on), predicted with the calibrated rates:\n\n| run | mesh | published tokens/s per chip | predicted | error |\n|---|---|---:|---:|---:|\n"
        for c in cal.checks {
          o += "| \(c.name) | \(c.mesh) | " + String(format: "%.1f | %.1f | %+.1f%% |\n", c.measured, c.predicted, (c.predicted / c.measured - 1) * 100)
        }
      }
      if let u = cal.uncalibrated {
        o += "\nWithout the calibration (the description's stand-in rates alone): " + String(format: "%.4g tokens/s, ", u.tokensPerSecond) + "MFU \(p(u.mfu)), HFU \(p(u.hfu)).\n"
      }
      if !cal.eachRunAlone.isEmpty {
        o += "With each run's factor alone: " + zip(cal.rows, cal.eachRunAlone).map { "\($0.name) MFU \(p($1.mfu)), HFU \(p($1.hfu))" }.joined(separator: "; ") + ".\n"
      }
      o += "\n"
    }
    if let x = podExchange {
      o += "## Pod exchange\n\n"
      o += "- bytes per device \(gib(Int(x.bytesPerDevice))), per host (\(x.devicesPerHost) devices) " + String(format: "%.3f GB (%.3f GiB), from the layout\n", x.bytesPerHost / 1e9, x.bytesPerHost / 1073741824)
      o += "- burst \(ms(x.burstSeconds)) at the assumed host bandwidth; aggregate burst " + String(format: "%.1f Tbit/s", x.aggregateBitsPerSecond / 1e12) + " over \(x.hostsPerPod) host pairs (hosts per pod x per-host bytes / burst)\n\n"
    }
    if !sensitivity.isEmpty {
      o += "## Sensitivity (one input moved, the rest fixed)\n\n| input | base | moved to | MFU | ΔMFU | HFU | ΔHFU | fits |\n|---|---|---|---:|---:|---:|---:|---|\n"
      for s in sensitivity {
        o += "| \(s.input) | \(s.base) | \(s.alternative) | \(p(s.mfu)) | \(String(format: "%+.1f", (s.mfu - mfu) * 100)) | \(p(s.hfu)) | \(String(format: "%+.1f", (s.hfu - hfu) * 100)) | \(s.fits ? "yes" : "no") |\n"
      }
      o += "\n"
    }
    o += "## Assumptions and sources\n\n| input | value | source | |\n|---|---|---|---|\n"
    for a in assumptions {
      o += "| \(a.name) | \(a.value) | \(a.source.replacingOccurrences(of: "|", with: "/")) | \(a.isAssumption ? "**assumption**" : "") |\n"
    }
    return o
  }

  /// The plan (and sensitivity) as one JSON object.
  public func json(sensitivity: [PlanSensitivity] = []) throws -> String {
    struct Out: Encodable { let plan: Plan; let sensitivity: [PlanSensitivity] }
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try e.encode(Out(plan: self, sensitivity: sensitivity)), as: UTF8.self)
  }
}

/// `palm plan --chips N`: every mesh of N devices × remat policy × micro-batching that fits, ranked.
public enum PlanSearch {
  /// The largest --chips: the mesh limit (MeshShape).
  public static let maxChips = 1 << 20

  public struct Row: Codable, Sendable {
    public var mesh: String, remat: String, microBatches: Int
    public var mfu: Double, hfu: Double, tokensPerSecond: Double, memoryBytes: Int
    /// The factor on the device's compute rates the ranking used (PlanCalibration), when calibrated.
    public var computeRateFactor: Double? = nil
  }

  /// Meshes pod × data × model with pod·data·model = chips, model dividing heads, d_ff and d_model,
  /// pod·data dividing the batch, data·model within the device's pod size; micro-batches 1, 2, 4, 8, 16.
  public static func run(_ base: PlanInputs, chips: Int) throws -> (fitting: [Row], considered: Int) {
    guard (1...maxChips).contains(chips) else { throw PlanError("--chips must be 1...\(maxChips) (2^20, the mesh limit) (got \(chips))") }
    try base.checkCollectiveBackend()  // not per setting: a try? below would hide it as "nothing fits"
    let c = base.config
    let podMax = Int(base.hardware.devicesPerPod?.value ?? Double(chips))
    var rows: [Row] = [], considered = 0, meshes = 0
    // Only divisors matter: pod at most 64, model dividing the heads.
    for p in 1...min(chips, 64) where chips % p == 0 {
      for m in 1...min(chips / p, c.heads) where (chips / p) % m == 0 && c.heads % m == 0 && c.dFF % m == 0 && c.dModel % m == 0 {
        let d = chips / (p * m)
        guard d * m <= podMax, c.batch % (p * d) == 0 else { continue }
        meshes += 1
        for remat in RematPolicy.allCases where base.searchRemat.map({ $0 == remat }) ?? true {
          for k in base.searchMicroBatches.map({ [$0] }) ?? [1, 2, 4, 8, 16] where (c.batch / (p * d)) % k == 0 {
            var i = base
            i.mesh = try MeshShape(pod: p, data: d, model: m)
            i.remat = remat
            i.microBatches = k
            considered += 1
            guard let plan = try? Plan(i), plan.memory.fits else { continue }
            rows.append(Row(mesh: i.mesh.description, remat: remat.rawValue, microBatches: k, mfu: plan.mfu,
                            hfu: plan.hfu, tokensPerSecond: plan.tokensPerSecond, memoryBytes: plan.memory.total))
          }
        }
      }
    }
    if meshes == 0 {
      throw PlanError("no mesh of \(chips) devices fits \(c.name): pod x data must divide the batch (\(c.batch)), model must divide heads (\(c.heads)), d_ff and d_model, and data x model be at most the pod's \(podMax) devices; try --batch \(chips * max(1, c.batch / chips)) or a --chips dividing \(c.batch)")
    }
    if considered == 0 {
      throw PlanError("no setting of \(chips) devices fits \(c.name) with the given --micro-batches: the rows per device must be a multiple of it; try fewer")
    }
    rows.sort { $0.mfu > $1.mfu }
    return (rows, considered)
  }

  /// The ranking as Markdown, `top` rows, and where `reference` (mesh, remat, micro-batches) ranks.
  public static func markdown(_ rows: [Row], considered: Int, chips: Int, top: Int,
                              reference: (mesh: String, remat: String, microBatches: Int)?,
                              calibration: PlanCalibration? = nil) -> String {
    var o = "# palm plan --chips \(chips): \(rows.count) of \(considered) settings fit, ranked by predicted MFU\n\n"
    if let calibration {
      o += String(format: "The device's compute rates are calibrated (x %.3f) on ", calibration.factor)
        + calibration.rows.map(\.name).joined(separator: ", ") + " (see `palm plan` on one setting; --no-calibration to rank on the rates as given).\n\n"
    }
    o += "| rank | mesh | remat | micro-batches | MFU | HFU | tokens/s | memory |\n|---:|---|---|---:|---:|---:|---:|---:|\n"
    var refRank: Int? = nil
    for (i, r) in rows.enumerated() {
      let isRef = reference.map { $0.mesh == r.mesh && $0.remat == r.remat && $0.microBatches == r.microBatches } ?? false
      if isRef { refRank = i + 1 }
      if i < top || isRef {
        o += "| \(i + 1) | \(r.mesh) | \(r.remat) | \(r.microBatches) | " + String(format: "%.1f%% | %.1f%% | %.4g | ", r.mfu * 100, r.hfu * 100, r.tokensPerSecond) + "\(MemoryBudget.text(r.memoryBytes)) |\(isRef ? " ← given" : "")\n"
      }
    }
    if let ref = reference {
      o += "\nThe given setting (\(ref.mesh), remat \(ref.remat), \(ref.microBatches) micro-batch(es)) "
      o += refRank.map { "ranks \($0) of \(rows.count).\n" } ?? "does not fit, or is not a mesh of \(chips) devices.\n"
    }
    return o
  }
}
