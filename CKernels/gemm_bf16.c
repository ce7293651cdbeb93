/* gemm_bf16.c: the bf16 GEMM, pk_bgemm: fp32 operands in memory, rounded to bf16 (round to
 * nearest even) while they are packed, products accumulated in fp32, fp32 C. So no bf16 copy of
 * the weights is kept anywhere: the rounding costs one conversion and one shuffle per 16 pairs
 * (native) or a few integer ops per element (emulated) in packing, which the GotoBLAS driver
 * (gemm.c, pk_gemm_run) does once per KC x NC panel of B and MC x KC block of A. Two ways to
 * run, chosen per call:
 *   native (AVX512_BF16, pk_isa_bf16_active): panels of bf16 pairs (word p of a panel row holds
 *     k = 2p in its low and k = 2p + 1 in its high half) and the vdpbf16ps 14x32 micro-kernel;
 *   emulated (every other ISA): the fp32 tile, blocks and micro-kernel of that ISA on panels of
 *     values rounded to bf16 and kept as fp32. A product of two bf16 is exact in fp32, so both give
 *     the exact products summed in fp32; they differ only in the order of the sums and in that
 *     vdpbf16ps treats bf16 denormal inputs as zero and flushes denormal results (Intel SDM),
 *     which emulation does not.
 * Reference: Kalamkar et al. 2019 (arXiv 1905.12322) for the recipe; Intel SDM for VDPBF16PS. */
#include "gemm_internal.h"
#include "gemm_pack.h"
#include "pk_kernel.h"

float pk_round_bf16(float x) { return pk_bf16_round(x); }

pk_status pk_round_bf16_array(float *dst, const float *src, int64_t n) {
  PK_TRY(pk_check_vector(dst, n, sizeof(float)));
  PK_TRY(pk_check_vector(src, n, sizeof(float)));
  for (int64_t i = 0; i < n; i++) dst[i] = pk_bf16_round(src[i]);
  return PK_STATUS_OK;
}

/* ---- Native packing: bf16 pairs (pk_bf16_pair_word: gemm_pack.h) ----------------------------- */

/* 16 pair words from (lo, hi) with the CPU's own rounding, VCVTNE2PS2BF16 (nearest even, NaN made
 * quiet, like pk_bf16_round512; it also flushes denormals, which vdpbf16ps would flush anyway),
 * then one word shuffle into pairs: 2 instructions instead of the emulation's 16. */
PK_TARGET_AVX512BF16 static inline __attribute__((always_inline)) __m512i pair_words_native(__m512 lo, __m512 hi) {
  const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* words 0-15: lo, 16-31: hi */
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, halves);
}

/* Element (p, r) at src[p*ld + r] (A in TN, B in NN/TN): rows p and p + 1 of the block, 16
 * values of r at a time, make 16 pair words; rows past mn and the k past an odd kc are zero. The
 * pair of rows is packed into every panel before the next pair, so each source line is read once
 * (panel by panel, the 4 panels of a TN A block re-read each line from L2: 1-4% slower on the
 * weight gradient 2048x512x4096 TN at 1 thread, two side-by-side runs on Zen 4). */
PK_TARGET_AVX512BF16 static inline __attribute__((always_inline)) void pack_pairs_contiguous(
    uint32_t *restrict dst, const float *restrict src, int64_t ld, int64_t mn, int64_t kc, const int R) {
  const int64_t kw = (kc + 1) / 2;
  for (int64_t q = 0; q < kw; q++) {
    const float *lo_row = src + 2 * q * ld, *hi_row = lo_row + ld;
    const int odd = 2 * q + 1 == kc; /* the last k of an odd kc pairs with zero */
    for (int64_t r0 = 0; r0 < mn; r0 += R) {
      uint32_t *d = dst + r0 * kw + q * R;
      for (int h = 0; h < R; h += 16) {
        const __mmask16 load = pk_mask16(mn - r0 - h), store = pk_mask16(R - h);
        const __m512 lo = _mm512_maskz_loadu_ps(load, lo_row + r0 + h);
        const __m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(load, hi_row + r0 + h);
        _mm512_mask_storeu_epi32(d + h, store, pair_words_native(lo, hi));
      }
    }
  }
}

/* Element (p, r) at src[r*ld + p] (A in NN/NT, B in NT): 16 rows of 16 k transposed in registers
 * (columns k = p + c), consecutive columns paired; the last kc % 16 values one by one. */
PK_TARGET_AVX512BF16 static inline __attribute__((always_inline)) void pack_pairs_transposed(
    uint32_t *restrict dst, const float *restrict src, int64_t ld, int64_t mn, int64_t kc, const int R) {
  const int64_t kw = (kc + 1) / 2;
  for (int64_t r0 = 0; r0 < mn; r0 += R) {
    const int64_t rr = mn - r0 < R ? mn - r0 : R;
    uint32_t *d = dst + r0 * kw;
    const float *s = src + r0 * ld;
    int64_t p = 0;
    for (; p + 16 <= kc; p += 16) {
      for (int h = 0; h < R; h += 16) {
        const int64_t rows = rr - h; /* rows of this 16 present (any beyond 16 are not read) */
        __m512 r[16];
        for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_loadu_ps(s + (h + i) * ld + p) : _mm512_setzero_ps();
        transpose16x16(r);
        const __mmask16 store = pk_mask16(R - h);
        for (int j = 0; j < 8; j++)
          _mm512_mask_storeu_epi32(d + (p / 2 + j) * R + h, store, pair_words_native(r[2 * j], r[2 * j + 1]));
      }
    }
    for (; p < kc; p += 2) /* p is even here */
      for (int r = 0; r < R; r++) {
        const float lo = r < rr ? s[r * ld + p] : 0.0f, hi = r < rr && p + 1 < kc ? s[r * ld + p + 1] : 0.0f;
        d[p / 2 * R + r] = pk_bf16_pair_word(lo, hi);
      }
  }
}

PK_TARGET_AVX512BF16 static void pack_a_pairs(void *dst, const float *src, int64_t ld, int trans, int64_t mn,
                                          int64_t kc) {
  if (trans) pack_pairs_contiguous((uint32_t *)dst, src, ld, mn, kc, 14);
  else pack_pairs_transposed((uint32_t *)dst, src, ld, mn, kc, 14);
}

PK_TARGET_AVX512BF16 static void pack_b_pairs(void *dst, const float *src, int64_t ld, int trans, int64_t mn,
                                          int64_t kc) {
  if (!trans) pack_pairs_contiguous((uint32_t *)dst, src, ld, mn, kc, 32);
  else pack_pairs_transposed((uint32_t *)dst, src, ld, mn, kc, 32);
}

/* ---- Emulated packing: fp32 panels of bf16-rounded values (gemm_pack.h, round = 1) ---------- */
PK_DEFINE_PACK(pack_a_scalar_rounded, PK_TARGET_NONE, 4, trans, 1)
PK_DEFINE_PACK(pack_b_scalar_rounded, PK_TARGET_NONE, 8, !trans, 1)
PK_DEFINE_PACK(pack_a_avx2_rounded, PK_TARGET_AVX2, 6, trans, 1)
PK_DEFINE_PACK(pack_b_avx2_rounded, PK_TARGET_AVX2, 16, !trans, 1)

PK_TARGET_AVX512 static void pack_a_avx512_rounded(void *dst, const float *src, int64_t ld, int trans,
                                                   int64_t mn, int64_t kc) {
  pack_avx512((float *)dst, src, ld, trans, mn, kc, 14, 1);
}

PK_TARGET_AVX512 static void pack_b_avx512_rounded(void *dst, const float *src, int64_t ld, int trans,
                                                   int64_t mn, int64_t kc) {
  pack_avx512((float *)dst, src, ld, !trans, mn, kc, 32, 1);
}

static const pk_gemm_pack_fn EMULATED_PACK[3][2] = {
    [PK_ISA_SCALAR] = {pack_a_scalar_rounded, pack_b_scalar_rounded},
    [PK_ISA_AVX2] = {pack_a_avx2_rounded, pack_b_avx2_rounded},
    [PK_ISA_AVX512] = {pack_a_avx512_rounded, pack_b_avx512_rounded},
};

/* ---- Native blocks (Zen 4: 32 KiB L1d, 1 MiB L2 a core, 32 MiB L3) ---------------------------
 * The 14x32 tile (gemm_ukernel_avx512_14x32.c). A packed bf16 element takes half the bytes of an
 * fp32 one, so at the fp32 KC the panels are half the size; see the measured choices below. */
#ifndef PK_BGEMM_A_BLOCK
#define PK_BGEMM_A_BLOCK (28 * 1024)
#endif
#ifndef PK_BGEMM_KC
#define PK_BGEMM_KC 1024
#endif
#ifndef PK_BGEMM_KC_TN
#define PK_BGEMM_KC_TN 512
#endif
#ifndef PK_BGEMM_NC
#define PK_BGEMM_NC 2048
#endif
_Static_assert(PK_BGEMM_KC % 2 == 0 && PK_BGEMM_KC_TN % 2 == 0, "a KC block must hold whole pairs");
static const pk_gemm_config NATIVE = {14, 32, 2, PK_BGEMM_A_BLOCK, PK_BGEMM_KC, PK_BGEMM_KC_TN, PK_BGEMM_NC,
                                      pk_gemm_ukernel_avx512bf16_14x32, pack_a_pairs, pack_b_pairs};

pk_status pk_bgemm(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  PK_TRY(pk_sgemm_check(layout, m, n, k, a, lda, b, ldb, c, ldc));
  if (pk_isa_bf16_active()) return pk_gemm_run(&NATIVE, layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const pk_isa isa = pk_isa_active();
  pk_gemm_config cfg = *pk_gemm_config_fp32(isa);
  cfg.pack_a = EMULATED_PACK[isa][0];
  cfg.pack_b = EMULATED_PACK[isa][1];
  return pk_gemm_run(&cfg, layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
