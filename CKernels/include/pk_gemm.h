/* pk_gemm.h: single-precision matrix multiply, row-major, in the three layouts a transformer needs.
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

/* Argument check shared by both: sizes, strides, NULLs, overflow. */
pk_status pk_sgemm_check(pk_layout layout, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, const float *c, int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
