// FLOPs: floating-point operations per trained token, two ways.
//
// Model FLOPs follow PaLM (Chowdhery et al. 2022) Appendix B, 6N + 12·L·H·Q·T: the numerator of MFU,
// independent of how a step is implemented. Hardware FLOPs walk the matmuls one training step of
// THIS package executes (Model.swift, Model+Backward.swift, CKernels/attention.c): the numerator of
// HFU. PaLM's own hardware rule for its Table 22 rows is here too. Counts are per token; multiply
// by the tokens of a step. Only matmul-class work is counted (no layer norm, softmax, SwiGLU or
// optimizer arithmetic), as in PaLM's formula and the pk_flops counter (pk_core.h).

/// FLOPs per trained token: PaLM's model FLOPs (the MFU numerator) and this package's hardware
/// FLOPs per remat policy (the HFU numerator).
///
/// A multiply-add counts 2. With L layers, H query heads of size Q, sequence T, model width d,
/// SwiGLU width F, vocabulary V, N parameters, C_in = H·Q + 2Q + 2F, C_out = H·Q + F:
///
/// ```
/// model FLOPs/token  = 6N + 12·L·H·Q·T                        PaLM App. B (nanoGPT, torchtitan)
/// PaLM hardware rule = 6N + 12·L·H·Q·T + f·2N + 4·L·H·Q·T     PaLM App. B, Table 22
///                      (f = 0.75 for 540B; 0 for 8B and 62B, which remat attention only)
///
/// ours, per token                 forward       backward     recomputed in backward
/// qkv_proj+mlpwi    h·w_in         2·d·C_in·L    2× forward   full: 1× forward
/// attention_scores  Q·Kᵀ           2·H·Q·K·L     2× forward   every policy: 1× (flash backward);
///                                                             full: 1× more (block forward redone)
/// context           P·V            2·H·Q·K·L     2× forward   full: 1× forward
/// out_proj+mlpwo    [ctx|g]·w_out  2·C_out·d·L   2× forward   never (backward reads [ctx|g])
/// logits            h·embedᵀ       2·d·V         2× forward   never
/// ```
///
/// K is the number of keys charged to each query (`AttentionSpan`): T for PaLM's count (`.full`),
/// (T+1)/2 for the exact causal triangle (`.causal`), and for this package's FlashAttention kernel
/// every key up to the end of the query's tile (`.kernel(heads:)`: tiles of 128/H queries, the
/// diagonal tile computed in full). The MFU numerator always uses PaLM's full-T count, so MFU here
/// is comparable with PaLM's Table 3; hardware FLOPs default to what the kernel executes.
///
/// `selective` recomputes only layer norms and SwiGLU (element-wise), so its matmul FLOPs equal
/// `none`'s; both include the Q·Kᵀ that a FlashAttention backward always recomputes.
///
/// ```swift
/// let model = FLOPs.modelPerToken(.tiny)                          // ≈ 26.35 M
/// let hw = FLOPs.hardware(.tiny, remat: .full).total              // what one step executes
/// ```
public enum FLOPs {
  /// Query rows per attention tile in CKernels/attention.c (`TILE_ROWS`): a tile holds
  /// max(1, 128 / H) tokens. FLOPsTests checks the count against the kernel's pk_flops counter.
  public static let attentionTileRows = 128

  /// How many keys each query is charged for in the attention products Q·Kᵀ and P·V.
  public enum AttentionSpan: Hashable, Codable, Sendable, CustomStringConvertible {
    /// T keys per query: PaLM's 12·L·H·Q·T; a kernel that masks a full score matrix.
    case full
    /// (T+1)/2 keys per query on average: the exact unmasked lower triangle.
    case causal
    /// Each query is charged every key up to the end of its tile of `queryTile` tokens: a
    /// blocked causal kernel that skips tiles above the diagonal and computes diagonal ones whole.
    case causalTiles(queryTile: Int)

    /// What pk_attention_forward/backward execute for `heads` query heads.
    public static func kernel(heads: Int) -> AttentionSpan {
      .causalTiles(queryTile: max(1, FLOPs.attentionTileRows / max(heads, 1)))
    }

    /// Keys per query, averaged over the T positions of a sequence.
    public func keysPerQuery(seqLen t: Int) -> Double {
      switch self {
      case .full: return Double(t)
      case .causal: return Double(t + 1) / 2
      case .causalTiles(let tile):
        guard t > 0 else { return 0 }
        let bq = min(max(tile, 1), t)
        var total = 0.0
        for start in stride(from: 0, to: t, by: bq) {
          let rows = min(bq, t - start)
          total += Double(rows) * Double(start + rows)
        }
        return total / Double(t)
      }
    }

    public var description: String {
      switch self {
      case .full: "full"
      case .causal: "causal"
      case .causalTiles(let tile): "causal tiles of \(tile)"
      }
    }
  }

  // MARK: - Model FLOPs (PaLM Appendix B)

  /// Attention FLOPs per token of PaLM's formula: `12·L·H·Q·T` (forward 4·L·H·Q·T, backward twice
  /// that), full T, causality not exploited.
  public static func attentionPerToken(layers: Int, heads: Int, headDim: Int, seqLen: Int) -> Double {
    12 * Double(layers) * Double(heads) * Double(headDim) * Double(seqLen)
  }

  /// Model FLOPs per token from published numbers: `6N + 12·L·H·Q·T` (PaLM Appendix B).
  ///
  /// - Parameters:
  ///   - parameters: N, as the source counts it (PaLM plugs in 540.35e9, embedding included).
  ///   - includingAttention: false gives 6N alone (PaLM's "without self-attention" figures).
  public static func modelPerToken(parameters: Double, layers: Int, heads: Int, headDim: Int,
                                   seqLen: Int, includingAttention: Bool = true) -> Double {
    6 * parameters
      + (includingAttention
        ? attentionPerToken(layers: layers, heads: heads, headDim: headDim, seqLen: seqLen) : 0)
  }

  /// Model FLOPs per token of a configuration: `6N + 12·L·H·Q·T` with N = all parameters (the
  /// shared embedding does real work as the logits matmul; PaLM's arithmetic includes it), or N =
  /// non-embedding parameters when `includingEmbedding` is false (torchtitan's choice).
  public static func modelPerToken(_ config: PalmConfig, includingEmbedding: Bool = true) -> Double {
    modelPerToken(
      parameters: Double(includingEmbedding ? config.parameterCount : config.nonEmbeddingParameterCount),
      layers: config.layers, heads: config.heads, headDim: config.headDim, seqLen: config.seqLen)
  }

  // MARK: - PaLM's hardware FLOPs rule (Appendix B, Table 22)

  /// Hardware FLOPs per token by PaLM's rematerialization rule:
  ///
  /// ```
  /// 6N + 12·L·H·Q·T + f·2N + 4·L·H·Q·T
  /// ```
  ///
  /// "75% of non-attention forward FLOPs and all attention forward FLOPs are recomputed" for
  /// 540B (f = 0.75); 8B and 62B "rematerialize only inside self-attention" (f = 0). PaLM 540B:
  /// 4.10 TFLOPs/token, 57.8% HFU.
  public static func palmHardwarePerToken(parameters: Double, layers: Int, heads: Int, headDim: Int,
                                          seqLen: Int, recomputedNonAttentionFraction f: Double) -> Double {
    let attention = attentionPerToken(layers: layers, heads: heads, headDim: headDim, seqLen: seqLen)
    return 6 * parameters + attention + f * 2 * parameters + attention / 3
  }

  /// `palmHardwarePerToken` for a configuration, N = all parameters.
  public static func palmHardwarePerToken(_ config: PalmConfig,
                                          recomputedNonAttentionFraction f: Double) -> Double {
    palmHardwarePerToken(parameters: Double(config.parameterCount), layers: config.layers,
                         heads: config.heads, headDim: config.headDim, seqLen: config.seqLen,
                         recomputedNonAttentionFraction: f)
  }

  // MARK: - Hardware FLOPs of this implementation

  /// One matmul of the training step, per token, summed over the layers.
  public struct Matmul: Equatable, Sendable {
    /// MaxText-style name: `qkv_proj+mlpwi`, `attention_scores`, `context`, `out_proj+mlpwo`,
    /// `logits`.
    public var name: String
    /// Forward FLOPs per token.
    public var forward: Double
    /// Backward FLOPs per token (input and weight gradients, or dQ/dK and dP/dV).
    public var backward: Double
    /// Forward work this matmul repeats inside the backward pass under the policy.
    public var recompute: Double
    public var total: Double { forward + backward + recompute }
  }

  /// Hardware FLOPs per token split by phase, with the matmuls they come from.
  public struct Breakdown: Equatable, Sendable {
    /// The matmuls of one step in forward order.
    public var matmuls: [Matmul]
    /// The forward pass.
    public var forward: Double { matmuls.reduce(0) { $0 + $1.forward } }
    /// The backward pass without recomputation.
    public var backward: Double { matmuls.reduce(0) { $0 + $1.backward } }
    /// Forward work repeated inside the backward pass.
    public var recompute: Double { matmuls.reduce(0) { $0 + $1.recompute } }
    /// forward + backward + recompute.
    public var total: Double { forward + backward + recompute }
  }

  /// The matmuls one training step of this package executes under `remat`, per token.
  ///
  /// ```
  /// none, selective: recompute = 2·L·H·Q·K                      (Q·Kᵀ in the flash backward)
  /// full:            recompute = 2·L·H·Q·K + L·(2·d·C_in + 4·H·Q·K)  (+ input projection, attention)
  /// ```
  ///
  /// With `attention: .full` and `remat: .none` the total is `6(N − (L+1)·d) + 14·L·H·Q·T`:
  /// PaLM's model FLOPs less the layer-norm scales (no matmul multiplies them) plus the flash
  /// backward's recomputed Q·Kᵀ.
  /// - Parameters:
  ///   - attention: how attention keys are charged; nil = what this package's kernel executes.
  public static func hardware(_ config: PalmConfig, remat: RematPolicy,
                              attention: AttentionSpan? = nil) -> Breakdown {
    let d = Double(config.dModel), l = Double(config.layers), h = Double(config.heads)
    let q = Double(config.headDim), v = Double(config.vocab)
    let cin = Double(config.inputProjectionColumns), cout = Double(config.outputProjectionRows)
    let span = attention ?? .kernel(heads: config.heads)
    let product = 2 * h * q * span.keysPerQuery(seqLen: config.seqLen) * l
    let full = remat == .full ? 1.0 : 0.0
    let proj = 2 * d * cin * l
    return Breakdown(matmuls: [
      Matmul(name: "qkv_proj+mlpwi", forward: proj, backward: 2 * proj, recompute: full * proj),
      Matmul(name: "attention_scores", forward: product, backward: 2 * product,
             recompute: (1 + full) * product),
      Matmul(name: "context", forward: product, backward: 2 * product, recompute: full * product),
      Matmul(name: "out_proj+mlpwo", forward: 2 * cout * d * l, backward: 4 * cout * d * l, recompute: 0),
      Matmul(name: "logits", forward: 2 * d * v, backward: 4 * d * v, recompute: 0),
    ])
  }

  /// `hardware(_:remat:attention:).total`.
  public static func hardwarePerToken(_ config: PalmConfig, remat: RematPolicy,
                                      attention: AttentionSpan? = nil) -> Double {
    hardware(config, remat: remat, attention: attention).total
  }

  /// Hardware FLOPs per token of the global batch on a mesh, summed over its devices: every model
  /// shard runs the blocks of the shard config (H/M heads, F/M d_ff) AND what the model axis
  /// replicates (the K/V projection, the head and its logits) on the same tokens, so the count is
  /// M × the shard config's; data and pod ranks split the tokens (no factor). At (1,1,1) it is
  /// `hardwarePerToken(_:remat:)`.
  /// `attention`: how attention keys are charged (nil = this package's kernel).
  public static func hardwarePerToken(_ config: PalmConfig, remat: RematPolicy, mesh: MeshShape,
                                      attention: AttentionSpan? = nil) -> Double {
    var local = config
    local.heads = config.heads / mesh.model
    local.dFF = config.dFF / mesh.model
    return Double(mesh.model) * hardwarePerToken(local, remat: remat, attention: attention)
  }
}
