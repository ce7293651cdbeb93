/* gemm_reference.c: argument checking and the plain triple-loop SGEMM and bf16 GEMM (the
 * algorithmic references the fast paths are tested against). */
#include "gemm_pack.h"
#include "pk_gemm.h"

static int mul_overflows(int64_t a, int64_t b) {
  return a != 0 && b > INT64_MAX / a;
}

pk_status pk_sgemm_check(pk_layout layout, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, const float *c, int64_t ldc) {
  if ((int)layout < 0 || (int)layout > 2) return PK_STATUS_BAD_ARGUMENT;
  if (m < 0 || n < 0 || k < 0) return PK_STATUS_BAD_SIZE;
  /* Stored shapes (rows x cols) of A and B in this layout. */
  int64_t a_rows = layout == PK_LAYOUT_TN ? k : m, a_cols = layout == PK_LAYOUT_TN ? m : k;
  int64_t b_rows = layout == PK_LAYOUT_NT ? n : k, b_cols = layout == PK_LAYOUT_NT ? k : n;
  if (lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1) ||
      ldc < (n > 1 ? n : 1))
    return PK_STATUS_BAD_STRIDE;
  /* Highest element index touched must fit: rows * ld must not overflow. */
  if (mul_overflows(a_rows, lda) || mul_overflows(b_rows, ldb) || mul_overflows(m, ldc) ||
      mul_overflows(m, n) || mul_overflows(m * n, k))
    return PK_STATUS_BAD_SIZE;
  if (m > 0 && n > 0 && c == NULL) return PK_STATUS_NULL_POINTER;
  if (m > 0 && n > 0 && k > 0 && (a == NULL || b == NULL)) return PK_STATUS_NULL_POINTER;
  return PK_STATUS_OK;
}

/* The triple loop; with `round`, each element of A and B is rounded to bf16 as it is read. */
static inline __attribute__((always_inline)) pk_status reference(
    pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
    const float *b, int64_t ldb, float beta, float *c, int64_t ldc, const int round) {
  pk_status st = pk_sgemm_check(layout, m, n, k, a, lda, b, ldb, c, ldc);
  if (st != PK_STATUS_OK) return st;
  for (int64_t i = 0; i < m; i++) {
    for (int64_t j = 0; j < n; j++) {
      float sum = 0.0f;
      for (int64_t p = 0; p < k; p++) {
        float av = layout == PK_LAYOUT_TN ? a[p * lda + i] : a[i * lda + p];
        float bv = layout == PK_LAYOUT_NT ? b[j * ldb + p] : b[p * ldb + j];
        sum += pk_pack_value(av, round) * pk_pack_value(bv, round);
      }
      float *cij = &c[i * ldc + j];
      *cij = beta == 0.0f ? alpha * sum : alpha * sum + beta * *cij;
    }
  }
  return PK_STATUS_OK;
}

pk_status pk_sgemm_reference(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                             float *c, int64_t ldc) {
  return reference(layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 0);
}

pk_status pk_bgemm_reference(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                             float *c, int64_t ldc) {
  return reference(layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 1);
}
