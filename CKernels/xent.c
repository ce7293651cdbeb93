/* xent.c: softmax cross-entropy with PaLM's z-loss (pk_xent.h; PaLM §5: loss + 1e-4·log²Z), per
 * row, forward, backward and a fused forward+backward (one exp per logit) that may overwrite the
 * logits with their gradient. Rows are split statically among the OpenMP team; no cross-row
 * reductions.
 * The reference is torch.nn.functional.cross_entropy(reduction='none') + zcoef·logsumexp². */
#include "pk_xent.h"
#include "pk_kernel.h"
#include <math.h>

/* ---- log-sum-exp of one row ----
 * row_lse(x, V, e, sum) returns lse = max + log Σ_j exp(x[j] − max). With e != NULL it also stores
 * e[j] = exp(x[j] − max) (e == x allowed) and sets *sum = Σ_j e[j], so the fused call gets the
 * softmax as e[j] / sum without a second exp per logit; the forward passes NULL. Both calls do the
 * same arithmetic, so the fused lse is bit-identical to the forward's. */

static float row_lse_scalar(const float *x, int64_t V, float *e, float *sum) {
  float mx = x[0];
  for (int64_t j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
  double s = 0.0;
  for (int64_t j = 0; j < V; j++) {
    float p = expf(x[j] - mx);
    if (e) e[j] = p;
    s += (double)p;
  }
  if (e) *sum = (float)s;
  return mx + (float)log(s);
}

/* d[j] = exp(x[j] − lse) · c, in place allowed. */
static void row_grad_scalar(float *d, const float *x, int64_t V, float lse, float c) {
  for (int64_t j = 0; j < V; j++) d[j] = expf(x[j] - lse) * c;
}

/* d[j] *= f. */
static void row_scale_scalar(float *d, int64_t V, float f) {
  for (int64_t j = 0; j < V; j++) d[j] *= f;
}

#if defined(__x86_64__)
static PK_TARGET_AVX512 float row_lse_avx512(const float *x, int64_t V, float *e, float *sum) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < V; j += 16)
    m = _mm512_max_ps(m, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), pk_mask16(V - j), x + j));
  float mx = _mm512_reduce_max_ps(m);
  __m512 vm = _mm512_set1_ps(mx);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t j = 0;
  for (; j + 64 <= V; j += 64) {
    __m512 p0 = pk_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm));
    __m512 p1 = pk_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), vm));
    __m512 p2 = pk_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 32), vm));
    __m512 p3 = pk_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 48), vm));
    if (e) {
      _mm512_storeu_ps(e + j, p0);
      _mm512_storeu_ps(e + j + 16, p1);
      _mm512_storeu_ps(e + j + 32, p2);
      _mm512_storeu_ps(e + j + 48, p3);
    }
    s0 = _mm512_add_ps(s0, p0);
    s1 = _mm512_add_ps(s1, p1);
    s2 = _mm512_add_ps(s2, p2);
    s3 = _mm512_add_ps(s3, p3);
  }
  for (; j < V; j += 16) {
    __mmask16 k = pk_mask16(V - j);
    __m512 p = pk_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vm));
    p = _mm512_maskz_mov_ps(k, p);
    if (e) _mm512_mask_storeu_ps(e + j, k, p);
    s0 = _mm512_add_ps(s0, p);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  if (e) *sum = s;
  return mx + logf(s);
}

static PK_TARGET_AVX512 void row_grad_avx512(float *d, const float *x, int64_t V, float lse,
                                             float c) {
  __m512 vl = _mm512_set1_ps(lse), vc = _mm512_set1_ps(c);
  for (int64_t j = 0; j < V; j += 16) {
    __mmask16 k = pk_mask16(V - j);
    __m512 p = pk_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vl));
    _mm512_mask_storeu_ps(d + j, k, _mm512_mul_ps(p, vc));
  }
}

#endif

#if defined(__x86_64__)
/* AVX2: 8-lane chunks (two accumulators), libm expf on the tail. */
static inline __attribute__((always_inline)) PK_TARGET_AVX2 float
row_lse_avx2_body(const float *x, int64_t V, float *e, float *sum) {
  int64_t v8 = V & ~(int64_t)7, j;
  float mx = x[0];
  if (v8 > 0) {
    __m256 m = _mm256_loadu_ps(x);
    for (j = 8; j < v8; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
    mx = pk_hmax256(m);
  }
  for (j = v8; j < V; j++) mx = x[j] > mx ? x[j] : mx;
  __m256 vm = _mm256_set1_ps(mx), s0 = _mm256_setzero_ps(), s1 = s0;
  for (j = 0; j + 16 <= v8; j += 16) {
    __m256 p0 = pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    __m256 p1 = pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vm));
    if (e) {
      _mm256_storeu_ps(e + j, p0);
      _mm256_storeu_ps(e + j + 8, p1);
    }
    s0 = _mm256_add_ps(s0, p0);
    s1 = _mm256_add_ps(s1, p1);
  }
  for (; j < v8; j += 8) {
    __m256 p = pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    if (e) _mm256_storeu_ps(e + j, p);
    s0 = _mm256_add_ps(s0, p);
  }
  float s = pk_hsum256(_mm256_add_ps(s0, s1));
  for (j = v8; j < V; j++) {
    float p = expf(x[j] - mx);
    if (e) e[j] = p;
    s += p;
  }
  if (e) *sum = s;
  return mx + logf(s);
}

/* Two copies of the body: with 16 ymm registers, the `if (e)` left in the loop costs the forward
 * about 10% (spills); the copy for e == NULL is the store-free loop. */
static PK_TARGET_AVX2 float row_lse_avx2(const float *x, int64_t V, float *e, float *sum) {
  return e ? row_lse_avx2_body(x, V, e, sum) : row_lse_avx2_body(x, V, NULL, NULL);
}

static PK_TARGET_AVX2 void row_grad_avx2(float *d, const float *x, int64_t V, float lse, float c) {
  __m256 vl = _mm256_set1_ps(lse), vc = _mm256_set1_ps(c);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8)
    _mm256_storeu_ps(d + j, _mm256_mul_ps(pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)), vc));
  row_grad_scalar(d + j, x + j, V - j, lse, c);
}

static PK_TARGET_AVX2 void row_scale_avx2(float *d, int64_t V, float f) {
  __m256 vf = _mm256_set1_ps(f);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_loadu_ps(d + j), vf));
  row_scale_scalar(d + j, V - j, f);
}
#endif

/* simd: the pk_isa value. e, sum: as in row_lse_* above (NULL, NULL for the forward). */
static float row_lse(int simd, const float *x, int64_t V, float *e, float *sum) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) return row_lse_avx512(x, V, e, sum);
  if (simd == PK_ISA_AVX2) return row_lse_avx2(x, V, e, sum);
#endif
  return row_lse_scalar(x, V, e, sum);
}

static void row_grad(int simd, float *d, const float *x, int64_t V, float lse, float c) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) { row_grad_avx512(d, x, V, lse, c); return; }
  if (simd == PK_ISA_AVX2) { row_grad_avx2(d, x, V, lse, c); return; }
#endif
  row_grad_scalar(d, x, V, lse, c);
}

static void row_scale(int simd, float *d, int64_t V, float f) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) { pk_scale_avx512(d, V, f); return; }
  if (simd == PK_ISA_AVX2) { row_scale_avx2(d, V, f); return; }
#endif
  row_scale_scalar(d, V, f);
}

static pk_status check_logits(const float *logits, int64_t ldl, int64_t N, int64_t V) {
  PK_TRY(pk_check_matrix(logits, N, V, ldl));
  if (N > 0 && V == 0) return PK_STATUS_BAD_SIZE;
  return PK_STATUS_OK;
}

pk_status pk_xent_forward(float *loss, float *lse, const float *logits, int64_t ldl,
                          const int32_t *targets, int64_t N, int64_t V, float zcoef) {
  PK_TRY(check_logits(logits, ldl, N, V));
  PK_TRY(pk_check_vector(loss, N, sizeof(float)));
  PK_TRY(pk_check_vector(lse, N, sizeof(float)));
  PK_TRY(pk_check_ids(targets, N, V));
  int simd = (int)pk_isa_active();
#pragma omp parallel for schedule(static) if (N * V > 4096)
  for (int64_t i = 0; i < N; i++) {
    const float *x = logits + i * ldl;
    float l = row_lse(simd, x, V, NULL, NULL);
    lse[i] = l;
    loss[i] = l - x[targets[i]] + zcoef * l * l;
  }
  return PK_STATUS_OK;
}

pk_status pk_xent_backward(float *dlogits, int64_t lddl, const float *logits, int64_t ldl,
                           const float *lse, const int32_t *targets, const float *dloss,
                           float dloss_scale, int64_t N, int64_t V, float zcoef) {
  PK_TRY(check_logits(logits, ldl, N, V));
  PK_TRY(pk_check_matrix(dlogits, N, V, lddl));
  PK_TRY(pk_check_vector(lse, N, sizeof(float)));
  PK_TRY(pk_check_ids(targets, N, V));
  if ((void *)dlogits == (const void *)logits && lddl != ldl) return PK_STATUS_BAD_STRIDE;
  int simd = (int)pk_isa_active();
#pragma omp parallel for schedule(static) if (N * V > 4096)
  for (int64_t i = 0; i < N; i++) {
    float w = dloss_scale * (dloss ? dloss[i] : 1.0f);
    row_grad(simd, dlogits + i * lddl, logits + i * ldl, V, lse[i],
             (1.0f + 2.0f * zcoef * lse[i]) * w);
    dlogits[i * lddl + targets[i]] -= w;
  }
  return PK_STATUS_OK;
}

pk_status pk_xent_forward_backward(float *loss, float *lse, float *dlogits, int64_t lddl,
                                   const float *logits, int64_t ldl, const int32_t *targets,
                                   float dloss_scale, int64_t N, int64_t V, float zcoef) {
  PK_TRY(check_logits(logits, ldl, N, V));
  PK_TRY(pk_check_matrix(dlogits, N, V, lddl));
  PK_TRY(pk_check_vector(loss, N, sizeof(float)));
  PK_TRY(pk_check_vector(lse, N, sizeof(float)));
  PK_TRY(pk_check_ids(targets, N, V));
  if ((void *)dlogits == (const void *)logits && lddl != ldl) return PK_STATUS_BAD_STRIDE;
  int simd = (int)pk_isa_active();
#pragma omp parallel for schedule(static) if (N * V > 4096)
  for (int64_t i = 0; i < N; i++) {
    const float *x = logits + i * ldl;
    float *d = dlogits + i * lddl;
    float xt = x[targets[i]];  /* before d (possibly x) is overwritten */
    /* One exp per logit: d = exp(x − max), then softmax · c = d · c / Σ. */
    float sum, l = row_lse(simd, x, V, d, &sum);
    lse[i] = l;
    loss[i] = l - xt + zcoef * l * l;
    row_scale(simd, d, V, (1.0f + 2.0f * zcoef * l) * dloss_scale / sum);
    d[targets[i]] -= dloss_scale;
  }
  return PK_STATUS_OK;
}
