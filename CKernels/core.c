/* core.c: status strings, run-time ISA detection and forcing, thread control, aligned memory. */
#include "pk_core.h"
#include "pk_omp.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* libomp 14 (Debian) lacks this entry point; clang >= 19 emits it for non-static schedules.
 * A no-op is the pre-19 behaviour (see ../shared/reference/toolchain.md). */
void __kmpc_dispatch_deinit(void *loc, int gtid) { (void)loc; (void)gtid; }

const char *pk_status_string(pk_status s) {
  switch (s) {
  case PK_STATUS_OK: return "ok";
  case PK_STATUS_BAD_SIZE: return "negative or overflowing size";
  case PK_STATUS_BAD_STRIDE: return "leading dimension smaller than a row";
  case PK_STATUS_NULL_POINTER: return "null buffer";
  case PK_STATUS_BAD_ARGUMENT: return "invalid argument";
  case PK_STATUS_NO_MEMORY: return "out of memory";
  }
  return "unknown status";
}

static pk_isa detect(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return PK_ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return PK_ISA_AVX2;
#endif
  return PK_ISA_SCALAR;
}

/* -1 = not yet resolved. Resolution is idempotent, so a benign race only repeats it. */
static int g_detected = -1;
static int g_active = -1;

pk_isa pk_isa_detected(void) {
  if (g_detected < 0) g_detected = (int)detect();
  return (pk_isa)g_detected;
}

pk_isa pk_isa_active(void) {
  if (g_active < 0) {
    int isa = (int)pk_isa_detected();
    const char *env = getenv("PALM_ISA");
    if (env) {
      int want = isa;
      if (strcmp(env, "scalar") == 0) want = PK_ISA_SCALAR;
      else if (strcmp(env, "avx2") == 0) want = PK_ISA_AVX2;
      else if (strcmp(env, "avx512") == 0) want = PK_ISA_AVX512;
      if (want < isa) isa = want;
    }
    g_active = isa;
  }
  return (pk_isa)g_active;
}

/* Native bf16 (AVX512_BF16): on where the CPU has it, unless PALM_ISA names a plain level
 * (scalar, avx2, avx512; "avx512bf16" or no PALM_ISA leave it on) or pk_isa_force_bf16(0). */
static int g_bf16 = -1;

static int bf16_allowed(void) {
  if (g_bf16 < 0) {
    const char *env = getenv("PALM_ISA");
    const int plain = env && (strcmp(env, "scalar") == 0 || strcmp(env, "avx2") == 0 || strcmp(env, "avx512") == 0);
    g_bf16 = pk_cpu_has_avx512_bf16() && !plain;
  }
  return g_bf16;
}

int pk_isa_bf16_active(void) { return pk_isa_active() == PK_ISA_AVX512 && bf16_allowed(); }

pk_status pk_isa_force_bf16(int enabled) {
  if (enabled && !pk_cpu_has_avx512_bf16()) return PK_STATUS_BAD_ARGUMENT;
  g_bf16 = enabled != 0;
  return PK_STATUS_OK;
}

pk_status pk_isa_force(pk_isa isa) {
  if ((int)isa < 0 || (int)isa > (int)pk_isa_detected()) return PK_STATUS_BAD_ARGUMENT;
  g_active = (int)isa;
  return PK_STATUS_OK;
}

const char *pk_isa_name(pk_isa isa) {
  switch (isa) {
  case PK_ISA_SCALAR: return "scalar";
  case PK_ISA_AVX2: return "avx2";
  case PK_ISA_AVX512: return "avx512";
  }
  return "unknown";
}

int pk_cpu_has_avx512_bf16(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") ? 1 : 0;
#else
  return 0;
#endif
}

void pk_threads_set(int n) { omp_set_num_threads(n < 1 ? 1 : n); }
int pk_threads_get(void) { return omp_get_max_threads(); }
void pk_threads_set_blocktime(int ms) { kmp_set_blocktime(ms < 0 ? 0 : ms); }

/* Buffers of 2 MiB and more are 2 MiB aligned and asked to be backed by transparent huge pages
 * (madvise; Debian's default THP mode is "madvise"). A GEMM walks its operands with large strides
 * (a C tile touches 14 rows, each a different 4 KiB page when ldc >= 1024); with 4 KiB pages the
 * TLB misses and the page-bounded hardware prefetchers cost pk_sgemm 0-2% on the transformer
 * shapes on a quiet machine (docs/BENCHMARKS.md, "GEMM"). numpy does the same for its arrays. Smaller buffers stay 64-byte aligned. */
#define PK_HUGE_PAGE ((size_t)2 << 20)
void *pk_aligned_alloc(size_t bytes) {
  if (bytes == 0) return NULL;
  size_t rounded = (bytes + 63) & ~(size_t)63;
  if (rounded < bytes) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (rounded >= PK_HUGE_PAGE) {
    /* Aligned to 2 MiB but not rounded up to it, and only the whole huge pages advised: a buffer
     * just over a multiple of 2 MiB must not fault in a mostly unused huge page at its end. */
    void *p = NULL;
    if (posix_memalign(&p, PK_HUGE_PAGE, rounded) != 0) return NULL;
    madvise(p, rounded & ~(PK_HUGE_PAGE - 1), MADV_HUGEPAGE); /* advice only */
    return p;
  }
#endif
  return aligned_alloc(64, rounded);
}
void pk_aligned_free(void *p) { free(p); }

double pk_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Thread-local: a count covers the kernel calls made from the thread that enabled it, so tests
 * and tools running kernels on other threads at the same time never add to it. */
static _Thread_local int g_count_flops = 0;
static _Thread_local double g_flops = 0.0;
void pk_flops_count_enable(int enabled) { g_count_flops = enabled != 0; }
int pk_flops_count_enabled(void) { return g_count_flops; }
void pk_flops_add(double flops) { if (g_count_flops) g_flops += flops; }
double pk_flops_counted(void) { return g_flops; }
void pk_flops_reset(void) { g_flops = 0.0; }
