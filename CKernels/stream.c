/* stream.c: STREAM copy and triad (McCalpin 1995, www.cs.virginia.edu/stream) for the memory roof of
 * `palm bench kernels`. Plain loops the compiler vectorizes at -O3 (they are memory-bound, so no ISA
 * paths are needed); OpenMP schedule(static) so each thread streams the part it first-touched.
 * Byte counts and the API are in include/pk_stream.h. */

#include "pk_stream.h"
#include "pk_omp.h"

static void copy_pass(float *restrict c, const float *restrict a, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) c[i] = a[i];
}

static void triad_pass(float *restrict a, const float *restrict b, const float *restrict c, float s,
                       int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

pk_status pk_stream_bandwidth(double *best_gbs, pk_stream_kind kind, int64_t n, int repeats) {
  if (best_gbs == NULL) return PK_STATUS_NULL_POINTER;
  if (n < 1 || repeats < 1 || n > ((int64_t)1 << 40)) return PK_STATUS_BAD_SIZE;
  if (kind != PK_STREAM_COPY && kind != PK_STREAM_TRIAD) return PK_STATUS_BAD_ARGUMENT;
  size_t bytes = (size_t)n * sizeof(float);
  float *a = pk_aligned_alloc(bytes), *b = pk_aligned_alloc(bytes), *c = pk_aligned_alloc(bytes);
  if (a == NULL || b == NULL || c == NULL) {
    pk_aligned_free(a);
    pk_aligned_free(b);
    pk_aligned_free(c);
    return PK_STATUS_NO_MEMORY;
  }
  /* First touch with the same static schedule as the passes. */
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    a[i] = 1.0f;
    b[i] = 2.0f;
    c[i] = 0.5f;
  }
  double per_element = kind == PK_STREAM_COPY ? 8.0 : 12.0;
  double best = 0.0;
  for (int r = 0; r <= repeats; r++) {
    double t0 = pk_now_seconds();
    if (kind == PK_STREAM_COPY) copy_pass(c, a, n);
    else triad_pass(a, b, c, 0.5f, n);
    double dt = pk_now_seconds() - t0;
    if (r == 0 || dt <= 0) continue; /* the first pass is a warm-up */
    double gbs = per_element * (double)n / dt / 1e9;
    if (gbs > best) best = gbs;
  }
  pk_aligned_free(a);
  pk_aligned_free(b);
  pk_aligned_free(c);
  *best_gbs = best;
  return PK_STATUS_OK;
}
