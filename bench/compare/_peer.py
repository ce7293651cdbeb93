"""Shared pieces of the peer step scripts (torch_step.py, jax_step.py): configs, thread pinning,
FLOPs/token and the one-line JSON result. Standard library only; no framework is imported here.

The configs are palm's presets (Sources/PalmModel/PalmConfig.swift): vocab 256, d_ff = 4·d, one
shared K/V head (multi-query). FLOPs/token = 6N + 12·L·H·Q·T (PaLM Appendix B), N = all parameters.
"""
import json
import os
import sys

CONFIGS = {
    "tiny": dict(d_model=256, n_layers=4, n_heads=4, head_dim=64, seq_len=256, batch=16),
    "small": dict(d_model=512, n_layers=8, n_heads=8, head_dim=64, seq_len=512, batch=8),
}
VOCAB = 256
REMATS = ("none", "selective", "full")


def add_common_args(ap):
    ap.add_argument("--config", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--remat", default="none", choices=REMATS)
    ap.add_argument("--threads", type=int, default=0, help="pin to CPUs 0..N-1 (0: all)")
    ap.add_argument("--batch", type=int, default=0, help="override the preset's batch")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--optimizer", default="none", choices=["none", "adamw"],
                    help="none = forward+backward only, like `palm bench step` (default); adamw = the anchors' step")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="fp32, or bf16 = the framework's mixed precision (torch: autocast to bfloat16 on CPU)")


def pin_threads(n):
    """Pins this process to CPUs 0..n-1 before the framework starts its thread pools."""
    if n:
        os.sched_setaffinity(0, set(range(n)))
        os.environ["OMP_NUM_THREADS"] = str(n)
    return len(os.sched_getaffinity(0))


def param_count(c):
    d, L, H, Q = c["d_model"], c["n_layers"], c["n_heads"], c["head_dim"]
    per_layer = d + d * (H * Q + 2 * Q + 8 * d) + H * Q * d + 4 * d * d
    return VOCAB * d + L * per_layer + d


def model_flops_per_token(c):
    return 6 * param_count(c) + 12 * c["n_layers"] * c["n_heads"] * c["head_dim"] * c["seq_len"]


def emit(result):
    """Prints the result as one JSON line on stdout (what compare.py reads)."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def missing(framework, hint):
    sys.stderr.write(f"{framework} is not installed ({hint}); skipping.\n")
    sys.exit(3)
