/* dropout.c: inverted dropout with a counter-based (splitmix64) mask, pk_dropout.h.
 *
 * Work is split into fixed blocks of BLOCK elements scheduled statically; inside a block the keep
 * multipliers (0 or 1/(1 − p)) of SUB elements at a time are computed into a stack buffer by the
 * integer hash, then applied by a plain element-wise loop. The hash loop has AVX-512 and AVX2 clones
 * (same integer arithmetic: identical masks) chosen by pk_isa_active(). Floating-point contraction
 * is off here so that residual + branch · s rounds the same way on every path (and in the tests'
 * references): one multiply, then one add. */
#include "pk_dropout.h"
#include "pk_kernel.h"
#include <string.h>

#define PK_GOLDEN 0x9e3779b97f4a7c15ULL
#define BLOCK 4096  /* elements per scheduled block (a multiple of SUB) */
#define SUB 256     /* multipliers computed at a time (a 1 KiB stack buffer) */

/* splitmix64's output function (Steele, Lea, Flood 2014; Vigna's constants). */
static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t pk_dropout_key(uint64_t seed, uint64_t stream) { return mix64(seed ^ mix64(stream + PK_GOLDEN)); }

/* The 32-bit draw of counter c. */
static inline uint32_t draw(uint64_t key, uint64_t c) {
  uint64_t h = mix64(key + ((c >> 1) + 1) * PK_GOLDEN);
  return (uint32_t)(h >> ((c & 1) << 5));
}

/* mul[j] = (draw(c0 + j) >= t) ? s : 0 for j < len. */
static inline __attribute__((always_inline)) void fill_body(float *mul, int64_t len, uint64_t key,
                                                            uint64_t c0, uint32_t t, float s) {
  int64_t j = 0;
  if (len > 0 && (c0 & 1)) { mul[0] = draw(key, c0) >= t ? s : 0.0f; j = 1; }
  /* c0 + j is even from here: one hash gives the pair (c0 + j, c0 + j + 1). */
  uint64_t g0 = (c0 + (uint64_t)j) >> 1;
  int64_t pairs = (len - j) / 2;
  for (int64_t q = 0; q < pairs; q++) {
    uint64_t h = mix64(key + (g0 + (uint64_t)q + 1) * PK_GOLDEN);
    mul[j + 2 * q] = (uint32_t)h >= t ? s : 0.0f;
    mul[j + 2 * q + 1] = (uint32_t)(h >> 32) >= t ? s : 0.0f;
  }
  j += 2 * pairs;
  if (j < len) mul[j] = draw(key, c0 + (uint64_t)j) >= t ? s : 0.0f;
}

static void fill_scalar(float *mul, int64_t len, uint64_t key, uint64_t c0, uint32_t t, float s) {
  fill_body(mul, len, key, c0, t, s);
}

#if defined(__x86_64__)
static PK_TARGET_AVX512 void fill_avx512(float *mul, int64_t len, uint64_t key, uint64_t c0, uint32_t t,
                                         float s) {
  fill_body(mul, len, key, c0, t, s);
}
static PK_TARGET_AVX2 void fill_avx2(float *mul, int64_t len, uint64_t key, uint64_t c0, uint32_t t,
                                     float s) {
  fill_body(mul, len, key, c0, t, s);
}
#endif

enum { OP_SCALE = 0, OP_ADD = 1, OP_MASK = 2 };

/* Elements [lo, hi) of one call. */
static void run_block(int op, int isa, float *y, const float *a, const float *b, uint8_t *keep,
                      int64_t lo, int64_t hi, uint64_t key, uint64_t offset, uint32_t t, float s) {
#pragma clang fp contract(off)
  float mul[SUB];
  for (int64_t i = lo; i < hi; i += SUB) {
    int64_t len = hi - i < SUB ? hi - i : SUB;
    uint64_t c0 = offset + (uint64_t)i;
#if defined(__x86_64__)
    if (isa == PK_ISA_AVX512) fill_avx512(mul, len, key, c0, t, s);
    else if (isa == PK_ISA_AVX2) fill_avx2(mul, len, key, c0, t, s);
    else fill_scalar(mul, len, key, c0, t, s);
#else
    (void)isa;
    fill_scalar(mul, len, key, c0, t, s);
#endif
    switch (op) {
    case OP_SCALE:
      for (int64_t j = 0; j < len; j++) y[i + j] = a[i + j] * mul[j];
      break;
    case OP_ADD:
      for (int64_t j = 0; j < len; j++) {
        float branch = b[i + j] * mul[j];
        y[i + j] = a[i + j] + branch;
      }
      break;
    default:
      for (int64_t j = 0; j < len; j++) keep[i + j] = mul[j] != 0.0f;
      break;
    }
  }
}

static pk_status check_args(int64_t n, float p, int64_t offset) {
  int64_t end;
  if (n < 0 || offset < 0 || __builtin_add_overflow(offset, n, &end)) return PK_STATUS_BAD_SIZE;
  if (n > INT64_MAX / (int64_t)sizeof(float)) return PK_STATUS_BAD_SIZE; /* bytes overflow */
  if (!(p >= 0.0f && p < 1.0f)) return PK_STATUS_BAD_ARGUMENT; /* NaN fails too */
  return PK_STATUS_OK;
}

/* Runs `op` over n elements in BLOCK-element blocks, statically scheduled (p > 0). */
static void run(int op, float *y, const float *a, const float *b, uint8_t *keep, int64_t n, float p,
                uint64_t seed, uint64_t stream, int64_t offset) {
  uint64_t key = pk_dropout_key(seed, stream);
  uint32_t t = (uint32_t)__builtin_llround((double)p * 4294967296.0); /* p < 1: below 2^32 */
  float s = op == OP_MASK ? 1.0f : (float)(1.0 / (1.0 - (double)p));
  int isa = (int)pk_isa_active();
  int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 2)
  for (int64_t k = 0; k < blocks; k++) {
    int64_t lo = k * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
    run_block(op, isa, y, a, b, keep, lo, hi, key, (uint64_t)offset, t, s);
  }
}

pk_status pk_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t stream, int64_t offset) {
  PK_TRY(check_args(n, p, offset));
  if (n == 0) return PK_STATUS_OK;
  if (y == NULL || x == NULL) return PK_STATUS_NULL_POINTER;
  if (p == 0.0f) {
    if (y != x) memcpy(y, x, (size_t)n * sizeof(float));
    return PK_STATUS_OK;
  }
  run(OP_SCALE, y, x, NULL, NULL, n, p, seed, stream, offset);
  return PK_STATUS_OK;
}

pk_status pk_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                              uint64_t stream, int64_t offset) {
  return pk_dropout_forward(dx, dy, n, p, seed, stream, offset);
}

pk_status pk_dropout_add(float *y, const float *residual, const float *branch, int64_t n, float p,
                         uint64_t seed, uint64_t stream, int64_t offset) {
  PK_TRY(check_args(n, p, offset));
  if (n == 0) return PK_STATUS_OK;
  if (y == NULL || residual == NULL || branch == NULL) return PK_STATUS_NULL_POINTER;
  if (p == 0.0f) {
#pragma omp parallel for schedule(static) if (n > 4 * BLOCK)
    for (int64_t i = 0; i < n; i++) y[i] = residual[i] + branch[i];
    return PK_STATUS_OK;
  }
  run(OP_ADD, y, residual, branch, NULL, n, p, seed, stream, offset);
  return PK_STATUS_OK;
}

pk_status pk_dropout_mask(uint8_t *keep, int64_t n, float p, uint64_t seed, uint64_t stream,
                          int64_t offset) {
  PK_TRY(check_args(n, p, offset));
  if (n == 0) return PK_STATUS_OK;
  if (keep == NULL) return PK_STATUS_NULL_POINTER;
  if (p == 0.0f) {
    memset(keep, 1, (size_t)n);
    return PK_STATUS_OK;
  }
  run(OP_MASK, NULL, NULL, NULL, keep, n, p, seed, stream, offset);
  return PK_STATUS_OK;
}
