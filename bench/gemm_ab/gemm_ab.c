/* gemm_ab.c: variants of pk_sgemm side by side in one process, for tuning CKernels/gemm.c.
 *
 * On a shared 2-vCPU VM the speed drifts by several percent between minutes (and between the two
 * vCPUs), so builds timed one after the other cannot resolve a 2% change. Here up to 6 variants of
 * the driver (CKernels/gemm.c compiled with different -D block sizes, or an older gemm.c taken from
 * git) are linked into one binary as pk_sgemm_v0..v5 and timed in rotation, sample by sample, on
 * the same operands; each line reports every variant's median GFLOP/s as a fraction of the fp32
 * peak measured at the start, and its ratio to v0. Built and run by run.sh (see there). */
#include "pk_core.h"
#include "pk_gemm.h"
#include "pk_peak.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef NVARIANTS
#define NVARIANTS 2
#endif
typedef pk_status (*gemm_fn)(pk_layout, int64_t, int64_t, int64_t, float, const float *, int64_t,
                             const float *, int64_t, float, float *, int64_t);
#define DECLARE(i)                                                                                 \
  pk_status pk_sgemm_v##i(pk_layout, int64_t, int64_t, int64_t, float, const float *, int64_t,     \
                          const float *, int64_t, float, float *, int64_t);
/* Only the NVARIANTS variants run.sh built are declared and referenced. */
DECLARE(0)
#if NVARIANTS > 1
DECLARE(1)
#endif
#if NVARIANTS > 2
DECLARE(2)
#endif
#if NVARIANTS > 3
DECLARE(3)
#endif
#if NVARIANTS > 4
DECLARE(4)
#endif
#if NVARIANTS > 5
DECLARE(5)
#endif
static const gemm_fn VARIANTS[NVARIANTS] = {
    pk_sgemm_v0,
#if NVARIANTS > 1
    pk_sgemm_v1,
#endif
#if NVARIANTS > 2
    pk_sgemm_v2,
#endif
#if NVARIANTS > 3
    pk_sgemm_v3,
#endif
#if NVARIANTS > 4
    pk_sgemm_v4,
#endif
#if NVARIANTS > 5
    pk_sgemm_v5,
#endif
};

/* The squares and the transformer shapes of GEMMBench.standardSet (tokens 4096, d_model 512,
 * d_ff 2048); "b1" accumulates (beta 1), as a weight gradient over micro-batches does. */
typedef struct { const char *name; int64_t m, n, k; pk_layout layout; float beta; } shape;
static const shape SHAPES[] = {
    {"sq256", 256, 256, 256, PK_LAYOUT_NN, 0},    {"sq2048", 2048, 2048, 2048, PK_LAYOUT_NN, 0},
    {"sq4096", 4096, 4096, 4096, PK_LAYOUT_NN, 0}, {"XW1", 4096, 2048, 512, PK_LAYOUT_NN, 0},
    {"HW2", 4096, 512, 2048, PK_LAYOUT_NN, 0},    {"XWp", 4096, 512, 512, PK_LAYOUT_NN, 0},
    {"dX_XW1", 4096, 512, 2048, PK_LAYOUT_NT, 0}, {"dX_HW2", 4096, 2048, 512, PK_LAYOUT_NT, 0},
    {"dX_XWp", 4096, 512, 512, PK_LAYOUT_NT, 0},  {"dW_XW1", 512, 2048, 4096, PK_LAYOUT_TN, 0},
    {"dW_HW2", 2048, 512, 4096, PK_LAYOUT_TN, 0}, {"dW_XWp", 512, 512, 4096, PK_LAYOUT_TN, 0},
    {"XW1b1", 4096, 2048, 512, PK_LAYOUT_NN, 1},
};

static int by_value(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int selected(const char *name, int argc, char **argv) {
  if (argc <= 3) return 1;
  for (int i = 3; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: gemm_ab THREADS SAMPLES [SHAPE...]   (shapes: sq256 sq2048 ... XW1b1)\n");
    return 2;
  }
  const int threads = atoi(argv[1]), samples = atoi(argv[2]);
  if (threads < 1 || samples < 1 || samples > 99) {
    fprintf(stderr, "gemm_ab: THREADS >= 1 and 1 <= SAMPLES <= 99\n");
    return 2;
  }
  pk_threads_set(threads);
  const size_t count = (size_t)4096 * 4096; /* the largest operand */
  float *a = pk_aligned_alloc(count * 4), *b = pk_aligned_alloc(count * 4), *c = pk_aligned_alloc(count * 4);
  if (!a || !b || !c) { fprintf(stderr, "gemm_ab: out of memory\n"); return 1; }
  srand(1);
  for (size_t i = 0; i < count; i++) {
    a[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    b[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    c[i] = 0;
  }
  double peak = 0;
#ifdef GEMM_AB_BF16 /* variants of pk_bgemm: fractions of the vdpbf16ps peak */
  const char *peak_name = "bf16";
  pk_peak_bf16(&peak, threads, 2000000, 5);
#else
  const char *peak_name = "fp32";
  pk_peak_fp32(&peak, pk_isa_active(), threads, 2000000, 5);
#endif
  printf("threads %d, isa %d, %s peak %.1f GFLOP/s, %d variants, median of %d samples\n", threads,
         (int)pk_isa_active(), peak_name, peak, NVARIANTS, samples);
  for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
    const shape x = SHAPES[s];
    if (!selected(x.name, argc, argv)) continue;
    const int64_t lda = x.layout == PK_LAYOUT_TN ? x.m : x.k, ldb = x.layout == PK_LAYOUT_NT ? x.k : x.n;
    const double flops = 2.0 * (double)x.m * (double)x.n * (double)x.k;
    const int inner = flops < 1e9 ? (int)(1e9 / flops) : 1; /* samples of >= ~4 ms */
    double t[NVARIANTS][100];
    for (int v = 0; v < NVARIANTS; v++) /* warm-up: packing buffers, pages */
      VARIANTS[v](x.layout, x.m, x.n, x.k, 1, a, lda, b, ldb, x.beta, c, x.n);
    for (int r = 0; r < samples; r++)
      for (int i = 0; i < NVARIANTS; i++) {
        const int v = (i + r) % NVARIANTS; /* rotate who goes first */
        const double t0 = pk_now_seconds();
        for (int j = 0; j < inner; j++) VARIANTS[v](x.layout, x.m, x.n, x.k, 1, a, lda, b, ldb, x.beta, c, x.n);
        t[v][r] = (pk_now_seconds() - t0) / inner;
      }
    printf("%-8s", x.name);
    double base = 0;
    for (int v = 0; v < NVARIANTS; v++) {
      qsort(t[v], (size_t)samples, sizeof(double), by_value);
      const double med = samples % 2 ? t[v][samples / 2] : 0.5 * (t[v][samples / 2 - 1] + t[v][samples / 2]);
      const double g = flops / med / 1e9;
      if (v == 0) base = g;
      printf("  v%d %6.1f (%5.1f%%, %.3f)", v, g, 100 * g / peak, g / base);
    }
    printf("\n");
  }
  return 0;
}
