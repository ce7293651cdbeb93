/* optim.c: AdamW and unfactored-Adafactor updates, sums of squares (global gradient norm) and an
 * in-place scale. Formulas and their sources are in include/pk_optim.h.
 *
 * Each kernel splits [0, n) into fixed blocks whose size depends on n only (block_size) and runs
 * them with schedule(static); reductions keep one fp64 partial per block and add them in block
 * order (no atomics), so results are bit-identical for any thread count. Two code paths per kernel: portable scalar C (always
 * built) and AVX-512 (selected at run time). Both use correctly rounded sqrt and division, so they
 * agree to a few ulps (fused multiply-adds may round differently). */
#include "pk_optim.h"
#include "pk_kernel.h"
#include "pk_omp.h"
#include <math.h>

#if defined(__x86_64__)
#define PK_HAVE_X86 1
#endif

#define MAX_BLOCKS 1024

/* The ISA the kernels run at (pk_isa_active: detected, or forced by PALM_ISA / pk_isa_force). */
static int use_avx512(void) {
#if PK_HAVE_X86
  return pk_isa_active() >= PK_ISA_AVX512;
#else
  return 0;
#endif
}

/* Block size for n floats: at least PK_OPTIM_SERIAL_BELOW, a multiple of 16, at most MAX_BLOCKS
 * blocks. A function of n only, so the reduction order never depends on the thread count. */
static int64_t block_size(int64_t n) {
  int64_t b = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
  b = (b + 15) / 16 * 16;
  return b < PK_OPTIM_SERIAL_BELOW ? PK_OPTIM_SERIAL_BELOW : b;
}

static int64_t block_count(int64_t n) { int64_t bs = block_size(n); return (n + bs - 1) / bs; }

/* Threads to start for nb blocks: 1 for a single block (no parallel region). */
static int team_for(int64_t nb) {
  if (nb <= 1) return 1;
  int t = pk_threads_get();
  return t < 1 ? 1 : t;
}

/* ---- scalar paths ------------------------------------------------------------------------ */

static double ssq_scalar(const float *x, int64_t b, int64_t e) {
  double s = 0;
  for (int64_t i = b; i < e; i++) s += (double)x[i] * (double)x[i];
  return s;
}

typedef struct {
  float decay;      /* 1 - lr * weight_decay */
  float step_size;  /* lr / (1 - beta1^t) */
  float inv_sqrt_bc2; /* 1 / sqrt(1 - beta2^t) */
  float beta1, beta2, eps;
} adamw_k;

static void adamw_scalar(float *p, float *m, float *v, const float *g, int64_t b, int64_t e,
                         const adamw_k *k) {
  for (int64_t i = b; i < e; i++) {
    float gi = g[i];
    float mi = k->beta1 * m[i] + (1.0f - k->beta1) * gi;
    float vi = k->beta2 * v[i] + (1.0f - k->beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) * k->inv_sqrt_bc2 + k->eps;
    p[i] = p[i] * k->decay - k->step_size * (mi / denom);
  }
}

typedef struct {
  float beta2, eps1;           /* pass A */
  float inv_clip, scale;       /* pass B: y / clip, then * scale */
  float beta1, keep;           /* keep = 1 - weight_decay */
} adafactor_k;

/* Pass A: v update; returns sum of y^2 = (g / sqrt(v))^2. */
static double adafactor_a_scalar(float *v, const float *g, int64_t b, int64_t e, const adafactor_k *k) {
  double s = 0;
  for (int64_t i = b; i < e; i++) {
    float gi = g[i];
    float vi = k->beta2 * v[i] + (1.0f - k->beta2) * (gi * gi + k->eps1);
    v[i] = vi;
    float y = gi / sqrtf(vi);
    s += (double)y * (double)y;
  }
  return s;
}

/* Pass B: clipped, scaled update into momentum, then the parameter. */
static void adafactor_b_scalar(float *p, float *m, const float *v, const float *g, int64_t b, int64_t e,
                               const adafactor_k *k) {
  for (int64_t i = b; i < e; i++) {
    float y = (g[i] / sqrtf(v[i])) * k->inv_clip;
    float mi = k->beta1 * m[i] + (1.0f - k->beta1) * (k->scale * y);
    m[i] = mi;
    p[i] = k->keep * p[i] - mi;
  }
}

static void scale_scalar(float *x, int64_t b, int64_t e, float s) {
  for (int64_t i = b; i < e; i++) x[i] *= s;
}

/* ---- AVX-512 paths ----------------------------------------------------------------------- */
/* Main loops use plain 64-byte loads and stores; only the tail (< 16 floats) is masked, because
 * masked stores are slow on AMD Zen 4/5 (measured here: a fully masked AdamW ran 1.5x slower than
 * the auto-vectorized scalar path). */
#if PK_HAVE_X86

/* acc += x^2 in fp64 (16 floats -> two 8-lane double accumulators). */
static inline void PK_TARGET_AVX512 sq_acc(__m512d acc[2], __m512 x) {
  __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
  __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  acc[0] = _mm512_fmadd_pd(lo, lo, acc[0]);
  acc[1] = _mm512_fmadd_pd(hi, hi, acc[1]);
}

static double PK_TARGET_AVX512 ssq_avx512(const float *x, int64_t b, int64_t e) {
  __m512d acc[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
  int64_t i = b;
  for (; i + 16 <= e; i += 16) sq_acc(acc, _mm512_loadu_ps(x + i));
  if (i < e) sq_acc(acc, _mm512_maskz_loadu_ps(pk_mask16(e - i), x + i));
  return _mm512_reduce_add_pd(_mm512_add_pd(acc[0], acc[1]));
}

/* One AdamW vector: updates *pv, *mv, *vv from gv. */
static inline void PK_TARGET_AVX512 adamw_vec(__m512 *pv, __m512 *mv, __m512 *vv, __m512 gv, const adamw_k *k) {
  *mv = _mm512_fmadd_ps(_mm512_set1_ps(k->beta1), *mv, _mm512_mul_ps(_mm512_set1_ps(1.0f - k->beta1), gv));
  *vv = _mm512_fmadd_ps(_mm512_set1_ps(k->beta2), *vv,
                        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(1.0f - k->beta2), gv), gv));
  __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(*vv), _mm512_set1_ps(k->inv_sqrt_bc2), _mm512_set1_ps(k->eps));
  *pv = _mm512_fnmadd_ps(_mm512_set1_ps(k->step_size), _mm512_div_ps(*mv, denom),
                         _mm512_mul_ps(*pv, _mm512_set1_ps(k->decay)));
}

static void PK_TARGET_AVX512 adamw_avx512(float *p, float *m, float *v, const float *g, int64_t b, int64_t e,
                                   const adamw_k *k) {
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    __m512 pv = _mm512_loadu_ps(p + i), mv = _mm512_loadu_ps(m + i), vv = _mm512_loadu_ps(v + i);
    adamw_vec(&pv, &mv, &vv, _mm512_loadu_ps(g + i), k);
    _mm512_storeu_ps(m + i, mv);
    _mm512_storeu_ps(v + i, vv);
    _mm512_storeu_ps(p + i, pv);
  }
  if (i < e) {
    __mmask16 km = pk_mask16(e - i);
    __m512 pv = _mm512_maskz_loadu_ps(km, p + i), mv = _mm512_maskz_loadu_ps(km, m + i);
    __m512 vv = _mm512_maskz_loadu_ps(km, v + i);
    adamw_vec(&pv, &mv, &vv, _mm512_maskz_loadu_ps(km, g + i), k);
    _mm512_mask_storeu_ps(m + i, km, mv);
    _mm512_mask_storeu_ps(v + i, km, vv);
    _mm512_mask_storeu_ps(p + i, km, pv);
  }
}

/* Adafactor pass A on one vector: v update; returns y = g / sqrt(v) (0 in lanes outside km). */
static inline __m512 PK_TARGET_AVX512 adafactor_a_vec(__m512 *vv, __m512 gv, __mmask16 km, const adafactor_k *k) {
  __m512 g2 = _mm512_fmadd_ps(gv, gv, _mm512_set1_ps(k->eps1));
  *vv = _mm512_fmadd_ps(_mm512_set1_ps(k->beta2), *vv, _mm512_mul_ps(_mm512_set1_ps(1.0f - k->beta2), g2));
  return _mm512_maskz_div_ps(km, gv, _mm512_sqrt_ps(*vv));
}

static double PK_TARGET_AVX512 adafactor_a_avx512(float *v, const float *g, int64_t b, int64_t e,
                                           const adafactor_k *k) {
  __m512d acc[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    __m512 vv = _mm512_loadu_ps(v + i);
    sq_acc(acc, adafactor_a_vec(&vv, _mm512_loadu_ps(g + i), (__mmask16)0xFFFF, k));
    _mm512_storeu_ps(v + i, vv);
  }
  if (i < e) {
    __mmask16 km = pk_mask16(e - i);
    __m512 vv = _mm512_maskz_loadu_ps(km, v + i);
    sq_acc(acc, adafactor_a_vec(&vv, _mm512_maskz_loadu_ps(km, g + i), km, k));
    _mm512_mask_storeu_ps(v + i, km, vv);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(acc[0], acc[1]));
}

/* Adafactor pass B on one vector: momentum of the clipped, scaled update, then the parameter. */
static inline void PK_TARGET_AVX512 adafactor_b_vec(__m512 *pv, __m512 *mv, __m512 vv, __m512 gv, const adafactor_k *k) {
  __m512 y = _mm512_mul_ps(_mm512_div_ps(gv, _mm512_sqrt_ps(vv)), _mm512_set1_ps(k->inv_clip));
  *mv = _mm512_fmadd_ps(_mm512_set1_ps(k->beta1), *mv,
                        _mm512_mul_ps(_mm512_set1_ps(1.0f - k->beta1), _mm512_mul_ps(_mm512_set1_ps(k->scale), y)));
  *pv = _mm512_fmsub_ps(_mm512_set1_ps(k->keep), *pv, *mv);
}

static void PK_TARGET_AVX512 adafactor_b_avx512(float *p, float *m, const float *v, const float *g, int64_t b,
                                         int64_t e, const adafactor_k *k) {
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    __m512 pv = _mm512_loadu_ps(p + i), mv = _mm512_loadu_ps(m + i);
    adafactor_b_vec(&pv, &mv, _mm512_loadu_ps(v + i), _mm512_loadu_ps(g + i), k);
    _mm512_storeu_ps(m + i, mv);
    _mm512_storeu_ps(p + i, pv);
  }
  if (i < e) {
    __mmask16 km = pk_mask16(e - i);
    __m512 pv = _mm512_maskz_loadu_ps(km, p + i), mv = _mm512_maskz_loadu_ps(km, m + i);
    /* lanes outside km: v = 1 so no 0/0 is computed (their results are not stored) */
    adafactor_b_vec(&pv, &mv, _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), km, v + i),
                    _mm512_maskz_loadu_ps(km, g + i), k);
    _mm512_mask_storeu_ps(m + i, km, mv);
    _mm512_mask_storeu_ps(p + i, km, pv);
  }
}

#endif

/* ---- dispatchers ------------------------------------------------------------------------- */

static double ssq_range(const float *x, int64_t b, int64_t e, int avx) {
#if PK_HAVE_X86
  if (avx) return ssq_avx512(x, b, e);
#endif
  (void)avx;
  return ssq_scalar(x, b, e);
}

/* Sum of squares over [0, n): one fp64 partial per block, added in block order. */
static double ssq_parallel(const float *x, int64_t n, int avx) {
  int64_t bs = block_size(n), nb = block_count(n);
  if (nb == 1) return ssq_range(x, 0, n, avx);
  double partial[MAX_BLOCKS];
#pragma omp parallel for schedule(static) num_threads(team_for(nb))
  for (int64_t blk = 0; blk < nb; blk++) {
    int64_t b = blk * bs, e = b + bs < n ? b + bs : n;
    partial[blk] = ssq_range(x, b, e, avx);
  }
  double s = 0;
  for (int64_t blk = 0; blk < nb; blk++) s += partial[blk];
  return s;
}

static int bad_float(float x) { return !isfinite(x); }

pk_status pk_adamw_update(float *param, float *m, float *v, const float *grad, int64_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  if (n < 0 || step < 1) return PK_STATUS_BAD_SIZE;
  if (bad_float(lr) || bad_float(weight_decay) || !(beta1 >= 0 && beta1 < 1) ||
      !(beta2 >= 0 && beta2 < 1) || !(eps >= 0) || bad_float(eps))
    return PK_STATUS_BAD_ARGUMENT;
  if (n == 0) return PK_STATUS_OK;
  if (!param || !m || !v || !grad) return PK_STATUS_NULL_POINTER;
  double bc1 = 1.0 - pow((double)beta1, (double)step);
  double bc2 = 1.0 - pow((double)beta2, (double)step);
  adamw_k k = {.decay = (float)(1.0 - (double)lr * (double)weight_decay),
               .step_size = (float)((double)lr / bc1),
               .inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2)),
               .beta1 = beta1, .beta2 = beta2, .eps = eps};
  int avx = use_avx512();
  int64_t bs = block_size(n), nb = block_count(n);
#pragma omp parallel for schedule(static) num_threads(team_for(nb)) if (nb > 1)
  for (int64_t blk = 0; blk < nb; blk++) {
    int64_t b = blk * bs, e = b + bs < n ? b + bs : n;
#if PK_HAVE_X86
    if (avx) adamw_avx512(param, m, v, grad, b, e, &k);
    else
#endif
      adamw_scalar(param, m, v, grad, b, e, &k);
  }
  (void)avx;
  return PK_STATUS_OK;
}

static int adafactor_args_bad(float lr, float beta1, float decay_exponent, float eps1, float eps2,
                              float clip_threshold, float weight_decay) {
  return bad_float(lr) || bad_float(weight_decay) || bad_float(decay_exponent) || decay_exponent < 0 ||
         !(beta1 >= 0 && beta1 < 1) || !(eps1 >= 0) || bad_float(eps1) || !(eps2 >= 0) ||
         bad_float(eps2) || bad_float(clip_threshold);
}

pk_status pk_adafactor_sums(double *ssq_param, double *ssq_update, const float *param, float *v,
                            const float *grad, int64_t n, float decay_exponent, float eps1, int64_t step) {
  if (!ssq_param || !ssq_update) return PK_STATUS_NULL_POINTER;
  if (n < 0 || step < 1) return PK_STATUS_BAD_SIZE;
  if (adafactor_args_bad(0, 0, decay_exponent, eps1, 0, 0, 0)) return PK_STATUS_BAD_ARGUMENT;
  *ssq_param = 0;
  *ssq_update = 0;
  if (n == 0) return PK_STATUS_OK;
  if (!param || !v || !grad) return PK_STATUS_NULL_POINTER;
  int avx = use_avx512();
  int64_t bs = block_size(n), nb = block_count(n);
  adafactor_k k = {.beta2 = (float)(1.0 - pow((double)step, -(double)decay_exponent)), .eps1 = eps1};
  /* RMS(p) before the update, and the v update with the sum of y^2 (per-block partials, added in
   * block order: the same sums at any thread count). */
  double ssq_p[MAX_BLOCKS], ssq_y[MAX_BLOCKS];
#pragma omp parallel for schedule(static) num_threads(team_for(nb)) if (nb > 1)
  for (int64_t blk = 0; blk < nb; blk++) {
    int64_t b = blk * bs, e = b + bs < n ? b + bs : n;
    ssq_p[blk] = ssq_range(param, b, e, avx);
#if PK_HAVE_X86
    if (avx) ssq_y[blk] = adafactor_a_avx512(v, grad, b, e, &k);
    else
#endif
      ssq_y[blk] = adafactor_a_scalar(v, grad, b, e, &k);
  }
  double sp = 0, sy = 0;
  for (int64_t blk = 0; blk < nb; blk++) { sp += ssq_p[blk]; sy += ssq_y[blk]; }
  *ssq_param = sp;
  *ssq_update = sy;
  return PK_STATUS_OK;
}

pk_status pk_adafactor_apply(float *param, float *m, const float *v, const float *grad, int64_t n, float lr,
                             float beta1, float eps2, float clip_threshold, float weight_decay,
                             double rms_param, double rms_update) {
  if (n < 0) return PK_STATUS_BAD_SIZE;
  if (adafactor_args_bad(lr, beta1, 0, 0, eps2, clip_threshold, weight_decay) || !(rms_param >= 0) ||
      !(rms_update >= 0))
    return PK_STATUS_BAD_ARGUMENT;
  if (n == 0) return PK_STATUS_OK;
  if (!param || !m || !v || !grad) return PK_STATUS_NULL_POINTER;
  int avx = use_avx512();
  int64_t bs = block_size(n), nb = block_count(n);
  double clip = clip_threshold > 0 ? fmax(1.0, rms_update / (double)clip_threshold) : 1.0;
  adafactor_k k = {.beta1 = beta1, .keep = 1.0f - weight_decay, .inv_clip = (float)(1.0 / clip),
                   .scale = (float)((double)lr * fmax((double)eps2, rms_param))};
  /* Momentum of the clipped, scaled update; decayed parameter minus it. */
#pragma omp parallel for schedule(static) num_threads(team_for(nb)) if (nb > 1)
  for (int64_t blk = 0; blk < nb; blk++) {
    int64_t b = blk * bs, e = b + bs < n ? b + bs : n;
#if PK_HAVE_X86
    if (avx) adafactor_b_avx512(param, m, v, grad, b, e, &k);
    else
#endif
      adafactor_b_scalar(param, m, v, grad, b, e, &k);
  }
  return PK_STATUS_OK;
}

pk_status pk_adafactor_update(float *param, float *m, float *v, const float *grad, int64_t n, float lr,
                              float beta1, float decay_exponent, float eps1, float eps2,
                              float clip_threshold, float weight_decay, int64_t step) {
  if (n < 0 || step < 1) return PK_STATUS_BAD_SIZE;
  if (adafactor_args_bad(lr, beta1, decay_exponent, eps1, eps2, clip_threshold, weight_decay))
    return PK_STATUS_BAD_ARGUMENT;
  if (n == 0) return PK_STATUS_OK;
  if (!param || !m || !v || !grad) return PK_STATUS_NULL_POINTER;
  double sp, sy;
  pk_status st = pk_adafactor_sums(&sp, &sy, param, v, grad, n, decay_exponent, eps1, step);
  if (st != PK_STATUS_OK) return st;
  return pk_adafactor_apply(param, m, v, grad, n, lr, beta1, eps2, clip_threshold, weight_decay,
                            sqrt(sp / (double)n), sqrt(sy / (double)n));
}

pk_status pk_sum_squares(double *out, const float *x, int64_t n) {
  if (!out) return PK_STATUS_NULL_POINTER;
  if (n < 0) return PK_STATUS_BAD_SIZE;
  if (n > 0 && !x) return PK_STATUS_NULL_POINTER;
  *out = n == 0 ? 0.0 : ssq_parallel(x, n, use_avx512());
  return PK_STATUS_OK;
}

pk_status pk_global_norm_squared(double *out, const float *const *tensors, const int64_t *counts,
                                 int64_t count) {
  if (!out) return PK_STATUS_NULL_POINTER;
  if (count < 0) return PK_STATUS_BAD_SIZE;
  if (count > 0 && (!tensors || !counts)) return PK_STATUS_NULL_POINTER;
  for (int64_t t = 0; t < count; t++) {
    if (counts[t] < 0) return PK_STATUS_BAD_SIZE;
    if (counts[t] > 0 && !tensors[t]) return PK_STATUS_NULL_POINTER;
  }
  int avx = use_avx512();
  double s = 0;
  for (int64_t t = 0; t < count; t++)
    if (counts[t] > 0) s += ssq_parallel(tensors[t], counts[t], avx);
  *out = s;
  return PK_STATUS_OK;
}

pk_status pk_scale_inplace(float *x, int64_t n, float s) {
  if (n < 0) return PK_STATUS_BAD_SIZE;
  if (n == 0) return PK_STATUS_OK;
  if (!x) return PK_STATUS_NULL_POINTER;
  int avx = use_avx512();
  int64_t bs = block_size(n), nb = block_count(n);
#pragma omp parallel for schedule(static) num_threads(team_for(nb)) if (nb > 1)
  for (int64_t blk = 0; blk < nb; blk++) {
    int64_t b = blk * bs, e = b + bs < n ? b + bs : n;
#if PK_HAVE_X86
    if (avx) pk_scale_avx512(x + b, e - b, s);
    else
#endif
      scale_scalar(x, b, e, s);
  }
  (void)avx;
  return PK_STATUS_OK;
}
