#!/usr/bin/env python3
"""The trust test of `palm plan` (issue 15): predicted against measured tokens/s on this machine.

Profiles this machine first (`palm plan --profile --threads T` for each threads-per-rank T the meshes
use: cores / ranks, as palm bench step defaults), then for each config x remat x mesh measures the
update of the one Trainer (AdamW) with `palm bench step --mesh M --devices local` (in-process) and,
for the two-pod mesh, under `mpirun -np 2` too, and predicts it with `palm plan --hardware PROFILE
--devices local|mpi` (the profile's in-process or MPI collectives, as the run used).
Prints the run's time and CPU, a Markdown table and the bar (|predicted / measured - 1| <= 10%).

  KMP_BLOCKTIME=0 python3 bench/plan_check.py [--palm .build/release/palm] [--steps 5]
      [--configs tiny,small] [--meshes "pod=1;pod=2"] [--no-mpi] [--reuse-profiles]

Profiles are written to --profile-dir (default /tmp/palm-plan-profiles); --reuse-profiles keeps
ones already there (otherwise every run profiles afresh, so that prediction and measurement share
the machine's state).
"""
import argparse, datetime, json, os, shutil, subprocess, sys

MESHES = ["pod=1", "pod=2", "model=2", "data=2", "pod=2,data=2,model=2"]
MPI_MESH = "pod=2"

def run(cmd, env=None):
    env = dict(os.environ, KMP_BLOCKTIME="0", **(env or {}))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout

def ranks(mesh):
    n = 1
    for part in mesh.split(","):
        n *= int(part.split("=")[1])
    return n

def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    f = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda k: f.get(k, "?").strip()
    return f"{get('Model name')} (family {get('CPU family')} model {get('Model')}), {get('CPU(s)')} CPUs"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--palm", default=".build/release/palm")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--profile-dir", default="/tmp/palm-plan-profiles")
    ap.add_argument("--configs", default="tiny,small", help="comma-separated configs")
    ap.add_argument("--meshes", default=";".join(MESHES), help="semicolon-separated meshes")
    ap.add_argument("--no-mpi", action="store_true", help=f"skip the {MPI_MESH} run under mpirun")
    ap.add_argument("--reuse-profiles", action="store_true")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    configs, meshes = a.configs.split(","), a.meshes.split(";")
    mpi = not a.no_mpi and shutil.which("mpirun") is not None
    start = datetime.datetime.now(datetime.timezone.utc)
    print(f"started {start:%Y-%m-%d %H:%M} UTC on {cpu_model()}", file=sys.stderr)
    os.makedirs(a.profile_dir, exist_ok=True)
    profiles = {}
    for t in sorted({max(1, cores // ranks(m)) for m in meshes + ([MPI_MESH] if mpi else [])}):
        path = f"{a.profile_dir}/cpu-{t}t.json"
        if not (a.reuse_profiles and os.path.exists(path)):
            print(f"profiling at {t} thread(s) -> {path}", file=sys.stderr)
            run([a.palm, "plan", "--profile", "--threads", str(t), "--output", path])
        profiles[t] = path
    # Open MPI refuses root unless told (containers run as root).
    mpi_env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    rows = []
    for c in configs:
        for remat in ["none", "full"]:
            runs = [(m, "local") for m in meshes] + ([(MPI_MESH, "mpirun")] if mpi else [])
            for m, backend in runs:
                t = max(1, cores // ranks(m))
                step = [a.palm, "bench", "step", "--config", c, "--mesh", m, "--remat", remat,
                        "--steps", str(a.steps), "--format", "json"]
                if backend == "local":
                    out = run(step + ["--devices", "local"])
                else:
                    out = run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks(m))] + step
                              + ["--threads-per-rank", str(t)], env=mpi_env)
                measured = json.loads(out.strip().splitlines()[-1])
                plan = json.loads(run([a.palm, "plan", "--config", c, "--mesh", m, "--remat", remat, "--optimizer", "adamw",
                                       "--hardware", profiles[t], "--format", "json",
                                       "--devices", "local" if backend == "local" else "mpi"]))["plan"]
                got, want = measured["tokens_per_s"], plan["tokensPerSecond"]
                rows.append((c, remat, m, backend, t, want, got, want / got - 1))
                print(f"{c} {remat} {m} {backend}: predicted {want:.0f}, measured {got:.0f} ({(want / got - 1) * 100:+.1f}%)",
                      file=sys.stderr)
    end = datetime.datetime.now(datetime.timezone.utc)
    print(f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC, {cpu_model()}, {a.steps} timed steps per row\n")
    print("| config | remat | mesh | backend | threads/rank | predicted tokens/s | measured tokens/s | error |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for c, remat, m, backend, t, want, got, err in rows:
        print(f"| {c} | {remat} | {m} | {backend} | {t} | {want:,.0f} | {got:,.0f} | {err * 100:+.1f}% |")
    within = sum(abs(r[7]) <= 0.10 for r in rows)
    print(f"\n{within} of {len(rows)} within ±10% (bar: all).")

if __name__ == "__main__":
    main()
