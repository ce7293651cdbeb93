// MFUTable: PaLM's Table 3 MFU comparison, recomputed from the published inputs, and the rows
// this package measures on its own machine, through one MFU function.
//
// Reference: PaLM (Chowdhery et al. 2022) §4.1, Table 3 and Appendix B; Korthikanti et al. 2022
// Table 5 (the Megatron reference row). The inputs and where each comes from are collected in
// /work/shared/reference/palm.md §1, §2, §6 and §7. Renderers: MFUTable+Report.swift (Markdown,
// JSON) and Report+SVG.swift (bar chart).

import PalmModel
import PalmTensor

/// The MFU comparison table: published runs (GPT-3, Gopher, MT-NLG, PaLM) recomputed from their
/// inputs, a published reference row (Megatron 1T), and rows measured here.
///
/// Every computed row, published or measured, goes through `mfu(tokensPerSecond:flopsPerToken:peakFLOPs:)`:
///
/// ```
/// MFU = tokens/s × model FLOPs/token    / (chips × peak FLOP/s per chip)
/// HFU = tokens/s × hardware FLOPs/token / (chips × peak FLOP/s per chip)
/// model FLOPs/token = 6N + 12·L·H·Q·T   (PaLM Appendix B)
/// ```
///
/// ```swift
/// let rows = MFUTable.rows()                       // part one: the papers
/// print(MFUTable.markdown(rows))
/// ```
public enum MFUTable {
  /// The one MFU/HFU formula: achieved FLOP/s over peak FLOP/s.
  ///
  /// ```
  /// utilization = tokensPerSecond × flopsPerToken / peakFLOPs
  /// ```
  ///
  /// Pass model FLOPs/token for MFU, hardware FLOPs/token (with recomputation) for HFU.
  /// - Parameters:
  ///   - tokensPerSecond: observed training throughput of the whole system.
  ///   - flopsPerToken: FLOPs per trained token (`FLOPs.modelPerToken` or a hardware count).
  ///   - peakFLOPs: the theoretical peak of the whole system (chips × peak per chip), FLOP/s.
  /// - Returns: a fraction (0.462 for 46.2%).
  public static func mfu(tokensPerSecond: Double, flopsPerToken: Double, peakFLOPs: Double) -> Double {
    tokensPerSecond * flopsPerToken / peakFLOPs
  }

  /// A computed value reproduces a published one when they differ by at most this (0.1 point).
  public static let reproductionTolerance = 0.001

  /// Part one of the table: every published run recomputed, then the published reference rows.
  /// Part two (`measured`) follows.
  public static func rows(measured: [MeasuredRow] = []) -> [Row] {
    publishedRuns.map { .paper(PaperRow($0)) } + referenceRows.map { .reference($0) }
      + measured.map { .measured($0) }
  }
}

// MARK: - Row kinds

extension MFUTable {
  /// One line of the table.
  public enum Row: Codable, Equatable, Sendable {
    /// A published run recomputed from its inputs.
    case paper(PaperRow)
    /// Published figures shown for reference, not recomputed.
    case reference(ReferenceRow)
    /// A run measured on this machine.
    case measured(MeasuredRow)

    private enum KindKey: String, CodingKey { case kind }
    private enum Kind: String, Codable { case paper, reference, measured }

    /// Encodes one flat object: `"kind"` plus the row's own snake_case keys.
    public func encode(to encoder: Encoder) throws {
      var container = encoder.container(keyedBy: KindKey.self)
      switch self {
      case .paper(let row): try container.encode(Kind.paper, forKey: .kind); try row.encode(to: encoder)
      case .reference(let row): try container.encode(Kind.reference, forKey: .kind); try row.encode(to: encoder)
      case .measured(let row): try container.encode(Kind.measured, forKey: .kind); try row.encode(to: encoder)
      }
    }

    public init(from decoder: Decoder) throws {
      switch try decoder.container(keyedBy: KindKey.self).decode(Kind.self, forKey: .kind) {
      case .paper: self = .paper(try PaperRow(from: decoder))
      case .reference: self = .reference(try ReferenceRow(from: decoder))
      case .measured: self = .measured(try MeasuredRow(from: decoder))
      }
    }

    /// Short label for charts.
    public var label: String {
      switch self {
      case .paper(let r): r.model
      case .reference(let r): "\(r.model) (published)"
      case .measured(let r): "\(r.config) · \(r.remat.rawValue) · \(r.threads)T"
      }
    }

    /// The MFU to plot: computed for paper and measured rows, published for reference rows.
    public var plottedMFU: Double {
      switch self {
      case .paper(let r): r.mfu
      case .reference(let r): r.publishedMFU
      case .measured(let r): r.mfu
      }
    }

    /// The HFU to plot, if the row has one.
    public var plottedHFU: Double? {
      switch self {
      case .paper(let r): r.hfu
      case .reference(let r): r.publishedHFU
      case .measured(let r): r.hfu
      }
    }

    /// The published MFU, for paper and reference rows.
    public var publishedMFU: Double? {
      switch self {
      case .paper(let r): r.publishedMFU
      case .reference(let r): r.publishedMFU
      case .measured: nil
      }
    }
  }

  /// A published run recomputed from its inputs.
  public struct PaperRow: Codable, Equatable, Sendable {
    public var model: String
    /// N as the source counts it.
    public var parameters: Double
    public var chips: Int
    public var chip: String
    public var peakFLOPsPerChip: Double
    /// Whole-system throughput derived from the published figure.
    public var tokensPerSecond: Double
    /// 6N + 12·L·H·Q·T.
    public var modelFLOPsPerToken: Double
    /// 6N alone.
    public var modelFLOPsPerTokenWithoutAttention: Double
    public var mfu: Double
    public var mfuWithoutAttention: Double
    public var publishedMFU: Double
    /// By the run's own rematerialization rule, where one is published.
    public var hardwareFLOPsPerToken: Double?
    public var hfu: Double?
    public var publishedHFU: Double?
    /// Every published figure of the row is matched within `MFUTable.reproductionTolerance`.
    public var reproduced: Bool
    /// Why the computed and published figures differ, or how they were matched.
    public var note: String
    public var sources: [String]

    enum CodingKeys: String, CodingKey {
      case model, parameters, chips, chip
      case peakFLOPsPerChip = "peak_flops_per_chip"
      case tokensPerSecond = "tokens_per_second"
      case modelFLOPsPerToken = "model_flops_per_token"
      case modelFLOPsPerTokenWithoutAttention = "model_flops_per_token_without_attention"
      case mfu
      case mfuWithoutAttention = "mfu_without_attention"
      case publishedMFU = "published_mfu"
      case hardwareFLOPsPerToken = "hardware_flops_per_token"
      case hfu
      case publishedHFU = "published_hfu"
      case reproduced, note, sources
    }

    /// Recomputes a published run.
    public init(_ run: PublishedRun) {
      model = run.model
      parameters = run.parameters
      chips = run.chips
      chip = run.chip
      peakFLOPsPerChip = run.peakFLOPsPerChip
      modelFLOPsPerToken = FLOPs.modelPerToken(
        parameters: run.parameters, layers: run.layers, heads: run.heads, headDim: run.headDim,
        seqLen: run.seqLen)
      modelFLOPsPerTokenWithoutAttention = FLOPs.modelPerToken(
        parameters: run.parameters, layers: run.layers, heads: run.heads, headDim: run.headDim,
        seqLen: run.seqLen, includingAttention: false)
      tokensPerSecond = run.throughput.tokensPerSecond(chips: run.chips, parameters: run.parameters)
      let peak = Double(run.chips) * run.peakFLOPsPerChip
      mfu = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: modelFLOPsPerToken, peakFLOPs: peak)
      mfuWithoutAttention = MFUTable.mfu(
        tokensPerSecond: tokensPerSecond, flopsPerToken: modelFLOPsPerTokenWithoutAttention, peakFLOPs: peak)
      publishedMFU = run.publishedMFU
      if let f = run.recomputedNonAttentionFraction {
        let hw = FLOPs.palmHardwarePerToken(
          parameters: run.parameters, layers: run.layers, heads: run.heads, headDim: run.headDim,
          seqLen: run.seqLen, recomputedNonAttentionFraction: f)
        hardwareFLOPsPerToken = hw
        hfu = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: hw, peakFLOPs: peak)
      }
      publishedHFU = run.publishedHFU
      sources = run.sources

      let tolerance = MFUTable.reproductionTolerance
      let mfuMatches = abs(mfu - publishedMFU) <= tolerance
      var hfuMatches = true
      if let published = run.publishedHFU {
        hfuMatches = hfu.map { abs($0 - published) <= tolerance } ?? false
      }
      reproduced = mfuMatches && hfuMatches
      var notes: [String] = []
      if mfuMatches {
        notes.append("reproduced: \(pct(mfu, 2)) with attention (\(pct(mfuWithoutAttention, 2)) without) "
                     + "against \(pct(publishedMFU, 1)) published")
      } else {
        // The peak per chip that would give the published MFU, for both FLOPs counts.
        let needed = tokensPerSecond * modelFLOPsPerToken / (Double(chips) * publishedMFU)
        let neededNoAttention = tokensPerSecond * modelFLOPsPerTokenWithoutAttention / (Double(chips) * publishedMFU)
        notes.append("NOT reproduced: the inputs give \(pct(mfu, 2)) (\(pct(mfuWithoutAttention, 2)) without "
                     + "attention), published \(pct(publishedMFU, 1)); matching it would take a peak of "
                     + "\(tflops(neededNoAttention)) TFLOP/s per chip without attention or \(tflops(needed)) "
                     + "with it, instead of \(tflops(peakFLOPsPerChip))")
      }
      if let published = publishedHFU, let computed = hfu {
        notes.append((abs(computed - published) <= tolerance ? "HFU reproduced: " : "HFU NOT reproduced: ")
                     + "\(pct(computed, 2)) against \(pct(published, 1)) published")
      }
      if !run.remark.isEmpty { notes.append(run.remark) }
      note = notes.joined(separator: "; ")
    }
  }

  /// Published MFU/HFU shown as they were printed; nothing on the row is recomputed.
  public struct ReferenceRow: Codable, Equatable, Sendable {
    public var model: String
    public var parameters: Double
    public var chips: Int
    public var chip: String
    public var publishedMFU: Double
    public var publishedHFU: Double?
    public var note: String
    public var sources: [String]

    public init(model: String, parameters: Double, chips: Int, chip: String, publishedMFU: Double,
                publishedHFU: Double?, note: String, sources: [String]) {
      self.model = model
      self.parameters = parameters
      self.chips = chips
      self.chip = chip
      self.publishedMFU = publishedMFU
      self.publishedHFU = publishedHFU
      self.note = note
      self.sources = sources
    }

    enum CodingKeys: String, CodingKey {
      case model, parameters, chips, chip
      case publishedMFU = "published_mfu"
      case publishedHFU = "published_hfu"
      case note, sources
    }
  }
}

/// A training run measured on this machine: part two of the MFU table.
///
/// MFU and HFU are computed at initialization through `MFUTable.mfu`, the same function the
/// published rows use:
///
/// ```
/// MFU = tokens/s × FLOPs.modelPerToken(config)                         / peak
/// HFU = tokens/s × FLOPs.hardwarePerToken(config, remat:, attention:)  / peak
/// ```
///
/// `peakFLOPs` is the measured FMA peak for the threads used (`palm peak`), FLOP/s.
public struct MeasuredRow: Codable, Equatable, Sendable {
  /// Preset name (`PalmConfig.name`).
  public let config: String
  public let remat: RematPolicy
  public let threads: Int
  /// The GEMMs' precision of the run.
  public let precision: GEMMPrecision
  public let tokensPerSecond: Double
  /// Peak FLOP/s of the threads used: the denominator of `mfu`, `hfu` and `hfuFullT`.
  public let peakFLOPs: Double
  /// Which peak `peakFLOPs` is: the bf16 one for a bf16 run (the fp32 one where bf16 is emulated).
  public let peakPrecision: GEMMPrecision
  /// An fp32 run's MFU and HFU against the bf16 peak of the same threads (nil for bf16 runs or
  /// without a bf16 peak): the figures to set beside a bf16 run's.
  public let mfuOfBF16Peak: Double?
  public let hfuOfBF16Peak: Double?
  /// 6N + 12·L·H·Q·T, N = all parameters.
  public let modelFLOPsPerToken: Double
  /// This package's matmuls under `remat`, attention counted by `attention`.
  public let hardwareFLOPsPerToken: Double
  /// How the attention products are counted in the hardware FLOPs (`FLOPs.AttentionSpan`).
  public let attention: String
  public let mfu: Double
  public let hfu: Double
  /// HFU with attention charged over the full T, as PaLM counts it (Appendix B): the figure to
  /// set beside PaLM's 57.8% HFU. Our causal kernel skips most masked tiles, so `hfu` (what it
  /// really executes) is lower.
  public let hfuFullT: Double
  /// MFU or HFU above 100%: not a fast run but a peak measured while the machine was busier than
  /// during the run (or a --peak below what the run reached). Reports flag such a row.
  public var exceedsPeak: Bool { mfu > 1 || hfu > 1 }
  /// Activation bytes the memory plan reserves for this policy.
  public let plannedActivationBytes: Int
  /// Peak resident set size of the process (getrusage ru_maxrss), bytes.
  public let peakRSSBytes: Int

  /// Computes MFU and HFU of a measured run.
  /// - Parameters:
  ///   - config: the model trained.
  ///   - remat: its remat policy.
  ///   - threads: kernel threads used.
  ///   - tokensPerSecond: measured throughput (for example median over steps).
  ///   - peakFLOPs: measured peak FLOP/s of those threads.
  ///   - plannedActivationBytes: `MemoryPlan` bytes for this policy.
  ///   - peakRSSBytes: the process's peak resident set size.
  ///   - attention: how attention keys are charged in the hardware FLOPs; nil (the default) = what
  ///     this package's attention kernel executes. MFU always uses PaLM's full-T count.
  ///   - precision, peakPrecision: the run's GEMM precision and which peak `peakFLOPs` is.
  ///   - bf16PeakFLOPs: for an fp32 run, the bf16 peak of the same threads (the second figure).
  public init(config: PalmConfig, remat: RematPolicy, threads: Int, tokensPerSecond: Double,
              peakFLOPs: Double, plannedActivationBytes: Int, peakRSSBytes: Int,
              attention: FLOPs.AttentionSpan? = nil, precision: GEMMPrecision = .fp32,
              peakPrecision: GEMMPrecision = .fp32, bf16PeakFLOPs: Double? = nil) {
    self.config = config.name
    self.remat = remat
    self.threads = threads
    self.precision = precision
    self.tokensPerSecond = tokensPerSecond
    self.peakFLOPs = peakFLOPs
    self.peakPrecision = peakPrecision
    let span = attention ?? .kernel(heads: config.heads)
    self.attention = span.description
    modelFLOPsPerToken = FLOPs.modelPerToken(config)
    hardwareFLOPsPerToken = FLOPs.hardwarePerToken(config, remat: remat, attention: span)
    mfu = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: modelFLOPsPerToken, peakFLOPs: peakFLOPs)
    hfu = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: hardwareFLOPsPerToken, peakFLOPs: peakFLOPs)
    hfuFullT = MFUTable.mfu(tokensPerSecond: tokensPerSecond,
                            flopsPerToken: FLOPs.hardwarePerToken(config, remat: remat, attention: .full),
                            peakFLOPs: peakFLOPs)
    if peakPrecision == .fp32, let b = bf16PeakFLOPs, b > 0 {
      mfuOfBF16Peak = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: modelFLOPsPerToken, peakFLOPs: b)
      hfuOfBF16Peak = MFUTable.mfu(tokensPerSecond: tokensPerSecond, flopsPerToken: hardwareFLOPsPerToken, peakFLOPs: b)
    } else {
      mfuOfBF16Peak = nil
      hfuOfBF16Peak = nil
    }
    self.plannedActivationBytes = plannedActivationBytes
    self.peakRSSBytes = peakRSSBytes
  }

  enum CodingKeys: String, CodingKey {
    case config, remat, threads, precision
    case tokensPerSecond = "tokens_per_second"
    case peakFLOPs = "peak_flops"
    case peakPrecision = "peak_precision"
    case mfuOfBF16Peak = "mfu_of_bf16_peak"
    case hfuOfBF16Peak = "hfu_of_bf16_peak"
    case modelFLOPsPerToken = "model_flops_per_token"
    case hardwareFLOPsPerToken = "hardware_flops_per_token"
    case attention = "hardware_attention_span"
    case mfu, hfu
    case hfuFullT = "hfu_full_t"
    case plannedActivationBytes = "planned_activation_bytes"
    case peakRSSBytes = "peak_rss_bytes"
  }
}

// MARK: - Published inputs

/// The inputs of a published run, as its sources give them.
public struct PublishedRun: Equatable, Sendable {
  /// How the source states throughput.
  public enum Throughput: Equatable, Sendable {
    /// Whole-system tokens per second.
    case tokensPerSecond(Double)
    /// Steps per second times tokens per step.
    case stepsPerSecond(Double, tokensPerStep: Double)
    /// Seconds per step and tokens per step.
    case secondsPerStep(Double, tokensPerStep: Double)
    /// Achieved non-attention model FLOP/s per chip, counted as 6N per token (GPT-3's 24.6 TFLOP/s).
    case nonAttentionFLOPsPerChip(Double)

    /// Whole-system tokens per second.
    public func tokensPerSecond(chips: Int, parameters: Double) -> Double {
      switch self {
      case .tokensPerSecond(let t): t
      case .stepsPerSecond(let s, let tokens): s * tokens
      case .secondsPerStep(let s, let tokens): tokens / s
      case .nonAttentionFLOPsPerChip(let f): Double(chips) * f / (6 * parameters)
      }
    }
  }

  public var model: String
  /// N as the source counts it (PaLM uses the headline count, embedding included).
  public var parameters: Double
  public var layers: Int
  public var heads: Int
  public var headDim: Int
  public var seqLen: Int
  /// Accelerator count; 1 where the source gives a per-chip figure and no count.
  public var chips: Int
  public var chip: String
  /// Peak matmul FLOP/s of one chip.
  public var peakFLOPsPerChip: Double
  public var throughput: Throughput
  /// PaLM's rule: the fraction of non-attention forward FLOPs recomputed (attention forward is
  /// always recomputed); nil where the source publishes no hardware FLOPs.
  public var recomputedNonAttentionFraction: Double?
  public var publishedMFU: Double
  public var publishedHFU: Double?
  /// A sourced fact about the row (for example why it is not reproduced); may be empty.
  public var remark: String
  public var sources: [String]
}

extension MFUTable {
  /// The four rows of PaLM Table 3 with their inputs. Sources per field are in the comments and in
  /// each row's `sources`; the arithmetic is collected in /work/shared/reference/palm.md §1, §2, §8.
  public static let publishedRuns: [PublishedRun] = [
    // GPT-3: 24.6 non-attention model TFLOP/s per V100 (PaLM §4.1, via Patterson et al. 2021);
    // V100 tensor-core peak 125 TFLOP/s (karpathy/llm.c llmc/mfu.h: 640 tensor cores at 1530 MHz);
    // shape L=96, H=96, Q=128 (h = 12288), T=2048 (Korthikanti et al. 2022, Table 3); N = 175B.
    // PaLM Table 3 gives no chip count, so the row is per chip.
    PublishedRun(
      model: "GPT-3", parameters: 175e9, layers: 96, heads: 96, headDim: 128, seqLen: 2048,
      chips: 1, chip: "V100 (per chip; no count published)", peakFLOPsPerChip: 125e12,
      throughput: .nonAttentionFLOPsPerChip(24.6e12), recomputedNonAttentionFraction: nil,
      publishedMFU: 0.213, publishedHFU: nil,
      remark: "PaLM does not say which V100 peak it used, and no source found explains the gap; "
        + "the inputs are left as published",
      sources: ["PaLM §4.1 and Table 3", "Patterson et al. 2021 (24.6 TFLOP/s)",
                "karpathy/llm.c llmc/mfu.h (V100 125 TFLOP/s)", "Korthikanti et al. 2022 Table 3 (shape)"]),
    // Gopher: 0.0152 steps/s (PaLM §4.1, footnote 3: personal communication); batch 3072 × 2048 =
    // 6,291,456 tokens (Rae et al. 2021 via ai-papers.xuzou.cn/papers/gopher_2021: 3M→6M-token
    // batch; PaLM does not state the batch it used); 4096 TPU v3 at 123 TFLOP/s bf16
    // (cloud.google.com/tpu/docs/v3); L=80, H=128, Q=128, T=2048; N = 280B.
    PublishedRun(
      model: "Gopher", parameters: 280e9, layers: 80, heads: 128, headDim: 128, seqLen: 2048,
      chips: 4096, chip: "TPU v3", peakFLOPsPerChip: 123e12,
      throughput: .stepsPerSecond(0.0152, tokensPerStep: 3072 * 2048), recomputedNonAttentionFraction: nil,
      publishedMFU: 0.325, publishedHFU: nil,
      remark: "batch (3072 × 2048 tokens) and peak are a reconstruction: PaLM states neither",
      sources: ["PaLM §4.1 and footnote 3 (0.0152 steps/s)", "Rae et al. 2021 (shape, batch, 4096 chips)",
                "cloud.google.com/tpu/docs/v3 (123 TFLOP/s)"]),
    // Megatron-Turing NLG: 1920 × 2048 tokens per 60.1 s step, 2240 A100 at 312 TFLOP/s (PaLM
    // Appendix B, from Smith et al. 2022; footnote 4: differs from older Megatron-LM benchmarks);
    // L=105, H=128, Q=160 (h = 20480), T=2048 (Korthikanti et al. 2022, Table 3); N = 530B.
    PublishedRun(
      model: "Megatron-Turing NLG", parameters: 530e9, layers: 105, heads: 128, headDim: 160, seqLen: 2048,
      chips: 2240, chip: "A100", peakFLOPsPerChip: 312e12,
      throughput: .secondsPerStep(60.1, tokensPerStep: 1920 * 2048), recomputedNonAttentionFraction: nil,
      publishedMFU: 0.302, publishedHFU: nil,
      remark: "PaLM prints 29.7% / 30.2%, truncating 29.77% / 30.26%",
      sources: ["PaLM Appendix B", "Smith et al. 2022 (step time, batch, 2240 GPUs)",
                "Korthikanti et al. 2022 Table 3 (shape)"]),
    // PaLM 540B: 238.3K tokens/s on 6144 TPU v4 at 275 TFLOP/s (PaLM §4.1, Appendix B;
    // cloud.google.com/tpu/docs/v4); N = 540.35B (Table 1); L=118, H=48, Q=256, T=2048.
    // Hardware FLOPs: 75% of non-attention forward and all attention forward recomputed (App. B).
    PublishedRun(
      model: "PaLM", parameters: 540.35e9, layers: 118, heads: 48, headDim: 256, seqLen: 2048,
      chips: 6144, chip: "TPU v4", peakFLOPsPerChip: 275e12,
      throughput: .tokensPerSecond(238.3e3), recomputedNonAttentionFraction: 0.75,
      publishedMFU: 0.462, publishedHFU: 0.578,
      remark: "",
      sources: ["PaLM §4.1, Table 1, Table 3, Appendix B and Table 22", "cloud.google.com/tpu/docs/v4 (275 TFLOP/s)"]),
  ]

  /// Published figures shown for reference and not recomputed here.
  public static let referenceRows: [ReferenceRow] = [
    // Korthikanti et al. 2022, Table 5 ("present work": sequence parallelism + selective
    // recomputation), 1T model on 512 A100 (Table 3: L=128, 160 heads, h=25600, TP 8, PP 64).
    ReferenceRow(
      model: "Megatron 1T, selective recompute", parameters: 1e12, chips: 512, chip: "A100",
      publishedMFU: 0.563, publishedHFU: 0.570,
      note: "published reference row, not recomputed: Megatron's own FLOPs formula "
        + "72·B·L·s·h²(1 + s/6h + v/12hL), not 6N + 12·L·H·Q·T",
      sources: ["Korthikanti et al. 2022, Tables 3 and 5"]),
  ]
}

// MARK: - Number formatting shared by the renderers

/// `0.46231` → "46.23%".
func pct(_ fraction: Double, _ decimals: Int) -> String {
  fixed(fraction * 100, decimals) + "%"
}

/// FLOP/s → TFLOP/s with one decimal.
func tflops(_ flops: Double) -> String { fixed(flops / 1e12, 1) }

/// Fixed-point formatting without Foundation's locale (round half away from zero).
/// Values whose scaled magnitude does not fit an Int (≥ 2^62 here) and non-finite ones print as
/// Swift writes them ("1e+300", "inf", "nan"): never a trap, whatever the Double.
func fixed(_ value: Double, _ decimals: Int) -> String {
  guard value.isFinite else { return "\(value)" }
  var scale = 1.0
  for _ in 0..<max(0, decimals) { scale *= 10 }
  let scaled = (abs(value) * scale).rounded()
  guard scaled < 0x1p62 else { return "\(value)" }
  let whole = Int(scaled / scale)
  let frac = Int(scaled - Double(whole) * scale)
  let sign = value < 0 && scaled != 0 ? "-" : ""
  guard decimals > 0 else { return sign + "\(whole)" }
  let digits = String(frac)
  return sign + "\(whole)." + String(repeating: "0", count: decimals - digits.count) + digits
}

/// 238300.4 → "238,300" (huge and non-finite values as `fixed` prints them).
func grouped(_ value: Double) -> String {
  guard value.isFinite && abs(value) < 0x1p62 else { return "\(value)" }
  let n = Int(value.rounded())
  var s = String(abs(n))
  var i = s.count - 3
  while i > 0 {
    s.insert(",", at: s.index(s.startIndex, offsetBy: i))
    i -= 3
  }
  return (n < 0 ? "-" : "") + s
}
