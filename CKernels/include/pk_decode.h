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

/* One layer's weights for pk_decode_token (row-major, as Parameters lays them out). */
typedef struct {
  const float *ln_scale;  /* (d) */
  const float *w_in;      /* (d, H·Q + 2Q + 2F): [q | k | v | gate | up] */
  const float *w_out;     /* (H·Q + F, d): [attention ; down] */
} pk_decode_layer;

/* One decoded token through the whole model, the same arithmetic as KVCacheDecoder's kernel
 * sequence (x = embed[token]; per layer h = LN(x), proj = h·w_in, attention over the cache at
 * `pos`, SwiGLU, x += [ctx | g]·w_out; logits = LN_f(x)·embedᵀ/√d), in ONE OpenMP region:
 * the GEMVs split their output columns over the team, LayerNorm, attention and SwiGLU run on
 * thread 0, and the threads wait for each other on a spin barrier instead of sleeping, so a token
 * pays one team wake-up instead of one per kernel (gemv.c).
 *   logits (V), x (d), h (d), proj (H·Q+2Q+2F), cg (H·Q+F): scratch/outputs, OVERWRITTEN.
 *   kcache, vcache (L, capacity, Q): row pos of each layer OVERWRITTEN, rows [0, pos) read.
 *   embed (V, d): the shared embedding; ln_final (d).
 * Errors: NULL_POINTER, BAD_SIZE, BAD_ARGUMENT (pos outside [0, capacity), token outside [0, V),
 * odd Q), NO_MEMORY (the attention's scratch). */
pk_status pk_decode_token(float *logits, float *x, float *h, float *proj, float *cg, float *kcache,
                          float *vcache, int64_t capacity, int64_t pos, const pk_decode_layer *layers,
                          int64_t L, const float *ln_final, const float *embed, int64_t token, int64_t d,
                          int64_t H, int64_t Q, int64_t F, int64_t V);

#ifdef __cplusplus
}
#endif
#endif
