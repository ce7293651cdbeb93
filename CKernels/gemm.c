/* gemm.c: the fast SGEMM driver, built the GotoBLAS/BLIS way.
 *
 * Five loops around a register-blocked micro-kernel (gemm_ukernel_<isa>_<MR>x<NR>.c):
 *   JC (NC columns of C and B) -> PC (KC of the shared dimension; B panel packed, L3)
 *   -> IC (MC rows; A block packed, L2) -> JR (NR columns; B micro-panel, L1) -> IR (MR rows).
 * Packing reads A and B in any of the three layouts (NN, NT, TN) straight from the caller's
 * buffers, so no transpose is ever materialised. Threads (OpenMP, static) split the rows (and
 * share the B panel they pack together) or, for wide C, the columns (see the work split below).
 * Reference: Goto & van de Geijn (2008); BLIS sandbox/gemmlike/bls_gemm_bp_var1.c. */
#include "gemm_internal.h"
#include "gemm_pack.h"
#include "pk_kernel.h"
#include "pk_omp.h"
#include <sched.h>
#include <stdatomic.h>

/* ---- Team barrier --------------------------------------------------------------------------
 * A sense-reversing spin barrier for the threads of one GEMM. The OpenMP barrier puts a waiting
 * thread to sleep at once under KMP_BLOCKTIME=0 (which palm sets so that idle workers give their
 * cores back), and waking it costs tens of microseconds: for a 512 x 512 x 4096 weight gradient,
 * 17 barriers a call made two threads no faster than one. Both threads are busy in the same GEMM,
 * so spinning through the few microseconds of imbalance is cheaper; after ~64k pauses (a
 * descheduled partner) the waiter yields its core on every round. Acquire/release ordering makes
 * the packed B panel written before the barrier visible to every thread after it. */
typedef struct {
  _Atomic int count, sense;
} team_barrier;

static void team_barrier_wait(team_barrier *b, int nt, int *local_sense) {
  const int s = !*local_sense;
  *local_sense = s;
  if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == nt - 1) {
    atomic_store_explicit(&b->count, 0, memory_order_relaxed);
    atomic_store_explicit(&b->sense, s, memory_order_release);
    return;
  }
  for (unsigned spins = 0; atomic_load_explicit(&b->sense, memory_order_acquire) != s;) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
    if (++spins > (1u << 16)) sched_yield();
  }
}

/* ---- Packing (gemm_pack.h): plain copies for scalar and AVX2, register transposes for AVX-512 - */
PK_DEFINE_PACK(pack_a_scalar, PK_TARGET_NONE, 4, trans, 0)
PK_DEFINE_PACK(pack_b_scalar, PK_TARGET_NONE, 8, !trans, 0)
PK_DEFINE_PACK(pack_a_avx2, PK_TARGET_AVX2, 6, trans, 0)
PK_DEFINE_PACK(pack_b_avx2, PK_TARGET_AVX2, 16, !trans, 0)

PK_TARGET_AVX512 static void pack_a_avx512(void *dst, const float *src, int64_t ld, int trans,
                                           int64_t mn, int64_t kc) {
  pack_avx512((float *)dst, src, ld, trans, mn, kc, 14, 0);
}

PK_TARGET_AVX512 static void pack_b_avx512(void *dst, const float *src, int64_t ld, int trans,
                                           int64_t mn, int64_t kc) {
  pack_avx512((float *)dst, src, ld, !trans, mn, kc, 32, 0);
}

/* ---- Block sizes: one table per ISA ------------------------------------------------------ */
/* AVX-512 blocks for Zen 5 (48 KiB L1d, 1 MiB L2 per core, 32 MiB L3). The A block is 112 KiB
 * (MC x KC = 28 x 1024 for NN/NT, 56 x 512 for TN; shallower k gives taller blocks) and stays in
 * L2; the B micro-panel (KC x 32) streams from L2/L3; the B panel (KC x NC, 8 MiB) lives in L3.
 * A deep KC halves the passes over C, each of which re-reads C tiles whose 14 rows share L1 sets
 * when ldc is a multiple of 1024 floats. TN (weight gradients, whose packs read A and B row by
 * row) keeps KC 512. Each choice against its alternative, side by side in one process
 * (docs/BENCHMARKS.md, "GEMM": bench/gemm_ab/run.sh T 7 CKernels/gemm.c
 * CKernels/gemm.c:-DPK_GEMM_AVX512_KC=512 ...), 1 / 2 threads: KC 512 for NN/NT loses 3-4% on
 * 4096x512x2048 NN and NT and 2-3% on 2048^3 and 4096^3; KC 1024 for TN loses up to 2-3% on the
 * weight gradients; NC 4096 (a 16 MiB panel) loses 19% / 3% on 4096^3; a 224 KiB A block loses
 * 2-3% / 1% on 2048^3 and 4096^3. -D overrides are for such tuning runs only. */
#ifndef PK_GEMM_AVX512_A_BLOCK
#define PK_GEMM_AVX512_A_BLOCK (28 * 1024)
#endif
#ifndef PK_GEMM_AVX512_KC
#define PK_GEMM_AVX512_KC 1024
#endif
#ifndef PK_GEMM_AVX512_KC_TN
#define PK_GEMM_AVX512_KC_TN 512
#endif
#ifndef PK_GEMM_AVX512_NC
#define PK_GEMM_AVX512_NC 2048
#endif
static const pk_gemm_config CONFIGS[3] = {
    [PK_ISA_SCALAR] = {4, 8, 1, 128 * 256, 256, 256, 2048, pk_gemm_ukernel_scalar_4x8, pack_a_scalar, pack_b_scalar},
    [PK_ISA_AVX2] = {6, 16, 1, 144 * 256, 256, 256, 4096, pk_gemm_ukernel_avx2_6x16, pack_a_avx2, pack_b_avx2},
    [PK_ISA_AVX512] = {14, 32, 1, PK_GEMM_AVX512_A_BLOCK, PK_GEMM_AVX512_KC, PK_GEMM_AVX512_KC_TN, PK_GEMM_AVX512_NC,
                       pk_gemm_ukernel_avx512_14x32, pack_a_avx512, pack_b_avx512},
};

const pk_gemm_config *pk_gemm_config_fp32(pk_isa isa) { return &CONFIGS[isa]; }

/* ---- Pack buffers: grow-only, one pair per thread (no malloc in steady state) -------------- */
static _Thread_local pk_scratch tl_pack_a, tl_pack_b;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* A rows x row_bytes region of memory (ld_bytes apart), prefetched into L2 in `parts` slices
 * while the previous A block is being multiplied (the next A block's first read is from DRAM). */
typedef struct { const char *base; int64_t rows, lines_per_row, ld_bytes; } pk_region;

static void prefetch_slice(const pk_region *r, int64_t part, int64_t parts) {
  const int64_t total = r->rows * r->lines_per_row;
  const int64_t l0 = total * part / parts, end = total * (part + 1) / parts;
  if (l0 >= end) return;
  /* One division per slice, not per line (a division per line was ~1% of the bf16 step). */
  int64_t row = l0 / r->lines_per_row, col = l0 - row * r->lines_per_row;
  const char *p = r->base + row * r->ld_bytes;
  for (int64_t l = l0; l < end; l++) {
    __builtin_prefetch(p + col * 64, 0, 2);
    if (++col == r->lines_per_row) { col = 0; p += r->ld_bytes; }
  }
}
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* C = beta * C (k == 0 or alpha == 0); beta == 0 writes zeros without reading C. */
static void scale_c(int64_t m, int64_t n, float beta, float *c, int64_t ldc) {
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    if (beta == 0.0f) memset(ci, 0, (size_t)n * sizeof(float));
    else if (beta != 1.0f)
      for (int64_t j = 0; j < n; j++) ci[j] *= beta;
  }
}

pk_status pk_sgemm(pk_layout layout, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc) {
  pk_status st = pk_sgemm_check(layout, m, n, k, a, lda, b, ldb, c, ldc);
  if (st != PK_STATUS_OK) return st;
  /* A few rows (decoding): packing B would cost more than the product; read it once in place. */
  if (m > 0 && m <= PK_GEMV_MAX_M && layout != PK_LAYOUT_TN)
    return pk_gemv_small_m(layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return pk_gemm_run(&CONFIGS[pk_isa_active()], layout, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

pk_status pk_gemm_run(const pk_gemm_config *cfg, pk_layout layout, int64_t m, int64_t n, int64_t k,
                      float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc) {
  if (m == 0 || n == 0) return PK_STATUS_OK;
  if (k == 0 || alpha == 0.0f) {
    scale_c(m, n, beta, c, ldc);
    return PK_STATUS_OK;
  }
  /* FLOP counting mode (pk_core.h): a multiply-add counts 2, as in FLOPs.swift. */
  pk_flops_add(2.0 * (double)m * (double)n * (double)k);
  const int MR = cfg->mr, NR = cfg->nr;
  const int trans_a = layout == PK_LAYOUT_TN, trans_b = layout == PK_LAYOUT_NT;
  /* TN (the weight gradients) has its own, shallower KC; MC fills the A block for this k, up to
   * the height it has at k = 256 (taller blocks were not measured faster). */
  const int64_t KC = min64(trans_a ? cfg->kc_tn : cfg->kc, k);
  const int64_t mrows = cfg->a_block / (KC > 256 ? KC : 256) / MR, MCB = (mrows > 0 ? mrows : 1) * MR;
  /* Packed words per panel row (gemm_internal.h): KW for a full KC block, kw for the one at hand. */
  const int64_t KW = ceil_div(KC, cfg->kpack);
  const int64_t NC = min64(cfg->nc, ceil_div(n, NR) * NR);

  int nth = pk_threads_get();
  /* Below ~2M multiply-adds (~10 us on one core) waking a second thread costs more than it saves. */
  if ((double)m * (double)n * (double)k < (double)(1 << 21)) nth = 1;

  /* Work split over the team. By rows: each thread owns a contiguous range of MR row panels
   * (shares differ by at most one panel), cuts it into equal MC blocks and packs its own A; the B
   * panel is packed by all and shared. By columns (few rows, < 4 panels per thread, or wide C,
   * >= 32 NR panels per thread): every thread runs all rows on its share of the column panels and
   * packs exactly the B micro-panels it uses, so no barrier is needed; the A blocks are packed by
   * every thread, which at >= 1024 columns a thread costs less than the row split's imbalance
   * (37 panels of 512 rows split 18/19) and cross-core B reads. Measured side by side at 2
   * threads: +1-2.5% on 2048^3 and 512x2048x4096 TN, and -3% for n = 512, hence the threshold. */
  const int64_t rpanels = ceil_div(m, MR);
  const int split_n = nth > 1 && (rpanels < 4 * (int64_t)nth || ceil_div(n, NR) >= 32 * (int64_t)nth);

  /* The B panel lives in the calling thread's buffer; each thread packs its own A. Under split_n
   * each thread's micro-panels sit in a region of their own, since the threads move from pass to
   * pass without waiting for each other (nt regions of ceil(P / nt) panels fit in P + nth). */
  if (nth > 64) nth = 64;
  const int64_t bpanels = ceil_div(NC, NR);
  /* Under the row split the B panel is double-buffered (KC step s packs into buffer s % 2), so one
   * barrier a step suffices: a thread that packs step s + 1's panel has passed step s's barrier,
   * which every thread reached only after multiplying step s - 1, the last user of that buffer. */
  const int64_t panel_words = KW * bpanels * NR;
  float *bpack = pk_scratch_reserve(&tl_pack_b, (size_t)(split_n ? KW * (bpanels + nth) * NR : 2 * panel_words));
  if (!bpack) return PK_STATUS_NO_MEMORY;
  int failed[64] = {0};
  team_barrier barrier = {0, 0};

#pragma omp parallel num_threads(nth) if (nth > 1)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    int sense = 0;
    float *apack = pk_scratch_reserve(&tl_pack_a, (size_t)(MCB * KW));
    failed[tid] = apack == NULL;
    /* This thread's rows [r0, r1) in blocks of MC, and its share of every NC panel. */
    const int64_t r0 = split_n ? 0 : min64(m, tid * rpanels / nt * MR);
    const int64_t r1 = split_n ? m : min64(m, (tid + 1) * rpanels / nt * MR);
    const int64_t nblocks = ceil_div(r1 - r0, MCB);
    const int64_t MC = nblocks > 0 ? ceil_div(ceil_div(r1 - r0, nblocks), MR) * MR : MR;
    team_barrier_wait(&barrier, nt, &sense);
    int any_failed = 0;
    for (int t = 0; t < nt; t++) any_failed |= failed[t];
    if (!any_failed) {
      int64_t step = 0; /* KC steps so far, over all JC panels: which B buffer is in use */
      for (int64_t jc = 0; jc < n; jc += NC) { /* JC loop: NC columns of B and C */
        const int64_t nc = min64(NC, n - jc), npanels = ceil_div(nc, NR);
        const int64_t q0 = split_n ? tid * npanels / nt : 0;
        const int64_t q1 = split_n ? (tid + 1) * npanels / nt : npanels;
        /* Where column jmine's micro-panel starts in the B buffer (shared, or this thread's own). */
        const int64_t jmine = split_n ? q0 * NR : 0;
        for (int64_t pc = 0; pc < k; pc += KC, step++) { /* PC loop: KC of the shared dimension */
          float *const bmine = split_n ? bpack + tid * KW * ceil_div(bpanels, nt) * NR
                                       : bpack + (step & 1) * panel_words;
          const int64_t kc = min64(KC, k - pc), kw = ceil_div(kc, cfg->kpack);
          const float beta_pc = pc == 0 ? beta : 1.0f;
          { /* pack B(pc:pc+kc, jc:jc+nc) together: thread tid packs its share of micro-panels,
             * [p0, p1), which under split_n is exactly the [q0, q1) it multiplies by */
            const int64_t p0 = tid * npanels / nt, p1 = (tid + 1) * npanels / nt;
            const int64_t j0 = p0 * NR, j1 = min64(p1 * NR, nc);
            const float *src = trans_b ? b + (jc + j0) * ldb + pc : b + pc * ldb + jc + j0;
            if (j1 > j0) cfg->pack_b(bmine + (j0 - jmine) * kw, src, ldb, trans_b, j1 - j0, kc);
          }
          if (!split_n) team_barrier_wait(&barrier, nt, &sense);
          for (int64_t ic = r0; ic < r1; ic += MC) { /* IC loop over this thread's rows */
            const int64_t mc = min64(MC, r1 - ic);
            { /* pack A(ic:ic+mc, pc:pc+kc) into MR micro-panels */
              const float *src = trans_a ? a + pc * lda + ic : a + ic * lda + pc;
              cfg->pack_a(apack, src, lda, trans_a, mc, kc);
            }
            pk_region next = {0};
            if (ic + MC < r1) {
              const int64_t nic = ic + MC, nmc = min64(MC, r1 - nic);
              next = trans_a
                  ? (pk_region){(const char *)(a + pc * lda + nic), kc, ceil_div(nmc * 4, 64), lda * 4}
                  : (pk_region){(const char *)(a + nic * lda + pc), nmc, ceil_div(kc * 4, 64), lda * 4};
            }
            for (int64_t jr = q0 * NR; jr < min64(q1 * NR, nc); jr += NR) { /* JR loop */
              if (next.base) prefetch_slice(&next, jr / NR - q0, q1 - q0);
              const int nr = (int)min64(NR, nc - jr);
              for (int64_t ir = 0; ir < mc; ir += MR) { /* IR loop */
                const int mr = (int)min64(MR, mc - ir);
                { /* the next C tile into L2 a whole micro-kernel call ahead (C may be in DRAM) */
                  const float *cn = ir + MR < mc ? c + (ic + ir + MR) * ldc + jc + jr : c + ic * ldc + jc + jr + NR;
                  for (int i = 0; i < MR; i++) {
                    __builtin_prefetch(cn + i * ldc, 0, 2);
                    __builtin_prefetch(cn + i * ldc + NR - 1, 0, 2);
                  }
                }
                cfg->ukernel(kw, apack + ir * kw, bmine + (jr - jmine) * kw, c + (ic + ir) * ldc + jc + jr,
                             ldc, alpha, beta_pc, mr, nr);
              }
            }
          }
        }
      }
      /* Finish on the spin barrier: the first thread done would otherwise wait in OpenMP's join,
       * asleep under KMP_BLOCKTIME=0 (256^3 took 10-15% longer at 2 threads that way, side by side). */
      if (!split_n) team_barrier_wait(&barrier, nt, &sense);
    }
  }
  for (int t = 0; t < nth; t++)
    if (failed[t]) return PK_STATUS_NO_MEMORY;
  return PK_STATUS_OK;
}
