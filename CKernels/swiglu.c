/* swiglu.c: SwiGLU activation, forward and backward (pk_swiglu.h; Shazeer 2020, eq. 6 with
 * Swish_1 = SiLU). Element-wise over rows split statically among the OpenMP team; AVX-512 and
 * AVX2 paths (vectorized exp) and a portable scalar path (libm expf) agree to a few ulp. */
#include "pk_swiglu.h"
#include "pk_kernel.h"
#include <math.h>

static void fwd_row_scalar(float *o, const float *g, const float *u, int64_t F) {
  for (int64_t j = 0; j < F; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

static void bwd_row_scalar(float *dg, float *du, const float *dy, const float *g, const float *u,
                           int64_t F) {
  for (int64_t j = 0; j < F; j++) {
    /* Read g and u before writing: the backward may run in place (dg == g, du == u). */
    float gj = g[j], uj = u[j];
    float sig = 1.0f / (1.0f + expf(-gj));
    float sw = gj * sig;
    du[j] = dy[j] * sw;
    dg[j] = dy[j] * uj * sig * (1.0f + gj * (1.0f - sig));
  }
}

#if defined(__x86_64__)
static PK_TARGET_AVX512 void fwd_row_avx512(float *o, const float *g, const float *u, int64_t F) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t j = 0; j < F; j += 16) {
    __mmask16 k = pk_mask16(F - j);
    __m512 gv = _mm512_maskz_loadu_ps(k, g + j), uv = _mm512_maskz_loadu_ps(k, u + j);
    __m512 den = _mm512_add_ps(one, pk_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
    _mm512_mask_storeu_ps(o + j, k, _mm512_mul_ps(_mm512_div_ps(gv, den), uv));
  }
}

static PK_TARGET_AVX512 void bwd_row_avx512(float *dg, float *du, const float *dy, const float *g,
                                            const float *u, int64_t F) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t j = 0; j < F; j += 16) {
    __mmask16 k = pk_mask16(F - j);
    __m512 gv = _mm512_maskz_loadu_ps(k, g + j), uv = _mm512_maskz_loadu_ps(k, u + j);
    __m512 dyv = _mm512_maskz_loadu_ps(k, dy + j);
    __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, pk_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
    __m512 sw = _mm512_mul_ps(gv, sig);
    _mm512_mask_storeu_ps(du + j, k, _mm512_mul_ps(dyv, sw));
    __m512 t = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, sig), one);
    _mm512_mask_storeu_ps(dg + j, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dyv, uv), sig), t));
  }
}

/* AVX2: 8-lane chunks, the scalar row function on the tail. */
static PK_TARGET_AVX2 void fwd_row_avx2(float *o, const float *g, const float *u, int64_t F) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= F; j += 8) {
    __m256 gv = _mm256_loadu_ps(g + j), uv = _mm256_loadu_ps(u + j);
    __m256 den = _mm256_add_ps(one, pk_exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
    _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_div_ps(gv, den), uv));
  }
  fwd_row_scalar(o + j, g + j, u + j, F - j);
}

static PK_TARGET_AVX2 void bwd_row_avx2(float *dg, float *du, const float *dy, const float *g,
                                        const float *u, int64_t F) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= F; j += 8) {
    __m256 gv = _mm256_loadu_ps(g + j), uv = _mm256_loadu_ps(u + j), dyv = _mm256_loadu_ps(dy + j);
    __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, pk_exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
    _mm256_storeu_ps(du + j, _mm256_mul_ps(dyv, _mm256_mul_ps(gv, sig)));
    __m256 t = _mm256_fmadd_ps(gv, _mm256_sub_ps(one, sig), one);
    _mm256_storeu_ps(dg + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dyv, uv), sig), t));
  }
  bwd_row_scalar(dg + j, du + j, dy + j, g + j, u + j, F - j);
}
#endif

void pk_swiglu_row(float *out, const float *gate, const float *up, int64_t n) {
#if defined(__x86_64__)
  switch (pk_isa_active()) {
  case PK_ISA_AVX512: fwd_row_avx512(out, gate, up, n); return;
  case PK_ISA_AVX2: fwd_row_avx2(out, gate, up, n); return;
  default: break;
  }
#endif
  fwd_row_scalar(out, gate, up, n);
}

pk_status pk_swiglu_forward(float *out, int64_t ldo, const float *h, int64_t ldh, int64_t N,
                            int64_t F) {
  if (N < 0 || F < 0 || F > INT64_MAX / 2) return PK_STATUS_BAD_SIZE;
  PK_TRY(pk_check_matrix(h, N, 2 * F, ldh));
  PK_TRY(pk_check_matrix(out, N, F, ldo));
  if (N == 0 || F == 0) return PK_STATUS_OK;
#pragma omp parallel for schedule(static) if (N * F > 4096)
  for (int64_t i = 0; i < N; i++) pk_swiglu_row(out + i * ldo, h + i * ldh, h + i * ldh + F, F);
  return PK_STATUS_OK;
}

pk_status pk_swiglu_backward(float *dh, int64_t lddh, const float *dout, int64_t lddout,
                             const float *h, int64_t ldh, int64_t N, int64_t F) {
  if (N < 0 || F < 0 || F > INT64_MAX / 2) return PK_STATUS_BAD_SIZE;
  PK_TRY(pk_check_matrix(dh, N, 2 * F, lddh));
  PK_TRY(pk_check_matrix(dout, N, F, lddout));
  PK_TRY(pk_check_matrix(h, N, 2 * F, ldh));
  if (N == 0 || F == 0) return PK_STATUS_OK;
  int simd = (int)pk_isa_active();
#pragma omp parallel for schedule(static) if (N * F > 4096)
  for (int64_t i = 0; i < N; i++) {
    const float *g = h + i * ldh;
    float *d = dh + i * lddh;
#if defined(__x86_64__)
    if (simd == PK_ISA_AVX512) { bwd_row_avx512(d, d + F, dout + i * lddout, g, g + F, F); continue; }
    if (simd == PK_ISA_AVX2) { bwd_row_avx2(d, d + F, dout + i * lddout, g, g + F, F); continue; }
#endif
    (void)simd;
    bwd_row_scalar(d, d + F, dout + i * lddout, g, g + F, F);
  }
  return PK_STATUS_OK;
}
