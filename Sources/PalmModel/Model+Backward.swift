// Model+Backward: the backward pass, head first, then the blocks in reverse, with rematerialization.
//
// For block i, with dx = dL/dx_{i+1} (the residual gradient, which also flows straight to x_i):
//   (remat)  full: h, mean, rstd, proj, ctx, lse, g recomputed;  selective: h, mean, rstd, g
//            recomputed and the saved context copied back beside g, so every policy then runs the
//            same kernels on the same values (the gradients are bit-identical across policies)
//   (dropout p > 0)  db = mask ⊙ dx / (1 − p), into the block's output buffer x_{i+1} (dead:
//            block i+1's backward is done); the mask is regenerated from the step's key, never
//            stored; else db = dx
//   dcg     = db · w_outᵀ                      (NT)      d[ctx | g]
//   dw_out += [ctx | g]ᵀ · db                  (TN, beta 1)
//   dproj   = [Attn_bwd(dctx) | SwiGLU_bwd(dg)]  (in the proj buffer: SwiGLU in place, dqkv copied)
//   dw_in  += hᵀ · dproj                       (TN, beta 1)
//   dh      = dproj · w_inᵀ                    (NT, into the h buffer)
//   dx     += LN_bwd(dh);  dscale += ...       (the parallel block's single LayerNorm)
// Gradients of parameters are ACCUMULATED into the gradients (the caller zeroes them).
// On a mesh (hooks, ShardStorage.swift): each layer's weights are gathered again over data before
// its backward; with model > 1 ONE all-reduce over model per layer sums dh (each shard's part of
// the input gradient) packed with the shards' partial K/V weight gradients (the K/V head is
// replicated); the layer's gradient is then reduce-scattered over data and, on the last
// micro-batch, its pod exchange starts while the layers below run.

import CKernels
import PalmTensor

extension Model {
  /// The output projection's backward already ran (`head(backward: true)`: d embed has the head's
  /// part, and `headH` holds d h_f); this does the final LayerNorm, the blocks and the embedding.
  func backwardLayers(tokens: UnsafePointer<Int32>, dropout key: DropoutKey?, exchange: Bool) throws {
    let v = config.vocab
    let W = store.headWeights, G = store.headGradients
    let dh = headH
    dx.fill(0)
    try KernelError.check(
      pk_layernorm_backward(dx.pointer, Int64(d), G.lnFinal.pointer, dh.pointer, Int64(d),
                            headX.pointer, Int64(d), headMean.pointer, headRstd.pointer,
                            W.lnFinal.pointer, Int64(n), Int64(d)), "layernorm_backward")
    for i in stride(from: config.layers - 1, through: 0, by: -1) {
      let Wi = try store.layerWeights(i), Gi = store.layerGradients(i)
      try blockBackward(i, layerBuffers[i], Wi, Gi, dropout: key)
      try store.finishLayer(i, exchange: exchange)
    }
    if let key, dropout.embedding > 0 {
      try KernelError.check(
        pk_dropout_backward(dx.pointer, dx.pointer, Int64(n * d), dropout.embedding, key.seed,
                            DropoutKey.embeddingStream, Int64(key.tokenOffset * d)), "dropout_backward")
    }
    try KernelError.check(
      pk_embedding_backward(G.embed.pointer, dx.pointer, Int64(d), tokens, 1, Int64(n), Int64(v), Int64(d)),
      "embedding_backward")
    try store.finishHead(exchange: exchange)
  }

  func blockBackward(_ i: Int, _ L: LayerBuffers, _ W: LayerParameters, _ G: LayerParameters,
                     dropout key: DropoutKey?) throws {
    switch remat {
    case .none: break
    case .selective: try blockForward(L, W, attention: false)
    case .full: try blockForward(L, W, attention: true)
    }
    // The branch's gradient: dx, or dx through the layer's dropout mask, written into x_{i+1}
    // (the next block's saved input, or the head's: read by backward passes that already ran).
    var db = UnsafePointer(dx.pointer)
    if let key, dropout.residual > 0 {
      try KernelError.check(
        pk_dropout_backward(L.xNext.pointer, dx.pointer, Int64(n * d), dropout.residual, key.seed,
                            DropoutKey.residualStream(layer: i), Int64(key.tokenOffset * d)), "dropout_backward")
      db = UnsafePointer(L.xNext.pointer)
    }
    // d[ctx | g] = db · w_outᵀ
    try Kernels.gemm(precision, .nt, n, cout, d, 1, db, d, W.wOut.pointer, d, 0, dcg.pointer, cout)
    // d w_out += [ctx | g]ᵀ · db
    try Kernels.gemm(precision, .tn, cout, d, n, 1, L.cg.pointer, cout, db, d, 1, G.wOut.pointer, d)
    // dproj = [dqkv | dgate_up] is built IN the proj buffer, which is dead after this layer's
    // backward (saves an (N, C_in) buffer, the plan's largest): the SwiGLU backward runs in place
    // on the gate_up columns, the attention backward (which reads q, k, v across rows) writes a
    // separate (N, H·Q + 2Q) buffer that is then copied over the qkv columns.
    try Kernels.attentionBackward(precision, dqkv: dqkv.pointer, lddqkv: pqkv, dout: dcg.pointer, lddout: cout,
                                  qkv: L.proj.pointer, ldqkv: cin, out: L.cg.pointer, ldo: cout, lse: L.lse.pointer,
                                  batch: batch, seqLen: seqLen, heads: local.heads, headDim: config.headDim)
    try KernelError.check(
      pk_swiglu_backward(L.proj.pointer + pqkv, Int64(cin), dcg.pointer + hq, Int64(cout),
                         L.proj.pointer + pqkv, Int64(cin), Int64(n), Int64(local.dFF)),
      "swiglu_backward")
    copyRows(L.proj.pointer, cin, dqkv.pointer, pqkv, cols: pqkv)
    let dproj = L.proj
    guard let pack = dhkv else {
      // d w_in += hᵀ · dproj;  dh = dproj · w_inᵀ, written over h (dead once d w_in has it)
      try Kernels.gemm(precision, .tn, d, cin, n, 1, L.h.pointer, d, dproj.pointer, cin, 1, G.wIn.pointer, cin)
      let dh = L.h
      try Kernels.gemm(precision, .nt, n, d, cin, 1, dproj.pointer, cin, W.wIn.pointer, cin, 0, dh.pointer, d)
      try layerNormBackward(L, W, G, dh: dh.pointer)
      return
    }
    // model > 1: the K/V columns of d w_in are a replicated weight's gradient, of which this shard
    // computes the part from its own heads. Set aside what earlier micro-batches accumulated (the
    // complete sums), let the GEMM add this micro-batch's partial to zero, sum the partials over
    // model together with dh in ONE all-reduce, and add the earlier sums back.
    let q2 = 2 * config.headDim, kvc = local.keyColumn
    let dh = pack.pointer, kv = pack.pointer + n * d, gw = G.wIn.pointer
    let earlier = kv + d * q2  // the pack's spare (d, 2Q) region (MemoryPlan grad.dhkv)
    for r in 0..<d {
      (earlier + r * q2).update(from: gw + r * cin + kvc, count: q2)
      (gw + r * cin + kvc).update(repeating: 0, count: q2)
    }
    try Kernels.gemm(precision, .tn, d, cin, n, 1, L.h.pointer, d, dproj.pointer, cin, 1, gw, cin)
    try Kernels.gemm(precision, .nt, n, d, cin, 1, dproj.pointer, cin, W.wIn.pointer, cin, 0, dh, d)
    for r in 0..<d { (kv + r * q2).update(from: gw + r * cin + kvc, count: q2) }
    // The pack's first N·d + d·2Q floats (not the set-aside region after them).
    try mesh.modelComm.allReduce(Tensor(storage: pack.storage, offset: pack.offset, shape: [n * d + d * q2]))
    for r in 0..<d {
      let g = gw + r * cin + kvc, s = kv + r * q2, e = earlier + r * q2
      for c in 0..<q2 { g[c] = e[c] + s[c] }
    }
    try layerNormBackward(L, W, G, dh: dh)
  }

  /// dx += LN_bwd(dh) (dx already holds the residual path's gradient); d ln.scale += ...
  private func layerNormBackward(_ L: LayerBuffers, _ W: LayerParameters, _ G: LayerParameters,
                                 dh: UnsafePointer<Float>) throws {
    try KernelError.check(
      pk_layernorm_backward(dx.pointer, Int64(d), G.lnScale.pointer, dh, Int64(d), L.x.pointer,
                            Int64(d), L.mean.pointer, L.rstd.pointer, W.lnScale.pointer, Int64(n),
                            Int64(d)), "layernorm_backward")
  }
}
