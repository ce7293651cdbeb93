/* pk_xent.h: fused softmax cross-entropy with PaLM's auxiliary z-loss (PaLM §5 "z_loss"), per row.
 *
 *   lse  = log Σ_j exp(logits[j])                       (natural log, max-subtracted, fp32)
 *   loss = lse − logits[target] + zcoef · lse²           (PaLM: zcoef = PK_XENT_ZLOSS = 1e-4)
 *   dloss/dlogits[j] = softmax[j] · (1 + 2·zcoef·lse) − [j == target]
 * The loss is per row (N); the caller averages. Targets are int32 token ids; a target outside
 * [0, V) makes the call return PK_STATUS_BAD_ARGUMENT before any output is written. ISA paths:
 * AVX-512, AVX2+FMA and portable scalar. Element-wise:
 * no FLOPs are added to the FLOP counter (the logits matmul is counted by pk_sgemm). Threads:
 * OpenMP over rows (static); no cross-row reductions, so results do not depend on the thread count. */
#ifndef PK_XENT_H
#define PK_XENT_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PaLM's z-loss coefficient. */
#define PK_XENT_ZLOSS 1e-4f

/* loss (N), lse (N): OVERWRITTEN. logits (N, V) row stride ldl >= V; targets (N) in [0, V).
 * N >= 0, V >= 1 when N > 0 (V == 0 with N > 0 -> BAD_SIZE). zcoef >= 0 (any finite value works).
 * Errors: BAD_SIZE, BAD_STRIDE, NULL_POINTER, BAD_ARGUMENT (target out of range). */
pk_status pk_xent_forward(float *loss, float *lse, const float *logits, int64_t ldl,
                          const int32_t *targets, int64_t N, int64_t V, float zcoef);

/* dlogits (N, V) row stride lddl >= V: OVERWRITTEN with
 *   dlogits[i, j] = (softmax[i, j] · (1 + 2·zcoef·lse[i]) − [j == targets[i]]) · w_i,
 *   w_i = dloss_scale · (dloss ? dloss[i] : 1).
 * logits (N, V) row stride ldl; lse (N) from pk_xent_forward; targets (N); dloss (N) or NULL.
 * IN PLACE allowed: dlogits == logits with lddl == ldl (the probabilities overwrite the logits, so
 * no second N×V buffer is needed; the same pointer with lddl != ldl is BAD_STRIDE); any other
 * overlap is not allowed. */
pk_status pk_xent_backward(float *dlogits, int64_t lddl, const float *logits, int64_t ldl,
                           const float *lse, const int32_t *targets, const float *dloss,
                           float dloss_scale, int64_t N, int64_t V, float zcoef);

/* Forward and backward in one call, one exp per logit (a row is read for its max, then its exps are
 * stored and summed, then rescaled): loss (N), lse (N) and dlogits (N, V) (all OVERWRITTEN) with
 * w_i = dloss_scale (e.g. 1/N for a mean loss). dlogits == logits (same stride)
 * is allowed and is the intended use: the logits are replaced by their gradient. */
pk_status pk_xent_forward_backward(float *loss, float *lse, float *dlogits, int64_t lddl,
                                   const float *logits, int64_t ldl, const int32_t *targets,
                                   float dloss_scale, int64_t N, int64_t V, float zcoef);

#ifdef __cplusplus
}
#endif
#endif
