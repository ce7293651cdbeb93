#!/usr/bin/env python3
# Usage: python3 bench/compare/compare.py [--palm .build/release/palm] [--configs tiny,small] [--remat none,full] [--threads 1,2] [--precision fp32,bf16] [--optimizer none|adamw] [--rounds 2] [--steps 5 --warmup 2] [--peers torch,torch-compile,jax] [--json out.jsonl]
"""palm against PyTorch and JAX on the same configs, in one run, alternating: for each round and each
(config, remat, threads), `palm bench step ... --format json`, then each installed peer script
(torch_step.py, jax_step.py) on the same shape. Alternating spreads the noise of a shared machine
over every system alike. Prints a table of median tokens/s over the rounds and the ratio palm/peer;
MFU too when palm knows the peak (PALM_PEAK_GFLOPS until the peak probe is merged).

Peers are never a dependency: a framework that is not installed is reported once and skipped.
All systems time forward + backward without the optimizer by default (`palm bench step` excludes it);
--optimizer adamw times the whole step, AdamW update included, on every side. --precision bf16 runs
palm with --precision bf16 and PyTorch under torch.autocast("cpu", dtype=torch.bfloat16), eager
(`torch`) and compiled (`torch-compile`): the peers' fastest configurations, as people run them.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS = {"torch": ("torch_step.py", []), "torch-compile": ("torch_step.py", ["--compile"]), "jax": ("jax_step.py", [])}
SKIPPED = 3  # exit status of a peer script whose framework is missing


def csv(text):
    return [s for s in text.split(",") if s]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--palm", default=os.path.join(ROOT, ".build", "release", "palm"), help="the palm executable")
    ap.add_argument("--configs", type=csv, default=["tiny", "small"])
    ap.add_argument("--remat", type=csv, default=["none", "selective", "full"])
    ap.add_argument("--threads", type=csv, default=["1", "2"])
    ap.add_argument("--precision", type=csv, default=["fp32"], help="fp32, bf16 or both (comma-separated)")
    ap.add_argument("--optimizer", default="none", choices=["none", "adamw"],
                    help="adamw: every timed step includes the AdamW update, on every side")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="override the presets' batch (quick checks)")
    ap.add_argument("--peers", type=csv, default=list(PEERS))
    ap.add_argument("--python", default=sys.executable, help="interpreter for the peer scripts")
    ap.add_argument("--json", default="", help="also write every run as JSON lines here")
    a = ap.parse_args(argv)
    for p in a.peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; known: {', '.join(PEERS)}")
    for p in a.precision:
        if p not in ("fp32", "bf16"):
            ap.error(f"unknown precision {p!r}; known: fp32, bf16")
    if a.rounds < 1 or a.steps < 1 or a.warmup < 0:
        ap.error("--rounds and --steps must be >= 1, --warmup >= 0")
    return a


def run_json(cmd, env=None):
    """Runs cmd; returns (status, the last JSON line of stdout or None, stderr tail)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    result = None
    for line in p.stdout.splitlines()[::-1]:
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if result is None and p.stdout.strip().startswith("{"):
        try:
            result = json.loads(p.stdout)  # a pretty-printed object
        except json.JSONDecodeError:
            pass
    return p.returncode, result, p.stderr.strip()[-600:]


def palm_cmd(a, config, remat, threads, precision):
    cmd = [a.palm, "bench", "step", "--config", config, "--remat", remat, "--threads", threads,
           "--warmup", str(a.warmup), "--steps", str(a.steps), "--precision", precision, "--format", "json"]
    cmd += ["--optimizer", a.optimizer] if a.optimizer != "none" else []
    return cmd + (["--batch", str(a.batch)] if a.batch else [])


def peer_cmd(a, peer, config, remat, threads, precision):
    script, extra = PEERS[peer]
    cmd = [a.python, os.path.join(HERE, script), "--config", config, "--remat", remat, "--threads", threads,
           "--warmup", str(a.warmup), "--steps", str(a.steps), "--precision", precision, "--optimizer", a.optimizer]
    return cmd + extra + (["--batch", str(a.batch)] if a.batch else [])


def table(rows, peers):
    head = ["config", "remat", "threads", "precision", "palm tok/s", "palm MFU (peak)"]
    for p in peers:
        head += [f"{p} tok/s", f"palm/{p}"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["config"], r["remat"], r["threads"], r["precision"], fmt(r["palm"]),
                 pct(r.get("palm_mfu")) + (f" ({r['palm_peak']})" if r.get("palm_peak") else "")]
        for p in peers:
            v = r.get(p)
            cells += [fmt(v), f"{r['palm'] / v:.2f}×" if v and r["palm"] else "—"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def fmt(v):
    return "—" if not v else f"{v:,.0f}"


def pct(v):
    return "—" if v is None else f"{100 * v:.1f}%"


def main(argv=None):
    a = parse(argv)
    if not os.access(a.palm, os.X_OK):
        sys.exit(f"palm executable not found at {a.palm}: run `swift build -c release` or pass --palm")
    env = dict(os.environ, KMP_BLOCKTIME="0")
    peers, skipped = list(a.peers), {}
    combos = [(c, r, t, p) for c in a.configs for r in a.remat for t in a.threads for p in a.precision]
    samples = {}  # (combo, system) -> [tokens/s]
    mfu, peak_of = {}, {}
    log = open(a.json, "w") if a.json else None
    for rnd in range(a.rounds):
        for combo in combos:
            status, res, err = run_json(palm_cmd(a, *combo), env)
            if status != 0 or res is None:
                sys.exit(f"palm failed on {combo} (status {status}): {err}")
            samples.setdefault((combo, "palm"), []).append(res["tokensPerSecond"])
            if res.get("mfu") is not None:
                mfu.setdefault(combo, []).append(res["mfu"])
                peak_of[combo] = res.get("peakPrecision", "fp32")
            if log:
                log.write(json.dumps({"system": "palm", "round": rnd, **res}) + "\n")
            sys.stderr.write(f"round {rnd + 1}/{a.rounds} {combo}: palm {res['tokensPerSecond']:,.0f} tok/s\n")
            for peer in list(peers):
                status, pres, err = run_json(peer_cmd(a, peer, *combo), env)
                if status == SKIPPED:
                    skipped[peer] = (err.splitlines()[-1] if err else "not available").removesuffix("; skipping.")
                    if "not installed" in skipped[peer]:
                        peers.remove(peer)  # missing framework: skip it for the whole run
                    continue
                if status != 0 or pres is None:
                    sys.stderr.write(f"  {peer} failed on {combo} (status {status}): {err}\n")
                    continue
                samples.setdefault((combo, peer), []).append(pres["tokens_per_second"])
                if log:
                    log.write(json.dumps({"system": peer, "round": rnd, **pres}) + "\n")
                sys.stderr.write(f"  {peer} {pres['tokens_per_second']:,.0f} tok/s\n")
    if log:
        log.close()
    rows = []
    for combo in combos:
        row = {"config": combo[0], "remat": combo[1], "threads": combo[2], "precision": combo[3],
               "palm": statistics.median(samples[(combo, "palm")])}
        if combo in mfu:
            row["palm_mfu"] = statistics.median(mfu[combo])
            row["palm_peak"] = peak_of[combo]
        for p in a.peers:
            if (combo, p) in samples:
                row[p] = statistics.median(samples[(combo, p)])
        rows.append(row)
    shown = [p for p in a.peers if any(p in r for r in rows)]
    what = "forward + backward + AdamW update" if a.optimizer == "adamw" else "forward + backward (no optimizer)"
    print(f"Median tokens/s over {a.rounds} alternating round(s), {a.warmup} warm-up + {a.steps} timed steps, "
          f"{what}; palm's MFU against the peak of its precision (named).\n")
    print(table(rows, shown))
    for p, why in skipped.items():
        print(f"\n{p}: skipped ({why})")
    return rows


if __name__ == "__main__":
    main()
