/* gemv.c: the few-row GEMM (m <= PK_GEMV_MAX_M) that decoding runs once per token, without packing.
 *
 * Decoding multiplies one row (or a handful at prefill) by every weight matrix: the time is the
 * weights' bytes over the memory bandwidth, and the packed GEMM would first copy B (read + write,
 * 3x the traffic). Here B is read once, in place, threads split the OUTPUT COLUMNS (each thread
 * streams its own part of B; no reduction between threads):
 *   NN (B is k x n):  c[i][j] += sum_p a'[i][p] * B[p][j]: rows of B streamed 4 at a time
 *                     (c[i][j0:j1] += a0 B0 + a1 B1 + a2 B2 + a3 B3), the column range in chunks
 *                     of GEMV_CHUNK floats so the c rows and 4 B row segments stay in L1;
 *   NT (B is n x k):  c[i][j] = dot(a'[i], B[j]): one contiguous row of B per output.
 * a' = alpha * a (alpha folded into A: the sums are rounded like the reference's up to order).
 * C is first scaled by beta (beta == 0 overwrites, NaN not propagated, as pk_sgemm).
 * Called by pk_sgemm for m <= PK_GEMV_MAX_M in NN and NT; TN falls through to the packed GEMM. */
#include "gemm_internal.h"
#include "pk_kernel.h"
#include "pk_omp.h"

enum { GEMV_CHUNK = 1024 };  /* columns per L1 block: 4 B rows x 4 KB + m c rows */

static void axpy4_scalar(float *c, const float *b0, const float *b1, const float *b2, const float *b3,
                         float a0, float a1, float a2, float a3, int64_t n) {
  for (int64_t j = 0; j < n; j++) c[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
}

static float dot_scalar(const float *a, const float *b, int64_t k) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    s0 += a[p] * b[p]; s1 += a[p + 1] * b[p + 1]; s2 += a[p + 2] * b[p + 2]; s3 += a[p + 3] * b[p + 3];
  }
  for (; p < k; p++) s0 += a[p] * b[p];
  return (s0 + s1) + (s2 + s3);
}

#if defined(__x86_64__)
static PK_TARGET_AVX2 void axpy4_avx2(float *c, const float *b0, const float *b1, const float *b2,
                                      const float *b3, float a0, float a1, float a2, float a3, int64_t n) {
  const __m256 v0 = _mm256_set1_ps(a0), v1 = _mm256_set1_ps(a1), v2 = _mm256_set1_ps(a2), v3 = _mm256_set1_ps(a3);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 s = _mm256_loadu_ps(c + j);
    s = _mm256_fmadd_ps(v0, _mm256_loadu_ps(b0 + j), s);
    s = _mm256_fmadd_ps(v1, _mm256_loadu_ps(b1 + j), s);
    s = _mm256_fmadd_ps(v2, _mm256_loadu_ps(b2 + j), s);
    s = _mm256_fmadd_ps(v3, _mm256_loadu_ps(b3 + j), s);
    _mm256_storeu_ps(c + j, s);
  }
  axpy4_scalar(c + j, b0 + j, b1 + j, b2 + j, b3 + j, a0, a1, a2, a3, n - j);
}

static PK_TARGET_AVX2 float dot_avx2(const float *a, const float *b, int64_t k) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + p), _mm256_loadu_ps(b + p), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + p + 8), _mm256_loadu_ps(b + p + 8), s1);
  }
  float s = pk_hsum256(_mm256_add_ps(s0, s1));
  return s + dot_scalar(a + p, b + p, k - p);
}

static PK_TARGET_AVX512 void axpy4_avx512(float *c, const float *b0, const float *b1, const float *b2,
                                          const float *b3, float a0, float a1, float a2, float a3, int64_t n) {
  const __m512 v0 = _mm512_set1_ps(a0), v1 = _mm512_set1_ps(a1), v2 = _mm512_set1_ps(a2), v3 = _mm512_set1_ps(a3);
  for (int64_t j = 0; j < n; j += 16) {
    __mmask16 m = pk_mask16(n - j);
    __m512 s = _mm512_maskz_loadu_ps(m, c + j);
    s = _mm512_fmadd_ps(v0, _mm512_maskz_loadu_ps(m, b0 + j), s);
    s = _mm512_fmadd_ps(v1, _mm512_maskz_loadu_ps(m, b1 + j), s);
    s = _mm512_fmadd_ps(v2, _mm512_maskz_loadu_ps(m, b2 + j), s);
    s = _mm512_fmadd_ps(v3, _mm512_maskz_loadu_ps(m, b3 + j), s);
    _mm512_mask_storeu_ps(c + j, m, s);
  }
}

static PK_TARGET_AVX512 float dot_avx512(const float *a, const float *b, int64_t k) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 32 <= k; p += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + p), _mm512_loadu_ps(b + p), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + p + 16), _mm512_loadu_ps(b + p + 16), s1);
  }
  for (; p < k; p += 16) {
    __mmask16 m = pk_mask16(k - p);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + p), _mm512_maskz_loadu_ps(m, b + p), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

typedef void (*axpy4_fn)(float *, const float *, const float *, const float *, const float *, float, float,
                         float, float, int64_t);
typedef float (*dot_fn)(const float *, const float *, int64_t);

pk_status pk_gemv_small_m(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m < 0 || m > PK_GEMV_MAX_M || layout == PK_LAYOUT_TN) return PK_STATUS_BAD_ARGUMENT;
  if (m == 0 || n == 0) return PK_STATUS_OK;
  axpy4_fn axpy4 = axpy4_scalar;
  dot_fn dot = dot_scalar;
#if defined(__x86_64__)
  switch (pk_isa_active()) {
  case PK_ISA_AVX512: axpy4 = axpy4_avx512; dot = dot_avx512; break;
  case PK_ISA_AVX2: axpy4 = axpy4_avx2; dot = dot_avx2; break;
  default: break;
  }
#endif
  if (k > 0 && alpha != 0.0f) pk_flops_add(2.0 * (double)m * (double)n * (double)k);
  /* alpha folded into A (at most PK_GEMV_MAX_M rows; a row of k floats each). */
  float *as = (float *)pk_aligned_alloc((size_t)(m * (k > 0 ? k : 1)) * sizeof(float));
  if (!as) return PK_STATUS_NO_MEMORY;
  for (int64_t i = 0; i < m; i++)
    for (int64_t p = 0; p < k; p++) as[i * k + p] = alpha * a[i * lda + p];
  const int skip = k == 0 || alpha == 0.0f;
  /* Waking a second thread (KMP_BLOCKTIME=0) costs about as much as streaming ~20 MB of B from
   * the caches on one core: measured m = 1 on Zen 3, 2 cores, 1 vs 2 threads: 2432x256 0.06 vs
   * 0.10 ms, 8192x512 (16 MB) 18.9 vs 16.7 GFLOP/s, 8192x2048 (64 MB) 8.6 vs 14.7 GFLOP/s. */
  int nth = (double)m * (double)n * (double)k < 6e6 ? 1 : pk_threads_get();
  /* Column blocks of 16 floats (one cache line) per thread, contiguous ranges. */
  const int64_t lines = (n + 15) / 16;
#pragma omp parallel num_threads(nth) if (nth > 1)
  {
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    int64_t j0 = lines * t / T * 16, j1 = lines * (t + 1) / T * 16;
    if (j1 > n) j1 = n;
    for (int64_t i = 0; i < m; i++) {
      float *ci = c + i * ldc;
      for (int64_t j = j0; j < j1; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
    }
    if (!skip && j0 < j1) {
      if (layout == PK_LAYOUT_NN) {
        for (int64_t c0 = j0; c0 < j1; c0 += GEMV_CHUNK) {
          int64_t len = j1 - c0 < GEMV_CHUNK ? j1 - c0 : GEMV_CHUNK;
          int64_t p = 0;
          for (; p + 4 <= k; p += 4) {
            const float *b0 = b + p * ldb + c0;
            for (int64_t i = 0; i < m; i++) {
              const float *ai = as + i * k + p;
              axpy4(c + i * ldc + c0, b0, b0 + ldb, b0 + 2 * ldb, b0 + 3 * ldb, ai[0], ai[1], ai[2], ai[3], len);
            }
          }
          for (; p < k; p++) {  /* the last k % 4 rows of B, one at a time (no zero-weighted terms: 0 * Inf) */
            const float *bp = b + p * ldb + c0;
            for (int64_t i = 0; i < m; i++) {
              float *ci = c + i * ldc + c0, ap = as[i * k + p];
              for (int64_t j = 0; j < len; j++) ci[j] += ap * bp[j];
            }
          }
        }
      } else {
        for (int64_t j = j0; j < j1; j++) {
          const float *bj = b + j * ldb;
          for (int64_t i = 0; i < m; i++) c[i * ldc + j] += dot(as + i * k, bj, k);
        }
      }
    }
  }
  pk_aligned_free(as);
  return PK_STATUS_OK;
}
