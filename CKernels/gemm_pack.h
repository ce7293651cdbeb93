/* gemm_pack.h (private): packing of GEMM operands into micro-panels, shared by the fp32 driver
 * (gemm.c) and the bf16 one (gemm_bf16.c), and the fp32 -> bf16 rounding they use.
 *
 * pack_a: dst = ceil(mc/MR) micro-panels, each (kc, MR): dst[ir*kc + p*MR + i] = A(ir+i, p),
 *         A(i, p) = src[i*ld + p] (NN, NT) or src[p*ld + i] (TN, trans = 1); rows past mc are 0.
 * pack_b: the same with NR columns: B(p, j) = src[p*ld + j] (NN, TN) or src[j*ld + p] (NT).
 * With `round` set, every value is rounded to bf16 (kept as fp32: the low 16 bits cleared), which
 * is how the ISAs without AVX512_BF16 emulate the bf16 GEMM: the products of two bf16 values are
 * exact in fp32, so fp32 FMA then computes what vdpbf16ps does, up to accumulation order. */
#ifndef PK_GEMM_PACK_H
#define PK_GEMM_PACK_H
#include "pk_core.h"
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define PK_TARGET_NONE
#define PK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define PK_TARGET_AVX512BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512dq,avx512vl")))

/* fp32 bits -> the bits of the nearest bf16 (round to nearest, ties to even), as fp32 bits (low
 * half 0). Overflow rounds to +-Inf, Inf stays Inf, NaN stays NaN (made quiet, sign and top payload
 * kept), denormals round like any other value (no flush). Branch-free, so packing loops vectorise. */
static inline uint32_t pk_bf16_round_bits(uint32_t u) {
  const uint32_t nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t r = nan ? u | 0x00400000u : u + 0x7FFFu + ((u >> 16) & 1u);
  return r & 0xFFFF0000u;
}
static inline float pk_bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  u = pk_bf16_round_bits(u);
  memcpy(&x, &u, 4);
  return x;
}

/* pk_bf16_round_bits on 16 lanes (as fp32 bits). */
PK_TARGET_AVX512 static inline __m512i pk_bf16_round512(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
  return _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u));
}

/* The pair word of (k, k + 1) from their fp32 values, each rounded: bf16 of k in the low half, of
 * k + 1 in the high half (what vdpbf16ps multiplies as one step). */
static inline uint32_t pk_bf16_pair_word(float lo, float hi) {
  uint32_t l, h;
  memcpy(&l, &lo, 4);
  memcpy(&h, &hi, 4);
  return pk_bf16_round_bits(l) >> 16 | pk_bf16_round_bits(h);
}
PK_TARGET_AVX512 static inline __m512i pk_bf16_pair_word512(__m512 lo, __m512 hi) {
  return _mm512_or_si512(_mm512_srli_epi32(pk_bf16_round512(lo), 16), pk_bf16_round512(hi));
}

static inline __attribute__((always_inline)) float pk_pack_value(float x, const int round) {
  return round ? pk_bf16_round(x) : x;
}

static inline __attribute__((always_inline)) void pack_panels(float *restrict dst,
                                                              const float *restrict src, int64_t ld,
                                                              int contiguous, int64_t mn, int64_t kc,
                                                              const int R, const int round) {
  for (int64_t r0 = 0; r0 < mn; r0 += R) {
    int64_t rr = mn - r0 < R ? mn - r0 : R;
    float *d = dst + r0 * kc;
    if (contiguous) { /* element (p, r) at src[p*ld + r]: copy rows of R */
      const float *s = src + r0;
      if (rr == R)
        for (int64_t p = 0; p < kc; p++)
          for (int r = 0; r < R; r++) d[p * R + r] = pk_pack_value(s[p * ld + r], round);
      else
        for (int64_t p = 0; p < kc; p++)
          for (int r = 0; r < R; r++) d[p * R + r] = r < rr ? pk_pack_value(s[p * ld + r], round) : 0.0f;
    } else { /* element (p, r) at src[r*ld + p]: transpose R rows */
      const float *s = src + r0 * ld;
      if (rr == R)
        for (int64_t p = 0; p < kc; p++)
          for (int r = 0; r < R; r++) d[p * R + r] = pk_pack_value(s[r * ld + p], round);
      else
        for (int64_t p = 0; p < kc; p++)
          for (int r = 0; r < R; r++) d[p * R + r] = r < rr ? pk_pack_value(s[r * ld + p], round) : 0.0f;
    }
  }
}

/* A portable pack: A is contiguous along MR when transposed (TN); B along NR unless NT. */
#define PK_DEFINE_PACK(name, target, R, contiguous_when, round)                                    \
  target static void name(void *dst, const float *src, int64_t ld, int trans, int64_t mn,       \
                          int64_t kc) {                                                         \
    if (contiguous_when) pack_panels((float *)dst, src, ld, 1, mn, kc, R, round);               \
    else pack_panels((float *)dst, src, ld, 0, mn, kc, R, round);                               \
  }

/* AVX-512 transposing packs (A in NN/NT, B in NT): 16 k at a time, rows loaded as zmm and
 * transposed in registers (unpack ps, unpack pd, two rounds of 128-bit lane shuffles). */
PK_TARGET_AVX512 static inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; g++) {
    __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  /* r[4g + j], 128-bit lane L, now holds rows 4g..4g+3 of column 4L + j. */
  __m512 out[16];
  for (int j = 0; j < 4; j++) {
    __m512 x0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), x1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    __m512 y0 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    __m512 y1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    out[j] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    out[8 + j] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    out[4 + j] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    out[12 + j] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
  for (int i = 0; i < 16; i++) r[i] = out[i];
}

/* Full panels of R = 14 (A) or 32 (B) rows, element (p, r) at src[r*ld + p]. */
PK_TARGET_AVX512 static inline __attribute__((always_inline)) void pack_transposed_avx512(
    float *restrict d, const float *restrict s, int64_t ld, int64_t kc, const int R, const int round) {
  int64_t p = 0;
  for (; p + 16 <= kc; p += 16) {
    for (int h = 0; h < R; h += 16) {
      const int rows = R - h < 16 ? R - h : 16;
      __m512 r[16];
      for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_loadu_ps(s + (h + i) * ld + p) : _mm512_setzero_ps();
      transpose16x16(r);
      const __mmask16 mk = (__mmask16)((1u << rows) - 1);
      for (int c = 0; c < 16; c++)
        _mm512_mask_storeu_ps(d + (p + c) * R + h, mk,
                              round ? _mm512_castsi512_ps(pk_bf16_round512(r[c])) : r[c]);
    }
  }
  for (; p < kc; p++)
    for (int r = 0; r < R; r++) d[p * R + r] = pk_pack_value(s[r * ld + p], round);
}

/* The AVX-512 packs of the 14x32 tile: copies where the block is k-major, register transposes
 * for the full panels otherwise (the edge panel goes through pack_panels). */
PK_TARGET_AVX512 static inline __attribute__((always_inline)) void pack_avx512(
    float *dst, const float *src, int64_t ld, int contiguous, int64_t mn, int64_t kc, const int R,
    const int round) {
  if (contiguous) { pack_panels(dst, src, ld, 1, mn, kc, R, round); return; }
  const int64_t full = mn / R * R;
  for (int64_t r0 = 0; r0 < full; r0 += R) pack_transposed_avx512(dst + r0 * kc, src + r0 * ld, ld, kc, R, round);
  if (full < mn) pack_panels(dst + full * kc, src + full * ld, ld, 0, mn - full, kc, R, round);
}

#endif
