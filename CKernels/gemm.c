/* gemm.c: the fast SGEMM driver (placeholder: calls the reference until the blocked driver lands). */
#include "pk_gemm.h"

pk_status pk_sgemm(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc) {
  return pk_sgemm_reference(layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
