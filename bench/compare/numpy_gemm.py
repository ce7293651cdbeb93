#!/usr/bin/env python3
# Usage: KMP_BLOCKTIME=0 python3 bench/compare/numpy_gemm.py [--palm .build/release/palm] [--threads 1,2]
#        [--rounds 3] [--repeat 5] [--squares] [--only NAME] [--json out.jsonl]
"""pk_sgemm (palm bench matmul) against numpy/OpenBLAS on the transformer shapes, alternately.

For every (shape, layout, threads) the two sides take turns, --rounds times: one `palm bench matmul
--format json` subprocess (warm-up + --repeat samples of >= 20 ms, median), then numpy's matmul on
operands of the same shape and layout in this process (same protocol: a sample during which other
processes used > 5% of the machine is retaken). Reported: GFLOP/s from the median over rounds of each
side's median time, the best (min) time, ours/numpy ratios, and the worst foreign CPU share kept.

numpy side as in /work/shared/anchors/sgemm.py: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed
(this machine sets Haswell, which halves OpenBLAS) by re-executing without them; palm does not read
them. Threads: threadpoolctl if installed, else numpy's bundled OpenBLAS set_num_threads (ctypes).
NT / TN operands are transposed *views* (`W.T`, `X.T`), as autograd would pass them.
"""
import argparse
import ctypes
import glob
import json
import os
import statistics
import subprocess
import sys
import time

STRIP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in STRIP):
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    print(f"[numpy_gemm] re-exec without {[v for v in STRIP if v in os.environ]}", file=sys.stderr)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402

T, D, F = 4096, 512, 2048
FORWARD = [("X.W1", T, D, F), ("H.W2", T, F, D), ("X.Wp", T, D, D)]  # (name, m, k, n) of X·W


def cases(squares):
    out = []
    if squares:
        for s in (256, 512, 1024, 2048, 4096):
            out.append((f"square {s}", s, s, s, "nn"))
    for name, m, k, n in FORWARD:
        out.append((f"fwd {name}", m, n, k, "nn"))
    for name, m, k, n in FORWARD:  # dX = dY·Wᵀ
        out.append((f"bwd dX of {name}", m, k, n, "nt"))
    for name, m, k, n in FORWARD:  # dW = Xᵀ·dY
        out.append((f"bwd dW of {name}", k, n, m, "tn"))
    return out  # (name, m, n, k, layout)


class BlasThreads:
    """Sets OpenBLAS's thread count: threadpoolctl if present, else the bundled library's setter."""

    def __init__(self):
        try:
            from threadpoolctl import threadpool_limits, threadpool_info
            self.limits, self.info = threadpool_limits, threadpool_info
            self.lib = None
        except ImportError:
            self.limits = None
            libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
            path = sorted(glob.glob(os.path.join(libdir, "libscipy_openblas*.so")))[0]
            self.lib = ctypes.CDLL(path)
            self.prefix = "scipy_openblas_" if hasattr(self.lib, "scipy_openblas_set_num_threads64_") else "openblas_"

    def set(self, t):
        if self.limits:
            self.ctx = self.limits(limits=t, user_api="blas")
        else:
            getattr(self.lib, self.prefix + "set_num_threads64_")(ctypes.c_int(t))

    def describe(self):
        if self.limits:
            return "; ".join(f"{l.get('internal_api')} {l.get('version')} arch={l.get('architecture')} "
                             f"threads={l.get('num_threads')}" for l in self.info() if l["user_api"] == "blas")
        core = getattr(self.lib, self.prefix + "get_corename64_")
        core.restype = ctypes.c_char_p
        n = getattr(self.lib, self.prefix + "get_num_threads64_")()
        return f"OpenBLAS (bundled, ctypes) core={core().decode()} threads={n}"


def operands(m, n, k, layout, rng):
    if layout == "tn":
        A = rng.standard_normal((k, m), dtype=np.float32).T
    else:
        A = rng.standard_normal((m, k), dtype=np.float32)
    if layout == "nt":
        B = rng.standard_normal((n, k), dtype=np.float32).T
    else:
        B = rng.standard_normal((k, n), dtype=np.float32)
    return A, B, np.empty((m, n), dtype=np.float32)


def busy_seconds():
    """Busy CPU seconds of the whole machine (/proc/stat: user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def self_seconds():
    t = os.times()
    return t.user + t.system


def time_numpy(A, B, C, repeat, max_foreign=0.05):
    """Median and min seconds; like palm, a sample during which other processes used more than
    max_foreign of the machine is retaken (at most 10 x repeat tries, then the least disturbed)."""
    np.matmul(A, B, out=C)  # warm-up
    t0 = time.perf_counter()
    np.matmul(A, B, out=C)
    inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    ncpu = os.cpu_count() or 1
    clean, tried = [], []
    while len(clean) < repeat and len(tried) < 10 * repeat:
        b0, s0, t0 = busy_seconds(), self_seconds(), time.perf_counter()
        for _ in range(inner):
            np.matmul(A, B, out=C)
        wall = time.perf_counter() - t0
        foreign = max(0.0, (busy_seconds() - b0) - (self_seconds() - s0)) / (wall * ncpu)
        tried.append((foreign, wall / inner))
        if foreign <= max_foreign:
            clean.append(wall / inner)
        else:
            time.sleep(0.1)
    samples = clean if len(clean) >= repeat else [t for _, t in sorted(tried)[:repeat]]
    worst = max(f for f, t in tried if t in samples)
    return statistics.median(samples), min(samples), worst


def time_palm(palm, m, n, k, layout, threads, repeat):
    cmd = [palm, "bench", "matmul", "--m", str(m), "--n", str(n), "--k", str(k), "--layout", layout,
           "--threads", str(threads), "--repeat", str(repeat), "--format", "json"]
    env = dict(os.environ, KMP_BLOCKTIME="0")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["seconds_median"], r["seconds_min"], r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--palm", default=".build/release/palm")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--squares", action="store_true", help="also the square sizes 256...4096 (NN)")
    ap.add_argument("--only", default="", help="substring filter on case names")
    ap.add_argument("--json", default="", help="append one JSON object per case to this file")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    blas = BlasThreads()
    rng = np.random.default_rng(0)
    print(f"# numpy {np.__version__}; {args.palm}; rounds {args.rounds}, {args.repeat} samples each side per round")
    rows = []
    for name, m, n, k, layout in [c for c in cases(args.squares) if args.only in c[0]]:
        A, B, C = operands(m, n, k, layout, rng)
        flop = 2.0 * m * n * k
        for t in threads:
            blas.set(t)
            ours, theirs, peak, foreign = [], [], None, 0.0
            for _ in range(args.rounds):
                med, mn, r = time_palm(args.palm, m, n, k, layout, t, args.repeat)
                ours.append((med, mn))
                peak = r.get("peak_gflops")
                foreign = max(foreign, r.get("foreign_cpu", 0.0))
                nmed, nmin, nforeign = time_numpy(A, B, C, args.repeat)
                theirs.append((nmed, nmin))
                foreign = max(foreign, nforeign)
            o_med = statistics.median(x[0] for x in ours)
            o_min = min(x[1] for x in ours)
            n_med = statistics.median(x[0] for x in theirs)
            n_min = min(x[1] for x in theirs)
            row = dict(name=name, m=m, n=n, k=k, layout=layout, threads=t,
                       ours_gflops=flop / o_med / 1e9, ours_gflops_max=flop / o_min / 1e9,
                       numpy_gflops=flop / n_med / 1e9, numpy_gflops_max=flop / n_min / 1e9,
                       ratio_median=n_med / o_med, ratio_best=n_min / o_min, peak_gflops=peak,
                       foreign_cpu_max=foreign)
            rows.append(row)
            print(f"  {name:18s} {layout} {m:5d}x{n:5d}x{k:5d} {t}T  ours {row['ours_gflops']:6.1f} "
                  f"(best {row['ours_gflops_max']:6.1f})  numpy {row['numpy_gflops']:6.1f} "
                  f"(best {row['numpy_gflops_max']:6.1f})  ratio {row['ratio_median']:.2f} "
                  f"(best {row['ratio_best']:.2f})  foreign cpu <= {100 * foreign:.0f}%", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
        del A, B, C
    print(f"# numpy BLAS: {blas.describe()}")
    print()
    print("| case | layout | m×n×k | " + " | ".join(f"ours {t}T | numpy {t}T | ratio {t}T" for t in threads) + " |")
    print("|---|---|---|" + "---:|" * (3 * len(threads)))
    keyed = {(r["name"], r["layout"], r["threads"]): r for r in rows}
    for name, m, n, k, layout in [c for c in cases(args.squares) if args.only in c[0]]:
        cells = []
        for t in threads:
            r = keyed[(name, layout, t)]
            cells += [f"{r['ours_gflops']:.0f}", f"{r['numpy_gflops']:.0f}", f"{r['ratio_median']:.2f}"]
        print(f"| {name} | {layout} | {m}×{n}×{k} | " + " | ".join(cells) + " |")
    print("\nGFLOP/s from the median time over rounds; ratio = ours/numpy (> 1: palm faster).")


if __name__ == "__main__":
    main()
