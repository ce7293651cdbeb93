/* pk_peak.h: the machine's arithmetic peak, measured (the MFU/HFU denominator).
 *
 * Each OpenMP thread runs independent chains of vector FMAs (fp32) or vdpbf16ps (bf16 pairs into
 * fp32) that never touch memory, so the rate is the FMA pipes' limit at the current clock.
 * Counting: one fp32 FMA lane = 2 FLOP (zmm: 32 FLOP per instruction, ymm: 16); one bf16 pair
 * product-accumulate = 2 FLOP (vdpbf16ps zmm: 32 pairs = 64 FLOP per instruction). */
#ifndef PK_PEAK_H
#define PK_PEAK_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* fp32 FMA peak in GFLOP/s, summed over `threads` threads, best of `repeats` runs of `iterations`
 * loop trips per thread (each trip: 16 zmm FMAs for AVX-512, 12 ymm FMAs for AVX2, 16 scalar
 * FMAs otherwise). `isa` must be <= pk_isa_detected(); use pk_isa_active() for "what GEMM uses". */
pk_status pk_peak_fp32(double *gflops, pk_isa isa, int threads, int64_t iterations, int repeats);

/* bf16 dot-product peak (_mm512_dpbf16_ps, 16 chains per thread) in GFLOP/s; PK_STATUS_BAD_ARGUMENT
 * when the CPU lacks AVX512-BF16 (pk_cpu_has_avx512_bf16() == 0). */
pk_status pk_peak_bf16(double *gflops, int threads, int64_t iterations, int repeats);

#ifdef __cplusplus
}
#endif
#endif
