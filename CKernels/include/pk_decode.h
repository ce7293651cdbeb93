/* pk_decode.h: one-token attention over a KV cache for incremental decoding (palm sample).
 *
 * Multi-query (Shazeer 2019): H query heads share ONE K head and ONE V head per layer, so the cache
 * of a layer is two (S_max, Q) arrays. Rotary embedding exactly as pk_attention.h (GPT-NeoX
 * rotate-half over the full head dim, base PK_ROPE_BASE, theta_i = pos · base^(-2i/Q) computed in
 * double and rounded to float; queries scaled by 1/sqrt(Q) while rotated; V not rotated). The cache
 * holds K already rotated at its own position, so a step only rotates the new token.
 * Reference: the decode loop of llama2.c (run.c, forward()) and pk_attention_forward. */
#ifndef PK_DECODE_H
#define PK_DECODE_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Appends the new token's K (rotated at `pos`) and V to row `pos` of the caches, then writes the
 * causal attention of its H query heads over cache rows [0, pos].
 *   out     (H·Q): OVERWRITTEN, head h at [h·Q, (h+1)·Q) (ready for the output projection).
 *   kcache  (S_max, Q): row pos OVERWRITTEN with the rotated K; rows [0, pos) read.
 *   vcache  (S_max, Q): row pos OVERWRITTEN with V; rows [0, pos) read.
 *   qkv     (H·Q + 2·Q): the new token's UNROTATED projection output [q heads | k | v].
 * Sizes: 0 <= pos < smax, H >= 1, Q >= 2 and even. Errors: BAD_SIZE, BAD_ARGUMENT (odd Q),
 * NULL_POINTER. Scratch: pos + 1 + Q floats (pk_aligned_alloc;
 * NO_MEMORY if it fails). Single-threaded (one token: a few thousand multiply-adds per head). */
pk_status pk_decode_attention(float *out, float *kcache, float *vcache, const float *qkv,
                              int64_t pos, int64_t smax, int64_t H, int64_t Q);

#ifdef __cplusplus
}
#endif
#endif
