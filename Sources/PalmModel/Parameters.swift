// Parameters: every weight of a PaLM model in ONE aligned allocation, carved into named views.
//
// llm.c's `malloc_and_point_parameters`: a size table computed from the config, one allocation, then
// tensor views at fixed offsets. Gradients use the same layout (`Parameters(config:)` again), so an
// optimizer can treat weights, gradients and its own state as flat arrays. Names are the safetensors
// tensor names. Initialization follows PaLM §5 (see `initialize(seed:)`).

import PalmTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One named tensor of the parameter layout.
public struct ParameterEntry: Sendable, Equatable {
  /// The safetensors name, e.g. `"layers.3.w_in"`.
  public let name: String
  public let shape: [Int]
  /// Offset of the first element in the flat buffer, in floats (a multiple of 16: 64-byte aligned).
  public let offset: Int
  public var count: Int { shape.reduce(1, *) }
}

/// The weights of one parallel block.
public struct LayerParameters: Sendable {
  /// `layers.i.ln.scale` (d): the block's one LayerNorm (no bias).
  public let lnScale: Tensor
  /// `layers.i.w_in` (d, H·Q + 2Q + 2F): columns `[q (H·Q) | k (Q) | v (Q) | gate (F) | up (F)]`.
  public let wIn: Tensor
  /// `layers.i.w_out` (H·Q + F, d): rows `[attention output (H·Q) ; SwiGLU down (F)]`, so
  /// `[context | swiglu] · w_out` sums both branches.
  public let wOut: Tensor
}

/// All parameters (or all gradients) of a model, in one 64-byte aligned buffer.
///
/// Layout and names, in buffer order:
///
/// | name | shape |
/// |---|---|
/// | `embed` | (V, d) — shared input embedding / output projection |
/// | `ln_f.scale` | (d) |
/// | `layers.{i}.ln.scale` | (d) |
/// | `layers.{i}.w_in` | (d, H·Q + 2Q + 2F) |
/// | `layers.{i}.w_out` | (H·Q + F, d) |
///
/// The head's two tensors come first and each layer's three are adjacent, so the buffer is a run of
/// contiguous buckets `[embed | ln_f] [layer 0] [layer 1] ...`: the units a mesh gathers and
/// reduces (ShardedLayout.swift). A model shard's parameters are this layout for its shard config.
///
/// ```swift
/// let params = Parameters(config: .tiny)          // zeros
/// params.initialize(seed: 42)                      // PaLM init
/// let grads = Parameters(config: .tiny)           // same layout, zeros
/// print(params["layers.0.w_in"]!.shape)            // [256, 2432]
/// ```
public final class Parameters: @unchecked Sendable {
  public let config: PalmConfig
  /// Every parameter, flat (padding between tensors stays zero).
  public let flat: Tensor
  /// Table of the tensors in buffer order.
  public let entries: [ParameterEntry]
  /// `embed` (V, d).
  public let embed: Tensor
  public let layers: [LayerParameters]
  /// `ln_f.scale` (d).
  public let lnFinalScale: Tensor
  private let index: [String: Int]

  /// The layout for `config`: the table of names, shapes and offsets, and the total float count.
  public static func layout(for config: PalmConfig) -> (entries: [ParameterEntry], floats: Int) {
    let d = config.dModel
    let cin = config.inputProjectionColumns
    let cout = config.outputProjectionRows
    var shapes: [(String, [Int])] = [("embed", [config.vocab, d]), ("ln_f.scale", [d])]
    for i in 0..<config.layers {
      shapes.append(("layers.\(i).ln.scale", [d]))
      shapes.append(("layers.\(i).w_in", [d, cin]))
      shapes.append(("layers.\(i).w_out", [cout, d]))
    }
    var entries: [ParameterEntry] = []
    var offset = 0
    for (name, shape) in shapes {
      entries.append(ParameterEntry(name: name, shape: shape, offset: offset))
      offset += Arena.rounded(shape.reduce(1, *))
    }
    return (entries, offset)
  }

  /// A zero-filled parameter set for `config` (validated first).
  /// - Throws: `PalmConfig.Invalid`.
  public convenience init(config: PalmConfig) throws {
    try config.validate()
    try self.init(config: config, flat: Tensor(shape: [Parameters.layout(for: config).floats]))
  }

  /// Named views over `flat` (no copy), which must hold exactly `layout(for: config).floats` floats:
  /// e.g. a mesh rank's shard storage when it is the whole model shard (data axis 1).
  /// - Throws: `PalmConfig.Invalid` for a bad config or a buffer of another size.
  public init(config: PalmConfig, flat: Tensor) throws {
    try config.validate()
    self.config = config
    let (entries, floats) = Parameters.layout(for: config)
    guard flat.count == floats else {
      throw PalmConfig.Invalid(message: "a parameter buffer of \(flat.count) floats for a layout of \(floats)")
    }
    self.entries = entries
    self.flat = flat
    var index: [String: Int] = [:]
    for (i, e) in entries.enumerated() { index[e.name] = i }
    self.index = index
    func view(_ name: String) -> Tensor {
      let e = entries[index[name]!]
      return Tensor(storage: flat.storage, offset: e.offset, shape: e.shape)
    }
    embed = view("embed")
    layers = (0..<config.layers).map { i in
      LayerParameters(lnScale: view("layers.\(i).ln.scale"), wIn: view("layers.\(i).w_in"),
                      wOut: view("layers.\(i).w_out"))
    }
    lnFinalScale = view("ln_f.scale")
  }

  /// The tensor named `name` (a view into `flat`), or nil.
  public subscript(name: String) -> Tensor? {
    guard let i = index[name] else { return nil }
    let e = entries[i]
    return Tensor(storage: flat.storage, offset: e.offset, shape: e.shape)
  }

  /// Every tensor, in buffer order, with its name.
  public var named: [(name: String, tensor: Tensor)] {
    entries.map { e in (e.name, Tensor(storage: flat.storage, offset: e.offset, shape: e.shape)) }
  }

  /// Number of parameters (without alignment padding); equals `config.parameterCount`.
  public var count: Int { entries.reduce(0) { $0 + $1.count } }

  /// Sets every element (padding included) to zero, e.g. gradients before a step.
  public func zero() { flat.fill(0) }

  /// PaLM initialization (§5), deterministic in `seed`:
  ///
  /// ```
  /// kernels           W ~ N(0, std = 1/√n_in)   n_in = the kernel's input dimension
  /// embed             E ~ N(0, 1)               (no layer norm on the embeddings)
  /// layer-norm scales 1
  /// ```
  ///
  /// The paper writes N(0, 1/√n_in); we read the second argument as the standard deviation
  /// (variance 1/n_in, "fan-in variance scaling"), as its "variance scaling" wording says. `w_in`
  /// has n_in = d for all its columns; `w_out` stacks two kernels, so its first H·Q rows (attention
  /// output) use n_in = H·Q and its last F rows (SwiGLU down) use n_in = F.
  /// Each tensor draws from its own stream (seed, tensor), so the values do not depend on
  /// alignment padding or on which other tensors exist.
  public func initialize(seed: UInt64) {
    zero()
    for e in entries {
      Parameters.initialize(e.name, Tensor(storage: flat.storage, offset: e.offset, shape: e.shape), config: config, seed: seed)
    }
  }

  /// PaLM initialization of the one tensor `name` of `config`'s layout into `t` (its shape): what
  /// `initialize(seed:)` writes there, so a mesh rank can draw the full model one tensor at a time.
  /// Streams are numbered embed 0, then 1 + 3i, 2 + 3i, 3 + 3i for layer i's ln.scale, w_in, w_out
  /// (the order of the original layout, kept so that a seed gives the same weights as before).
  public static func initialize(_ name: String, _ t: Tensor, config: PalmConfig, seed: UInt64) {
    let parts = name.split(separator: ".")
    let layer = parts.count > 1 && parts[0] == "layers" ? Int(parts[1]) : nil
    let slot: UInt64 = name.hasSuffix(".w_in") ? 2 : name.hasSuffix(".w_out") ? 3 : 1
    var rng = NormalGenerator(seed: seed, stream: layer.map { UInt64(3 * $0) + slot } ?? 0)
    let hq = config.queryColumns, d = config.dModel
    if name == "embed" {
      rng.fill(t.pointer, count: t.count, std: 1)
    } else if name.hasSuffix(".scale") {
      t.fill(1)
    } else if name.hasSuffix(".w_in") {
      rng.fill(t.pointer, count: t.count, std: 1 / Double(d).squareRoot())
    } else if name.hasSuffix(".w_out") {
      rng.fill(t.pointer, count: hq * d, std: 1 / Double(hq).squareRoot())
      rng.fill(t.pointer + hq * d, count: config.dFF * d, std: 1 / Double(config.dFF).squareRoot())
    } else {
      preconditionFailure("no initializer for \(name)")
    }
  }
}

/// Normal deviates from splitmix64 + Box–Muller: small, fast and the same on every platform.
public struct NormalGenerator: Sendable {
  private var state: UInt64
  private var spare: Double? = nil

  /// A generator for (`seed`, `stream`): different streams give independent-looking sequences.
  public init(seed: UInt64, stream: UInt64 = 0) {
    state = seed &+ 0x9E37_79B9_7F4A_7C15 &* (stream &+ 1)
    _ = nextUInt64()
  }

  /// splitmix64 (Steele, Lea, Flood 2014).
  public mutating func nextUInt64() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in (0, 1): 53 random bits, never 0.
  public mutating func nextUniform() -> Double {
    (Double(nextUInt64() >> 11) + 0.5) * 0x1.0p-53
  }

  /// A standard normal deviate (Box–Muller, both values used).
  public mutating func nextNormal() -> Double {
    if let s = spare { spare = nil; return s }
    let u1 = nextUniform(), u2 = nextUniform()
    let r = (-2 * log(u1)).squareRoot()
    let a = 2 * Double.pi * u2
    spare = r * sin(a)
    return r * cos(a)
  }

  /// Fills `count` floats at `p` with N(0, std²) deviates.
  public mutating func fill(_ p: UnsafeMutablePointer<Float>, count: Int, std: Double) {
    for i in 0..<count { p[i] = Float(nextNormal() * std) }
  }
}
