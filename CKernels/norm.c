/* norm.c: LayerNorm without bias (PaLM §2), forward and backward (pk_norm.h). Rows are split
 * statically among the OpenMP team; dscale is reduced from per-thread partials in thread order.
 * Mean and variance use two passes over the row in fp32 (AVX-512: 16 lane partial sums; scalar:
 * sequential sums); the reference is torch.nn.LayerNorm(D, eps=1e-5, bias=False). */
#include "pk_norm.h"
#include "pk_kernel.h"
#include "pk_omp.h"
#include <math.h>
#include <string.h>

/* ---- one row: mean, rstd, y ---- */

static void fwd_row_scalar(float *y, float *mean, float *rstd, const float *x, const float *w,
                           int64_t D) {
  float s = 0.0f;
  for (int64_t j = 0; j < D; j++) s += x[j];
  float mu = s / (float)D, v = 0.0f;
  for (int64_t j = 0; j < D; j++) { float c = x[j] - mu; v += c * c; }
  float rs = 1.0f / sqrtf(v / (float)D + PK_LAYERNORM_EPS);
  for (int64_t j = 0; j < D; j++) y[j] = (x[j] - mu) * rs * w[j];
  *mean = mu;
  *rstd = rs;
}

/* dx += rs·(g − mean(g) − xhat·mean(g·xhat)); part += dy·xhat. */
static void bwd_row_scalar(float *dx, float *part, const float *dy, const float *x, float mu,
                           float rs, const float *w, int64_t D) {
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t j = 0; j < D; j++) {
    float xh = (x[j] - mu) * rs, g = dy[j] * w[j];
    sg += g;
    sgx += g * xh;
    part[j] += dy[j] * xh;
  }
  float mg = sg / (float)D, mgx = sgx / (float)D;
  for (int64_t j = 0; j < D; j++) {
    float xh = (x[j] - mu) * rs;
    dx[j] += rs * (dy[j] * w[j] - mg - xh * mgx);
  }
}

#if defined(__x86_64__)
static PK_TARGET_AVX512 void fwd_row_avx512(float *y, float *mean, float *rstd, const float *x,
                                            const float *w, int64_t D) {
  __m512 s = _mm512_setzero_ps();
  for (int64_t j = 0; j < D; j += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(pk_mask16(D - j), x + j));
  float mu = _mm512_reduce_add_ps(s) / (float)D;
  __m512 vmu = _mm512_set1_ps(mu), v = _mm512_setzero_ps();
  for (int64_t j = 0; j < D; j += 16) {
    __mmask16 k = pk_mask16(D - j);
    __m512 c = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + j), vmu);
    v = _mm512_fmadd_ps(c, c, v);
  }
  float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(v) / (float)D + PK_LAYERNORM_EPS);
  __m512 vrs = _mm512_set1_ps(rs);
  for (int64_t j = 0; j < D; j += 16) {
    __mmask16 k = pk_mask16(D - j);
    __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vmu), vrs);
    _mm512_mask_storeu_ps(y + j, k, _mm512_mul_ps(c, _mm512_maskz_loadu_ps(k, w + j)));
  }
  *mean = mu;
  *rstd = rs;
}

static PK_TARGET_AVX512 void bwd_row_avx512(float *dx, float *part, const float *dy,
                                            const float *x, float mu, float rs, const float *w,
                                            int64_t D) {
  __m512 vmu = _mm512_set1_ps(mu), vrs = _mm512_set1_ps(rs);
  __m512 sg = _mm512_setzero_ps(), sgx = _mm512_setzero_ps();
  for (int64_t j = 0; j < D; j += 16) {
    __mmask16 k = pk_mask16(D - j);
    __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vmu), vrs);
    __m512 dyv = _mm512_maskz_loadu_ps(k, dy + j);
    __m512 g = _mm512_mul_ps(dyv, _mm512_maskz_loadu_ps(k, w + j));
    sg = _mm512_add_ps(sg, g);
    sgx = _mm512_fmadd_ps(g, xh, sgx);
    _mm512_mask_storeu_ps(part + j, k, _mm512_fmadd_ps(dyv, xh, _mm512_maskz_loadu_ps(k, part + j)));
  }
  __m512 mg = _mm512_set1_ps(_mm512_reduce_add_ps(sg) / (float)D);
  __m512 mgx = _mm512_set1_ps(_mm512_reduce_add_ps(sgx) / (float)D);
  for (int64_t j = 0; j < D; j += 16) {
    __mmask16 k = pk_mask16(D - j);
    __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vmu), vrs);
    __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + j), _mm512_maskz_loadu_ps(k, w + j));
    __m512 t = _mm512_sub_ps(_mm512_sub_ps(g, mg), _mm512_mul_ps(xh, mgx));
    _mm512_mask_storeu_ps(dx + j, k, _mm512_fmadd_ps(vrs, t, _mm512_maskz_loadu_ps(k, dx + j)));
  }
}
#endif

void pk_layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w, int64_t D) {
#if defined(__x86_64__)
  if (pk_isa_active() >= PK_ISA_AVX512) { fwd_row_avx512(y, mean, rstd, x, w, D); return; }
#endif
  fwd_row_scalar(y, mean, rstd, x, w, D);
}

pk_status pk_layernorm_forward(float *y, int64_t ldy, float *mean, float *rstd, const float *x,
                               int64_t ldx, const float *scale, int64_t N, int64_t D) {
  PK_TRY(pk_check_matrix(x, N, D, ldx));
  PK_TRY(pk_check_matrix(y, N, D, ldy));
  PK_TRY(pk_check_vector(mean, N, sizeof(float)));
  PK_TRY(pk_check_vector(rstd, N, sizeof(float)));
  PK_TRY(pk_check_vector(scale, D, sizeof(float)));
  if (N == 0) return PK_STATUS_OK;
  if (D == 0) return PK_STATUS_BAD_SIZE;  /* the mean of an empty row is undefined */
#pragma omp parallel for schedule(static) if (N * D > 4096)
  for (int64_t i = 0; i < N; i++) pk_layernorm_row(y + i * ldy, mean + i, rstd + i, x + i * ldx, scale, D);
  return PK_STATUS_OK;
}

pk_status pk_layernorm_backward(float *dx, int64_t lddx, float *dscale, const float *dy,
                                int64_t lddy, const float *x, int64_t ldx, const float *mean,
                                const float *rstd, const float *scale, int64_t N, int64_t D) {
  PK_TRY(pk_check_matrix(dx, N, D, lddx));
  PK_TRY(pk_check_matrix(dy, N, D, lddy));
  PK_TRY(pk_check_matrix(x, N, D, ldx));
  PK_TRY(pk_check_vector(dscale, D, sizeof(float)));
  PK_TRY(pk_check_vector(mean, N, sizeof(float)));
  PK_TRY(pk_check_vector(rstd, N, sizeof(float)));
  PK_TRY(pk_check_vector(scale, D, sizeof(float)));
  if (N == 0) return PK_STATUS_OK;
  if (D == 0) return PK_STATUS_BAD_SIZE;
  int simd = pk_isa_active() >= PK_ISA_AVX512;
  int nth = N * D > 4096 ? pk_threads_get() : 1;
  int64_t ldp = (D + 15) & ~(int64_t)15;
  static _Thread_local pk_scratch tl_parts;  /* grow-only, see pk_kernel.h */
  float *parts = pk_scratch_reserve(&tl_parts, (size_t)(nth * ldp));
  if (!parts) return PK_STATUS_NO_MEMORY;
  int team = 1;
#pragma omp parallel num_threads(nth)
  {
    int ith = omp_get_thread_num(), n = omp_get_num_threads();
    if (ith == 0) team = n;
    float *part = parts + ith * ldp;
    memset(part, 0, (size_t)ldp * sizeof(float));
    int64_t lo, hi;
    pk_range(N, ith, n, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
#if defined(__x86_64__)
      if (simd) { bwd_row_avx512(dx + i * lddx, part, dy + i * lddy, x + i * ldx, mean[i], rstd[i], scale, D); continue; }
#endif
      (void)simd;
      bwd_row_scalar(dx + i * lddx, part, dy + i * lddy, x + i * ldx, mean[i], rstd[i], scale, D);
    }
  }
  for (int64_t j = 0; j < D; j++) {
    float s = 0.0f;
    for (int th = 0; th < team; th++) s += parts[th * ldp + j];
    dscale[j] += s;
  }
  return PK_STATUS_OK;
}
