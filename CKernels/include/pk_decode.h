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

/* The K cache is stored in blocks of PK_DECODE_BLOCK positions, transposed: K of position s,
 * dimension i (0 <= i < Q) is element ((s / 16)·Q + i)·16 + s % 16, so one token's scores against
 * 16 cached positions are 16 vector lanes (decode.c). The V cache is row-major (S_max, Q). */
#define PK_DECODE_BLOCK 16

/* Floats of one layer's K cache for S_max positions: S_max rounded up to 16, times Q. */
int64_t pk_decode_kcache_floats(int64_t smax, int64_t Q);

/* Appends the new token's K (rotated at `pos`) and V to the caches, then writes the causal
 * attention of its H query heads over cache positions [0, pos].
 *   out     (H·Q): OVERWRITTEN, head h at [h·Q, (h+1)·Q) (ready for the output projection).
 *   kcache  (pk_decode_kcache_floats(smax, Q), the blocked layout above): position pos
 *           OVERWRITTEN with the rotated K; positions [0, pos) read.
 *   vcache  (S_max, Q): row pos OVERWRITTEN with V; rows [0, pos) read.
 *   qkv     (H·Q + 2·Q): the new token's UNROTATED projection output [q heads | k | v].
 * Sizes: 0 <= pos < smax, H >= 1, Q >= 2 and even. Errors: BAD_SIZE, BAD_ARGUMENT (odd Q),
 * NULL_POINTER. Scratch: about S_max + 18·Q floats (pk_aligned_alloc, once per thread;
 * NO_MEMORY if it fails). On the calling thread; pk_decode_token splits the heads over its team
 * with the same arithmetic (every score is a dot product in order, multiply and add rounded
 * apart), so the results are the same bits on every ISA and thread count (on x86-64, whose baseline has
 * no FMA for -ffp-contract=fast to fuse into; a port to a target with FMA in its baseline must keep
 * the portable path's products unfused the same way). */
pk_status pk_decode_attention(float *out, float *kcache, float *vcache, const float *qkv,
                              int64_t pos, int64_t smax, int64_t H, int64_t Q);

/* One layer's weights for pk_decode_token (row-major, as Parameters lays them out). */
typedef struct {
  const float *ln_scale;  /* (d) */
  const float *w_in;      /* (d, H·Q + 2Q + 2F): [q | k | v | gate | up] */
  const float *w_out;     /* (H·Q + F, d): [attention ; down] */
} pk_decode_layer;

/* One decoded token through the whole model (x = embed[token]; per layer h = LN(x), proj =
 * h·w_in, attention over the cache at `pos`, SwiGLU, x += [ctx | g]·w_out; logits =
 * LN_f(x)·embedᵀ/√d), in ONE OpenMP region, the whole team on every kernel: each thread
 * computes LayerNorm itself (the same bits on every thread, so no wait before the GEMV), the
 * GEMVs split their output columns, attention splits the query heads and SwiGLU its columns,
 * and the threads wait for each other on a spin barrier instead of sleeping (three waits a
 * layer), so a token pays one team wake-up instead of one per kernel (gemv.c). The results are
 * the same bits as pk_layernorm_forward, pk_sgemm's GEMV, pk_decode_attention and
 * pk_swiglu_forward run one after the other, on any thread count.
 *   logits (V), x (d), h (d), proj (H·Q+2Q+2F), cg (H·Q+F): scratch/outputs, OVERWRITTEN.
 *   kcache (L, pk_decode_kcache_floats(capacity, Q)), vcache (L, capacity, Q): each layer's cache
 *   as pk_decode_attention's; position pos of each layer OVERWRITTEN, [0, pos) read.
 *   embed (V, d): the shared embedding; ln_final (d).
 * Errors: NULL_POINTER, BAD_SIZE, BAD_ARGUMENT (pos outside [0, capacity), token outside [0, V),
 * odd Q), NO_MEMORY (a thread's scratch: d + S_max + 20·Q floats). */
pk_status pk_decode_token(float *logits, float *x, float *h, float *proj, float *cg, float *kcache,
                          float *vcache, int64_t capacity, int64_t pos, const pk_decode_layer *layers,
                          int64_t L, const float *ln_final, const float *embed, int64_t token, int64_t d,
                          int64_t H, int64_t Q, int64_t F, int64_t V);

#ifdef __cplusplus
}
#endif
#endif
