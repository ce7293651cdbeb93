/* gemm_ukernel_avx512_14x32.c: the AVX-512 14x32 micro-kernels, fp32 (vfmadd231ps) and bf16
 * pairs (vdpbf16ps, AVX512_BF16), one inline-assembly body with the multiply-add as a parameter.
 * 28 zmm accumulators (14 rows x 2 vectors of 16), 2 zmm of packed B per k step, each A word
 * broadcast once into zmm30/zmm31 (alternating) and used by 2 multiply-adds: 28 per step keep Zen
 * 5's two 512-bit FMA pipes (latency 4) busy with 14 independent chains each. Measured on Zen 5: this form
 * runs at ~98% of the FMA peak on L1-resident panels, the embedded-broadcast form ({1to16} memory
 * operands) at ~92%. The k loop is inline assembly (clang spills an accumulator when it allocates
 * the 32 zmm registers itself). The packed A micro-panel streams from L2 (prefetched ahead), the
 * B micro-panel is reused from L1/L2 by the whole IR loop. Full tiles with alpha == 1 and beta 0
 * or 1 (every call the driver makes for C = A·B) are stored straight from the registers; edge tiles
 * (m < 14, n < 32) and other alpha/beta go through a stack copy and masked stores.
 * bf16: a k step is a packed word holding bf16 of k and k + 1 (gemm_internal.h), so one vdpbf16ps
 * does 32 multiply-adds where vfmadd231ps does 16, over the same bytes of A and B. On Zen 4
 * (one 512-bit vdpbf16ps a cycle, latency 6) the 28 chains hide the latency 4x over, and a step
 * reads 184 bytes (2 zmm of B, 14 words of A) per 28 cycles: L1/L2 keep up. The same tile, k
 * loop and stores as fp32 is the choice for both (a wider one does not fit 32 zmm).
 * Reference: BLIS skx sgemm kernel; Intel SDM, VDPBF16PS. */
#include "gemm_internal.h"
#include <immintrin.h>

enum { MR = 14, NR = 32 };

#define PK_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define PK_AVX512BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512dq,avx512vl")))

/* Four k steps: per step 2 zmm of B, 14 broadcasts of A, 28 multiply-adds, one prefetch of A 512 B
 * ahead. */
#define PK_KSTEP4(MADD) \
  "vmovaps 0(%[b]), %%zmm28\n\t" "vmovaps 64(%[b]), %%zmm29\n\t"                                                                  \
  "prefetcht0 512(%[a])\n\t"                                                                                                      \
  "vbroadcastss 0(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm0\n\t" MADD " %%zmm30, %%zmm29, %%zmm1\n\t"       \
  "vbroadcastss 4(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm2\n\t" MADD " %%zmm31, %%zmm29, %%zmm3\n\t"       \
  "vbroadcastss 8(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm4\n\t" MADD " %%zmm30, %%zmm29, %%zmm5\n\t"       \
  "vbroadcastss 12(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm6\n\t" MADD " %%zmm31, %%zmm29, %%zmm7\n\t"      \
  "vbroadcastss 16(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm8\n\t" MADD " %%zmm30, %%zmm29, %%zmm9\n\t"      \
  "vbroadcastss 20(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm10\n\t" MADD " %%zmm31, %%zmm29, %%zmm11\n\t"    \
  "vbroadcastss 24(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm12\n\t" MADD " %%zmm30, %%zmm29, %%zmm13\n\t"    \
  "vbroadcastss 28(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm14\n\t" MADD " %%zmm31, %%zmm29, %%zmm15\n\t"    \
  "vbroadcastss 32(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm16\n\t" MADD " %%zmm30, %%zmm29, %%zmm17\n\t"    \
  "vbroadcastss 36(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm18\n\t" MADD " %%zmm31, %%zmm29, %%zmm19\n\t"    \
  "vbroadcastss 40(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm20\n\t" MADD " %%zmm30, %%zmm29, %%zmm21\n\t"    \
  "vbroadcastss 44(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm22\n\t" MADD " %%zmm31, %%zmm29, %%zmm23\n\t"    \
  "vbroadcastss 48(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm24\n\t" MADD " %%zmm30, %%zmm29, %%zmm25\n\t"    \
  "vbroadcastss 52(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm26\n\t" MADD " %%zmm31, %%zmm29, %%zmm27\n\t"    \
  "vmovaps 128(%[b]), %%zmm28\n\t" "vmovaps 192(%[b]), %%zmm29\n\t"                                                               \
  "prefetcht0 568(%[a])\n\t"                                                                                                      \
  "vbroadcastss 56(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm0\n\t" MADD " %%zmm30, %%zmm29, %%zmm1\n\t"      \
  "vbroadcastss 60(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm2\n\t" MADD " %%zmm31, %%zmm29, %%zmm3\n\t"      \
  "vbroadcastss 64(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm4\n\t" MADD " %%zmm30, %%zmm29, %%zmm5\n\t"      \
  "vbroadcastss 68(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm6\n\t" MADD " %%zmm31, %%zmm29, %%zmm7\n\t"      \
  "vbroadcastss 72(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm8\n\t" MADD " %%zmm30, %%zmm29, %%zmm9\n\t"      \
  "vbroadcastss 76(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm10\n\t" MADD " %%zmm31, %%zmm29, %%zmm11\n\t"    \
  "vbroadcastss 80(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm12\n\t" MADD " %%zmm30, %%zmm29, %%zmm13\n\t"    \
  "vbroadcastss 84(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm14\n\t" MADD " %%zmm31, %%zmm29, %%zmm15\n\t"    \
  "vbroadcastss 88(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm16\n\t" MADD " %%zmm30, %%zmm29, %%zmm17\n\t"    \
  "vbroadcastss 92(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm18\n\t" MADD " %%zmm31, %%zmm29, %%zmm19\n\t"    \
  "vbroadcastss 96(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm20\n\t" MADD " %%zmm30, %%zmm29, %%zmm21\n\t"    \
  "vbroadcastss 100(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm22\n\t" MADD " %%zmm31, %%zmm29, %%zmm23\n\t"   \
  "vbroadcastss 104(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm24\n\t" MADD " %%zmm30, %%zmm29, %%zmm25\n\t"   \
  "vbroadcastss 108(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm26\n\t" MADD " %%zmm31, %%zmm29, %%zmm27\n\t"   \
  "vmovaps 256(%[b]), %%zmm28\n\t" "vmovaps 320(%[b]), %%zmm29\n\t"                                                               \
  "prefetcht0 624(%[a])\n\t"                                                                                                      \
  "vbroadcastss 112(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm0\n\t" MADD " %%zmm30, %%zmm29, %%zmm1\n\t"     \
  "vbroadcastss 116(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm2\n\t" MADD " %%zmm31, %%zmm29, %%zmm3\n\t"     \
  "vbroadcastss 120(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm4\n\t" MADD " %%zmm30, %%zmm29, %%zmm5\n\t"     \
  "vbroadcastss 124(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm6\n\t" MADD " %%zmm31, %%zmm29, %%zmm7\n\t"     \
  "vbroadcastss 128(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm8\n\t" MADD " %%zmm30, %%zmm29, %%zmm9\n\t"     \
  "vbroadcastss 132(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm10\n\t" MADD " %%zmm31, %%zmm29, %%zmm11\n\t"   \
  "vbroadcastss 136(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm12\n\t" MADD " %%zmm30, %%zmm29, %%zmm13\n\t"   \
  "vbroadcastss 140(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm14\n\t" MADD " %%zmm31, %%zmm29, %%zmm15\n\t"   \
  "vbroadcastss 144(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm16\n\t" MADD " %%zmm30, %%zmm29, %%zmm17\n\t"   \
  "vbroadcastss 148(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm18\n\t" MADD " %%zmm31, %%zmm29, %%zmm19\n\t"   \
  "vbroadcastss 152(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm20\n\t" MADD " %%zmm30, %%zmm29, %%zmm21\n\t"   \
  "vbroadcastss 156(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm22\n\t" MADD " %%zmm31, %%zmm29, %%zmm23\n\t"   \
  "vbroadcastss 160(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm24\n\t" MADD " %%zmm30, %%zmm29, %%zmm25\n\t"   \
  "vbroadcastss 164(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm26\n\t" MADD " %%zmm31, %%zmm29, %%zmm27\n\t"   \
  "vmovaps 384(%[b]), %%zmm28\n\t" "vmovaps 448(%[b]), %%zmm29\n\t"                                                               \
  "prefetcht0 680(%[a])\n\t"                                                                                                      \
  "vbroadcastss 168(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm0\n\t" MADD " %%zmm30, %%zmm29, %%zmm1\n\t"     \
  "vbroadcastss 172(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm2\n\t" MADD " %%zmm31, %%zmm29, %%zmm3\n\t"     \
  "vbroadcastss 176(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm4\n\t" MADD " %%zmm30, %%zmm29, %%zmm5\n\t"     \
  "vbroadcastss 180(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm6\n\t" MADD " %%zmm31, %%zmm29, %%zmm7\n\t"     \
  "vbroadcastss 184(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm8\n\t" MADD " %%zmm30, %%zmm29, %%zmm9\n\t"     \
  "vbroadcastss 188(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm10\n\t" MADD " %%zmm31, %%zmm29, %%zmm11\n\t"   \
  "vbroadcastss 192(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm12\n\t" MADD " %%zmm30, %%zmm29, %%zmm13\n\t"   \
  "vbroadcastss 196(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm14\n\t" MADD " %%zmm31, %%zmm29, %%zmm15\n\t"   \
  "vbroadcastss 200(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm16\n\t" MADD " %%zmm30, %%zmm29, %%zmm17\n\t"   \
  "vbroadcastss 204(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm18\n\t" MADD " %%zmm31, %%zmm29, %%zmm19\n\t"   \
  "vbroadcastss 208(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm20\n\t" MADD " %%zmm30, %%zmm29, %%zmm21\n\t"   \
  "vbroadcastss 212(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm22\n\t" MADD " %%zmm31, %%zmm29, %%zmm23\n\t"   \
  "vbroadcastss 216(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm24\n\t" MADD " %%zmm30, %%zmm29, %%zmm25\n\t"   \
  "vbroadcastss 220(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm26\n\t" MADD " %%zmm31, %%zmm29, %%zmm27\n\t"   \
  "addq $224, %[a]\n\t" "addq $512, %[b]\n\t"                                                                                    

/* One k step (the tail). */
#define PK_KSTEP1(MADD) \
  "vmovaps 0(%[b]), %%zmm28\n\t" "vmovaps 64(%[b]), %%zmm29\n\t"                                                                 \
  "vbroadcastss 0(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm0\n\t" MADD " %%zmm30, %%zmm29, %%zmm1\n\t"      \
  "vbroadcastss 4(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm2\n\t" MADD " %%zmm31, %%zmm29, %%zmm3\n\t"      \
  "vbroadcastss 8(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm4\n\t" MADD " %%zmm30, %%zmm29, %%zmm5\n\t"      \
  "vbroadcastss 12(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm6\n\t" MADD " %%zmm31, %%zmm29, %%zmm7\n\t"     \
  "vbroadcastss 16(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm8\n\t" MADD " %%zmm30, %%zmm29, %%zmm9\n\t"     \
  "vbroadcastss 20(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm10\n\t" MADD " %%zmm31, %%zmm29, %%zmm11\n\t"   \
  "vbroadcastss 24(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm12\n\t" MADD " %%zmm30, %%zmm29, %%zmm13\n\t"   \
  "vbroadcastss 28(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm14\n\t" MADD " %%zmm31, %%zmm29, %%zmm15\n\t"   \
  "vbroadcastss 32(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm16\n\t" MADD " %%zmm30, %%zmm29, %%zmm17\n\t"   \
  "vbroadcastss 36(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm18\n\t" MADD " %%zmm31, %%zmm29, %%zmm19\n\t"   \
  "vbroadcastss 40(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm20\n\t" MADD " %%zmm30, %%zmm29, %%zmm21\n\t"   \
  "vbroadcastss 44(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm22\n\t" MADD " %%zmm31, %%zmm29, %%zmm23\n\t"   \
  "vbroadcastss 48(%[a]), %%zmm30\n\t" MADD " %%zmm30, %%zmm28, %%zmm24\n\t" MADD " %%zmm30, %%zmm29, %%zmm25\n\t"   \
  "vbroadcastss 52(%[a]), %%zmm31\n\t" MADD " %%zmm31, %%zmm28, %%zmm26\n\t" MADD " %%zmm31, %%zmm29, %%zmm27\n\t"   \
  "addq $56, %[a]\n\t" "addq $128, %[b]\n\t"                                                                                    

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

/* The whole k loop and the register stores, with MADD the multiply-add instruction. */
#define PK_UKERNEL_ASM(MADD) \
  __asm__ volatile( \
      "vxorps %%zmm0, %%zmm0, %%zmm0\n\t" \
      "vxorps %%zmm1, %%zmm1, %%zmm1\n\t" \
      "vxorps %%zmm2, %%zmm2, %%zmm2\n\t" \
      "vxorps %%zmm3, %%zmm3, %%zmm3\n\t" \
      "vxorps %%zmm4, %%zmm4, %%zmm4\n\t" \
      "vxorps %%zmm5, %%zmm5, %%zmm5\n\t" \
      "vxorps %%zmm6, %%zmm6, %%zmm6\n\t" \
      "vxorps %%zmm7, %%zmm7, %%zmm7\n\t" \
      "vxorps %%zmm8, %%zmm8, %%zmm8\n\t" \
      "vxorps %%zmm9, %%zmm9, %%zmm9\n\t" \
      "vxorps %%zmm10, %%zmm10, %%zmm10\n\t" \
      "vxorps %%zmm11, %%zmm11, %%zmm11\n\t" \
      "vxorps %%zmm12, %%zmm12, %%zmm12\n\t" \
      "vxorps %%zmm13, %%zmm13, %%zmm13\n\t" \
      "vxorps %%zmm14, %%zmm14, %%zmm14\n\t" \
      "vxorps %%zmm15, %%zmm15, %%zmm15\n\t" \
      "vxorps %%zmm16, %%zmm16, %%zmm16\n\t" \
      "vxorps %%zmm17, %%zmm17, %%zmm17\n\t" \
      "vxorps %%zmm18, %%zmm18, %%zmm18\n\t" \
      "vxorps %%zmm19, %%zmm19, %%zmm19\n\t" \
      "vxorps %%zmm20, %%zmm20, %%zmm20\n\t" \
      "vxorps %%zmm21, %%zmm21, %%zmm21\n\t" \
      "vxorps %%zmm22, %%zmm22, %%zmm22\n\t" \
      "vxorps %%zmm23, %%zmm23, %%zmm23\n\t" \
      "vxorps %%zmm24, %%zmm24, %%zmm24\n\t" \
      "vxorps %%zmm25, %%zmm25, %%zmm25\n\t" \
      "vxorps %%zmm26, %%zmm26, %%zmm26\n\t" \
      "vxorps %%zmm27, %%zmm27, %%zmm27\n\t" \
      "testq %[k4], %[k4]\n\t" \
      "jz 2f\n\t" \
      ".p2align 5\n\t" \
      "1:\n\t" \
      PK_KSTEP4(MADD) \
      "decq %[k4]\n\t" \
      "jnz 1b\n\t" \
      "2:\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "prefetcht0 (%[c])\n\t" "prefetcht0 124(%[c])\n\t" "addq %[ldc], %[c]\n\t" \
      "testq %[k1], %[k1]\n\t" \
      "jz 4f\n\t" \
      "3:\n\t" \
      PK_KSTEP1(MADD) \
      "decq %[k1]\n\t" \
      "jnz 3b\n\t" \
      "4:\n\t" \
      "cmpl $1, %[mode]\n\t" \
      "je 5f\n\t" \
      "cmpl $2, %[mode]\n\t" \
      "je 6f\n\t" \
      "vmovaps %%zmm0, 0(%[acc])\n\t" \
      "vmovaps %%zmm1, 64(%[acc])\n\t" \
      "vmovaps %%zmm2, 128(%[acc])\n\t" \
      "vmovaps %%zmm3, 192(%[acc])\n\t" \
      "vmovaps %%zmm4, 256(%[acc])\n\t" \
      "vmovaps %%zmm5, 320(%[acc])\n\t" \
      "vmovaps %%zmm6, 384(%[acc])\n\t" \
      "vmovaps %%zmm7, 448(%[acc])\n\t" \
      "vmovaps %%zmm8, 512(%[acc])\n\t" \
      "vmovaps %%zmm9, 576(%[acc])\n\t" \
      "vmovaps %%zmm10, 640(%[acc])\n\t" \
      "vmovaps %%zmm11, 704(%[acc])\n\t" \
      "vmovaps %%zmm12, 768(%[acc])\n\t" \
      "vmovaps %%zmm13, 832(%[acc])\n\t" \
      "vmovaps %%zmm14, 896(%[acc])\n\t" \
      "vmovaps %%zmm15, 960(%[acc])\n\t" \
      "vmovaps %%zmm16, 1024(%[acc])\n\t" \
      "vmovaps %%zmm17, 1088(%[acc])\n\t" \
      "vmovaps %%zmm18, 1152(%[acc])\n\t" \
      "vmovaps %%zmm19, 1216(%[acc])\n\t" \
      "vmovaps %%zmm20, 1280(%[acc])\n\t" \
      "vmovaps %%zmm21, 1344(%[acc])\n\t" \
      "vmovaps %%zmm22, 1408(%[acc])\n\t" \
      "vmovaps %%zmm23, 1472(%[acc])\n\t" \
      "vmovaps %%zmm24, 1536(%[acc])\n\t" \
      "vmovaps %%zmm25, 1600(%[acc])\n\t" \
      "vmovaps %%zmm26, 1664(%[acc])\n\t" \
      "vmovaps %%zmm27, 1728(%[acc])\n\t" \
      "jmp 9f\n\t" \
      "5:\n\t" \
      "vmovups %%zmm0, (%[cs])\n\t" "vmovups %%zmm1, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm2, (%[cs])\n\t" "vmovups %%zmm3, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm4, (%[cs])\n\t" "vmovups %%zmm5, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm6, (%[cs])\n\t" "vmovups %%zmm7, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm8, (%[cs])\n\t" "vmovups %%zmm9, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm10, (%[cs])\n\t" "vmovups %%zmm11, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm12, (%[cs])\n\t" "vmovups %%zmm13, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm14, (%[cs])\n\t" "vmovups %%zmm15, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm16, (%[cs])\n\t" "vmovups %%zmm17, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm18, (%[cs])\n\t" "vmovups %%zmm19, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm20, (%[cs])\n\t" "vmovups %%zmm21, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm22, (%[cs])\n\t" "vmovups %%zmm23, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm24, (%[cs])\n\t" "vmovups %%zmm25, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vmovups %%zmm26, (%[cs])\n\t" "vmovups %%zmm27, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "jmp 9f\n\t" \
      "6:\n\t" \
      "vaddps (%[cs]), %%zmm0, %%zmm0\n\t" "vaddps 64(%[cs]), %%zmm1, %%zmm1\n\t" "vmovups %%zmm0, (%[cs])\n\t" "vmovups %%zmm1, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm2, %%zmm2\n\t" "vaddps 64(%[cs]), %%zmm3, %%zmm3\n\t" "vmovups %%zmm2, (%[cs])\n\t" "vmovups %%zmm3, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm4, %%zmm4\n\t" "vaddps 64(%[cs]), %%zmm5, %%zmm5\n\t" "vmovups %%zmm4, (%[cs])\n\t" "vmovups %%zmm5, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm6, %%zmm6\n\t" "vaddps 64(%[cs]), %%zmm7, %%zmm7\n\t" "vmovups %%zmm6, (%[cs])\n\t" "vmovups %%zmm7, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm8, %%zmm8\n\t" "vaddps 64(%[cs]), %%zmm9, %%zmm9\n\t" "vmovups %%zmm8, (%[cs])\n\t" "vmovups %%zmm9, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm10, %%zmm10\n\t" "vaddps 64(%[cs]), %%zmm11, %%zmm11\n\t" "vmovups %%zmm10, (%[cs])\n\t" "vmovups %%zmm11, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm12, %%zmm12\n\t" "vaddps 64(%[cs]), %%zmm13, %%zmm13\n\t" "vmovups %%zmm12, (%[cs])\n\t" "vmovups %%zmm13, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm14, %%zmm14\n\t" "vaddps 64(%[cs]), %%zmm15, %%zmm15\n\t" "vmovups %%zmm14, (%[cs])\n\t" "vmovups %%zmm15, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm16, %%zmm16\n\t" "vaddps 64(%[cs]), %%zmm17, %%zmm17\n\t" "vmovups %%zmm16, (%[cs])\n\t" "vmovups %%zmm17, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm18, %%zmm18\n\t" "vaddps 64(%[cs]), %%zmm19, %%zmm19\n\t" "vmovups %%zmm18, (%[cs])\n\t" "vmovups %%zmm19, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm20, %%zmm20\n\t" "vaddps 64(%[cs]), %%zmm21, %%zmm21\n\t" "vmovups %%zmm20, (%[cs])\n\t" "vmovups %%zmm21, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm22, %%zmm22\n\t" "vaddps 64(%[cs]), %%zmm23, %%zmm23\n\t" "vmovups %%zmm22, (%[cs])\n\t" "vmovups %%zmm23, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm24, %%zmm24\n\t" "vaddps 64(%[cs]), %%zmm25, %%zmm25\n\t" "vmovups %%zmm24, (%[cs])\n\t" "vmovups %%zmm25, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "vaddps (%[cs]), %%zmm26, %%zmm26\n\t" "vaddps 64(%[cs]), %%zmm27, %%zmm27\n\t" "vmovups %%zmm26, (%[cs])\n\t" "vmovups %%zmm27, 64(%[cs])\n\t" "addq %[ldc], %[cs]\n\t" \
      "9:\n\t" \
      : [a] "+r"(a), [b] "+r"(b), [k4] "+r"(k4), [k1] "+r"(k1), [c] "+r"(cp), [cs] "+r"(cs) \
      : [acc] "r"(&acc[0][0]), [ldc] "r"(ldc_bytes), [mode] "r"(mode) \
      : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10", "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18", "zmm19", "zmm20", "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", "zmm28", "zmm29", "zmm30", "zmm31", "memory", "cc")

/* k steps of one packed word each: one fp32 value of k (bf16 = 0), or a bf16 pair (bf16 = 1). */
PK_AVX512 static inline __attribute__((always_inline)) void ukernel(int64_t k, const void *a, const void *b,
                                                                   float *c, int64_t ldc, float alpha,
                                                                   float beta, int m, int n, const int bf16) {
  _Alignas(64) float acc[MR][NR];
  /* Store mode: 1 = C = acc, 2 = C += acc (full tile, alpha 1), 0 = through acc[][] below. */
  const int full = m == MR && n == NR && alpha == 1.0f;
  int mode = full && beta == 0.0f ? 1 : full && beta == 1.0f ? 2 : 0;
  /* Main loop: 4 k steps per trip, all but the last >= 24 steps; then the C tile is prefetched
   * (late, so that its 28 lines, which alias in L1 when ldc is a power of two, are not evicted
   * before the store), then the remaining steps one by one. */
  int64_t k4 = k > 24 ? (k - 24) / 4 : 0, k1 = k - 4 * k4;
  const int64_t ldc_bytes = ldc * 4;
  const float *cp = c;
  float *cs = c;
  if (bf16) PK_UKERNEL_ASM("vdpbf16ps");
  else PK_UKERNEL_ASM("vfmadd231ps");
  if (mode != 0) return;
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
  __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
  for (int i = 0; i < m; i++) {
    store16(c + i * ldc, _mm512_load_ps(acc[i]), va, vb, beta, m0);
    store16(c + i * ldc + 16, _mm512_load_ps(acc[i] + 16), va, vb, beta, m1);
  }
}

PK_AVX512 void pk_gemm_ukernel_avx512_14x32(int64_t kw, const void *a, const void *b, float *c,
                                            int64_t ldc, float alpha, float beta, int m, int n) {
  ukernel(kw, a, b, c, ldc, alpha, beta, m, n, 0);
}

PK_AVX512BF16 void pk_gemm_ukernel_avx512bf16_14x32(int64_t kw, const void *a, const void *b, float *c,
                                                    int64_t ldc, float alpha, float beta, int m, int n) {
  ukernel(kw, a, b, c, ldc, alpha, beta, m, n, 1);
}
