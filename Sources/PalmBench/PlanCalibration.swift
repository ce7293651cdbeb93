// PlanCalibration: trusting a device description only as far as it predicts measured runs. A
// hardware file may carry published runs of other models on that device (`calibration.runs`: for
// tpu-v4, MaxText's TPU v4 benchmarks). `palm plan` predicts each from the description alone, and
// solves for the one factor on the device's compute rates (GEMM, attention and element-wise
// efficiencies) that makes the predictions meet the measurements (geometric mean over the runs),
// then plans with it. Runs held out (`calibration.checks`, e.g. multi-slice ones over the DCN) are
// predicted with the calibrated rates and printed against what was published. On a CPU the
// profile is the measurement (`palm plan --profile`); this is the same idea where we cannot measure.
//
// A run is a decoder-only transformer in MaxText's terms (query and key/value heads, a gated or
// plain MLP), planned as the PaLM-shaped stand-in with the same matmul parameters per layer: same
// d_model, layers, heads, head size, vocabulary; MQA's single key/value head, and d_ff chosen so
// that d·(2·H·Q + 2·Q + 3·d_ff) equals the run's parameters per layer. Its tokens/s comes from
// the published TFLOP/s per chip divided by the publisher's own FLOPs per token.

import Foundation
import PalmModel

extension HardwareSpec {
  /// Published training runs on this device and where they come from.
  public struct Calibration: Codable, Sendable, Equatable {
    public var source: String
    public var runs: [Run]
    /// Published runs NOT calibrated on: predicted with the calibrated rates and printed against
    /// what was published (e.g. multi-slice runs, which test the between-pods network).
    public var checks: [Run]? = nil

    /// One published run, in the publisher's (MaxText's) terms.
    public struct Run: Codable, Sendable, Equatable {
      public var name: String
      public var source: String
      public var embDim: Int, layers: Int, queryHeads: Int, kvHeads: Int, headDim: Int, mlpDim: Int
      /// 1: a plain MLP (ReLU: 2 matrices); 2: gated (SwiGLU-like: 3 matrices).
      public var mlpActivations: Int
      public var vocab: Int, seqLen: Int
      public var perDeviceBatch: Int
      /// The mesh as `palm plan --mesh` reads it (MaxText's ici_fsdp_parallelism is `data`, its
      /// dcn_data_parallelism, the slices, is `pod`).
      public var mesh: String
      public var remat: RematPolicy
      /// Attention computed causally (skipping masked tiles, as a flash kernel does), not densely.
      public var causalAttention: Bool
      /// The published throughput: model TFLOP/s per chip by the publisher's count.
      public var tflopsPerChip: Double

      enum CodingKeys: String, CodingKey {
        case name, source, layers, vocab, mesh, remat
        case embDim = "emb_dim", queryHeads = "query_heads", kvHeads = "kv_heads", headDim = "head_dim"
        case mlpDim = "mlp_dim", mlpActivations = "mlp_activations", seqLen = "seq_len"
        case perDeviceBatch = "per_device_batch", causalAttention = "causal_attention"
        case tflopsPerChip = "tflops_per_chip"
      }

      /// Matmul parameters per layer: q, k, v, out projections and the MLP's matrices.
      public var matmulParametersPerLayer: Int {
        let hq = queryHeads * headDim, kv = kvHeads * headDim
        return embDim * hq + 2 * embDim * kv + hq * embDim + (mlpActivations + 1) * embDim * mlpDim
      }

      /// Parameters as MaxText counts them (num_params: every array of the model): per layer the
      /// matmuls and one norm scale (its 2023 decoder layer is a parallel block, as PaLM's:
      /// MaxText/layers/models.py, pre_self_attention_norm), the tied embedding once, the final norm.
      public var parameters: Int { layers * (matmulParametersPerLayer + embDim) + vocab * embDim + embDim }

      /// MaxText's training FLOPs per token (MaxText/train.py, calculate_training_tflops, 2023):
      /// 6·N for the weights plus half of 12·L·H·Q·T for causal attention.
      public var flopsPerToken: Double {
        6 * Double(parameters) + 6 * Double(layers * queryHeads * headDim * seqLen)
      }

      /// The measured tokens/s per chip the published TFLOP/s means.
      public var tokensPerSecondPerChip: Double { tflopsPerChip * 1e12 / flopsPerToken }

      /// The PaLM-shaped stand-in with the same matmul parameters per layer (±1.5·d).
      /// - Throws: `PlanError` naming the run, for a mesh or shape the plan cannot use.
    public func standIn() throws -> (config: PalmConfig, mesh: MeshShape) {
      do {
        let mesh = try MeshShape(parsing: self.mesh)
        let rest = matmulParametersPerLayer / embDim - 2 * queryHeads * headDim - 2 * headDim
        guard rest > 0 else { throw PlanError("its parameters per layer leave no room for a d_ff") }
        let dFF = Int((Double(rest) / 3).rounded())
        let c = PalmConfig(name: name, dModel: embDim, layers: layers, heads: queryHeads, headDim: headDim,
                           dFF: dFF, vocab: vocab, seqLen: seqLen, batch: perDeviceBatch * mesh.pod * mesh.data)
        try c.validate()
        return (c, mesh)
      } catch {
        throw PlanError("the hardware file's calibration run \(name) cannot be planned: \(error) (fix the run, or plan with --no-calibration)")
      }
    }
    }
  }

  /// This description with its GEMM efficiencies (curve and measured points) multiplied by
  /// `factor`, at most 1.
  public func scalingGEMM(by factor: Double) -> HardwareSpec {
    var hw = self
    if var c = hw.gemmCurve { for i in c.points.indices { c.points[i].efficiency = min(1, c.points[i].efficiency * factor) }; hw.gemmCurve = c }
    if var g = hw.gemmPoints { for i in g.points.indices { g.points[i].efficiency = min(1, g.points[i].efficiency * factor) }; hw.gemmPoints = g }
    return hw
  }

  /// This description with every compute rate (GEMM, attention and element-wise efficiencies,
  /// measured kernel rates) multiplied by `factor`, efficiencies at most 1.
  public func scalingComputeRates(by factor: Double) -> HardwareSpec {
    var hw = scalingGEMM(by: factor)
    hw.attentionEfficiency.value = min(1, hw.attentionEfficiency.value * factor)
    hw.memoryEfficiency.value = min(1, hw.memoryEfficiency.value * factor)
    if var ks = hw.kernels {
      for i in ks.indices { ks[i].efficiency = min(1, ks[i].efficiency * factor); ks[i].bytesPerSecond *= factor }
      hw.kernels = ks
    }
    return hw
  }

  /// `scalingComputeRates(by: calibration.factor)`, with the published runs dropped: the result is
  /// calibrated, and calibrating it again would scale twice.
  public func calibrated(_ calibration: PlanCalibration) -> HardwareSpec {
    var hw = scalingComputeRates(by: calibration.factor)
    hw.calibration = nil
    return hw
  }
}

/// The calibration of a device description on its published runs.
public struct PlanCalibration: Codable, Sendable {
  public struct Row: Codable, Sendable {
    public var name: String, source: String
    /// The stand-in's d_ff, and tokens/s per chip: published, predicted from the description alone,
    /// and predicted with the solved factor.
    public var standInFF: Int
    public var measured: Double, predictedUncalibrated: Double, predictedCalibrated: Double
    /// The factor this run alone would give.
    public var factorAlone: Double
  }

  public var source: String
  /// The factor on the device's compute rates: geometric mean over the runs.
  public var factor: Double
  public var rows: [Row]
  /// The held-out runs (`calibration.checks`) predicted with the calibrated rates.
  public var checks: [Check] = []
  public struct Check: Codable, Sendable {
    public var name: String, source: String, mesh: String
    public var measured: Double, predicted: Double
  }
  /// The plan without the calibration, and with each run's factor alone (set by `apply`).
  public var uncalibrated: Outcome? = nil
  public var eachRunAlone: [Outcome] = []

  /// The software of a run: XLA as PaLM's preset describes it (MaxText is XLA, whatever the plan's
  /// own preset), with the run's attention.
  static func runSoftware(_ run: HardwareSpec.Calibration.Run) -> PlanSoftware {
    var s = PlanSoftware.xla
    s.attentionFullSpan = !run.causalAttention
    s.sources["attentionFullSpan"] = run.causalAttention ? "calibration run: causal flash attention" : "calibration run: dense attention"
    return s
  }

  /// Tokens/s per chip of `run` predicted on `hw`.
  public static func predict(_ run: HardwareSpec.Calibration.Run, on hw: HardwareSpec) throws -> Double {
    let (c, mesh) = try run.standIn()
    do {
      let plan = try Plan(PlanInputs(config: c, mesh: mesh, remat: run.remat, optimizer: "adamw", hardware: hw,
                                     software: runSoftware(run)))
      return plan.tokensPerSecond / Double(plan.devices)
    } catch {
      throw PlanError("the hardware file's calibration run \(run.name) cannot be planned: \(error) (fix the run, or plan with --no-calibration)")
    }
  }

  /// Solves the factor (fixed point: prediction is nearly proportional to the compute rates when the
  /// runs' collectives hide behind their compute, as FSDP's do) and the table of runs.
  /// - Throws: `PlanError` for a run that cannot be planned, or when no factor meets the runs (the
  ///   rates would need to pass an efficiency of 1).
  public static func solve(_ hw: HardwareSpec) throws -> PlanCalibration? {
    guard let cal = hw.calibration, !cal.runs.isEmpty else { return nil }
    func factor(_ runs: [HardwareSpec.Calibration.Run]) throws -> Double {
      var f = 1.0, ratio = 1.0
      for _ in 0..<20 {
        let scaled = hw.scalingComputeRates(by: f)
        var logSum = 0.0
        for r in runs { logSum += log(try predict(r, on: scaled) / r.tokensPerSecondPerChip) }
        ratio = exp(logSum / Double(runs.count))
        guard ratio.isFinite && ratio > 0 else { break }
        if abs(ratio - 1) < 1e-6 { return f }
        f /= ratio
      }
      throw PlanError("the hardware file's calibration runs \(runs.map(\.name).joined(separator: ", ")) cannot be met by scaling the compute rates (the predictions stay \(String(format: "%+.1f%%", (ratio - 1) * 100)) off: efficiencies cannot pass 1); check the runs, or plan with --no-calibration")
    }
    let f = try factor(cal.runs)
    let calibrated = hw.scalingComputeRates(by: f)
    let rows = try cal.runs.map { r in
      let (c, _) = try r.standIn()
      return Row(name: r.name, source: r.source, standInFF: c.dFF, measured: r.tokensPerSecondPerChip,
                 predictedUncalibrated: try predict(r, on: hw),
                 predictedCalibrated: try predict(r, on: calibrated),
                 factorAlone: try factor([r]))
    }
    let checks = try (cal.checks ?? []).map { r in
      Check(name: r.name, source: r.source, mesh: r.mesh, measured: r.tokensPerSecondPerChip, predicted: try predict(r, on: calibrated))
    }
    return PlanCalibration(source: cal.source, factor: f, rows: rows, checks: checks)
  }
}

extension PlanCalibration {
  /// A prediction's headline numbers.
  public struct Outcome: Codable, Sendable {
    public var tokensPerSecond: Double, mfu: Double, hfu: Double
    init(_ p: Plan) { tokensPerSecond = p.tokensPerSecond; mfu = p.mfu; hfu = p.hfu }
  }

  /// `inputs` with the hardware's compute rates calibrated on its published runs (unchanged when it
  /// has none), and the calibration with what the plan of `inputs` would be without it and with
  /// each run's factor alone.
  public static func apply(_ inputs: PlanInputs) throws -> (PlanInputs, PlanCalibration?) {
    guard var cal = try solve(inputs.hardware) else { return (inputs, nil) }
    var scaled = inputs
    cal.uncalibrated = Outcome(try Plan(inputs))
    cal.eachRunAlone = try cal.rows.map { r in
      scaled.hardware = inputs.hardware.scalingComputeRates(by: r.factorAlone)
      return Outcome(try Plan(scaled))
    }
    scaled.hardware = inputs.hardware.calibrated(cal)
    return (scaled, cal)
  }
}

extension Plan {
  /// Records the calibration the plan's hardware went through, and lists its factor with the assumptions.
  public mutating func attach(_ calibration: PlanCalibration?) {
    guard let calibration else { return }
    self.calibration = calibration
    assumptions.append(Assumption(
      name: "calibration", value: String(format: "compute rates x %.3f", calibration.factor),
      source: "solved so the description predicts \(calibration.rows.map(\.name).joined(separator: ", ")) (geometric mean): \(calibration.source)",
      isAssumption: false))
  }
}
