// ShardStorage: where a Model's weights and gradients live on its mesh, and the data- and pod-axis
// hooks of a step (the model-axis all-reduces are in Model.swift / Model+Backward.swift).
//
// Data axis 1 (the single device, and any mesh without FSDP): the shard is the model shard's
// `Parameters` itself; every hook returns the tensors in place (no copy, no collective).
// Data axis D > 1 (FSDP / ZeRO-3): a rank stores 1/D of every bucket (ShardedLayout.swift) and
//   - before a layer's forward (and again before its backward) all-gathers the layer's bucket
//     into one reusable buffer (`layerWeights`); the head bucket is gathered once per step and kept
//     to its end (the embedding is used at both ends);
//   - computes a layer's gradient into one reusable buffer and reduce-scatters it into its chunk
//     right after the layer's backward (`finishLayer`), adding to what earlier micro-batches left.
// Pod axis P > 1: when a bucket's gradient is final (the last micro-batch of an update), a
// non-blocking all-reduce over `pod` of this rank's chunk starts at once and overlaps the layers
// still to come (`finishLayer(exchange: true)`); completions are polled after each layer and
// `finishExchange` waits for the rest. Reference: ZeRO (Rajbhandari et al. 2020) stage 3; PaLM §4.

import CKernels
import PalmTensor

/// The two-pod gradient exchange of one update, as measured on this rank.
public struct ExchangeStats: Sendable, Equatable {
  /// Bytes of gradient this rank put into pod all-reduces (its chunk of every bucket); 0 for P = 1.
  /// (Buffer bytes; a ring all-reduce moves 2·(P−1)/P of that over the wire each way.)
  public var bytes: Int = 0
  /// Buckets exchanged (layers + head).
  public var buckets: Int = 0
  /// From the first bucket's start to the last bucket's observed completion, seconds. Completions
  /// are observed (`test()`) after each layer's backward, so this is an upper bound of the transfer.
  public var transferSeconds: Double = 0
  /// Time spent waiting for the exchange after the backward pass finished, seconds.
  public var waitSeconds: Double = 0
  /// 1 − wait / transfer: the share of the exchange hidden behind the backward (1 when nothing to exchange).
  public var hiddenFraction: Double { transferSeconds > 0 ? max(0, 1 - waitSeconds / transferSeconds) : 1 }
  public init() {}
}

/// The head's weights (or gradients): the shared embedding and the final LayerNorm scale.
struct HeadParameters {
  let embed: Tensor
  let lnFinal: Tensor
}

/// A rank's parameter and gradient shards and the buffers its hooks gather into. Shared by a model
/// and the forward-only models built `sharing:` it.
final class ShardStorage: @unchecked Sendable {
  let layout: ShardedLayout
  let mesh: Mesh
  let params: Tensor, grads: Tensor
  /// Views over `params` / `grads` when the data axis is 1.
  let localParams: Parameters?, localGrads: Parameters?
  // Data axis > 1: the gathered head (kept for a step), one gathered layer, one layer's and the
  // head's gradient before their reduce-scatter, and the chunk a reduce-scatter lands in.
  private let gathered: (head: Tensor, layer: Tensor, layerGrad: Tensor, headGrad: Tensor, chunk: Tensor)?
  private let gatheredLayerViews: (weights: LayerParameters, grads: LayerParameters)?
  let headWeights: HeadParameters, headGradients: HeadParameters
  // The pod exchange in flight.
  private var pending: [(request: any CommRequest, done: Double?)] = []
  private var firstStart = 0.0, backwardEnd = 0.0, stats = ExchangeStats()

  init(layout: ShardedLayout, mesh: Mesh) throws {
    self.layout = layout
    self.mesh = mesh
    params = Tensor(shape: [layout.shardFloats])
    grads = Tensor(shape: [layout.shardFloats])
    let local = layout.local
    let byName = Dictionary(uniqueKeysWithValues: layout.localEntries.map { ($0.name, $0) })
    func view(_ t: Tensor, _ name: String, base: Int) -> Tensor {
      let e = byName[name]!
      return Tensor(storage: t.storage, offset: t.offset + e.offset - base, shape: e.shape)
    }
    if layout.shardIsLocal {
      let p = try Parameters(config: local, flat: params), g = try Parameters(config: local, flat: grads)
      localParams = p
      localGrads = g
      gathered = nil
      gatheredLayerViews = nil
      headWeights = HeadParameters(embed: p.embed, lnFinal: p.lnFinalScale)
      headGradients = HeadParameters(embed: g.embed, lnFinal: g.lnFinalScale)
    } else {
      localParams = nil
      localGrads = nil
      let head = Tensor(shape: [layout.gatheredFloats(ShardedLayout.headBucket)])
      let headGrad = Tensor(shape: [head.count])
      let layer = Tensor(shape: [layout.layerGatherFloats]), layerGrad = Tensor(shape: [layer.count])
      let chunk = Tensor(shape: [layout.chunkFloats.max()!])
      gathered = (head, layer, layerGrad, headGrad, chunk)
      let base = layout.buckets[ShardedLayout.layerBucket(0)].lowerBound
      func layerViews(_ t: Tensor) -> LayerParameters {
        LayerParameters(lnScale: view(t, "layers.0.ln.scale", base: base), wIn: view(t, "layers.0.w_in", base: base),
                        wOut: view(t, "layers.0.w_out", base: base))
      }
      gatheredLayerViews = layout.config.layers > 0 ? (layerViews(layer), layerViews(layerGrad)) : nil
      headWeights = HeadParameters(embed: view(head, "embed", base: 0), lnFinal: view(head, "ln_f.scale", base: 0))
      headGradients = HeadParameters(embed: view(headGrad, "embed", base: 0), lnFinal: view(headGrad, "ln_f.scale", base: 0))
    }
  }

  /// Bucket b's chunk of `t` (`params` or `grads`).
  func chunk(_ t: Tensor, _ b: Int) -> Tensor {
    Tensor(storage: t.storage, offset: t.offset + layout.chunkOffsets[b], shape: [layout.chunkFloats[b]])
  }

  /// Bytes this rank holds for the model beyond its activations: the shards of the parameters and
  /// gradients, and (data > 1) the gathered buffers.
  var bytes: (parameters: Int, gradients: Int, gathered: Int) {
    let g = gathered.map { $0.head.count + $0.layer.count + $0.layerGrad.count + $0.headGrad.count + $0.chunk.count } ?? 0
    return (params.count * 4, grads.count * 4, g * 4)
  }

  // MARK: - Hooks

  /// Start of a forward (and backward): data > 1 gathers the head bucket (and zeroes its gradient
  /// buffer when a backward follows).
  func beginStep(backward: Bool) throws {
    guard let g = gathered else { return }
    try mesh.dataComm.allGather(chunk(params, ShardedLayout.headBucket), into: g.head)
    if backward { g.headGrad.fill(0) }
  }

  /// Layer i's weights: in place (data 1), or all-gathered over data into the reusable buffer.
  func layerWeights(_ i: Int) throws -> LayerParameters {
    guard let g = gathered, let v = gatheredLayerViews else { return localParams!.layers[i] }
    let b = ShardedLayout.layerBucket(i)
    try mesh.dataComm.allGather(chunk(params, b), into: Tensor(storage: g.layer.storage, offset: g.layer.offset,
                                                               shape: [layout.gatheredFloats(b)]))
    return v.weights
  }

  /// Where layer i's backward adds its weight gradients: in place (data 1), or a zeroed buffer
  /// that `finishLayer` reduce-scatters.
  func layerGradients(_ i: Int) -> LayerParameters {
    guard let g = gathered, let v = gatheredLayerViews else { return localGrads!.layers[i] }
    g.layerGrad.fill(0)
    return v.grads
  }

  /// Layer i's gradient is complete on this rank: data > 1 reduce-scatters it into the chunk;
  /// with `exchange`, the chunk's pod all-reduce starts. Polls the exchanges in flight.
  func finishLayer(_ i: Int, exchange: Bool) throws {
    try finishBucket(ShardedLayout.layerBucket(i), gathered?.layerGrad, exchange: exchange)
  }

  /// The head's gradient is complete (after the embedding backward): as `finishLayer`.
  func finishHead(exchange: Bool) throws {
    try finishBucket(ShardedLayout.headBucket, gathered?.headGrad, exchange: exchange)
    backwardEnd = pk_now_seconds()
  }

  private func finishBucket(_ b: Int, _ full: Tensor?, exchange: Bool) throws {
    let mine = chunk(grads, b)
    if let g = gathered, let full {
      let c = Tensor(storage: g.chunk.storage, offset: g.chunk.offset, shape: [mine.count])
      try mesh.dataComm.reduceScatter(Tensor(storage: full.storage, offset: full.offset, shape: [layout.gatheredFloats(b)]), into: c)
      let dst = mine.pointer, src = c.pointer
      for k in 0..<mine.count { dst[k] += src[k] }
    }
    guard exchange && mesh.shape.pod > 1 else { return }
    if pending.isEmpty { firstStart = pk_now_seconds(); stats = ExchangeStats() }
    pending.append((try mesh.podComm.iAllReduce(mine), nil))
    stats.bytes += mine.count * MemoryLayout<Float>.size
    stats.buckets += 1
    for k in pending.indices where pending[k].done == nil {
      if try pending[k].request.test() { pending[k].done = pk_now_seconds() }
    }
  }

  /// Waits for every pod all-reduce in flight; the stats of the exchange (empty without one).
  func finishExchange() throws -> ExchangeStats {
    guard !pending.isEmpty else { return ExchangeStats() }
    for k in pending.indices where pending[k].done == nil {
      try pending[k].request.wait()
      pending[k].done = pk_now_seconds()
    }
    let end = pk_now_seconds()
    var s = stats
    s.waitSeconds = max(0, end - backwardEnd)
    s.transferSeconds = (pending.compactMap(\.done).max() ?? end) - firstStart
    pending = []
    return s
  }
}
