/* gemm_internal.h (private): what the GEMM drivers (gemm.c: fp32, gemm_bf16.c: bf16) share with
 * each other and with their micro-kernels.
 *
 * A packed panel is a sequence of 32-bit words, (kw, R) of them for R = MR rows of A or NR columns
 * of B: kw = kc words a row for fp32 (one value of k each), kw = ceil(kc / 2) for bf16 pairs (word
 * p holds bf16 of k = 2p in its low and k = 2p + 1 in its high half, as vdpbf16ps reads them).
 * A micro-kernel multiplies one packed A micro-panel (kw, MR) by one packed B micro-panel (kw, NR)
 * and writes C(m, n) = alpha * acc + beta * C for its m <= MR rows and n <= NR columns
 * (beta == 0: C is not read). Packed panels are zero-padded to MR / NR (and to an even k for
 * pairs), so the kernel always computes the full tile and only the store looks at m and n.
 * Reference: BLIS "gemmlike" sandbox (bls_gemm_bp_var1.c) and Goto & van de Geijn, "Anatomy of
 * high-performance GEMM" (2008). */
#ifndef PK_GEMM_INTERNAL_H
#define PK_GEMM_INTERNAL_H
#include "pk_gemm.h"
#include <stdint.h>

typedef void (*pk_gemm_ukernel_fn)(int64_t kw, const void *a /* (kw, MR) packed */,
                                   const void *b /* (kw, NR) packed */, float *c /* (m, n) ld ldc */,
                                   int64_t ldc, float alpha, float beta, int m, int n);

void pk_gemm_ukernel_scalar_4x8(int64_t kw, const void *a, const void *b, float *c, int64_t ldc,
                                float alpha, float beta, int m, int n);
void pk_gemm_ukernel_avx2_6x16(int64_t kw, const void *a, const void *b, float *c, int64_t ldc,
                               float alpha, float beta, int m, int n);
void pk_gemm_ukernel_avx512_14x32(int64_t kw, const void *a, const void *b, float *c, int64_t ldc,
                                  float alpha, float beta, int m, int n);
/* bf16 pairs (vdpbf16ps), fp32 accumulation; needs AVX512_BF16. */
void pk_gemm_ukernel_avx512bf16_14x32(int64_t kw, const void *a, const void *b, float *c, int64_t ldc,
                                      float alpha, float beta, int m, int n);

/* Packs the (mn, kc) operand block at src into ceil(mn / R) panels of (kw, R) words at dst.
 * Element (r, p) (row r of A / column r of B, p along k) is src[r*ld + p], or src[p*ld + r] when
 * the block is stored k-major: A in TN (trans = 1) and B in NN/TN (trans = 0; see gemm.c). */
typedef void (*pk_gemm_pack_fn)(void *dst, const float *src, int64_t ld, int trans, int64_t mn,
                                int64_t kc);

/* One GEMM flavour on one ISA: its tile, block sizes, micro-kernel and packing. */
typedef struct {
  int mr, nr;              /* micro-tile */
  int kpack;               /* values of k per packed word: 1 (fp32) or 2 (bf16 pairs) */
  int64_t a_block;         /* elements in the packed A block: MC = a_block / max(min(KC, k), 256) */
  int64_t kc, kc_tn, nc;   /* KC for NN/NT and for TN (even when kpack = 2); B panel is KC x NC */
  pk_gemm_ukernel_fn ukernel;
  pk_gemm_pack_fn pack_a, pack_b;
} pk_gemm_config;

/* The fp32 configuration of `isa` (gemm.c): bf16 emulation reuses its tile and blocks. */
const pk_gemm_config *pk_gemm_config_fp32(pk_isa isa);

/* The five-loop driver (gemm.c) on arguments that passed pk_sgemm_check: counts the FLOPs, handles
 * m, n, k == 0 and alpha == 0, splits the work over the OpenMP team. */
pk_status pk_gemm_run(const pk_gemm_config *cfg, pk_layout layout, int64_t m, int64_t n, int64_t k,
                      float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc);

#endif
