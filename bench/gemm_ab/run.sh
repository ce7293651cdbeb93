#!/usr/bin/env bash
# Usage: [DTYPE=bf16] bench/gemm_ab/run.sh THREADS SAMPLES VARIANT [VARIANT...] [-- SHAPE...]
#   VARIANT = SOURCE[:FLAGS]: SOURCE is a path to a gemm.c or a git revision (its CKernels/gemm.c),
#   FLAGS are extra compiler flags, comma-separated, e.g. -DPK_GEMM_AVX512_KC=512.
#   DTYPE=bf16 times variants of the bf16 GEMM instead: SOURCE is a gemm_bf16.c or a revision (its
#   CKernels/gemm_bf16.c), e.g. DTYPE=bf16 bench/gemm_ab/run.sh 1 7 CKernels/gemm_bf16.c \
#   CKernels/gemm_bf16.c:-DPK_BGEMM_KC_TN=256; percentages are then of the bf16 peak.
# Examples (run from the repository root; KMP_BLOCKTIME=0 is set here):
#   bench/gemm_ab/run.sh 1 7 CKernels/gemm.c CKernels/gemm.c:-DPK_GEMM_AVX512_A_BLOCK=57344
#   bench/gemm_ab/run.sh 2 9 HEAD~1 CKernels/gemm.c -- sq2048 dW_XW1
# Revisions before the bf16 GEMM (pk_gemm_run, gemm_pack.h) no longer build against these headers.
# Compiles each variant's driver with its pk_sgemm renamed pk_sgemm_vN, links them with the rest of
# CKernels (micro-kernels included, from the working tree) into one binary, in which gemm_ab.c
# times them side by side, and runs it. Needs clang and libomp-dev (as the package does). Builds in
# a temporary directory; nothing is left behind.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,11p "$0"; exit 2; }
threads=$1 samples=$2; shift 2
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cc=${CC:-clang}
flags=(-O3 -fopenmp=libomp -ffp-contract=fast -fno-math-errno -I"$root/CKernels/include" -I"$root/CKernels")
objs=(); n=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  src=${1%%:*}; extra=""; [[ "$1" == *:* ]] && extra=${1#*:}
  IFS=, read -r -a more <<< "$extra"
  if [ "${DTYPE:-fp32}" = bf16 ]; then
    if [ ! -f "$src" ]; then git -C "$root" show "$src:CKernels/gemm_bf16.c" > "$work/gemm$n.c"; src="$work/gemm$n.c"; fi
    # The variant's pk_bgemm becomes pk_sgemm_vN (same signature); its other exported names are renamed away.
    "$cc" "${flags[@]}" "${more[@]}" -Dpk_bgemm=pk_sgemm_v$n -Dpk_round_bf16=pk_round_bf16_v$n \
      -Dpk_round_bf16_array=pk_round_bf16_array_v$n -c "$src" -o "$work/v$n.o"
  else
    if [ ! -f "$src" ]; then git -C "$root" show "$src:CKernels/gemm.c" > "$work/gemm$n.c"; src="$work/gemm$n.c"; fi
    "$cc" "${flags[@]}" "${more[@]}" -Dpk_sgemm=pk_sgemm_v$n -Dpk_gemm_run=pk_gemm_run_v$n -Dpk_gemm_config_fp32=pk_gemm_config_fp32_v$n -c "$src" -o "$work/v$n.o"
  fi
  echo "v$n: $1"
  objs+=("$work/v$n.o"); n=$((n + 1)); shift
done
[ $# -gt 0 ] && shift  # the --
[ $n -ge 1 ] && [ $n -le 6 ] || { echo "run.sh: 1 to 6 variants" >&2; exit 2; }
others=()
# The working tree's gemm.c comes too: pk_bgemm (gemm_bf16.c) runs on its driver, pk_gemm_run.
for f in "$root"/CKernels/*.c; do others+=("$f"); done
# libomp: wherever clang's -fopenmp=libomp finds it (Debian: libomp-dev's /usr/lib/llvm-NN/lib).
omplib=$(ls /usr/lib/llvm-*/lib/libomp.so 2>/dev/null | sort -V | tail -1 || true)
ompdir=${omplib:+$(dirname "$omplib")}
"$cc" "${flags[@]}" -DNVARIANTS=$n ${DTYPE:+-DGEMM_AB_$(echo "$DTYPE" | tr a-z A-Z)} "$root/bench/gemm_ab/gemm_ab.c" "${objs[@]}" "${others[@]}" -o "$work/gemm_ab" \
  ${ompdir:+-L"$ompdir" -Wl,-rpath,"$ompdir"} -lm
KMP_BLOCKTIME=0 "$work/gemm_ab" "$threads" "$samples" "$@"
