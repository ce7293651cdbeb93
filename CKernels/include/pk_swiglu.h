/* pk_swiglu.h: the SwiGLU activation of PaLM's MLP (Shazeer 2020, "GLU Variants"), forward/backward.
 *
 *   h = [gate | up]  (N, 2·F), the fused input projection x·[W_gate | W_up] (gate = columns [0, F),
 *                     up = columns [F, 2·F) of each row)
 *   out = swish(gate) ⊙ up,   swish(g) = g · sigmoid(g) = g / (1 + exp(−g))     (N, F)
 * The backward keeps nothing but h and recomputes sigmoid. ISA paths: AVX-512, AVX2+FMA and portable
 * scalar. Element-wise work: no FLOPs are added to
 * the FLOP counter. Threads: OpenMP over rows (static); results do not depend on the thread count
 * (no reductions). Every 2-D buffer has its own row stride so it can live inside a wider fused
 * buffer (e.g. h inside the (N, H·Q + 2·Q + 2·F) output of PaLM's fused parallel-block projection). */
#ifndef PK_SWIGLU_H
#define PK_SWIGLU_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out (N, F) row stride ldo >= F: OVERWRITTEN with swish(h[:, 0:F]) ⊙ h[:, F:2F].
 * h (N, 2·F) row stride ldh >= 2·F.
 * N, F >= 0 (0: nothing to do). Errors: BAD_SIZE (negative/overflow), BAD_STRIDE, NULL_POINTER.
 * out must not overlap h. */
pk_status pk_swiglu_forward(float *out, int64_t ldo, const float *h, int64_t ldh, int64_t N,
                            int64_t F);

/* dh (N, 2·F) row stride lddh >= 2·F: OVERWRITTEN (not accumulated):
 *   dh[:, 0:F]  = dout ⊙ up ⊙ sigmoid(gate) · (1 + gate · (1 − sigmoid(gate)))
 *   dh[:, F:2F] = dout ⊙ swish(gate)
 * dout (N, F) row stride lddout >= F; h (N, 2·F) row stride ldh >= 2·F (the forward's input).
 * dh must not overlap dout; it may be h itself (dh == h, lddh == ldh: in place, how the model
 * runs it, turning its saved pre-activations into their gradient), but not partly overlap h. */
pk_status pk_swiglu_backward(float *dh, int64_t lddh, const float *dout, int64_t lddout,
                             const float *h, int64_t ldh, int64_t N, int64_t F);

#ifdef __cplusplus
}
#endif
#endif
