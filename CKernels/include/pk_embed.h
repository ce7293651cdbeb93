/* pk_embed.h: token embedding lookup (gather) and its gradient (scatter-add), PaLM's shared input
 * embedding (the same table (V, D) is the output projection, handled by pk_sgemm elsewhere).
 *
 *   out[i, :] = scale · table[tokens[i], :]                 (PaLM: no scaling of the input, scale = 1)
 *   dtable[v, :] += scale · Σ_{i: tokens[i] == v} dout[i, :]
 * The backward is deterministic without atomics: threads split the D columns (in 16-float chunks)
 * and each walks all N tokens in order, so the result does not even depend on the thread count.
 * Token ids are int32; any id outside [0, V) returns PK_STATUS_BAD_ARGUMENT before any output is
 * written. No FLOPs are added to the FLOP counter. */
#ifndef PK_EMBED_H
#define PK_EMBED_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out (N, D) row stride ldo >= D: OVERWRITTEN. tokens (N) in [0, V). table (V, D) contiguous.
 * N, V, D >= 0. Errors: BAD_SIZE, BAD_STRIDE, NULL_POINTER, BAD_ARGUMENT (token out of range). */
pk_status pk_embedding_forward(float *out, int64_t ldo, const int32_t *tokens, const float *table,
                               float scale, int64_t N, int64_t V, int64_t D);

/* dtable (V, D) contiguous: ACCUMULATED (+=) (a tied embedding also gets the output-projection
 * gradient from pk_sgemm into the same buffer). dout (N, D) row stride lddout >= D; tokens (N). */
pk_status pk_embedding_backward(float *dtable, const float *dout, int64_t lddout,
                                const int32_t *tokens, float scale, int64_t N, int64_t V,
                                int64_t D);

#ifdef __cplusplus
}
#endif
#endif
