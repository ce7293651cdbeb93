#!/usr/bin/env python3
# Usage: python3 bench/compare/train_race.py --palm .build/release/palm --data tinyshakespeare.txt
#        [--target 1.62] [--time-budget 600] [--threads 2] [--out race/]
"""`palm train` against the PyTorch peer on the peer's exact model, optimizer, batch and seed, in one run.

Both train the `tiny` shape (d 256, 4 layers, 4 heads x 64, T 256, batch 16, vocab 256) with AdamW
(lr 2e-3, betas 0.9/0.95, weight decay 0.1, 100 warm-up updates, then cosine to 10% over the time
budget), gradient clipping at 1.0, seed 0, on the same threads, one after the other (never at the
same time: the machine has 2 cores). Validation every 100 updates: the peer averages 20 random
batches of 16 windows; palm uses 320 fixed windows spread evenly over the same split (the last 10%
of the file).

Reported: for each system the seconds until its validation loss first reaches --target (palm: wall
clock INCLUDING its evaluations and rollback checkpoints; the peer: training time EXCLUDING its
evaluations, as the peer counts it; so the ratio favours the peer), the speed-up, tokens/s, and
both curves as JSON lines and an SVG (validation loss against seconds). palm's training loss also
carries z-loss (1e-4 log^2 Z) and the peer's does not; the validation losses are both plain
cross-entropy in nats per byte.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_peer(a, log):
    cmd = [a.python, os.path.join(HERE, "torch_train.py"), "--data", a.data, "--d-model", "256", "--layers", "4",
           "--heads", "4", "--head-dim", "64", "--seq-len", "256", "--batch", "16", "--lr", "2e-3",
           "--warmup", "100", "--time-budget", str(a.time_budget), "--threads", str(a.threads), "--seed", "0",
           "--eval-every", "100", "--eval-batches", "20", "--log", log]
    print("peer: " + " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode == 3:
        return None
    if r.returncode != 0:
        sys.exit(f"the peer failed (exit {r.returncode})")
    points = []
    for line in open(log):
        d = json.loads(line)
        if "val_loss" in d and not d.get("final"):
            points.append((d["train_seconds"], d["val_loss"], d.get("tokens_per_s")))
    return points


def run_palm(a, log):
    if os.path.exists(log):
        os.remove(log)
    cmd = [a.palm, "train", "--config", "tiny", "--data", a.data, "--optimizer", "adamw", "--lr", "2e-3",
           "--warmup", "100", "--weight-decay", "0.1", "--time-budget", str(a.time_budget), "--threads",
           str(a.threads), "--seed", "0", "--remat", "none", "--eval-every", "100", "--eval-windows", "320",
           "--log", log]
    print("palm: " + " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ, KMP_BLOCKTIME="0")
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit(f"palm train failed (exit {r.returncode})")
    points = []
    for line in open(log):
        d = json.loads(line)
        if d.get("type") == "step" and d.get("val_loss") is not None:
            points.append((d["seconds"], d["val_loss"], d["tokens"] / d["seconds"]))
    return points


def first_below(points, target):
    for s, v, _ in points:
        if v <= target:
            return s
    return None


def svg(curves, target, path):
    """Validation loss against seconds, one polyline per system, the target as a dashed line."""
    w, h, l, r, t, b = 720, 420, 60, 20, 30, 50
    xs = [s for pts in curves.values() for s, _, _ in pts] or [1]
    ys = [v for pts in curves.values() for _, v, _ in pts] + [target]
    x1, y0, y1 = max(xs) * 1.02, min(ys) - 0.05, min(max(ys), 3.0) + 0.05
    X = lambda s: l + (w - l - r) * s / x1
    Y = lambda v: t + (h - t - b) * (1 - (min(v, y1) - y0) / (y1 - y0))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{l}" y="18">Validation loss (nats/byte) against seconds, tiny shape, same optimizer and batch</text>']
    for i in range(6):
        v = y0 + (y1 - y0) * i / 5
        out.append(f'<line x1="{l}" x2="{w - r}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>'
                   f'<text x="{l - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        s = x1 * i / 5
        out.append(f'<text x="{X(s):.1f}" y="{h - b + 16}" text-anchor="middle">{s:.0f}</text>')
    out.append(f'<text x="{(l + w - r) / 2}" y="{h - 12}" text-anchor="middle">seconds</text>')
    out.append(f'<line x1="{l}" x2="{w - r}" y1="{Y(target):.1f}" y2="{Y(target):.1f}" stroke="#888" stroke-dasharray="6 4"/>')
    colors = {"palm": "#4c72b0", "torch": "#dd8452"}
    for k, (name, pts) in enumerate(curves.items()):
        c = colors.get(name, "#55a868")
        path_d = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v, _ in pts)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path_d}"/>')
        out.append(f'<rect x="{w - r - 120}" y="{t + 8 + 18 * k}" width="12" height="12" fill="{c}"/>'
                   f'<text x="{w - r - 102}" y="{t + 18 + 18 * k}">{name}</text>')
    out.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--palm", default=".build/release/palm")
    ap.add_argument("--data", default=os.environ.get("PALM_DATA", ""))
    ap.add_argument("--target", type=float, default=1.62)
    ap.add_argument("--time-budget", type=float, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default="race")
    a = ap.parse_args()
    if not a.data or not os.path.isfile(a.data):
        sys.exit("give --data FILE (or set PALM_DATA): the text to train on")
    os.makedirs(a.out, exist_ok=True)
    curves = {}
    peer = run_peer(a, os.path.join(a.out, "torch.jsonl"))
    if peer is None:
        print("torch is not installed: only palm runs", file=sys.stderr)
    else:
        curves["torch"] = peer
    curves["palm"] = run_palm(a, os.path.join(a.out, "palm.jsonl"))
    svg(curves, a.target, os.path.join(a.out, "race.svg"))
    print(f"| system | val loss {a.target} reached after (s) | best val loss | tokens/s |")
    print("|---|---:|---:|---:|")
    reached = {}
    for name, pts in curves.items():
        reached[name] = first_below(pts, a.target)
        best = min(v for _, v, _ in pts) if pts else float("nan")
        tps = pts[-1][2] if pts else float("nan")
        at = f"{reached[name]:.1f}" if reached[name] is not None else "not reached"
        print(f"| {name} | {at} | {best:.3f} | {tps:,.0f} |")
    if reached.get("torch") and reached.get("palm"):
        print(f"\nspeed-up to {a.target}: {reached['torch'] / reached['palm']:.2f}x (bar: >= 1.6x)")


if __name__ == "__main__":
    main()
