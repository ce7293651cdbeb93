/* gemm_ukernel_scalar.c: the portable 4x8 SGEMM micro-kernel (any CPU; the compiler may use SSE2).
 * C(4, 8) tile = alpha * A(4, k) packed · B(k, 8) packed + beta * C; see gemm_internal.h. */
#include "gemm_internal.h"

enum { MR = 4, NR = 8 };

void pk_gemm_ukernel_scalar_4x8(int64_t k, const void *pa, const void *pb, float *c, int64_t ldc,
                                float alpha, float beta, int m, int n) {
  const float *a = pa, *b = pb;
  float acc[MR][NR] = {{0}};
  for (int64_t p = 0; p < k; p++) {
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] += a[p * MR + i] * b[p * NR + j];
  }
  for (int i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    for (int j = 0; j < n; j++)
      ci[j] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * ci[j];
  }
}
