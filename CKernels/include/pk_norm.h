/* pk_norm.h: PaLM's LayerNorm without bias (PaLM §2 "No biases"), forward and backward.
 *
 *   mean = Σ_j x[j] / D,  var = Σ_j (x[j] − mean)² / D  (biased),  rstd = 1 / sqrt(var + eps)
 *   y[j] = (x[j] − mean) · rstd · scale[j]                eps = PK_LAYERNORM_EPS = 1e-5
 * One normalization per row of x (N, D). ISA paths: AVX-512 and portable scalar (AVX2 -> scalar). It is not RMSNorm (the mean is subtracted). Element-wise:
 * no FLOPs are added to the FLOP counter. Threads: OpenMP over rows (static). The forward and dx do
 * not depend on the thread count; dscale is reduced from per-thread partial sums in thread order,
 * so it is bit-identical run to run at a fixed thread count. */
#ifndef PK_NORM_H
#define PK_NORM_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Epsilon added to the variance. */
#define PK_LAYERNORM_EPS 1e-5f

/* y (N, D) row stride ldy >= D: OVERWRITTEN. mean (N), rstd (N): OVERWRITTEN, saved for backward.
 * x (N, D) row stride ldx >= D; scale (D).
 * N >= 0 (0: nothing to do); D >= 1 when N > 0 (the mean of an empty row is undefined: BAD_SIZE).
 * Errors: BAD_SIZE, BAD_STRIDE, NULL_POINTER. y may equal x
 * (same pointer and stride: in place); other overlaps are not allowed. */
pk_status pk_layernorm_forward(float *y, int64_t ldy, float *mean, float *rstd, const float *x,
                               int64_t ldx, const float *scale, int64_t N, int64_t D);

/* dx (N, D) row stride lddx >= D: ACCUMULATED (+=), because PaLM's parallel block adds the
 *   attention and MLP branch gradients and the residual into one dx; zero it first if needed.
 *   dx += rstd · (g − mean_j(g) − xhat · mean_j(g · xhat)),  g = dy ⊙ scale, xhat = (x − mean)·rstd
 * dscale (D): ACCUMULATED (+=): dscale[j] += Σ_rows dy[j] · xhat[j].
 * dy (N, D) row stride lddy >= D; x (N, D) row stride ldx (the forward's input); mean, rstd (N)
 * saved by the forward; scale (D).
 * Scratch: nthreads·D floats (pk_aligned_alloc; NO_MEMORY if it fails). dx must not overlap dy or x. */
pk_status pk_layernorm_backward(float *dx, int64_t lddx, float *dscale, const float *dy,
                                int64_t lddy, const float *x, int64_t ldx, const float *mean,
                                const float *rstd, const float *scale, int64_t N, int64_t D);

#ifdef __cplusplus
}
#endif
#endif
