/* gemm_ukernel_avx2_6x16.c: the AVX2+FMA 6x16 SGEMM micro-kernel (BLIS haswell sgemm tile).
 * 12 ymm accumulators (6 rows x 2 vectors), 2 ymm of B per k, A broadcast from the packed panel.
 * Edge tiles (m < 6, n < 16) are computed in full and stored through a masked path. */
#include "gemm_internal.h"
#include <immintrin.h>

enum { MR = 6, NR = 16 };

#define PK_AVX2 __attribute__((target("avx2,fma")))

PK_AVX2 static inline __m256 tail_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}

PK_AVX2 static inline void store8(float *c, __m256 acc, __m256 va, __m256 vb, float beta, int n) {
  if (n >= 8) {
    __m256 r = beta == 0.0f ? _mm256_mul_ps(va, acc) : _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), _mm256_mul_ps(va, acc));
    _mm256_storeu_ps(c, r);
  } else if (n > 0) {
    __m256i mk = _mm256_castps_si256(tail_mask(n));
    __m256 r = _mm256_mul_ps(va, acc);
    if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, mk), r);
    _mm256_maskstore_ps(c, mk, r);
  }
}

PK_AVX2 void pk_gemm_ukernel_avx2_6x16(int64_t k, const void *pa, const void *pb, float *c,
                                       int64_t ldc, float alpha, float beta, int m, int n) {
  const float *a = pa, *b = pb;
  __m256 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma clang loop unroll_count(4)
  for (int64_t p = 0; p < k; p++) {
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
      __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += MR;
    b += NR;
  }
  __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma clang loop unroll(full)
  for (int i = 0; i < MR; i++) {
    if (i >= m) continue;
    store8(c + i * ldc, acc[i][0], va, vb, beta, n);
    store8(c + i * ldc + 8, acc[i][1], va, vb, beta, n - 8);
  }
}
