/* peak.c: FMA peak probes (fp32 zmm / ymm / scalar, bf16 vdpbf16ps), see pk_peak.h.
 * Each thread keeps NACC independent accumulators that start at distinct odd values (3 + 1.37 i +
 * thread), so the compiler can neither fold nor merge chains; c = c * m + e stays finite for any
 * trip count (|m| < 1). objdump of the built object shows 16 vfmadd...ps zmm (12 ymm) per trip.
 * Reference: /work/shared/anchors/peak.c (the anchor's probe), toolchain.md section 2. */
#include "pk_peak.h"
#include "pk_omp.h"
#include <immintrin.h>

#define PK_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define PK_AVX512BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#define PK_AVX2 __attribute__((target("avx2,fma")))

enum { NACC512 = 16, NACC256 = 12, NACC_SCALAR = 16, NACC_BF16 = 16 };

__attribute__((noinline)) PK_AVX512 static float chains_zmm(int64_t iters, float seed) {
  __m512 m = _mm512_set1_ps(0.999999f), e = _mm512_set1_ps(1e-7f), c[NACC512];
  for (int i = 0; i < NACC512; i++) c[i] = _mm512_set1_ps(3.0f + 1.37f * i + seed);
  for (int64_t it = 0; it < iters; it++) {
#pragma clang loop unroll(full)
    for (int i = 0; i < NACC512; i++) c[i] = _mm512_fmadd_ps(c[i], m, e);
    __asm__ volatile("" ::: "memory"); /* one trip = NACC512 FMAs, not re-associated */
  }
  __m512 s = c[0];
  for (int i = 1; i < NACC512; i++) s = _mm512_add_ps(s, c[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((noinline)) PK_AVX2 static float chains_ymm(int64_t iters, float seed) {
  __m256 m = _mm256_set1_ps(0.999999f), e = _mm256_set1_ps(1e-7f), c[NACC256];
  for (int i = 0; i < NACC256; i++) c[i] = _mm256_set1_ps(3.0f + 1.37f * i + seed);
  for (int64_t it = 0; it < iters; it++) {
#pragma clang loop unroll(full)
    for (int i = 0; i < NACC256; i++) c[i] = _mm256_fmadd_ps(c[i], m, e);
    __asm__ volatile("" ::: "memory");
  }
  __m256 s = c[0];
  for (int i = 1; i < NACC256; i++) s = _mm256_add_ps(s, c[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

__attribute__((noinline)) static float chains_scalar(int64_t iters, float seed) {
  volatile float mv = 0.999999f, ev = 1e-7f; /* opaque, so the loop is not vectorised away */
  float m = mv, e = ev, c[NACC_SCALAR];
  for (int i = 0; i < NACC_SCALAR; i++) c[i] = 3.0f + 1.37f * i + seed;
  for (int64_t it = 0; it < iters; it++) {
    for (int i = 0; i < NACC_SCALAR; i++) c[i] = c[i] * m + e;
    __asm__ volatile("" ::: "memory");
  }
  float s = 0;
  for (int i = 0; i < NACC_SCALAR; i++) s += c[i];
  return s;
}

__attribute__((noinline)) PK_AVX512BF16 static float chains_bf16(int64_t iters, float seed) {
  /* a = b = 1/1024 in bf16: each trip adds 2^-19 per lane, finite for any realistic count. */
  __m512bh x = (__m512bh)_mm512_set1_epi16((short)0x3A80);
  __m512 c[NACC_BF16];
  for (int i = 0; i < NACC_BF16; i++) c[i] = _mm512_set1_ps(3.0f + 1.37f * i + seed);
  for (int64_t it = 0; it < iters; it++) {
#pragma clang loop unroll(full)
    for (int i = 0; i < NACC_BF16; i++) c[i] = _mm512_dpbf16_ps(c[i], x, x);
    __asm__ volatile("" ::: "memory");
  }
  __m512 s = c[0];
  for (int i = 1; i < NACC_BF16; i++) s = _mm512_add_ps(s, c[i]);
  return _mm512_reduce_add_ps(s);
}

typedef enum { PROBE_SCALAR, PROBE_YMM, PROBE_ZMM, PROBE_BF16 } probe_kind;

static volatile float g_sink[256];

/* Best GFLOP/s over `repeats` team runs; flop_per_trip counts one thread's loop trip. */
static double run_probe(probe_kind kind, int threads, int64_t iters, int repeats,
                        double flop_per_trip) {
  double best = 0.0;
  for (int r = 0; r < repeats; r++) {
    double t0 = 0.0, t1 = 0.0;
    int team = 1;
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num();
#pragma omp barrier
#pragma omp master
      {
        team = omp_get_num_threads();
        t0 = pk_now_seconds();
      }
#pragma omp barrier
      float v = kind == PROBE_ZMM    ? chains_zmm(iters, (float)tid)
                : kind == PROBE_YMM  ? chains_ymm(iters, (float)tid)
                : kind == PROBE_BF16 ? chains_bf16(iters, (float)tid)
                                     : chains_scalar(iters, (float)tid);
      g_sink[tid & 255] = v;
#pragma omp barrier
#pragma omp master
      t1 = pk_now_seconds();
    }
    double g = flop_per_trip * (double)iters * team / (t1 - t0) / 1e9;
    if (g > best) best = g;
  }
  return best;
}

static pk_status check_args(double *gflops, int threads, int64_t iterations, int repeats) {
  if (!gflops) return PK_STATUS_NULL_POINTER;
  if (threads < 1 || iterations < 1 || repeats < 1) return PK_STATUS_BAD_SIZE;
  return PK_STATUS_OK;
}

pk_status pk_peak_fp32(double *gflops, pk_isa isa, int threads, int64_t iterations, int repeats) {
  pk_status st = check_args(gflops, threads, iterations, repeats);
  if (st != PK_STATUS_OK) return st;
  if ((int)isa < 0 || (int)isa > (int)pk_isa_detected()) return PK_STATUS_BAD_ARGUMENT;
  switch (isa) {
  case PK_ISA_AVX512: *gflops = run_probe(PROBE_ZMM, threads, iterations, repeats, NACC512 * 32.0); break;
  case PK_ISA_AVX2: *gflops = run_probe(PROBE_YMM, threads, iterations, repeats, NACC256 * 16.0); break;
  default: *gflops = run_probe(PROBE_SCALAR, threads, iterations, repeats, NACC_SCALAR * 2.0); break;
  }
  return PK_STATUS_OK;
}

pk_status pk_peak_bf16(double *gflops, int threads, int64_t iterations, int repeats) {
  pk_status st = check_args(gflops, threads, iterations, repeats);
  if (st != PK_STATUS_OK) return st;
  if (!pk_cpu_has_avx512_bf16()) return PK_STATUS_BAD_ARGUMENT;
  *gflops = run_probe(PROBE_BF16, threads, iterations, repeats, NACC_BF16 * 64.0);
  return PK_STATUS_OK;
}
