// PalmConfig: the shape of a PaLM-style model and its presets.
//
// PaLM (Chowdhery et al. 2022, §2 and Table 1): parallel block, SwiGLU with d_ff = 4·d_model,
// multi-query attention (H query heads, one shared K/V head of size Q), rotary embeddings, shared
// input/output embedding, no biases. The paper's 8B/62B/540B presets exist for FLOPs accounting
// and are never allocated.

/// Model shape and the training batch shape that goes with a preset.
public struct PalmConfig: Codable, Equatable, Sendable {
  public var name: String
  public var dModel: Int
  public var layers: Int
  public var heads: Int
  public var headDim: Int
  public var dFF: Int
  public var vocab: Int
  public var seqLen: Int
  /// Sequences per step (a preset's default; `palm train --batch` overrides it).
  public var batch: Int

  public init(name: String = "custom", dModel: Int, layers: Int, heads: Int, headDim: Int,
              dFF: Int, vocab: Int, seqLen: Int, batch: Int) {
    self.name = name
    self.dModel = dModel
    self.layers = layers
    self.heads = heads
    self.headDim = headDim
    self.dFF = dFF
    self.vocab = vocab
    self.seqLen = seqLen
    self.batch = batch
  }

  /// Why a configuration is unusable.
  public struct Invalid: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "invalid model config: \(message)" }
  }

  /// The most layers a config may have.
  public static let maxLayers = 1 << 12

  /// Throws `Invalid` naming the first problem found.
  public func validate() throws {
    let fields: [(String, Int)] = [("d_model", dModel), ("layers", layers), ("heads", heads),
                                   ("head_dim", headDim), ("d_ff", dFF), ("vocab", vocab),
                                   ("seq_len", seqLen), ("batch", batch)]
    for (field, value) in fields where value < 1 {
      throw Invalid(message: "\(field) must be at least 1 (got \(value))")
    }
    // Upper bounds keep every product below Int64: each field at most 2^24, and the largest
    // products (the parameters, one step's activations and logits) at most 2^48 floats, so that
    // bytes, copies and sums over layers of them stay far below 2^63. (What fits THIS machine's
    // memory is checked where the buffers are planned: MemoryBudget.)
    for (field, value) in fields where value > 1 << 24 {
      throw Invalid(message: "\(field) = \(value) is larger than \(1 << 24)")
    }
    let tokens = batch * seqLen  // < 2^48
    let products: [(String, [Int])] = [
      ("the embedding (vocab x d_model)", [vocab, dModel]),
      ("one layer's input projection (d_model x (heads x head_dim + 2 head_dim + 2 d_ff))",
       [dModel, heads * headDim + 2 * headDim + 2 * dFF]),
      ("one layer's output projection ((heads x head_dim + d_ff) x d_model)", [heads * headDim + dFF, dModel]),
      ("the blocks' parameters (layers x d_model x (3 d_ff + 2 heads x head_dim))", [layers, dModel, 3 * dFF + 2 * heads * headDim + 2 * headDim + 1]),
      ("one step's logits (batch x seq_len x vocab)", [tokens, vocab]),
      ("one step's projections (layers x batch x seq_len x (heads x head_dim + 2 d_ff))", [layers, tokens, heads * headDim + 2 * headDim + 2 * dFF]),
      ("one step's attention statistics (layers x batch x heads x seq_len)", [layers, tokens, heads]),
    ]
    for (what, factors) in products {
      var n = 1
      for f in factors {
        let (p, overflow) = n.multipliedReportingOverflow(by: f)
        if overflow || p > 1 << 48 { throw Invalid(message: "\(what) would be more than 2^48 floats") }
        n = p
      }
    }
    // The layouts keep an entry per layer (ShardedLayout): PaLM 540B has 118 layers.
    if layers > Self.maxLayers {
      throw Invalid(message: "layers = \(layers) is larger than \(Self.maxLayers) (PaLM 540B has 118)")
    }
    if dModel % heads != 0 {
      throw Invalid(message: "heads (\(heads)) must divide d_model (\(dModel))")
    }
    if headDim % 2 != 0 {
      throw Invalid(message: "head_dim (\(headDim)) must be even for rotary embeddings")
    }
  }

  // MARK: - Fused projection layout
  //
  // Per token the fused input projection `w_in` (d, H·Q + 2Q + 2F) produces [q | k | v | gate | up]
  // (multi-query: one K/V head of size Q), and the fused output projection `w_out` (H·Q + F, d)
  // reads [attention output | SwiGLU output].

  /// Query columns of `w_in`, equal to the attention-output rows of `w_out`: H·Q.
  public var queryColumns: Int { heads * headDim }
  /// Q, K and V columns of `w_in` (the attention kernels' qkv row stride): H·Q + 2Q.
  public var qkvColumns: Int { queryColumns + 2 * headDim }
  /// Columns of the fused input projection `w_in`: H·Q + 2Q + 2F.
  public var inputProjectionColumns: Int { qkvColumns + 2 * dFF }
  /// Rows of the fused output projection `w_out` (its input width): H·Q + F.
  public var outputProjectionRows: Int { queryColumns + dFF }
  /// First K column of `w_in` (V follows at `keyColumn + headDim`): H·Q.
  public var keyColumn: Int { queryColumns }
  /// First SwiGLU gate column of `w_in` (the start of the 2F gate|up block): H·Q + 2Q.
  public var gateColumn: Int { qkvColumns }
  /// First SwiGLU up column of `w_in`: H·Q + 2Q + F.
  public var upColumn: Int { gateColumn + dFF }

  // MARK: - Parameter counts

  /// Parameters of one block: LayerNorm scale, fused Q/K/V + SwiGLU gate/up (`w_in`), and the fused
  /// attention-output + SwiGLU down projection (`w_out`).
  public var parametersPerLayer: Int {
    dModel + dModel * inputProjectionColumns + outputProjectionRows * dModel
  }

  /// All parameters: the shared embedding (vocab × d_model), the blocks, the final LayerNorm scale.
  public var parameterCount: Int { vocab * dModel + layers * parametersPerLayer + dModel }

  /// Parameters outside the embedding.
  public var nonEmbeddingParameterCount: Int { parameterCount - vocab * dModel }

  public var tokensPerStep: Int { batch * seqLen }

  // MARK: - Presets

  /// d 256, 4 layers, 4 heads × 64, T 256, batch 16, bytes (vocab 256).
  public static let tiny = PalmConfig(name: "tiny", dModel: 256, layers: 4, heads: 4, headDim: 64,
                                      dFF: 1024, vocab: 256, seqLen: 256, batch: 16)
  /// d 512, 8 layers, 8 heads × 64, T 512, batch 8, bytes (vocab 256).
  public static let small = PalmConfig(name: "small", dModel: 512, layers: 8, heads: 8, headDim: 64,
                                       dFF: 2048, vocab: 256, seqLen: 512, batch: 8)
  /// PaLM 8B (Table 1: 32 layers, 16 heads, d_model 4096; head size 256, d_ff = 4·d, V = 256k).
  public static let palm8B = PalmConfig(name: "palm-8b", dModel: 4096, layers: 32, heads: 16,
                                        headDim: 256, dFF: 16384, vocab: 256_000, seqLen: 2048,
                                        batch: 512)
  /// PaLM 62B (64 layers, 32 heads, d_model 8192).
  public static let palm62B = PalmConfig(name: "palm-62b", dModel: 8192, layers: 64, heads: 32,
                                         headDim: 256, dFF: 32768, vocab: 256_000, seqLen: 2048,
                                         batch: 1024)
  /// PaLM 540B (118 layers, 48 heads, d_model 18432).
  public static let palm540B = PalmConfig(name: "palm-540b", dModel: 18432, layers: 118, heads: 48,
                                          headDim: 256, dFF: 73728, vocab: 256_000, seqLen: 2048,
                                          batch: 2048)

  /// Presets by name, as the CLI accepts them.
  public static let presets: [String: PalmConfig] = [
    "tiny": tiny, "small": small, "shakespeare": shakespeare, "palm-8b": palm8B, "palm-62b": palm62B, "palm-540b": palm540B,
  ]
}

// A config file (`--config-file`) decodes with every key named: a wrong type names the key and the
// type it needs, an unknown key (a typo such as "d_model") is refused with the known keys listed.
extension PalmConfig {
  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  /// The keys of a config file, in the order of the fields.
  public static let keys = ["name", "dModel", "layers", "heads", "headDim", "dFF", "vocab", "seqLen", "batch"]

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: Key.self)
    let unknown = c.allKeys.map(\.stringValue).filter { !Self.keys.contains($0) }.sorted()
    if !unknown.isEmpty {
      throw Invalid(message: "unknown key\(unknown.count > 1 ? "s" : "") \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")) (the keys: \(Self.keys.joined(separator: ", ")))")
    }
    func whole(_ k: String) throws -> Int {
      guard c.contains(Key(k)) else { throw Invalid(message: "missing key \"\(k)\" (a whole number)") }
      guard let x = try? c.decode(Double.self, forKey: Key(k)) else { throw Invalid(message: "\"\(k)\" must be a whole number") }
      guard x.rounded() == x, abs(x) <= 0x1p53 else { throw Invalid(message: "\"\(k)\" must be a whole number (got \(x))") }
      return Int(x)
    }
    guard c.contains(Key("name")) else { throw Invalid(message: "missing key \"name\" (a string)") }
    guard let name = try? c.decode(String.self, forKey: Key("name")) else { throw Invalid(message: "\"name\" must be a string") }
    self.init(name: name, dModel: try whole("dModel"), layers: try whole("layers"), heads: try whole("heads"),
              headDim: try whole("headDim"), dFF: try whole("dFF"), vocab: try whole("vocab"), seqLen: try whole("seqLen"),
              batch: try whole("batch"))
  }
}
