/* embed.c: token embedding gather and scatter-add (pk_embed.h). The backward splits the D
 * columns among the OpenMP team in 16-float chunks and every thread walks all tokens in order,
 * so no two threads touch the same element and the sum order is that of a serial loop: the
 * result is bit-identical for any thread count. Reference: torch.nn.Embedding (sparse=False). */
#include "pk_embed.h"
#include "pk_kernel.h"
#include "pk_omp.h"
#include <string.h>

pk_status pk_embedding_forward(float *out, int64_t ldo, const int32_t *tokens, const float *table,
                               float scale, int64_t N, int64_t V, int64_t D) {
  if (N < 0 || V < 0 || D < 0) return PK_STATUS_BAD_SIZE;
  PK_TRY(pk_check_matrix(out, N, D, ldo));
  PK_TRY(pk_check_matrix(table, V, D, D));
  PK_TRY(pk_check_ids(tokens, N, V));
  if (N == 0 || D == 0) return PK_STATUS_OK;
#pragma omp parallel for schedule(static) if (N * D > 16384)
  for (int64_t i = 0; i < N; i++) {
    const float *src = table + (int64_t)tokens[i] * D;
    float *dst = out + i * ldo;
    if (scale == 1.0f) memcpy(dst, src, (size_t)D * sizeof(float));
    else for (int64_t j = 0; j < D; j++) dst[j] = src[j] * scale;
  }
  return PK_STATUS_OK;
}

pk_status pk_embedding_backward(float *dtable, const float *dout, int64_t lddout,
                                const int32_t *tokens, float scale, int64_t N, int64_t V,
                                int64_t D) {
  if (N < 0 || V < 0 || D < 0) return PK_STATUS_BAD_SIZE;
  PK_TRY(pk_check_matrix(dout, N, D, lddout));
  PK_TRY(pk_check_matrix(dtable, V, D, D));
  PK_TRY(pk_check_ids(tokens, N, V));
  if (N == 0 || D == 0) return PK_STATUS_OK;
  int64_t chunks = (D + 15) / 16;
  int nth = N * D > 16384 ? pk_threads_get() : 1;
#pragma omp parallel num_threads(nth)
  {
    int64_t lo, hi;
    pk_range(chunks, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    int64_t j0 = lo * 16, j1 = hi * 16 < D ? hi * 16 : D;
    for (int64_t i = 0; i < N; i++) {
      float *dst = dtable + (int64_t)tokens[i] * D;
      const float *src = dout + i * lddout;
      for (int64_t j = j0; j < j1; j++) dst[j] += src[j] * scale;
    }
  }
  return PK_STATUS_OK;
}
