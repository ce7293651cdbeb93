#!/usr/bin/env python3
# Usage: python3 jax_step.py --config tiny|small --remat none|selective|full --threads N [--steps 5 --warmup 2] [--optimizer none|adamw]
"""The palm model's training step in JAX/XLA (CPU), timed like `palm bench step`; prints one JSON line.

Same model as torch_step.py and palm (following ../shared/anchors/jax_palm.py), one jax.jit of
value_and_grad (and an AdamW update with --optimizer adamw, which needs optax), timed with
block_until_ready. Remat: none; full = jax.checkpoint(block); selective =
jax.checkpoint(block, policy=jax.checkpoint_policies.checkpoint_dots) (keep the matmul outputs).
Threads: pinned with sched_setaffinity before jax is imported (XLA sizes its pools from it); for 1
thread also --xla_cpu_multi_thread_eigen=false. Exit status 3 when jax is missing.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peer  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_peer.add_common_args(ap)
args = ap.parse_args()
threads = _peer.pin_threads(args.threads)
if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

try:
    import numpy as np
    import jax
    import jax.numpy as jnp
except ImportError:
    _peer.missing("jax", "pip install jax jaxlib")


def init(key, c):
    d, L, H, Q = c["d_model"], c["n_layers"], c["n_heads"], c["head_dim"]
    ks = jax.random.split(key, 1 + 2 * L)
    layers = []
    for l in range(L):
        layers.append({
            "ln": jnp.ones((d,), jnp.float32),
            "w_in": jax.random.normal(ks[1 + 2 * l], (d, H * Q + 2 * Q + 8 * d)) * d ** -0.5,
            "w_out": jax.random.normal(ks[2 + 2 * l], (H * Q + 4 * d, d)) * (H * Q + 4 * d) ** -0.5 / (2 * L) ** 0.5,
        })
    return {"embed": jax.random.normal(ks[0], (_peer.VOCAB, d)), "ln_f": jnp.ones((d,), jnp.float32), "layers": layers}


def layer_norm(x, scale, eps=1e-5):
    xc = x - jnp.mean(x, -1, keepdims=True)
    return xc * jax.lax.rsqrt(jnp.mean(xc * xc, -1, keepdims=True) + eps) * scale


def rope(x, sin, cos):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def make_loss(c, remat):
    d, H, Q, T = c["d_model"], c["n_heads"], c["head_dim"], c["seq_len"]
    splits = np.cumsum([H * Q, Q, Q, 4 * d])
    inv = 1.0 / (10000.0 ** (np.arange(0, Q, 2, dtype=np.float32) / Q))
    ang = np.arange(T, dtype=np.float32)[:, None] * inv[None, :]
    sin, cos = jnp.asarray(np.sin(ang)), jnp.asarray(np.cos(ang))
    mask = jnp.tril(jnp.ones((T, T), bool))

    def block(p, x):
        B = x.shape[0]
        q, k, v, gate, up = jnp.split(layer_norm(x, p["ln"]) @ p["w_in"], splits, axis=-1)
        q = rope(q.reshape(B, T, H, Q), sin[:, None, :], cos[:, None, :])
        k = rope(k, sin, cos)
        s = jnp.where(mask, jnp.einsum("bthq,bsq->bhts", q, k) * Q ** -0.5, jnp.finfo(jnp.float32).min)
        a = jnp.einsum("bhts,bsq->bthq", jax.nn.softmax(s, axis=-1), v).reshape(B, T, H * Q)
        return x + jnp.concatenate([a, jax.nn.silu(gate) * up], -1) @ p["w_out"]

    if remat == "full":
        block = jax.checkpoint(block)
    elif remat == "selective":
        block = jax.checkpoint(block, policy=jax.checkpoint_policies.checkpoint_dots)

    def loss_fn(params, inp, tgt):
        x = params["embed"][inp]
        for p in params["layers"]:
            x = block(p, x)
        logits = (layer_norm(x, params["ln_f"]) @ params["embed"].T) * d ** -0.5
        lse = jax.nn.logsumexp(logits, -1)
        nll = lse - jnp.take_along_axis(logits, tgt[..., None], -1)[..., 0]
        return jnp.mean(nll + 1e-4 * lse * lse)

    return loss_fn


def main():
    if args.precision != "fp32":
        sys.stderr.write("jax_step.py times fp32 only (no bf16 recipe written for it); skipping.\n")
        sys.exit(3)
    c = dict(_peer.CONFIGS[args.config])
    if args.batch:
        c["batch"] = args.batch
    B, T = c["batch"], c["seq_len"]
    params = init(jax.random.PRNGKey(0), c)
    grad_fn = jax.value_and_grad(make_loss(c, args.remat))
    if args.optimizer == "adamw":
        try:
            import optax
        except ImportError:
            _peer.missing("optax", "pip install optax, needed for --optimizer adamw")
        opt = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.1)
        state = opt.init(params)

        @jax.jit
        def step(params, state, inp, tgt):
            loss, g = grad_fn(params, inp, tgt)
            updates, state = opt.update(g, state, params)
            return optax.apply_updates(params, updates), state, loss
    else:
        state = None

        @jax.jit
        def step(params, state, inp, tgt):
            loss, g = grad_fn(params, inp, tgt)
            return g, state, loss  # gradients returned so nothing is dead code

    rng = np.random.default_rng(1)
    inp = jnp.asarray(rng.integers(0, _peer.VOCAB, (B, T)), jnp.int32)
    tgt = jnp.asarray(rng.integers(0, _peer.VOCAB, (B, T)), jnp.int32)

    def run():
        nonlocal params, state
        out, state2, loss = step(params, state, inp, tgt)
        jax.block_until_ready((out, loss))
        if args.optimizer == "adamw":
            params, state = out, state2
        return float(loss)

    for _ in range(max(args.warmup, 1)):  # the first call compiles
        run()
    times, loss = [], 0.0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = run()
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    _peer.emit({"framework": "jax", "version": jax.__version__, "config": args.config, "remat": args.remat,
                "threads": threads, "batch": B, "seq_len": T, "optimizer": args.optimizer,
                "step_seconds": times, "median_seconds": med, "tokens_per_second": B * T / med,
                "model_flops_per_token": _peer.model_flops_per_token(c), "last_loss": loss})


if __name__ == "__main__":
    main()
