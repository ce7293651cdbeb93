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
 * Called by pk_sgemm for m <= PK_GEMV_MAX_M in NN and NT; TN falls through to the packed GEMM.
 * pk_decode_token (pk_decode.h) runs a whole decoded token on the same column worker in ONE
 * OpenMP region, every kernel split over the team (LayerNorm computed by each thread itself,
 * attention by query heads, SwiGLU by columns), its threads kept awake between kernels by a spin
 * barrier. */
#include "gemm_internal.h"
#include "pk_decode.h"
#include "pk_kernel.h"
#include "pk_norm.h"
#include "pk_omp.h"
#include "pk_swiglu.h"
#include <math.h>
#include <sched.h>
#include <stdatomic.h>

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
typedef struct { axpy4_fn axpy4; dot_fn dot; } gemv_fns;

static gemv_fns active_fns(void) {
  gemv_fns f = {axpy4_scalar, dot_scalar};
#if defined(__x86_64__)
  switch (pk_isa_active()) {
  case PK_ISA_AVX512: f.axpy4 = axpy4_avx512; f.dot = dot_avx512; break;
  case PK_ISA_AVX2: f.axpy4 = axpy4_avx2; f.dot = dot_avx2; break;
  default: break;
  }
#endif
  return f;
}

/* Columns [j0, j1) of C = alpha·op(A)·op(B) + beta·C for m <= PK_GEMV_MAX_M (NN or NT): one
 * thread's share; the only code that computes the product. */
static void gemv_columns(gemv_fns f, pk_layout layout, int64_t m, int64_t k, float alpha, const float *a,
                         int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                         int64_t j0, int64_t j1) {
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    for (int64_t j = j0; j < j1; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
  }
  if (k == 0 || alpha == 0.0f || j0 >= j1) return;
  if (layout == PK_LAYOUT_NT) {
    for (int64_t j = j0; j < j1; j++) {
      const float *bj = b + j * ldb;
      for (int64_t i = 0; i < m; i++) c[i * ldc + j] += alpha * f.dot(a + i * lda, bj, k);
    }
    return;
  }
  for (int64_t c0 = j0; c0 < j1; c0 += GEMV_CHUNK) {
    int64_t len = j1 - c0 < GEMV_CHUNK ? j1 - c0 : GEMV_CHUNK;
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const float *b0 = b + p * ldb + c0;
      for (int64_t i = 0; i < m; i++) {
        const float *ai = a + i * lda + p;  /* alpha folded into A's four values */
        f.axpy4(c + i * ldc + c0, b0, b0 + ldb, b0 + 2 * ldb, b0 + 3 * ldb, alpha * ai[0], alpha * ai[1],
                alpha * ai[2], alpha * ai[3], len);
      }
    }
    for (; p < k; p++) {  /* the last k % 4 rows of B, one at a time (no zero-weighted terms: 0 * Inf) */
      const float *bp = b + p * ldb + c0;
      for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc + c0, ap = alpha * a[i * lda + p];
        for (int64_t j = 0; j < len; j++) ci[j] += ap * bp[j];
      }
    }
  }
}

/* Thread t of T's share of n columns, in whole cache lines (16 floats). */
static void share(int64_t n, int t, int T, int64_t *j0, int64_t *j1) {
  const int64_t lines = (n + 15) / 16;
  *j0 = lines * t / T * 16;
  *j1 = lines * (t + 1) / T * 16;
  if (*j0 > n) *j0 = n;
  if (*j1 > n) *j1 = n;
}

pk_status pk_gemv_small_m(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m < 0 || m > PK_GEMV_MAX_M || layout == PK_LAYOUT_TN) return PK_STATUS_BAD_ARGUMENT;
  if (m == 0 || n == 0) return PK_STATUS_OK;
  const gemv_fns f = active_fns();
  if (k > 0 && alpha != 0.0f) pk_flops_add(2.0 * (double)m * (double)n * (double)k);
  /* Waking a second thread (KMP_BLOCKTIME=0) costs about as much as streaming ~20 MB of B from
   * the caches on one core: measured m = 1 on Zen 3, 2 cores, 1 vs 2 threads: 2432x256 0.06 vs
   * 0.10 ms, 8192x512 (16 MB) 18.9 vs 16.7 GFLOP/s, 8192x2048 (64 MB) 8.6 vs 14.7 GFLOP/s. A whole
   * decoded token avoids the question: pk_decode_token keeps one team awake across its kernels. */
  int nth = (double)m * (double)n * (double)k < 6e6 ? 1 : pk_threads_get();
#pragma omp parallel num_threads(nth) if (nth > 1)
  {
    int64_t j0, j1;
    share(n, omp_get_thread_num(), omp_get_num_threads(), &j0, &j1);
    gemv_columns(f, layout, m, k, alpha, a, lda, b, ldb, beta, c, ldc, j0, j1);
  }
  return PK_STATUS_OK;
}

/* A barrier that spins (with pause) instead of sleeping: inside one decoded token the waits are
 * microseconds, where the OpenMP barrier under KMP_BLOCKTIME=0 would put the thread to sleep and
 * pay a wake-up (~50-100 us) at every kernel. Past SPIN_BEFORE_YIELD pauses it yields the core
 * instead (a shared machine: the thread it waits for is queued behind it). */
enum { SPIN_BEFORE_YIELD = 2000 };  /* pauses: tens of microseconds */

typedef struct {
  _Atomic int count, generation;
  int threads;
} spin_barrier;

static void spin_wait(spin_barrier *s) {
  int g = atomic_load_explicit(&s->generation, memory_order_acquire);
  if (atomic_fetch_add_explicit(&s->count, 1, memory_order_acq_rel) == s->threads - 1) {
    atomic_store_explicit(&s->count, 0, memory_order_relaxed);
    atomic_store_explicit(&s->generation, g + 1, memory_order_release);
    return;
  }
  /* Waits inside a token are microseconds: spin. A wait much longer than that means the thread
   * waited for is not running (more runnable threads than cores): give it the core. */
  for (int spins = 0; atomic_load_explicit(&s->generation, memory_order_acquire) == g; spins++) {
    if (spins < SPIN_BEFORE_YIELD) {
#if defined(__x86_64__)
      _mm_pause();
#endif
    } else {
      sched_yield();
    }
  }
}

pk_status pk_decode_token(float *logits, float *x, float *h, float *proj, float *cg, float *kcache,
                          float *vcache, int64_t capacity, int64_t pos, const pk_decode_layer *layers,
                          int64_t L, const float *ln_final, const float *embed, int64_t token, int64_t d,
                          int64_t H, int64_t Q, int64_t F, int64_t V) {
  if (!logits || !x || !h || !proj || !cg || !kcache || !vcache || !layers || !ln_final || !embed)
    return PK_STATUS_NULL_POINTER;
  if (L < 0 || d < 1 || H < 1 || Q < 2 || F < 1 || V < 1 || capacity < 1) return PK_STATUS_BAD_SIZE;
  if (pos < 0 || pos >= capacity || token < 0 || token >= V || Q % 2 != 0) return PK_STATUS_BAD_ARGUMENT;
  for (int64_t l = 0; l < L; l++)
    if (!layers[l].ln_scale || !layers[l].w_in || !layers[l].w_out) return PK_STATUS_NULL_POINTER;
  const int64_t hq = H * Q, cin = hq + 2 * Q + 2 * F, cout = hq + F;
  const int64_t kstride = pk_decode_kcache_floats(capacity, Q), vstride = capacity * Q;
  /* A thread's scratch: its LayerNorm output (thread 0 uses h), the rotary row of pos, its
   * rotated K, and pk_decode_heads' scores / query / K block. */
  const size_t scratch = (size_t)(d + 2 * Q + pk_decode_heads_scratch(capacity, Q));
  const gemv_fns f = active_fns();
  pk_flops_add(2.0 * (double)L * (double)d * (double)(cin + cout) + 2.0 * (double)V * (double)d);
  for (int64_t j = 0; j < d; j++) x[j] = embed[token * d + j];
  spin_barrier bar = {0, 0, 1};
  _Atomic int failed = 0;
  const float head_scale = 1.0f / sqrtf((float)d);
#pragma omp parallel num_threads(pk_threads_get())
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    static _Thread_local pk_scratch tl_token;  /* grow-only, one per thread of the team */
    float *mine = pk_scratch_reserve(&tl_token, scratch);
    if (!mine) atomic_store(&failed, 1);
    if (t == 0) bar.threads = T;
#pragma omp barrier
    if (!atomic_load(&failed)) {  /* the same for every thread after the barrier */
      int64_t a0, a1, b0, b1, v0, v1, f0, f1;  /* this thread's columns of proj, x, the logits, g */
      share(cin, t, T, &a0, &a1);
      share(d, t, T, &b0, &b1);
      share(V, t, T, &v0, &v1);
      share(F, t, T, &f0, &f1);
      const int64_t h0 = H * t / T, h1 = H * (t + 1) / T;  /* this thread's query heads */
      float *hn = t == 0 ? h : mine, *cs = mine + d, *krot = cs + Q, *work = krot + Q;
      float stat[2];
      pk_rope_row(cs, pos, Q);
      for (int64_t l = 0; l < L; l++) {
        const pk_decode_layer *W = &layers[l];
        float *kl = kcache + l * kstride, *vl = vcache + l * vstride;
        pk_layernorm_row(hn, stat, stat + 1, x, W->ln_scale, d);
        gemv_columns(f, PK_LAYOUT_NN, 1, d, 1.0f, hn, d, W->w_in, cin, 0.0f, proj, cin, a0, a1);
        spin_wait(&bar);
        pk_rope_apply(krot, proj + hq, cs, Q, 1.0f);
        pk_decode_heads(cg, kl, vl, proj, cs, krot, pos, H, Q, h0, h1, work);
        pk_swiglu_row(cg + hq + f0, proj + hq + 2 * Q + f0, proj + hq + 2 * Q + F + f0, f1 - f0);
        spin_wait(&bar);
        /* No thread reads this layer's cache again in this token: thread 0 stores the new K/V. */
        if (t == 0) pk_decode_append(kl, vl, krot, proj + hq + Q, pos, Q);
        gemv_columns(f, PK_LAYOUT_NN, 1, cout, 1.0f, cg, cout, W->w_out, d, 1.0f, x, d, b0, b1);
        spin_wait(&bar);
      }
      pk_layernorm_row(hn, stat, stat + 1, x, ln_final, d);
      gemv_columns(f, PK_LAYOUT_NT, 1, d, head_scale, hn, d, embed, d, 0.0f, logits, V, v0, v1);
    }
  }
  return atomic_load(&failed) ? PK_STATUS_NO_MEMORY : PK_STATUS_OK;
}
