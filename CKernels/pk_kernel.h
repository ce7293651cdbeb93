/* pk_kernel.h (private): shared helpers of the element-wise and attention kernels: argument checks
 * with overflow detection, static (ith, nth) row ranges, the AVX-512 target attribute and a
 * vectorized expf for AVX-512 and AVX2 (Cephes-style range reduction + degree-6 polynomial, about
 * 2 ulp on [-87, 88]; the AVX-512 one underflows to 0 below about -103 and saturates to +inf
 * above 88.7), and the AVX2 horizontal max and sum. Not a public header. */
#ifndef PK_KERNEL_H
#define PK_KERNEL_H
#include "pk_attention.h"
#include "pk_core.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define PK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* Rotary embeddings, rotate-half convention (pk_attention.h): theta_i = t · base^(-2i/Q); a row of
 * angles is cs[i] = cos(theta_i), cs[Q/2 + i] = sin(theta_i), i < Q/2. Shared by the training
 * attention (a table over t) and incremental decoding (one row per token). */
static inline double pk_rope_frequency(int64_t i, int64_t Q) {
  return pow(PK_ROPE_BASE, -2.0 * (double)i / (double)Q);
}

static inline void pk_rope_row(float *cs, int64_t t, int64_t Q) {
  int64_t half = Q / 2;
  for (int64_t i = 0; i < half; i++) {
    double theta = (double)t * pk_rope_frequency(i, Q);
    cs[i] = (float)cos(theta);
    cs[half + i] = (float)sin(theta);
  }
}

/* y = R(t) x · scale (forward rotation) with the row cs of position t. */
static inline void pk_rope_apply(float *y, const float *x, const float *cs, int64_t Q, float scale) {
  int64_t half = Q / 2;
  const float *c = cs, *sn = cs + half;
  for (int64_t i = 0; i < half; i++) {
    float x1 = x[i], x2 = x[i + half];
    y[i] = (x1 * c[i] - x2 * sn[i]) * scale;
    y[i + half] = (x2 * c[i] + x1 * sn[i]) * scale;
  }
}

/* Grow-only, 64-byte aligned scratch, one per calling thread (`static _Thread_local pk_scratch`):
 * after the first step of a training run no kernel allocates (the hot path never calls malloc). */
typedef struct { float *p; size_t cap; } pk_scratch;

static inline float *pk_scratch_reserve(pk_scratch *b, size_t floats) {
  if (b->cap < floats) {
    float *p = (float *)pk_aligned_alloc(floats * sizeof(float));
    if (!p) return NULL;
    pk_aligned_free(b->p);
    b->p = p;
    b->cap = floats;
  }
  return b->p;
}
#define PK_TARGET_AVX2 __attribute__((target("avx2,fma")))

/* Product of non-negative sizes; 0 on overflow (with *ok cleared). */
static inline int64_t pk_mul_sizes(int64_t a, int64_t b, int *ok) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) { *ok = 0; return 0; }
  return r;
}

/* A row-major matrix of `rows` × `cols` floats with row stride ld: sizes, stride, overflow of
 * the addressed span in bytes, then NULL (only when at least one element is addressed). */
static inline pk_status pk_check_matrix(const void *p, int64_t rows, int64_t cols, int64_t ld) {
  if (rows < 0 || cols < 0) return PK_STATUS_BAD_SIZE;
  if (ld < cols || ld < 0) return PK_STATUS_BAD_STRIDE;
  if (rows == 0 || cols == 0) return PK_STATUS_OK;
  int64_t span;
  if (__builtin_mul_overflow(rows - 1, ld, &span) || __builtin_add_overflow(span, cols, &span) ||
      __builtin_mul_overflow(span, (int64_t)sizeof(float), &span))
    return PK_STATUS_BAD_SIZE;
  if (p == NULL) return PK_STATUS_NULL_POINTER;
  return PK_STATUS_OK;
}

/* A vector of n elements of `elem` bytes. */
static inline pk_status pk_check_vector(const void *p, int64_t n, int64_t elem) {
  int64_t bytes;
  if (n < 0) return PK_STATUS_BAD_SIZE;
  if (__builtin_mul_overflow(n, elem, &bytes)) return PK_STATUS_BAD_SIZE;
  if (n > 0 && p == NULL) return PK_STATUS_NULL_POINTER;
  return PK_STATUS_OK;
}

#define PK_TRY(expr) do { pk_status s_ = (expr); if (s_ != PK_STATUS_OK) return s_; } while (0)

/* Token ids (embedding rows, cross-entropy targets): N int32 values, each in [0, V). */
static inline pk_status pk_check_ids(const int32_t *ids, int64_t N, int64_t V) {
  PK_TRY(pk_check_vector(ids, N, sizeof(int32_t)));
  for (int64_t i = 0; i < N; i++)
    if (ids[i] < 0 || (int64_t)ids[i] >= V) return PK_STATUS_BAD_ARGUMENT;
  return PK_STATUS_OK;
}

/* Rows [*lo, *hi) of n for thread ith of nth: contiguous, balanced, fixed for fixed (n, nth). */
static inline void pk_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
  int64_t q = n / nth, r = n % nth;
  *lo = ith * q + (ith < r ? ith : r);
  *hi = *lo + q + (ith < r ? 1 : 0);
}

#if defined(__x86_64__)
#include <immintrin.h>

/* exp(x) on 16 lanes. The clamps take x as their second operand: min/max return the second
 * operand when one is NaN, so NaN stays NaN (a NaN logit must give a NaN loss, as in libm). */
static inline PK_TARGET_AVX512 __m512 pk_exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.72283f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-103.9f), x);
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

/* exp(x) on 8 lanes (AVX2 + FMA): the same polynomial; clamps to [-87.3, 88.3], so it never
 * returns 0 or inf (callers zero masked lanes themselves); NaN stays NaN, as in pk_exp512. */
static inline PK_TARGET_AVX2 __m256 pk_exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Largest of the 8 lanes (a max tree over the halves, then pairs: exact, so the order only shows
 * in the sign of a zero result and in which NaN lanes survive). */
static inline PK_TARGET_AVX2 float pk_hmax256(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

/* Sum of the 8 lanes, added in lane order 0..7 onto 0.0f (a fixed order: results that depend on
 * it stay bit-identical). */
static inline PK_TARGET_AVX2 float pk_hsum256(__m256 v) {
  float lanes[8], s = 0.0f;
  _mm256_storeu_ps(lanes, v);
  for (int l = 0; l < 8; l++) s += lanes[l];
  return s;
}

/* Mask of the first n (0..8) lanes, for _mm256_maskload_ps / _mm256_maskstore_ps. */
static inline PK_TARGET_AVX2 __m256i pk_mask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n > 8 ? 8 : n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Mask of the first n lanes: none for n <= 0, all 16 for n >= 16. */
static inline __mmask16 pk_mask16(int64_t n) {
  return n <= 0 ? (__mmask16)0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* x[0..n) *= s: full vectors, then one masked tail (masked loads and stores on every vector
 * measured 1.5x slower on Zen 4/5, see optim.c). */
static inline PK_TARGET_AVX512 void pk_scale_avx512(float *x, int64_t n, float s) {
  const __m512 sv = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), sv));
  if (i < n) {
    const __mmask16 km = pk_mask16(n - i);
    _mm512_mask_storeu_ps(x + i, km, _mm512_mul_ps(_mm512_maskz_loadu_ps(km, x + i), sv));
  }
}
#endif

/* ---- Row kernels shared by the batched kernels and pk_decode_token (gemv.c) ---- */

/* One row of LayerNorm forward (norm.c, this CPU's ISA): y = (x − mean)·rstd·w. */
void pk_layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w, int64_t D);

/* n elements of SwiGLU forward (swiglu.c, this CPU's ISA): out = swish(gate)·up. Element-wise: a
 * range of a row that starts at a multiple of 16 gives the same bits as the whole row. */
void pk_swiglu_row(float *out, const float *gate, const float *up, int64_t n);

/* decode.c: query heads [h0, h1) of the token at `pos` over K/V cache positions [0, pos) and
 * its own rotated K (`krot`) and V (qkv's), into out (H·Q); cs is the rotary row of `pos`;
 * scratch holds pk_decode_heads_scratch(smax, Q) floats. Reads the caches only. */
void pk_decode_heads(float *out, const float *kcache, const float *vcache, const float *qkv, const float *cs,
                     const float *krot, int64_t pos, int64_t H, int64_t Q, int64_t h0, int64_t h1, float *scratch);
int64_t pk_decode_heads_scratch(int64_t smax, int64_t Q);
/* Writes the token's rotated K and its V at `pos` of one layer's caches. */
void pk_decode_append(float *kcache, float *vcache, const float *krot, const float *v, int64_t pos, int64_t Q);

#endif
