/* pk_dropout.h: inverted dropout with a counter-based mask (no mask memory), forward and backward.
 *
 *   y = x ⊙ m / (1 − p),   m_c ∈ {0, 1},  P(m_c = 1) = 1 − p  (to within 2^−33)
 *
 * The mask is a pure function of (seed, stream, c), where c = offset + i is the element's COUNTER
 * (i its index in the call). Nothing is stored: the backward (and any rematerialized forward)
 * regenerates the same mask from the same (seed, stream, offset), and the result is bit-identical for
 * every thread count and ISA (integer hashing, then one float multiply per element).
 *
 * The mask (splitmix64, Steele et al. 2014, used as a counter-based generator like Philox):
 *   mix(z)     = z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^ (z >> 31)
 *   key        = pk_dropout_key(seed, stream) = mix(seed ^ mix(stream + 0x9e3779b97f4a7c15))
 *   h          = mix(key + (⌊c / 2⌋ + 1) · 0x9e3779b97f4a7c15)     (one 64-bit hash: two draws)
 *   u_c        = c even: the low 32 bits of h;  c odd: the high 32 bits
 *   m_c        = 1 iff u_c >= round(p · 2^32)
 *   y_c        = x_c · s with s = (float)(1 / (1 − p)) when m_c = 1, else x_c · 0 (so a NaN/Inf input
 *                stays NaN, as x · mask · scale in PyTorch)
 * Counters of one (seed, stream) never repeat across calls that use disjoint [offset, offset + n)
 * ranges: the model gives micro-batch j of an update the range starting at j · b · T · d, so k
 * micro-batches of b rows draw exactly the masks of one batch of k · b rows.
 *
 * p = 0 is a no-op (a copy when out of place; no hashing). 0 <= p < 1 (NaN, negative or >= 1:
 * PK_STATUS_BAD_ARGUMENT). Threads: OpenMP, static schedule over fixed 4096-element blocks. No
 * FLOPs are added to the FLOP counter (element-wise work). */
#ifndef PK_DROPOUT_H
#define PK_DROPOUT_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The per-(seed, stream) key of the mask hash (see above); exposed so that callers can derive
 * further seeds (e.g. one per training update) with the same mixing function. */
uint64_t pk_dropout_key(uint64_t seed, uint64_t stream);

/* y (n) = x (n) ⊙ m / (1 − p) for counters offset .. offset + n − 1. y == x (in place) is allowed;
 * otherwise they must not overlap. Errors: BAD_SIZE (n < 0, offset < 0 or offset + n overflows),
 * BAD_ARGUMENT (p not in [0, 1)), NULL_POINTER (n > 0 and a NULL buffer). */
pk_status pk_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t stream, int64_t offset);

/* dx (n) = dy (n) ⊙ m / (1 − p): the same mask and scale as the forward with the same arguments
 * (dropout is linear, so its backward is itself). dx == dy is allowed. */
pk_status pk_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                              uint64_t stream, int64_t offset);

/* The residual add of a dropped-out branch: y (n) = residual (n) + branch (n) ⊙ m / (1 − p).
 * y may be residual or branch (in place); otherwise no overlaps. p = 0: y = residual + branch. */
pk_status pk_dropout_add(float *y, const float *residual, const float *branch, int64_t n, float p,
                         uint64_t seed, uint64_t stream, int64_t offset);

/* keep (n) = m (1 = kept, 0 = dropped): the mask itself, for tests and inspection. */
pk_status pk_dropout_mask(uint8_t *keep, int64_t n, float p, uint64_t seed, uint64_t stream,
                          int64_t offset);

#ifdef __cplusplus
}
#endif
#endif
