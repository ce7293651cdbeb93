/* gemm_internal.h (private): what the SGEMM driver (gemm.c) shares with its micro-kernels.
 *
 * A micro-kernel multiplies one packed A micro-panel (k, MR) by one packed B micro-panel (k, NR)
 * and writes C(m, n) = alpha * acc + beta * C for its m <= MR rows and n <= NR columns
 * (beta == 0: C is not read). Packed panels are zero-padded to MR / NR, so the kernel always
 * computes the full tile and only the store looks at m and n. Reference: BLIS "gemmlike"
 * sandbox (bls_gemm_bp_var1.c) and Goto & van de Geijn, "Anatomy of high-performance GEMM" (2008). */
#ifndef PK_GEMM_INTERNAL_H
#define PK_GEMM_INTERNAL_H
#include <stdint.h>

typedef void (*pk_gemm_ukernel_fn)(int64_t k, const float *a /* (k, MR) packed */,
                                   const float *b /* (k, NR) packed */, float *c /* (m, n) ld ldc */,
                                   int64_t ldc, float alpha, float beta, int m, int n);

void pk_gemm_ukernel_scalar_4x8(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
                                float alpha, float beta, int m, int n);
void pk_gemm_ukernel_avx2_6x16(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
                               float alpha, float beta, int m, int n);
void pk_gemm_ukernel_avx512_14x32(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
                                  float alpha, float beta, int m, int n);

#endif
