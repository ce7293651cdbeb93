#!/usr/bin/env python3
"""Crash-consistency drill for `palm train` checkpoints (issue 13; a benchmark, not a timed test).

Runs the uninterrupted reference once, then N times starts `palm train --resume` in one checkpoint
directory and kills it with SIGKILL (kill -9: no cleanup) at a random moment, then lets a last
`--resume` finish. After every kill it checks every step directory of the checkpoint directory:
each must verify (manifest readable, every file of the recorded size and SHA-256), and the newest
verified step must never go back. At the end every loss logged by any of the runs (a killed run's
updates after its last checkpoint are logged, then redone) must equal the reference's loss of that
update bit for bit (same --threads: palm resumes bit-exactly).

    python3 bench/crash_drill.py --palm .build/debug/palm --kills 20 --seed 1

Prints one summary line and exits 1 when a checkpoint was lost or unreadable, or a loss differs.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def verify(step_dir):
    """True when the step directory's manifest decodes and every listed file matches it."""
    try:
        with open(os.path.join(step_dir, "manifest.json"), "rb") as f:
            manifest = json.load(f)
        for name, rec in manifest["files"].items():
            with open(os.path.join(step_dir, name), "rb") as f:
                data = f.read()
            if len(data) != rec["bytes"] or hashlib.sha256(data).hexdigest() != rec["sha256"]:
                return False
        return "model.safetensors" in manifest["files"]
    except (OSError, ValueError, KeyError):
        return False


def step_dirs(ck):
    return sorted(n for n in os.listdir(ck) if n.startswith("step_"))


def losses(log):
    """(step, loss text) of every "step" record; the text is compared, so equality is bit for bit."""
    out = []
    with open(log) as f:
        for line in f:
            try:
                r = json.loads(line, parse_float=str)
            except ValueError:
                continue  # the line a kill cut short
            if r.get("type") == "step":
                out.append((r["step"], r["loss"]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--palm", default=".build/release/palm")
    p.add_argument("--data", default=os.environ.get("PALM_DATA", "../shared/data/tinyshakespeare.txt"))
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix="palm-crash-drill-")
    data = os.path.join(work, "data.txt")
    with open(a.data, "rb") as f, open(data, "wb") as g:
        g.write(f.read(200_000))
    common = [a.palm, "train", "--data", data, "--config", "tiny", "--batch", "4", "--seq-len", "64",
              "--eval-every", "0", "--eval-windows", "1", "--peak-gflops", "100", "--threads", "1",
              "--steps", str(a.steps), "--checkpoint-every", str(a.checkpoint_every), "--keep", "3"]
    env = dict(os.environ, KMP_BLOCKTIME="0")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    t0 = time.monotonic()
    subprocess.run(common + ["--checkpoint-dir", os.path.join(work, "ref"), "--log", os.path.join(work, "ref.jsonl")],
                   check=True, **quiet)
    reference_seconds = time.monotonic() - t0
    reference = dict(losses(os.path.join(work, "ref.jsonl")))

    ck, log = os.path.join(work, "ck"), os.path.join(work, "drill.jsonl")
    os.mkdir(ck)
    run = common + ["--checkpoint-dir", ck, "--log", log, "--resume"]
    newest, went_back, unreadable, finished_early, kills, mid_write, after_progress = -1, 0, 0, 0, 0, 0, 0
    # Kill moments: uniform over a window that lets the runs together cover about the whole
    # reference run (each restart also pays the start-up and redoes the updates since its checkpoint).
    window = 2.5 * reference_seconds / a.kills
    for _ in range(a.kills):
        logged = len(losses(log)) if os.path.exists(log) else 0
        child = subprocess.Popen(run, **quiet)
        time.sleep(rng.uniform(0, window))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
            child.wait()
            # A kill before the run logged a step tests only its start-up; count the ones that did more.
            after_progress += (len(losses(log)) if os.path.exists(log) else 0) > logged
        else:
            finished_early += 1
        child.wait()
        mid_write += any(n.startswith(".tmp-step_") for n in os.listdir(ck))  # killed while writing a checkpoint
        verified = [d for d in step_dirs(ck) if verify(os.path.join(ck, d))]
        unreadable += len(step_dirs(ck)) - len(verified)
        top = int(verified[-1][5:]) if verified else -1
        went_back += top < newest
        newest = max(newest, top)
    final = subprocess.run(run, **quiet).returncode
    got = losses(log)
    mismatches = [(s, l, reference.get(s)) for s, l in got if reference.get(s) != l]
    done = {s for s, _ in got}
    lost = went_back + unreadable
    print(f"crash drill: {kills} kills ({after_progress} after the run had logged a new step, {mid_write} during a checkpoint write; "
          f"+{finished_early} runs that finished before their kill), "
          f"reference {reference_seconds:.1f} s; "
          f"{lost} lost or unreadable checkpoints; final run exit {final}; {len(got)} logged losses "
          f"({len(got) - len(done)} redone after a kill), {len(mismatches)} differ from the uninterrupted run's; "
          f"steps logged {len(done)}/{a.steps}" + ("" if lost == 0 and not mismatches else f"; work dir {work}"))
    if mismatches:
        print("first mismatches (step, drill, reference):", mismatches[:5])
    ok = lost == 0 and final == 0 and not mismatches and len(done) == a.steps
    if ok:
        shutil.rmtree(work)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
