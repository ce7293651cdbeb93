#!/usr/bin/env bash
# Re-measures the figures of docs/BENCHMARKS.md on this machine, one stage after the other (never two
# at once: each stage wants every core). Usage:
#   bash bench/reproduce.sh OUT_DIR [STAGE ...]      stages: peak gemm steps peers suite race train exchange
# With no stage, all of them (about 50 minutes on 2 cores). Needs PALM_DATA (or ../shared/data) for
# race and train; torch (pip install torch) for peers and race; numpy for gemm.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?give an output folder}; shift || true
stages=${*:-peak gemm steps peers suite race train exchange}
data=${PALM_DATA:-../shared/data/tinyshakespeare.txt}
export KMP_BLOCKTIME=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
swift build -c release >&2
B=.build/release/palm
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
for s in $stages; do
  log "stage $s"
  case $s in
    peak) $B peak --threads 2 --format json > "$out/peak.jsonl" ;;
    gemm)
      for t in 1 2; do $B bench matmul --m 2048 --n 2048 --k 2048 --threads $t --repeat 7 --format json; done > "$out/gemm-2048.jsonl"
      $B bench matmul --m 256 --n 256 --k 256 --threads 1 --repeat 7 --format json > "$out/gemm-256.jsonl"
      python3 bench/compare/numpy_gemm.py --palm $B --rounds 3 --repeat 5 --json "$out/gemm-vs-numpy.jsonl" > "$out/gemm-vs-numpy.md" ;;
    steps)
      for c in "small none" "small selective" "small full" "tiny none" "tiny selective" "tiny full"; do
        set -- $c; $B bench step --config $1 --remat $2 --threads 2 --format json
      done > "$out/steps.jsonl" ;;
    peers) python3 bench/compare/compare.py --palm $B --configs small,tiny --remat none,full --threads 2 --rounds 2 --peers torch --json "$out/peers.jsonl" > "$out/peers.md" ;;
    suite) $B bench --out "$out/suite" > "$out/suite.md" ;;
    race) python3 bench/compare/train_race.py --palm $B --data "$data" --out "$out/race" > "$out/race.md" ;;
    train)
      rm -rf "$out/shakespeare"
      $B train --config shakespeare --data "$data" --time-budget 600 --threads 2 --checkpoint-dir "$out/shakespeare" \
        --log "$out/shakespeare.jsonl" --plot "$out/shakespeare.svg" > "$out/train.txt" 2>&1
      $B sample --checkpoint "$out/shakespeare" --prompt "ROMEO:" --max-tokens 400 --temperature 0.8 --top-k 40 --seed 1 > "$out/sample.txt" ;;
    exchange) $B bench exchange --devices mpi --config small --rounds 3 > "$out/exchange.md" ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
log "done: $out"
