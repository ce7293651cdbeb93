#!/usr/bin/env python3
"""The trust test of `palm plan` (issue 15): predicted against measured tokens/s on this machine.

For each config x remat x mesh: `palm bench step --mesh M --devices local` measures the update of
the one Trainer (AdamW) in-process; `palm plan --hardware PROFILE` predicts it from a --profile of
this machine (one profile per threads-per-rank: cores / ranks, as palm bench step defaults).
Prints a Markdown table and the bar (|predicted / measured - 1| <= 10%).

  KMP_BLOCKTIME=0 python3 bench/plan_check.py [--palm .build/release/palm] [--quick] [--steps 3]

--quick runs tiny only, remat none/full, meshes (1,1,1), (2,1,1), (1,1,2) (the 2-core machine).
Profiles are written to --profile-dir (default /tmp/palm-plan-profiles) and reused if present.
"""
import argparse, json, os, subprocess, sys

MESHES = ["pod=1", "pod=2", "data=2", "model=2", "pod=2,data=2,model=2"]

def run(cmd):
    env = dict(os.environ, KMP_BLOCKTIME="0")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout

def ranks(mesh):
    n = 1
    for part in mesh.split(","):
        n *= int(part.split("=")[1])
    return n

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--palm", default=".build/release/palm")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--profile-dir", default="/tmp/palm-plan-profiles")
    ap.add_argument("--configs", help="comma-separated configs (overrides --quick's)")
    ap.add_argument("--meshes", help="semicolon-separated meshes (overrides --quick's)")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    configs = ["tiny"] if a.quick else ["tiny", "small"]
    meshes = ["pod=1", "pod=2", "model=2"] if a.quick else MESHES
    if a.configs: configs = a.configs.split(",")
    if a.meshes: meshes = a.meshes.split(";")
    os.makedirs(a.profile_dir, exist_ok=True)
    profiles = {}
    for t in sorted({max(1, cores // ranks(m)) for m in meshes}):
        path = f"{a.profile_dir}/cpu-{t}t.json"
        if not os.path.exists(path):
            print(f"profiling at {t} thread(s) -> {path}", file=sys.stderr)
            run([a.palm, "plan", "--profile", "--threads", str(t), "--output", path])
        profiles[t] = path
    rows = []
    for c in configs:
        for remat in ["none", "full"]:
            for m in meshes:
                t = max(1, cores // ranks(m))
                measured = json.loads(run([a.palm, "bench", "step", "--config", c, "--mesh", m, "--devices", "local",
                                           "--remat", remat, "--steps", str(a.steps), "--format", "json"]).strip().splitlines()[-1])
                plan = json.loads(run([a.palm, "plan", "--config", c, "--mesh", m, "--remat", remat, "--optimizer", "adamw",
                                       "--hardware", profiles[t], "--format", "json"]))["plan"]
                got, want = measured["tokens_per_s"], plan["tokensPerSecond"]
                rows.append((c, remat, m, t, want, got, want / got - 1))
                print(f"{c} {remat} {m}: predicted {want:.0f}, measured {got:.0f} ({(want / got - 1) * 100:+.1f}%)", file=sys.stderr)
    print("| config | remat | mesh | threads/rank | predicted tokens/s | measured tokens/s | error |")
    print("|---|---|---|---:|---:|---:|---:|")
    for c, remat, m, t, want, got, err in rows:
        print(f"| {c} | {remat} | {m} | {t} | {want:,.0f} | {got:,.0f} | {err * 100:+.1f}% |")
    within = sum(abs(r[6]) <= 0.10 for r in rows)
    print(f"\n{within} of {len(rows)} within ±10% (bar: all).")

if __name__ == "__main__":
    main()
