/* decode.c: one token's multi-query attention over a KV cache (pk_decode.h), for palm sample: the
 * scores, softmax and weighted sum of a range of query heads (pk_decode_heads), the one
 * implementation behind pk_decode_attention (every head on the calling thread) and
 * pk_decode_token (gemv.c: the heads split over its team).
 *
 * The K cache is kept in blocks of PK_DECODE_BLOCK = 16 positions, transposed (pk_decode.h), so the
 * scores of 16 positions are the 16 lanes of one vector: lane s accumulates q[i]·k_s[i] for i = 0,
 * 1, ... in order, the multiply and the add rounded apart (never an FMA), which is exactly the
 * arithmetic of a scalar dot product. The weighted sum of V (rows, as stored) is element-wise over
 * i the same way. So every score and output is the same on every ISA, vector width and split of
 * the heads. Softmax: a scalar max, libm expf, the sum in double. Rotary convention and score
 * scaling as attention.c. Reference: llama2.c run.c (per-token attention over the cache). */
#include "pk_decode.h"
#include "pk_kernel.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "pk_attention.h"

enum { BLK = PK_DECODE_BLOCK };

/* The portable versions: 16 floats as a GCC/clang vector (four xmm on the baseline, which has
 * no FMA, so every multiply and add rounds on its own). */
typedef float v16 __attribute__((vector_size(64)));

/* Static helpers, always inlined: a v16 never crosses an ABI boundary, so the warning that its
 * passing convention differs without AVX-512 (-Wpsabi, at each call) does not apply here. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
static inline __attribute__((always_inline)) v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline __attribute__((always_inline)) void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* s[l] = sum over i of q[i]·kt[i·16 + l], i in order from 0.0f (one K block of 16 positions). */
static void block_scores_base(float *s, const float *q, const float *kt, int64_t Q) {
  v16 acc = {0};
  for (int64_t i = 0; i < Q; i++) acc = acc + q[i] * load16(kt + i * BLK);
  store16(s, acc);
}

/* o[i] = sum over s < n of p[s]·v_s[i] from 0.0f, s in order; v_s = vrows + s·Q for s < n − 1,
 * vlast for s = n − 1 (the new token's V, not yet in the cache). */
static void weighted_sum_base(float *o, const float *p, const float *vrows, const float *vlast, int64_t n, int64_t Q) {
  int64_t i = 0;
  for (; i + 16 <= Q; i += 16) {
    v16 acc = {0};
    for (int64_t s = 0; s + 1 < n; s++) acc = acc + p[s] * load16(vrows + s * Q + i);
    store16(o + i, acc + p[n - 1] * load16(vlast + i));
  }
  for (; i < Q; i++) {
    float acc = 0.0f;
    for (int64_t s = 0; s + 1 < n; s++) acc = acc + p[s] * vrows[s * Q + i];
    o[i] = acc + p[n - 1] * vlast[i];
  }
}
#pragma clang diagnostic pop

#if defined(__x86_64__)
/* AVX-512: the same operations in the same order. The empty asm makes each product a value of its
 * own, so that -ffp-contract=fast cannot fuse it into the add (an FMA would round once, not twice). */
#define ROUNDED(v) __asm__("" : "+v"(v))

static PK_TARGET_AVX512 void block_scores_avx512(float *s, const float *q, const float *kt, int64_t Q) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < Q; i++) {
    __m512 prod = _mm512_mul_ps(_mm512_set1_ps(q[i]), _mm512_loadu_ps(kt + i * BLK));
    ROUNDED(prod);
    acc = _mm512_add_ps(acc, prod);
  }
  _mm512_storeu_ps(s, acc);
}

static PK_TARGET_AVX512 void weighted_sum_avx512(float *o, const float *p, const float *vrows, const float *vlast,
                                                 int64_t n, int64_t Q) {
  for (int64_t i = 0; i < Q; i += 16) {
    const __mmask16 k = pk_mask16(Q - i);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t s = 0; s + 1 < n; s++) {
      __m512 prod = _mm512_mul_ps(_mm512_set1_ps(p[s]), _mm512_maskz_loadu_ps(k, vrows + s * Q + i));
      ROUNDED(prod);
      acc = _mm512_add_ps(acc, prod);
    }
    __m512 prod = _mm512_mul_ps(_mm512_set1_ps(p[n - 1]), _mm512_maskz_loadu_ps(k, vlast + i));
    ROUNDED(prod);
    _mm512_mask_storeu_ps(o + i, k, _mm512_add_ps(acc, prod));
  }
}
#endif

int64_t pk_decode_kcache_floats(int64_t smax, int64_t Q) { return (smax + BLK - 1) / BLK * BLK * Q; }

int64_t pk_decode_heads_scratch(int64_t smax, int64_t Q) { return (smax + BLK - 1) / BLK * BLK + Q + BLK * Q; }

void pk_decode_heads(float *out, const float *kcache, const float *vcache, const float *qkv, const float *cs,
                     const float *krot, int64_t pos, int64_t H, int64_t Q, int64_t h0, int64_t h1, float *scratch) {
  if (h0 >= h1) return;
  const int64_t n = pos + 1, last = pos / BLK;  /* K block `last` holds pos */
  float *scores = scratch, *q = scores + (last + 1) * BLK, *kt = q + Q;
  /* The block of `pos` with the new token's K in its lane (the cache gets it later, from one
   * thread: pk_decode_append); lanes after pos are never used. */
  memcpy(kt, kcache + last * BLK * Q, sizeof(float) * (size_t)(BLK * Q));
  for (int64_t i = 0; i < Q; i++) kt[i * BLK + pos % BLK] = krot[i];
  void (*scores_fn)(float *, const float *, const float *, int64_t) = block_scores_base;
  void (*sum_fn)(float *, const float *, const float *, const float *, int64_t, int64_t) = weighted_sum_base;
#if defined(__x86_64__)
  if (pk_isa_active() >= PK_ISA_AVX512) { scores_fn = block_scores_avx512; sum_fn = weighted_sum_avx512; }
#endif
  const float scale = 1.0f / sqrtf((float)Q);
  for (int64_t h = h0; h < h1; h++) {
    pk_rope_apply(q, qkv + h * Q, cs, Q, scale);
    for (int64_t b = 0; b < last; b++) scores_fn(scores + b * BLK, q, kcache + b * BLK * Q, Q);
    scores_fn(scores + last * BLK, q, kt, Q);
    float mx = -INFINITY;
    for (int64_t s = 0; s < n; s++)
      if (scores[s] > mx) mx = scores[s];
    double sum = 0.0;
    for (int64_t s = 0; s < n; s++) {
      float e = expf(scores[s] - mx);
      scores[s] = e;
      sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int64_t s = 0; s < n; s++) scores[s] *= inv;
    sum_fn(out + h * Q, scores, vcache, qkv + H * Q + Q, n, Q);
  }
}

void pk_decode_append(float *kcache, float *vcache, const float *krot, const float *v, int64_t pos, int64_t Q) {
  float *kt = kcache + pos / BLK * BLK * Q + pos % BLK;
  for (int64_t i = 0; i < Q; i++) kt[i * BLK] = krot[i];
  memcpy(vcache + pos * Q, v, sizeof(float) * (size_t)Q);
}

pk_status pk_decode_attention(float *out, float *kcache, float *vcache, const float *qkv,
                              int64_t pos, int64_t smax, int64_t H, int64_t Q) {
  if (pos < 0 || smax < 1 || pos >= smax || H < 1 || Q < 2) return PK_STATUS_BAD_SIZE;
  if (Q % 2 != 0) return PK_STATUS_BAD_ARGUMENT;
  if (!out || !kcache || !vcache || !qkv) return PK_STATUS_NULL_POINTER;
  static _Thread_local pk_scratch tl_buf;  /* grow-only: one allocation per sampling thread */
  float *buf = pk_scratch_reserve(&tl_buf, (size_t)(2 * Q + pk_decode_heads_scratch(smax, Q)));
  if (!buf) return PK_STATUS_NO_MEMORY;
  float *cs = buf, *krot = buf + Q;
  pk_rope_row(cs, pos, Q);  /* the angles of this position, once for K and every head */
  pk_rope_apply(krot, qkv + H * Q, cs, Q, 1.0f);
  pk_decode_heads(out, kcache, vcache, qkv, cs, krot, pos, H, Q, 0, H, buf + 2 * Q);
  pk_decode_append(kcache, vcache, krot, qkv + H * Q + Q, pos, Q);
  return PK_STATUS_OK;
}
