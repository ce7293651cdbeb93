/* attention.c: fused rotary multi-query causal attention, forward and backward (pk_attention.h).
 * FlashAttention-2 (Dao 2023, alg. 1 and 2) on CPU: each (batch, query block) tile stacks its
 * BQ tokens × H heads into one tall M×Q matrix against the shared K/V head, walks the key blocks
 * left of the diagonal with an online softmax, and never stores more than an M×BK score tile.
 * The tile products run on a small register-blocked micro-kernel (AVX-512 6×64, AVX2 6×16, or a
 * plain loop) inside the OpenMP team: they are too small for pk_sgemm's packing, and pk_sgemm
 * would start a nested team. In bf16 (pk_attention.h, "Precision") the operands are rounded into
 * pair words (bf16 of k and k + 1 in one 32-bit word, as pk_bgemm's panels) and the products run on
 * a 6×64 vdpbf16ps micro-kernel, or on an emulation of it with fp32 arithmetic. Not a general
 * attention: causal, one K/V head, RoPE always on. */
#include "pk_attention.h"
#include "gemm_pack.h"
#include "pk_kernel.h"
#include "pk_omp.h"
#include <math.h>
#include <string.h>

enum { BK = 64, TILE_ROWS = 128 };

/* Scratch offsets round up to 16 floats (64 bytes: whole AVX-512 vectors, cache lines). */
static int64_t pad16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* Per-calling-thread scratch of the forward and the backward (grow-only, see pk_kernel.h). */
static _Thread_local pk_scratch tl_forward, tl_backward;

/* ---- C(m×n) (=|+=) A(m×k) · B(k×n); A[i,p] = a[i·ars + p·acs], B row p at b + p·ldb. ---- */

static void mm_scalar(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                      const float *b, int64_t ldb, float *c, int64_t ldc, int acc) {
  for (int64_t i = 0; i < m; i++) {
    float *cr = c + i * ldc;
    if (!acc) memset(cr, 0, (size_t)n * sizeof(float));
    for (int64_t p = 0; p < k; p++) {
      float av = a[i * ars + p * acs];
      const float *br = b + p * ldb;
      for (int64_t j = 0; j < n; j++) cr[j] += av * br[j];
    }
  }
}

#if defined(__x86_64__)
typedef void (*mk_fn)(int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,
                      int64_t ldb, float *c, int64_t ldc, __mmask16 last, int acc);

/* An MR × (NV·16) tile; the last of the NV vectors is masked by `last`. */
#define PK_MK(MR, NV)                                                                            \
  static PK_TARGET_AVX512 void mk_##MR##_##NV(int64_t k, const float *a, int64_t ars,          \
                                              int64_t acs, const float *b, int64_t ldb,        \
                                              float *c, int64_t ldc, __mmask16 last, int acc) { \
    __m512 cr[MR][NV];                                                                           \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        cr[i][v] = acc ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, c + i * ldc + 16 * v) \
                       : _mm512_setzero_ps();                                                    \
    for (int64_t p = 0; p < k; p++) {                                                            \
      __m512 bv[NV];                                                                             \
      for (int v = 0; v < NV; v++)                                                               \
        bv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, b + p * ldb + 16 * v);        \
      for (int i = 0; i < MR; i++) {                                                             \
        __m512 av = _mm512_set1_ps(a[i * ars + p * acs]);                                        \
        for (int v = 0; v < NV; v++) cr[i][v] = _mm512_fmadd_ps(av, bv[v], cr[i][v]);           \
      }                                                                                          \
    }                                                                                            \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, v == NV - 1 ? last : 0xFFFF, cr[i][v]);      \
  }
#define PK_MK_ROW(MR) PK_MK(MR, 1) PK_MK(MR, 2) PK_MK(MR, 3) PK_MK(MR, 4)
PK_MK_ROW(1) PK_MK_ROW(2) PK_MK_ROW(3) PK_MK_ROW(4) PK_MK_ROW(5) PK_MK_ROW(6)
#define PK_MK_REF(MR) {mk_##MR##_1, mk_##MR##_2, mk_##MR##_3, mk_##MR##_4}
static const mk_fn mk_table[6][4] = {PK_MK_REF(1), PK_MK_REF(2), PK_MK_REF(3),
                                     PK_MK_REF(4), PK_MK_REF(5), PK_MK_REF(6)};

static void mm_avx512(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                      const float *b, int64_t ldb, float *c, int64_t ldc, int acc) {
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    int64_t nn = n - j0 < 64 ? n - j0 : 64;
    int nv = (int)((nn + 15) / 16);
    __mmask16 last = pk_mask16(nn - 16 * (nv - 1));
    for (int64_t i0 = 0; i0 < m; i0 += 6) {
      int mr = (int)(m - i0 < 6 ? m - i0 : 6);
      mk_table[mr - 1][nv - 1](k, a + i0 * ars, ars, acs, b + j0, ldb, c + i0 * ldc + j0, ldc,
                               last, acc);
    }
  }
}
#endif

#if defined(__x86_64__)
typedef void (*mk2_fn)(int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,
                       int64_t ldb, float *c, int64_t ldc, int64_t lastn, int acc);

/* AVX2 (16 ymm registers): an MR × (NV·8) tile, the last vector holding lastn (1..8) columns. */
#define PK_MK2(MR, NV)                                                                            \
  static PK_TARGET_AVX2 void mk2_##MR##_##NV(int64_t k, const float *a, int64_t ars,            \
                                             int64_t acs, const float *b, int64_t ldb,         \
                                             float *c, int64_t ldc, int64_t lastn, int acc) {  \
    const __m256i full = _mm256_set1_epi32(-1), last = pk_mask8(lastn);                          \
    __m256 cr[MR][NV];                                                                           \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        cr[i][v] = acc ? _mm256_maskload_ps(c + i * ldc + 8 * v, v == NV - 1 ? last : full)      \
                       : _mm256_setzero_ps();                                                    \
    for (int64_t p = 0; p < k; p++) {                                                            \
      __m256 bv[NV];                                                                             \
      for (int v = 0; v < NV; v++)                                                               \
        bv[v] = _mm256_maskload_ps(b + p * ldb + 8 * v, v == NV - 1 ? last : full);              \
      for (int i = 0; i < MR; i++) {                                                             \
        __m256 av = _mm256_broadcast_ss(a + i * ars + p * acs);                                  \
        for (int v = 0; v < NV; v++) cr[i][v] = _mm256_fmadd_ps(av, bv[v], cr[i][v]);           \
      }                                                                                          \
    }                                                                                            \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        _mm256_maskstore_ps(c + i * ldc + 8 * v, v == NV - 1 ? last : full, cr[i][v]);          \
  }
#define PK_MK2_ROW(MR) PK_MK2(MR, 1) PK_MK2(MR, 2)
PK_MK2_ROW(1) PK_MK2_ROW(2) PK_MK2_ROW(3) PK_MK2_ROW(4) PK_MK2_ROW(5) PK_MK2_ROW(6)
#define PK_MK2_REF(MR) {mk2_##MR##_1, mk2_##MR##_2}
static const mk2_fn mk2_table[6][2] = {PK_MK2_REF(1), PK_MK2_REF(2), PK_MK2_REF(3),
                                       PK_MK2_REF(4), PK_MK2_REF(5), PK_MK2_REF(6)};

static void mm_avx2(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                    const float *b, int64_t ldb, float *c, int64_t ldc, int acc) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    int64_t nn = n - j0 < 16 ? n - j0 : 16;
    int nv = (int)((nn + 7) / 8);
    for (int64_t i0 = 0; i0 < m; i0 += 6) {
      int mr = (int)(m - i0 < 6 ? m - i0 : 6);
      mk2_table[mr - 1][nv - 1](k, a + i0 * ars, ars, acs, b + j0, ldb, c + i0 * ldc + j0, ldc,
                                nn - 8 * (nv - 1), acc);
    }
  }
}
#endif

/* simd: 2 = AVX-512, 1 = AVX2, 0 = scalar (the pk_isa value). */
static void mm(int simd, int64_t m, int64_t n, int64_t k, const float *a, int64_t ars,
               int64_t acs, const float *b, int64_t ldb, float *c, int64_t ldc, int acc) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) { mm_avx512(m, n, k, a, ars, acs, b, ldb, c, ldc, acc); return; }
  if (simd == PK_ISA_AVX2) { mm_avx2(m, n, k, a, ars, acs, b, ldb, c, ldc, acc); return; }
#endif
  mm_scalar(m, n, k, a, ars, acs, b, ldb, c, ldc, acc);
}

/* ---- bf16 tile products ----
 * A pair word holds the bf16 (round to nearest even, pk_bf16_round_bits: the rule of pk_bgemm) of
 * two consecutive elements along the product's k: element 2q in the low half, 2q + 1 in the high
 * half, the operand vdpbf16ps multiplies as one step. C(m×n) (=|+=) A(m × 2kw) · B(2kw × n), A's
 * word (i, q) at a[i·ars + q·acs], B's pair row q (n words) at b + q·ldb; fp32 C. */

/* dst[q] = the pair (x[2q], x[2q + 1]) for q < ceil(n/2); x[n] reads as 0 when n is odd. */
static void pairs_along_scalar(uint32_t *dst, const float *x, int64_t n) {
  for (int64_t q = 0; 2 * q < n; q++) dst[q] = pk_bf16_pair_word(x[2 * q], 2 * q + 1 < n ? x[2 * q + 1] : 0.0f);
}

/* dst[j] = the pair (lo[j], hi[j]) for j < n; hi NULL reads as 0 (an odd row count's last pair). */
static void pairs_across_scalar(uint32_t *dst, const float *lo, const float *hi, int64_t n) {
  for (int64_t j = 0; j < n; j++) dst[j] = pk_bf16_pair_word(lo[j], hi ? hi[j] : 0.0f);
}

/* The products emulated (no AVX512_BF16): the pair words unpacked into fp32 (a bf16 is the high
 * half of its fp32, so each unpack is a shift or a mask, exact) and multiplied on the fp32
 * micro-kernels above; the product of two bf16 is exact in fp32, so this equals vdpbf16ps up to the
 * order of the fp32 sums and its flush of denormals, at the fp32 kernels' speed. The unpacked
 * operands are O(m·k + k·n) beside the O(m·n·k) product. */
/* Words along k: n words at w → 2n floats at f, in order (low half first). */
static void unpack_along_scalar(float *f, const uint32_t *w, int64_t n) {
  for (int64_t q = 0; q < n; q++) {
    const uint32_t lo = w[q] << 16, hi = w[q] & 0xFFFF0000u;
    memcpy(f + 2 * q, &lo, 4);
    memcpy(f + 2 * q + 1, &hi, 4);
  }
}

/* A pair row: n words at w → the low halves at lo[0..n), the high halves at hi[0..n). */
static void unpack_across_scalar(float *lo, float *hi, const uint32_t *w, int64_t n) {
  for (int64_t j = 0; j < n; j++) {
    const uint32_t l = w[j] << 16, h = w[j] & 0xFFFF0000u;
    memcpy(lo + j, &l, 4);
    memcpy(hi + j, &h, 4);
  }
}

#if defined(__x86_64__)
/* 8 words = 16 bf16 in order, widened to 32 bits and shifted into the high half: 16 floats. */
static PK_TARGET_AVX512 void unpack_along_avx512(float *f, const uint32_t *w, int64_t n) {
  for (int64_t q = 0; q < n; q += 8) {
    const int64_t r = n - q < 8 ? n - q : 8;
    const __m256i v = _mm256_maskz_loadu_epi32((__mmask8)pk_mask16(r), w + q);
    _mm512_mask_storeu_ps(f + 2 * q, pk_mask16(2 * r),
                          _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)));
  }
}

static PK_TARGET_AVX512 void unpack_across_avx512(float *lo, float *hi, const uint32_t *w, int64_t n) {
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = pk_mask16(n - j);
    const __m512i v = _mm512_maskz_loadu_epi32(k, w + j);
    _mm512_mask_storeu_ps(lo + j, k, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    _mm512_mask_storeu_ps(hi + j, k, _mm512_castsi512_ps(_mm512_and_si512(v, high)));
  }
}

static PK_TARGET_AVX2 void unpack_along_avx2(float *f, const uint32_t *w, int64_t n) {
  for (int64_t q = 0; q < n; q += 4) {
    const int64_t r = n - q < 4 ? n - q : 4;
    const __m128i v = _mm_maskload_epi32((const int *)(w + q), _mm256_castsi256_si128(pk_mask8(r)));
    _mm256_maskstore_ps(f + 2 * q, pk_mask8(2 * r),
                        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)));
  }
}

static PK_TARGET_AVX2 void unpack_across_avx2(float *lo, float *hi, const uint32_t *w, int64_t n) {
  const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
  for (int64_t j = 0; j < n; j += 8) {
    const __m256i k = pk_mask8(n - j);
    const __m256i v = _mm256_maskload_epi32((const int *)(w + j), k);
    _mm256_maskstore_ps(lo + j, k, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    _mm256_maskstore_ps(hi + j, k, _mm256_castsi256_ps(_mm256_and_si256(v, high)));
  }
}
#endif

static void unpack_along(int simd, float *f, const uint32_t *w, int64_t n) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) { unpack_along_avx512(f, w, n); return; }
  if (simd == PK_ISA_AVX2) { unpack_along_avx2(f, w, n); return; }
#endif
  unpack_along_scalar(f, w, n);
}

static void unpack_across(int simd, float *lo, float *hi, const uint32_t *w, int64_t n) {
#if defined(__x86_64__)
  if (simd == PK_ISA_AVX512) { unpack_across_avx512(lo, hi, w, n); return; }
  if (simd == PK_ISA_AVX2) { unpack_across_avx2(lo, hi, w, n); return; }
#endif
  unpack_across_scalar(lo, hi, w, n);
}

/* mmb's operands unpacked into work (2·kw·(m + n) floats), then mm. A with its words along k
 * (acs = 1) becomes row-major m × 2kw; A with its words along m (ars = 1: word row q holds rows 2q
 * and 2q + 1 of Aᵀ) becomes Aᵀ's 2kw rows of m; B's pair rows become 2kw rows of n. */
static void mmb_emulated(int simd, float *work, int64_t m, int64_t n, int64_t kw, const uint32_t *a,
                         int64_t ars, int64_t acs, const uint32_t *b, int64_t ldb, float *c, int64_t ldc,
                         int acc) {
  float *af = work, *bf = work + 2 * kw * m;
  int64_t afrs, afcs;
  if (acs == 1) {
    for (int64_t i = 0; i < m; i++) unpack_along(simd, af + i * 2 * kw, a + i * ars, kw);
    afrs = 2 * kw, afcs = 1;
  } else if (ars == 1) {
    for (int64_t q = 0; q < kw; q++) unpack_across(simd, af + 2 * q * m, af + (2 * q + 1) * m, a + q * acs, m);
    afrs = 1, afcs = m;
  } else {
    for (int64_t i = 0; i < m; i++)
      for (int64_t q = 0; q < kw; q++) unpack_along_scalar(af + i * 2 * kw + 2 * q, a + i * ars + q * acs, 1);
    afrs = 2 * kw, afcs = 1;
  }
  for (int64_t q = 0; q < kw; q++) unpack_across(simd, bf + 2 * q * n, bf + (2 * q + 1) * n, b + q * ldb, n);
  mm(simd, m, n, 2 * kw, af, afrs, afcs, bf, n, c, ldc, acc);
}

#if defined(__x86_64__)
/* pairs_along_scalar on AVX-512: 32 values rounded, their bf16 halves gathered in order. */
static PK_TARGET_AVX512 void pairs_along_avx512(uint32_t *dst, const float *x, int64_t n) {
  /* 16-bit lane k of the result takes lane 2k + 1 (the high, bf16 half of value k) of (lo, hi). */
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i odd = _mm512_add_epi32(_mm512_mullo_epi32(iota, _mm512_set1_epi32(0x40004)),
                                       _mm512_set1_epi32(0x30001));
  for (int64_t j = 0; j < n; j += 32) {
    const __m512 lo = _mm512_maskz_loadu_ps(pk_mask16(n - j), x + j);
    const __m512 hi = _mm512_maskz_loadu_ps(pk_mask16(n - j - 16), x + j + 16);
    const __m512i w = _mm512_permutex2var_epi16(pk_bf16_round512(lo), odd, pk_bf16_round512(hi));
    const int64_t words = ((n - j < 32 ? n - j : 32) + 1) / 2;
    _mm512_mask_storeu_epi32(dst + j / 2, pk_mask16(words), w);
  }
}

static PK_TARGET_AVX512 void pairs_across_avx512(uint32_t *dst, const float *lo, const float *hi, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = pk_mask16(n - j);
    const __m512 l = _mm512_maskz_loadu_ps(k, lo + j), h = hi ? _mm512_maskz_loadu_ps(k, hi + j) : _mm512_setzero_ps();
    _mm512_mask_storeu_epi32(dst + j, k, pk_bf16_pair_word512(l, h));
  }
}

typedef void (*mkb_fn)(int64_t kw, const uint32_t *a, int64_t ars, int64_t acs, const uint32_t *b,
                       int64_t ldb, float *c, int64_t ldc, __mmask16 last, int acc);

/* Native (AVX512_BF16): the MR × (NV·16) tile of mk_*, one vdpbf16ps per pair step and vector. */
#define PK_MKB(MR, NV)                                                                           \
  static PK_TARGET_AVX512BF16 void mkb_##MR##_##NV(int64_t kw, const uint32_t *a, int64_t ars,  \
                                                   int64_t acs, const uint32_t *b, int64_t ldb, \
                                                   float *c, int64_t ldc, __mmask16 last,       \
                                                   int acc) {                                   \
    __m512 cr[MR][NV];                                                                           \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        cr[i][v] = acc ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, c + i * ldc + 16 * v) \
                       : _mm512_setzero_ps();                                                    \
    for (int64_t q = 0; q < kw; q++) {                                                           \
      __m512i bv[NV];                                                                            \
      for (int v = 0; v < NV; v++)                                                               \
        bv[v] = _mm512_maskz_loadu_epi32(v == NV - 1 ? last : 0xFFFF, b + q * ldb + 16 * v);     \
      for (int i = 0; i < MR; i++) {                                                             \
        __m512i av = _mm512_set1_epi32((int)a[i * ars + q * acs]);                               \
        for (int v = 0; v < NV; v++)                                                             \
          cr[i][v] = _mm512_dpbf16_ps(cr[i][v], (__m512bh)av, (__m512bh)bv[v]);                  \
      }                                                                                          \
    }                                                                                            \
    for (int i = 0; i < MR; i++)                                                                 \
      for (int v = 0; v < NV; v++)                                                               \
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, v == NV - 1 ? last : 0xFFFF, cr[i][v]);      \
  }
#define PK_MKB_ROW(MR) PK_MKB(MR, 1) PK_MKB(MR, 2) PK_MKB(MR, 3) PK_MKB(MR, 4)
PK_MKB_ROW(1) PK_MKB_ROW(2) PK_MKB_ROW(3) PK_MKB_ROW(4) PK_MKB_ROW(5) PK_MKB_ROW(6)
#define PK_MKB_REF(MR) {mkb_##MR##_1, mkb_##MR##_2, mkb_##MR##_3, mkb_##MR##_4}
static const mkb_fn mkb_table[6][4] = {PK_MKB_REF(1), PK_MKB_REF(2), PK_MKB_REF(3),
                                       PK_MKB_REF(4), PK_MKB_REF(5), PK_MKB_REF(6)};

static void mmb_native(int64_t m, int64_t n, int64_t kw, const uint32_t *a, int64_t ars, int64_t acs,
                       const uint32_t *b, int64_t ldb, float *c, int64_t ldc, int acc) {
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    int64_t nn = n - j0 < 64 ? n - j0 : 64;
    int nv = (int)((nn + 15) / 16);
    __mmask16 last = pk_mask16(nn - 16 * (nv - 1));
    for (int64_t i0 = 0; i0 < m; i0 += 6) {
      int mr = (int)(m - i0 < 6 ? m - i0 : 6);
      mkb_table[mr - 1][nv - 1](kw, a + i0 * ars, ars, acs, b + j0, ldb, c + i0 * ldc + j0, ldc, last, acc);
    }
  }
}
#endif

/* How the bf16 products run: natively (vdpbf16ps) or emulated on the active ISA. */
typedef struct { int simd, native; } bf16_path;

/* The floats mmb_emulated unpacks into for any product of a tile of M rows (emulated paths
 * only): the largest 2·kw·(m + n) of the forward's and the backward's products. */
static int64_t unpack_floats(bf16_path p, int64_t M, int64_t Q) {
  if (p.native) return 0;
  int64_t a = Q * (M + BK), b = BK * (M + Q), c = 2 * ((M + 1) / 2) * (BK + Q);
  int64_t most = a > b ? a : b;
  return pad16(most > c ? most : c);
}

/* work: unpack_floats(p, M, Q) floats of this thread (unused natively). */
static void mmb(bf16_path p, float *work, int64_t m, int64_t n, int64_t kw, const uint32_t *a,
                int64_t ars, int64_t acs, const uint32_t *b, int64_t ldb, float *c, int64_t ldc, int acc) {
#if defined(__x86_64__)
  if (p.native) { mmb_native(m, n, kw, a, ars, acs, b, ldb, c, ldc, acc); return; }
#endif
  mmb_emulated(p.simd, work, m, n, kw, a, ars, acs, b, ldb, c, ldc, acc);
}

static void pairs_along(bf16_path p, uint32_t *dst, const float *x, int64_t n) {
#if defined(__x86_64__)
  if (p.simd == PK_ISA_AVX512) { pairs_along_avx512(dst, x, n); return; }
#endif
  pairs_along_scalar(dst, x, n);
}

static void pairs_across(bf16_path p, uint32_t *dst, const float *lo, const float *hi, int64_t n) {
#if defined(__x86_64__)
  if (p.simd == PK_ISA_AVX512) { pairs_across_avx512(dst, lo, hi, n); return; }
#endif
  pairs_across_scalar(dst, lo, hi, n);
}

/* ---- softmax rows ---- */

/* Forward online-softmax step on one score row s[0..n) of which the first nv are unmasked:
 * updates *m, returns alpha = exp(m_old − m_new); s becomes P = exp(s − m_new) (0 past nv);
 * *sum receives Σ P. nv >= 1. */
static float softmax_step_scalar(float *s, int64_t n, int64_t nv, float *m, float *sum) {
  float mx = s[0];
  for (int64_t j = 1; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
  float mnew = mx > *m ? mx : *m;
  float alpha = expf(*m - mnew);
  float acc = 0.0f;
  for (int64_t j = 0; j < nv; j++) { s[j] = expf(s[j] - mnew); acc += s[j]; }
  for (int64_t j = nv; j < n; j++) s[j] = 0.0f;
  *m = mnew;
  *sum = acc;
  return alpha;
}

/* Backward: p = exp(s − lse) (0 past nv) into s, ds = p · (dp − d) into dp. */
static void softmax_grad_scalar(float *s, float *dp, int64_t n, int64_t nv, float lse, float d) {
  for (int64_t j = 0; j < nv; j++) {
    float p = expf(s[j] - lse);
    s[j] = p;
    dp[j] = p * (dp[j] - d);
  }
  for (int64_t j = nv; j < n; j++) { s[j] = 0.0f; dp[j] = 0.0f; }
}

#if defined(__x86_64__)
static PK_TARGET_AVX512 float softmax_step_avx512(float *s, int64_t n, int64_t nv, float *m,
                                                   float *sum) {
  __m512 vmx = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < nv; j += 16)
    vmx = _mm512_max_ps(vmx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY),
                                                  pk_mask16(nv - j), s + j));
  float mx = _mm512_reduce_max_ps(vmx);
  float mnew = mx > *m ? mx : *m;
  float alpha = expf(*m - mnew);
  __m512 vm = _mm512_set1_ps(mnew), vs = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    __mmask16 live = pk_mask16(n - j), valid = nv > j ? pk_mask16(nv - j) : 0;
    __m512 p = _mm512_maskz_mov_ps(valid, pk_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, s + j), vm)));
    vs = _mm512_add_ps(vs, p);
    _mm512_mask_storeu_ps(s + j, live, p);
  }
  *m = mnew;
  *sum = _mm512_reduce_add_ps(vs);
  return alpha;
}

static PK_TARGET_AVX512 void softmax_grad_avx512(float *s, float *dp, int64_t n, int64_t nv,
                                                  float lse, float d) {
  __m512 vl = _mm512_set1_ps(lse), vd = _mm512_set1_ps(d);
  for (int64_t j = 0; j < n; j += 16) {
    __mmask16 live = pk_mask16(n - j), valid = nv > j ? pk_mask16(nv - j) : 0;
    __m512 p = _mm512_maskz_mov_ps(valid, pk_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, s + j), vl)));
    __m512 g = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(live, dp + j), vd));
    _mm512_mask_storeu_ps(s + j, live, p);
    _mm512_mask_storeu_ps(dp + j, live, g);
  }
}
#endif

#if defined(__x86_64__)
/* AVX2: 8-lane chunks over the unmasked prefix, libm expf on its tail. */
static PK_TARGET_AVX2 float softmax_step_avx2(float *s, int64_t n, int64_t nv, float *m,
                                               float *sum) {
  int64_t n8 = nv & ~(int64_t)7, j;
  float mx = s[0];
  if (n8 > 0) {
    __m256 v = _mm256_loadu_ps(s);
    for (j = 8; j < n8; j += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(s + j));
    mx = pk_hmax256(v);
  }
  for (j = n8; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
  float mnew = mx > *m ? mx : *m;
  float alpha = expf(*m - mnew);
  __m256 vm = _mm256_set1_ps(mnew), vs = _mm256_setzero_ps();
  for (j = 0; j < n8; j += 8) {
    __m256 p = pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    vs = _mm256_add_ps(vs, p);
    _mm256_storeu_ps(s + j, p);
  }
  float acc = pk_hsum256(vs);
  for (j = n8; j < nv; j++) { s[j] = expf(s[j] - mnew); acc += s[j]; }
  for (j = nv; j < n; j++) s[j] = 0.0f;
  *m = mnew;
  *sum = acc;
  return alpha;
}

static PK_TARGET_AVX2 void softmax_grad_avx2(float *s, float *dp, int64_t n, int64_t nv,
                                              float lse, float d) {
  int64_t n8 = nv & ~(int64_t)7, j;
  __m256 vl = _mm256_set1_ps(lse), vd = _mm256_set1_ps(d);
  for (j = 0; j < n8; j += 8) {
    __m256 p = pk_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vl));
    _mm256_storeu_ps(s + j, p);
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dp + j), vd)));
  }
  softmax_grad_scalar(s + n8, dp + n8, n - n8, nv - n8, lse, d);
}
#endif

/* ---- rotary ---- */

/* cs[t·Q + i] = cos(theta), cs[t·Q + Q/2 + i] = sin(theta), theta = t · base^(-2i/Q). */
static void rope_table(float *cs, int64_t T, int64_t Q) {
  int64_t half = Q / 2;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < half; i++) {
    const double freq = pk_rope_frequency(i, Q);  /* once per i, not per (t, i) */
    for (int64_t t = 0; t < T; t++) {
      double theta = (double)t * freq;
      cs[t * Q + i] = (float)cos(theta);
      cs[t * Q + half + i] = (float)sin(theta);
    }
  }
}

/* The table for (T, Q), kept per calling thread and rebuilt only when the shape changes: every
 * layer's forward and backward use the same one, so a `small` step built it 16 times (T·Q/2 = 16k
 * double cos and sin each). NULL when out of memory. */
static _Thread_local pk_scratch tl_rope;
static _Thread_local int64_t tl_rope_T = -1, tl_rope_Q = -1;

static const float *rope_table_cached(int64_t T, int64_t Q) {
  if (tl_rope_T == T && tl_rope_Q == Q) return tl_rope.p;
  tl_rope_T = tl_rope_Q = -1;
  float *cs = pk_scratch_reserve(&tl_rope, (size_t)pad16(T * Q));
  if (!cs) return NULL;
  rope_table(cs, T, Q);
  tl_rope_T = T;
  tl_rope_Q = Q;
  return cs;
}

/* y = R(t)ᵀ x · scale (inverse rotation, for gradients). */
static void rope_apply_inverse(float *y, const float *x, const float *cs, int64_t Q, float scale) {
  int64_t half = Q / 2;
  const float *c = cs, *sn = cs + half;
  for (int64_t i = 0; i < half; i++) {
    float d1 = x[i], d2 = x[i + half];
    y[i] = (d1 * c[i] + d2 * sn[i]) * scale;
    y[i + half] = (d2 * c[i] - d1 * sn[i]) * scale;
  }
}

/* ---- shared setup ---- */

static pk_status check_common(int64_t B, int64_t T, int64_t H, int64_t Q, int64_t *width) {
  if (B < 0 || T < 0 || H < 0 || Q < 0 || Q > INT64_MAX / 4) return PK_STATUS_BAD_SIZE;
  int ok = 1;
  int64_t hq = pk_mul_sizes(H, Q, &ok);
  int64_t w = 0;
  if (!ok || __builtin_add_overflow(hq, 2 * Q, &w)) return PK_STATUS_BAD_SIZE;
  int64_t bt = pk_mul_sizes(B, T, &ok);
  (void)pk_mul_sizes(bt, H, &ok);  /* lse */
  (void)pk_mul_sizes(bt, w, &ok);  /* qkv, and the scratch of B·T·Q floats */
  if (!ok) return PK_STATUS_BAD_SIZE;
  *width = w;
  return PK_STATUS_OK;
}

/* Tokens per query tile. */
static int64_t tile_tokens(int64_t H, int64_t T) {
  int64_t bq = TILE_ROWS / (H > 0 ? H : 1);
  if (bq < 1) bq = 1;
  return bq < T ? bq : T;
}

/* Executed product FLOPs per multiplication kind: Σ over tiles and key blocks of 2·M·n·Q. */
static double tile_product_flops(int64_t B, int64_t T, int64_t H, int64_t Q) {
  int64_t bq = tile_tokens(H, T);
  double f = 0.0;
  for (int64_t t0 = 0; t0 < T; t0 += bq) {
    int64_t nq = T - t0 < bq ? T - t0 : bq, tend = t0 + nq;
    for (int64_t s0 = 0; s0 < tend; s0 += BK) {
      int64_t nk = tend - s0 < BK ? tend - s0 : BK;
      f += 2.0 * (double)(nq * H) * (double)nk * (double)Q;
    }
  }
  return f * (double)B;
}

/* The rotated K transposed, kt (B, Q, T), and optionally Vᵀ, vt (B, Q, T). The rotated K rows go
 * to krot (B, T, Q) when it is not NULL (the backward's dS·K reads them); with krot NULL (the
 * forward reads only Kᵀ) each of the nth threads rotates row after row into its own Q floats at
 * tmp + ith·ldtmp instead. */
static void prepare_kv(float *krot, float *tmp, int64_t ldtmp, int nth, float *kt, float *vt,
                       const float *qkv, int64_t ldqkv, const float *cs, int64_t B, int64_t T,
                       int64_t H, int64_t Q) {
  int64_t koff = H * Q, voff = H * Q + Q;
#pragma omp parallel num_threads(nth)
  {
    /* Row r's rotated K at kbase + r·ldk: its row of krot, or this thread's tmp row (ldk 0). */
    float *kbase = krot ? krot : tmp + omp_get_thread_num() * ldtmp;
    int64_t ldk = krot ? Q : 0;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * T; r++) {
      int64_t b = r / T, t = r % T;
      const float *row = qkv + r * ldqkv;
      float *kr = kbase + r * ldk;
      pk_rope_apply(kr, row + koff, cs + t * Q, Q, 1.0f);
      float *ktb = kt + b * Q * T;
      for (int64_t d = 0; d < Q; d++) ktb[d * T + t] = kr[d];
      if (vt) {
        float *vtb = vt + b * Q * T;
        for (int64_t d = 0; d < Q; d++) vtb[d * T + t] = row[voff + d];
      }
    }
  }
}

/* The bf16 operands taken from K and V, per batch b, with Tp = ceil(T/2) pair rows (a last odd
 * row pairs with 0) and the rotated K (never stored as fp32 here):
 *   ktp (B, Q/2, T): word (q, t) = the pair (K'[t, 2q], K'[t, 2q + 1]), Kᵀ for S = Qs·Kᵀ;
 *   kp  (B, Tp, Q): word (u, d) = the pair (K'[2u, d], K'[2u + 1, d]), K for dQs = dS·K (or NULL);
 *   vp  (B, Tp, Q): the same pairs of V rows, for O = P·V (or NULL);
 *   vtp (B, Q/2, T): word (q, t) = the pair (V[t, 2q], V[t, 2q + 1]), Vᵀ for dP = dO·Vᵀ (or NULL).
 * Each of the nth threads rotates its two K rows into its own 2·Q floats at tmp + ith·ldtmp. */
static void prepare_kv_bf16(bf16_path path, float *tmp, int64_t ldtmp, int nth, uint32_t *ktp,
                            uint32_t *kp, uint32_t *vp, uint32_t *vtp, const float *qkv,
                            int64_t ldqkv, const float *cs, int64_t B, int64_t T, int64_t H, int64_t Q) {
  int64_t koff = H * Q, voff = H * Q + Q, hq = Q / 2, Tp = (T + 1) / 2;
#pragma omp parallel num_threads(nth)
  {
    float *k2 = tmp + omp_get_thread_num() * ldtmp;
#pragma omp for schedule(static)
    for (int64_t pr = 0; pr < B * Tp; pr++) {
      int64_t b = pr / Tp, u = pr % Tp, t = 2 * u;
      int rows = t + 1 < T ? 2 : 1;
      const float *row = qkv + (b * T + t) * ldqkv;
      for (int e = 0; e < rows; e++) {
        pk_rope_apply(k2 + e * Q, row + e * ldqkv + koff, cs + (t + e) * Q, Q, 1.0f);
        uint32_t *kc = ktp + b * hq * T + t + e;
        for (int64_t q = 0; q < hq; q++) kc[q * T] = pk_bf16_pair_word(k2[e * Q + 2 * q], k2[e * Q + 2 * q + 1]);
        if (vtp) {
          const float *v = row + e * ldqkv + voff;
          uint32_t *vc = vtp + b * hq * T + t + e;
          for (int64_t q = 0; q < hq; q++) vc[q * T] = pk_bf16_pair_word(v[2 * q], v[2 * q + 1]);
        }
      }
      if (kp) pairs_across(path, kp + pr * Q, k2, rows == 2 ? k2 + Q : NULL, Q);
      if (vp) pairs_across(path, vp + pr * Q, row + voff, rows == 2 ? row + ldqkv + voff : NULL, Q);
    }
  }
}

/* Tile at position p of the work list: the costliest query blocks (last in the sequence, most
 * keys) first, batches inside; positions are dealt to threads in snake order 0..n-1, n-1..0, ...
 * (tile_owner), which balances the causal triangle. Fixed for fixed (B, T, H, nth). */
static void tile_at(int64_t p, int64_t B, int64_t nqb, int64_t *b, int64_t *qb) {
  *qb = nqb - 1 - p / B;
  *b = p % B;
}

static int tile_owner(int64_t p, int nth) {
  int64_t r = p % (2 * (int64_t)nth);
  return (int)(r < nth ? r : 2 * (int64_t)nth - 1 - r);
}

/* ---- forward ---- */

pk_status pk_attention_forward(float *out, int64_t ldo, float *lse, const float *qkv,
                               int64_t ldqkv, int64_t B, int64_t T, int64_t H, int64_t Q,
                               pk_precision precision) {
  int64_t w;
  PK_TRY(check_common(B, T, H, Q, &w));
  PK_TRY(pk_check_matrix(qkv, B * T, w, ldqkv));
  PK_TRY(pk_check_matrix(out, B * T, H * Q, ldo));
  PK_TRY(pk_check_vector(lse, B * H * T, sizeof(float)));
  if (Q % 2 != 0 || (precision != PK_PRECISION_FP32 && precision != PK_PRECISION_BF16))
    return PK_STATUS_BAD_ARGUMENT;
  if (B == 0 || T == 0 || H == 0 || Q == 0) return PK_STATUS_OK;

  int simd = (int)pk_isa_active();
  const int bf16 = precision == PK_PRECISION_BF16;
  const bf16_path path = {simd, bf16 && pk_isa_bf16_active()};
  int nth = pk_threads_get();
  int64_t bq = tile_tokens(H, T), M = bq * H, hq = Q / 2, Tp = (T + 1) / 2;
  /* fp32: qs, o, s, m, l; bf16 adds the pairs of qs (along Q) and of P (along the keys). */
  int64_t per_thread = 2 * pad16(M * Q) + pad16(M * BK) + 2 * pad16(M) +
                       (bf16 ? pad16(M * hq) + pad16(M * BK / 2) + unpack_floats(path, M, Q) : 0);
  int64_t shared = bf16 ? pad16(B * hq * T) + pad16(B * Tp * Q) : pad16(B * T * Q);  /* Kᵀ; bf16 Kᵀ, V pairs */
  if ((double)shared + (double)nth * (double)per_thread > 0x1p60) return PK_STATUS_NO_MEMORY;
  float *scratch = pk_scratch_reserve(&tl_forward, (size_t)(shared + nth * per_thread));
  const float *cs = rope_table_cached(T, Q);
  if (!scratch || !cs) return PK_STATUS_NO_MEMORY;
  float *kt = scratch;
  uint32_t *ktp = (uint32_t *)scratch, *vp = ktp + pad16(B * hq * T);
  float *thread_base = scratch + shared;

  /* S = Qs·Kᵀ reads only Kᵀ: the rotated K rows pass through each thread's (still unused) qs and
   * o (2·Q floats at least). */
  if (bf16) prepare_kv_bf16(path, thread_base, per_thread, nth, ktp, NULL, vp, NULL, qkv, ldqkv, cs, B, T, H, Q);
  else prepare_kv(NULL, thread_base, per_thread, nth, kt, NULL, qkv, ldqkv, cs, B, T, H, Q);

  const float scale = 1.0f / sqrtf((float)Q);
  int64_t nqb = (T + bq - 1) / bq, ntiles = B * nqb;
  int64_t voff = H * Q + Q;
#pragma omp parallel num_threads(nth)
  {
    int ith = omp_get_thread_num();
    float *qs = thread_base + ith * per_thread, *o = qs + pad16(M * Q), *s = o + pad16(M * Q);
    float *mrow = s + pad16(M * BK), *lrow = mrow + pad16(M);
    uint32_t *qsp = (uint32_t *)(lrow + pad16(M)), *pp = qsp + pad16(M * hq);
    float *work = (float *)(pp + pad16(M * BK / 2));  /* emulated bf16 products only */
    int team = omp_get_num_threads();
    for (int64_t tile = 0; tile < ntiles; tile++) {
      if (tile_owner(tile, team) != ith) continue;
      int64_t b, qb;
      tile_at(tile, B, nqb, &b, &qb);
      int64_t t0 = qb * bq;
      int64_t nq = T - t0 < bq ? T - t0 : bq, m = nq * H, tend = t0 + nq;
      for (int64_t i = 0; i < nq; i++) {
        const float *row = qkv + (b * T + t0 + i) * ldqkv;
        for (int64_t h = 0; h < H; h++)
          pk_rope_apply(qs + (i * H + h) * Q, row + h * Q, cs + (t0 + i) * Q, Q, scale);
      }
      if (bf16)
        for (int64_t r = 0; r < m; r++) pairs_along(path, qsp + r * hq, qs + r * Q, Q);
      memset(o, 0, (size_t)(m * Q) * sizeof(float));
      for (int64_t r = 0; r < m; r++) { mrow[r] = -INFINITY; lrow[r] = 0.0f; }
      for (int64_t s0 = 0; s0 < tend; s0 += BK) {
        int64_t nk = tend - s0 < BK ? tend - s0 : BK;
        /* S = Qs · K[s0:s0+nk]ᵀ */
        if (bf16) mmb(path, work, m, nk, hq, qsp, hq, 1, ktp + b * hq * T + s0, T, s, BK, 0);
        else mm(simd, m, nk, Q, qs, Q, 1, kt + b * Q * T + s0, T, s, BK, 0);
        for (int64_t r = 0; r < m; r++) {
          int64_t t = t0 + r / H, nv = t - s0 + 1;
          float *sr = s + r * BK;
          if (nv <= 0) { memset(sr, 0, (size_t)nk * sizeof(float)); continue; }
          if (nv > nk) nv = nk;
          float sum, alpha;
#if defined(__x86_64__)
          if (simd == PK_ISA_AVX512) alpha = softmax_step_avx512(sr, nk, nv, &mrow[r], &sum);
          else if (simd == PK_ISA_AVX2) alpha = softmax_step_avx2(sr, nk, nv, &mrow[r], &sum);
          else
#endif
            alpha = softmax_step_scalar(sr, nk, nv, &mrow[r], &sum);
          lrow[r] = lrow[r] * alpha + sum;
          if (alpha != 1.0f) {
            float *orow = o + r * Q;
            for (int64_t d = 0; d < Q; d++) orow[d] *= alpha;
          }
        }
        /* O += P · V[s0:s0+nk]; bf16 rounds the unnormalised P = exp(s − m) of this block's m. */
        if (bf16) {
          for (int64_t r = 0; r < m; r++) pairs_along(path, pp + r * (BK / 2), s + r * BK, nk);
          mmb(path, work, m, Q, (nk + 1) / 2, pp, BK / 2, 1, vp + (b * Tp + s0 / 2) * Q, Q, o, Q, 1);
        } else {
          mm(simd, m, Q, nk, s, BK, 1, qkv + (b * T + s0) * ldqkv + voff, ldqkv, o, Q, 1);
        }
      }
      for (int64_t r = 0; r < m; r++) {
        int64_t i = r / H, h = r % H, t = t0 + i;
        float inv = 1.0f / lrow[r];
        float *dst = out + (b * T + t) * ldo + h * Q;
        const float *orow = o + r * Q;
        for (int64_t d = 0; d < Q; d++) dst[d] = orow[d] * inv;
        lse[(b * H + h) * T + t] = mrow[r] + logf(lrow[r]);
      }
    }
  }
  if (pk_flops_count_enabled()) pk_flops_add(2.0 * tile_product_flops(B, T, H, Q));
  return PK_STATUS_OK;
}

/* ---- backward ---- */

pk_status pk_attention_backward(float *dqkv, int64_t lddqkv, const float *dout, int64_t lddout,
                                const float *qkv, int64_t ldqkv, const float *out, int64_t ldo,
                                const float *lse, int64_t B, int64_t T, int64_t H, int64_t Q,
                                pk_precision precision) {
  int64_t w;
  PK_TRY(check_common(B, T, H, Q, &w));
  PK_TRY(pk_check_matrix(dqkv, B * T, w, lddqkv));
  PK_TRY(pk_check_matrix(dout, B * T, H * Q, lddout));
  PK_TRY(pk_check_matrix(qkv, B * T, w, ldqkv));
  PK_TRY(pk_check_matrix(out, B * T, H * Q, ldo));
  PK_TRY(pk_check_vector(lse, B * H * T, sizeof(float)));
  if (Q % 2 != 0 || (precision != PK_PRECISION_FP32 && precision != PK_PRECISION_BF16))
    return PK_STATUS_BAD_ARGUMENT;
  if (B == 0 || T == 0 || H == 0 || Q == 0) return PK_STATUS_OK;

  int simd = (int)pk_isa_active();
  const int bf16 = precision == PK_PRECISION_BF16;
  const bf16_path path = {simd, bf16 && pk_isa_bf16_active()};
  int nth = pk_threads_get();
  int64_t bq = tile_tokens(H, T), M = bq * H, BTQ = B * T * Q, hq = Q / 2, Tp = (T + 1) / 2;
  int64_t Mw = (M + 1) / 2;  /* pairs of tile rows (an odd last row pairs with 0) */
  /* fp32: qs, dO, dQ, s, dp, lse, D, dK, dV. bf16 adds the pairs: qs and dO along Q and across
   * rows, dS along the keys, dS and P across rows. */
  int64_t per_thread = 3 * pad16(M * Q) + 2 * pad16(M * BK) + 2 * pad16(M) + 2 * pad16(BTQ) +
                       (bf16 ? 2 * pad16(M * hq) + 2 * pad16(Mw * Q) + pad16(M * BK / 2) + 2 * pad16(Mw * BK) +
                                   unpack_floats(path, M, Q) : 0);
  /* fp32: K', Kᵀ, Vᵀ; bf16: their pairs (Kᵀ, Vᵀ along Q; K across rows). */
  int64_t shared = bf16 ? 2 * pad16(B * hq * T) + pad16(B * Tp * Q) : 3 * pad16(BTQ);
  if ((double)shared + (double)nth * (double)per_thread > 0x1p60) return PK_STATUS_NO_MEMORY;
  float *scratch = pk_scratch_reserve(&tl_backward, (size_t)(shared + nth * per_thread));
  const float *cs = rope_table_cached(T, Q);
  if (!scratch || !cs) return PK_STATUS_NO_MEMORY;
  float *krot = scratch, *kt = krot + pad16(BTQ), *vt = kt + pad16(BTQ);
  uint32_t *ktp = (uint32_t *)scratch, *vtp = ktp + pad16(B * hq * T), *kp = vtp + pad16(B * hq * T);
  float *thread_base = scratch + shared;

  /* bf16: the rotated K rows pass through each thread's (still unused) qs and dO. */
  if (bf16) prepare_kv_bf16(path, thread_base, per_thread, nth, ktp, kp, NULL, vtp, qkv, ldqkv, cs, B, T, H, Q);
  else prepare_kv(krot, NULL, 0, nth, kt, vt, qkv, ldqkv, cs, B, T, H, Q);

  const float scale = 1.0f / sqrtf((float)Q);
  int64_t nqb = (T + bq - 1) / bq, ntiles = B * nqb;
  int64_t koff = H * Q;
#pragma omp parallel num_threads(nth)
  {
    int ith = omp_get_thread_num();
    float *qs = thread_base + ith * per_thread, *dob = qs + pad16(M * Q), *dq = dob + pad16(M * Q);
    float *s = dq + pad16(M * Q), *dp = s + pad16(M * BK), *lr = dp + pad16(M * BK);
    float *dr = lr + pad16(M), *dk = dr + pad16(M), *dv = dk + pad16(BTQ);
    uint32_t *qsp = (uint32_t *)(dv + pad16(BTQ)), *dop = qsp + pad16(M * hq);
    uint32_t *qsr = dop + pad16(M * hq), *dor = qsr + pad16(Mw * Q);
    uint32_t *dsa = dor + pad16(Mw * Q), *dsr = dsa + pad16(M * BK / 2), *pt = dsr + pad16(Mw * BK);
    float *work = (float *)(pt + pad16(Mw * BK));  /* emulated bf16 products only */
    memset(dk, 0, (size_t)(2 * pad16(BTQ)) * sizeof(float));
    int team = omp_get_num_threads();
    for (int64_t tile = 0; tile < ntiles; tile++) {
      if (tile_owner(tile, team) != ith) continue;
      int64_t b, qb;
      tile_at(tile, B, nqb, &b, &qb);
      int64_t t0 = qb * bq;
      int64_t nq = T - t0 < bq ? T - t0 : bq, m = nq * H, tend = t0 + nq;
      for (int64_t i = 0; i < nq; i++) {
        int64_t t = t0 + i;
        const float *row = qkv + (b * T + t) * ldqkv;
        for (int64_t h = 0; h < H; h++) {
          int64_t r = i * H + h;
          pk_rope_apply(qs + r * Q, row + h * Q, cs + t * Q, Q, scale);
          const float *g = dout + (b * T + t) * lddout + h * Q;
          const float *ov = out + (b * T + t) * ldo + h * Q;
          float acc = 0.0f;
          for (int64_t d = 0; d < Q; d++) { dob[r * Q + d] = g[d]; acc += g[d] * ov[d]; }
          dr[r] = acc;
          lr[r] = lse[(b * H + h) * T + t];
        }
      }
      if (bf16) {
        int64_t mw = (m + 1) / 2;
        for (int64_t r = 0; r < m; r++) {
          pairs_along(path, qsp + r * hq, qs + r * Q, Q);
          pairs_along(path, dop + r * hq, dob + r * Q, Q);
        }
        for (int64_t u = 0; u < mw; u++) {
          int two = 2 * u + 1 < m;
          pairs_across(path, qsr + u * Q, qs + 2 * u * Q, two ? qs + (2 * u + 1) * Q : NULL, Q);
          pairs_across(path, dor + u * Q, dob + 2 * u * Q, two ? dob + (2 * u + 1) * Q : NULL, Q);
        }
      }
      memset(dq, 0, (size_t)(m * Q) * sizeof(float));
      for (int64_t s0 = 0; s0 < tend; s0 += BK) {
        int64_t nk = tend - s0 < BK ? tend - s0 : BK;
        if (bf16) {
          mmb(path, work, m, nk, hq, qsp, hq, 1, ktp + b * hq * T + s0, T, s, BK, 0);   /* S = Qs·Kᵀ */
          mmb(path, work, m, nk, hq, dop, hq, 1, vtp + b * hq * T + s0, T, dp, BK, 0);  /* dP = dO·Vᵀ */
        } else {
          mm(simd, m, nk, Q, qs, Q, 1, kt + b * Q * T + s0, T, s, BK, 0);    /* S = Qs·Kᵀ */
          mm(simd, m, nk, Q, dob, Q, 1, vt + b * Q * T + s0, T, dp, BK, 0);  /* dP = dO·Vᵀ */
        }
        for (int64_t r = 0; r < m; r++) {
          int64_t t = t0 + r / H, nv = t - s0 + 1;
          nv = nv < 0 ? 0 : (nv > nk ? nk : nv);
#if defined(__x86_64__)
          if (simd == PK_ISA_AVX512) softmax_grad_avx512(s + r * BK, dp + r * BK, nk, nv, lr[r], dr[r]);
          else if (simd == PK_ISA_AVX2) softmax_grad_avx2(s + r * BK, dp + r * BK, nk, nv, lr[r], dr[r]);
          else
#endif
            softmax_grad_scalar(s + r * BK, dp + r * BK, nk, nv, lr[r], dr[r]);
        }
        float *dkb = dk + (b * T + s0) * Q, *dvb = dv + (b * T + s0) * Q;
        if (bf16) {
          /* dS in pairs along the keys (dS·K) and dS, P in pairs of rows (dSᵀ·Qs, Pᵀ·dO); A(j, u) of
           * the transposed products is word j of pair row u. */
          int64_t mw = (m + 1) / 2, kw = (nk + 1) / 2;
          for (int64_t r = 0; r < m; r++) pairs_along(path, dsa + r * (BK / 2), dp + r * BK, nk);
          for (int64_t u = 0; u < mw; u++) {
            int two = 2 * u + 1 < m;
            pairs_across(path, dsr + u * BK, dp + 2 * u * BK, two ? dp + (2 * u + 1) * BK : NULL, nk);
            pairs_across(path, pt + u * BK, s + 2 * u * BK, two ? s + (2 * u + 1) * BK : NULL, nk);
          }
          mmb(path, work, m, Q, kw, dsa, BK / 2, 1, kp + (b * Tp + s0 / 2) * Q, Q, dq, Q, 1);  /* dQs += dS·K */
          mmb(path, work, nk, Q, mw, dsr, 1, BK, qsr, Q, dkb, Q, 1);                         /* dK += dSᵀ·Qs */
          mmb(path, work, nk, Q, mw, pt, 1, BK, dor, Q, dvb, Q, 1);                          /* dV += Pᵀ·dO */
        } else {
          mm(simd, m, Q, nk, dp, BK, 1, krot + (b * T + s0) * Q, Q, dq, Q, 1);  /* dQs += dS·K */
          mm(simd, nk, Q, m, dp, 1, BK, qs, Q, dkb, Q, 1);                      /* dK += dSᵀ·Qs */
          mm(simd, nk, Q, m, s, 1, BK, dob, Q, dvb, Q, 1);                      /* dV += Pᵀ·dO */
        }
      }
      for (int64_t r = 0; r < m; r++) {
        int64_t t = t0 + r / H, h = r % H;
        rope_apply_inverse(dqkv + (b * T + t) * lddqkv + h * Q, dq + r * Q, cs + t * Q, Q, scale);
      }
    }
    /* Reduce the per-thread dK/dV partials in thread order, rows split statically. */
#pragma omp barrier
    int64_t lo, hi;
    pk_range(B * T, ith, team, &lo, &hi);
    for (int64_t rrow = lo; rrow < hi; rrow++) {
      float *kacc = dqkv + rrow * lddqkv + koff, *vacc = kacc + Q;
      for (int64_t d = 0; d < Q; d++) { kacc[d] = 0.0f; vacc[d] = 0.0f; }
      for (int th = 0; th < team; th++) {
        const float *pk = thread_base + th * per_thread + 3 * pad16(M * Q) + 2 * pad16(M * BK) +
                          2 * pad16(M);
        const float *pv = pk + pad16(BTQ);
        for (int64_t d = 0; d < Q; d++) { kacc[d] += pk[rrow * Q + d]; vacc[d] += pv[rrow * Q + d]; }
      }
      rope_apply_inverse(kacc, kacc, cs + (rrow % T) * Q, Q, 1.0f);  /* in place: pairs (i, i+Q/2) */
    }
  }
  if (pk_flops_count_enabled()) pk_flops_add(5.0 * tile_product_flops(B, T, H, Q));
  return PK_STATUS_OK;
}
