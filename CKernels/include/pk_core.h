/* pk_core.h: status codes, run-time ISA dispatch and threading for the palm C kernels.
 *
 * Every kernel returns pk_status and never aborts; outputs come first in argument lists, then
 * saved-for-backward values, inputs, weights, sizes. All sizes are int64_t (row-major layouts).
 * The ISA is detected once (cpuid via __builtin_cpu_supports); PALM_ISA=scalar|avx2|avx512 or
 * pk_isa_force() selects a lower one, for tests and comparisons (and PALM_ISA=avx512 also turns
 * native bf16 off; PALM_ISA=avx512bf16 is the detected level on a CPU with AVX512_BF16). */
#ifndef PK_CORE_H
#define PK_CORE_H
#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  PK_STATUS_OK = 0,
  PK_STATUS_BAD_SIZE = 1,      /* a negative size, or a product of sizes that overflows */
  PK_STATUS_BAD_STRIDE = 2,    /* a leading dimension smaller than a row */
  PK_STATUS_NULL_POINTER = 3,  /* a NULL buffer where elements must be read or written */
  PK_STATUS_BAD_ARGUMENT = 4,  /* an enum value out of range, an unsupported ISA, ... */
  PK_STATUS_NO_MEMORY = 5,     /* a scratch allocation failed */
} pk_status;

/* A short English description of a status ("leading dimension smaller than a row", ...). */
const char *pk_status_string(pk_status status);

typedef enum {
  PK_ISA_SCALAR = 0,  /* portable C, any CPU */
  PK_ISA_AVX2 = 1,    /* AVX2 + FMA (x86-64-v3) */
  PK_ISA_AVX512 = 2,  /* AVX-512 F/BW/DQ/VL (x86-64-v4) */
} pk_isa;

/* Precision of a kernel's matrix products (pk_attention_*): fp32 operands, or operands rounded to
 * bf16 (round to nearest even, pk_round_bf16) with fp32 accumulation, the rule of pk_bgemm. */
typedef enum {
  PK_PRECISION_FP32 = 0,
  PK_PRECISION_BF16 = 1,
} pk_precision;

/* The best ISA this CPU supports. */
pk_isa pk_isa_detected(void);
/* The ISA the kernels use now: min(detected, forced, PALM_ISA from the environment). */
pk_isa pk_isa_active(void);
/* Use `isa` from now on (it must be <= detected, else PK_STATUS_BAD_ARGUMENT). */
pk_status pk_isa_force(pk_isa isa);
/* 1 when the bf16 GEMM runs natively (vdpbf16ps): the CPU has AVX512_BF16, the active ISA is
 * AVX512, and neither PALM_ISA=scalar|avx2|avx512 (a plain level; PALM_ISA=avx512bf16 or none
 * keeps bf16) nor pk_isa_force_bf16(0) turned it off. Otherwise pk_bgemm emulates it (pk_gemm.h). */
int pk_isa_bf16_active(void);
/* Allow (1) or forbid (0) native bf16 from now on; 1 needs AVX512_BF16 (else PK_STATUS_BAD_ARGUMENT).
 * Independent of pk_isa_force: native bf16 also needs the active ISA to be AVX512. */
pk_status pk_isa_force_bf16(int enabled);
/* "scalar", "avx2", "avx512". */
const char *pk_isa_name(pk_isa isa);
/* 1 when the CPU has AVX512-BF16 (vdpbf16ps). */
int pk_cpu_has_avx512_bf16(void);

/* OpenMP team size used by every parallel kernel (>= 1). */
void pk_threads_set(int n);
int pk_threads_get(void);
/* Spin time of idle OpenMP workers in ms (libomp's KMP_BLOCKTIME); 0 frees the cores at once. */
void pk_threads_set_blocktime(int milliseconds);

/* 64-byte aligned allocation for kernel scratch and Swift tensors; NULL on failure or bytes == 0. */
void *pk_aligned_alloc(size_t bytes);
void pk_aligned_free(void *p);

/* FLOP counting mode (for checking the analytic hardware-FLOPs accounting): while enabled, every
 * kernel adds the floating-point operations it really executes (a multiply-add counts 2; only
 * matmul-class work and attention products, the terms of PaLM's formula, are counted). Switch,
 * counter and reset are per calling thread: kernels add once per call from the thread that called
 * them (never inside their OpenMP loops), so a count covers exactly the calls made from the thread
 * that enabled it, whatever other threads run meanwhile. */
void pk_flops_count_enable(int enabled);
int pk_flops_count_enabled(void);
void pk_flops_add(double flops);
double pk_flops_counted(void);
void pk_flops_reset(void);

/* Monotonic clock in seconds. */
double pk_now_seconds(void);

#ifdef __cplusplus
}
#endif
#endif
