// RematPolicy: which activations a training step keeps for the backward pass, and which it recomputes.
//
// Names follow JAX/MaxText (`checkpoint_dots`, saved names `qkv_proj`, `context`, `mlpwi`) and
// Megatron's selective recomputation (Korthikanti et al. 2022). MemoryPlan.swift turns a policy into
// bytes; Model+Backward.swift recomputes what a policy did not keep.

/// Activation rematerialization (recomputation) policy of a training step.
///
/// - `none`: every activation the backward pass reads is kept from the forward pass.
/// - `selective`: the matmul outputs (`qkv_proj`/`mlpwi` fused, and the attention `context`) are
///   kept, with the attention log-sum-exp (B·H·T floats); layer norms and SwiGLU are recomputed,
///   and the softmax probabilities are recomputed from the lse (as the flash-style attention
///   backward does under every policy).
/// - `full`: only each block's input is kept; the block's whole forward is recomputed in backward.
public enum RematPolicy: String, CaseIterable, Codable, Sendable {
  case none, selective, full
}
