/* pk_gemm.h: fp32 and bf16 matrix multiply, row-major, in the three layouts a transformer needs.
 *
 *   PK_LAYOUT_NN: C(m,n) = alpha * A(m,k)  · B(k,n)    + beta * C    (forward: x · W)
 *   PK_LAYOUT_NT: C(m,n) = alpha * A(m,k)  · B(n,k)ᵀ   + beta * C    (backward: dY · Wᵀ)
 *   PK_LAYOUT_TN: C(m,n) = alpha * A(k,m)ᵀ · B(k,n)    + beta * C    (backward: Xᵀ · dY)
 *
 * Leading dimensions are row strides in elements: lda >= columns of A as stored, etc. Any
 * m, n, k >= 0 works; k == 0 scales C by beta; beta == 0 overwrites C without reading it (NaN in
 * C does not propagate), as BLAS does. Built the GotoBLAS/BLIS way (docs/ARCHITECTURE.md). */
#ifndef PK_GEMM_H
#define PK_GEMM_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  PK_LAYOUT_NN = 0,
  PK_LAYOUT_NT = 1,
  PK_LAYOUT_TN = 2,
} pk_layout;

/* The fast path: packed panels, cache blocking, the active ISA's micro-kernel, OpenMP. */
pk_status pk_sgemm(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc);

/* The plain triple loop (fp32 accumulation), always built: the algorithmic reference. */
pk_status pk_sgemm_reference(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                             float *c, int64_t ldc);

/* The bf16 GEMM: the same layouts, arguments, checks and semantics as pk_sgemm, with A and B
 * rounded to bf16 (round to nearest even; NaN stays NaN, overflow gives Inf) as they are packed,
 * products accumulated in fp32, C in fp32. Native with AVX512_BF16 (pk_isa_bf16_active(): the
 * vdpbf16ps micro-kernel, which treats bf16 denormals as zero and flushes denormal results);
 * elsewhere emulated with the same rounding and fp32 FMA at the fp32 speed of the active ISA, so
 * both agree up to the order of the fp32 sums (gemm_bf16.c). */
pk_status pk_bgemm(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc);

/* The plain triple loop on bf16-rounded A and B, fp32 accumulation: the algorithmic reference. */
pk_status pk_bgemm_reference(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                             float *c, int64_t ldc);

/* x rounded to the nearest bf16 (ties to even), returned as fp32 (low 16 bits 0): the rounding
 * pk_bgemm applies. NaN stays NaN (quiet, sign and top payload bits kept), a value that rounds
 * past the largest bf16 gives +-Inf, denormals are rounded, not flushed. */
float pk_round_bf16(float x);
/* dst[i] = pk_round_bf16(src[i]) for i < n (dst == src allowed). */
pk_status pk_round_bf16_array(float *dst, const float *src, int64_t n);

/* The few-row path pk_sgemm takes for m <= PK_GEMV_MAX_M in NN and NT (decoding: one token, or a
 * few at prefill): B read once in place, no packing, threads over the output columns (gemv.c).
 * Arguments as pk_sgemm, already checked; TN or a larger m give PK_STATUS_BAD_ARGUMENT. */
#define PK_GEMV_MAX_M 4
pk_status pk_gemv_small_m(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* Argument check shared by all: sizes, strides, NULLs, overflow. */
pk_status pk_sgemm_check(pk_layout layout, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, const float *c, int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
