#!/usr/bin/env python3
# Usage: python3 torch_step.py --config tiny|small --remat none|selective|full --threads N [--steps 5 --warmup 2] [--optimizer none|adamw] [--precision fp32|bf16] [--compile]
"""The palm model's training step in PyTorch (CPU), timed like `palm bench step`; prints one JSON line.

Same model as palm (and ../shared/anchors/torch_palm.py, whose code this follows): shared embedding
(logits × d^-0.5), no biases, LayerNorm without bias, parallel block with one LN and one fused
[Wq|Wk|Wv|Wgate|Wup] projection, multi-query attention (F.scaled_dot_product_attention, causal, K/V
expanded with stride 0), rotate-half RoPE, SwiGLU d_ff = 4d, cross-entropy + z-loss 1e-4·lse².
Remat: none; full = torch.utils.checkpoint around each block; selective = selective activation
checkpointing that saves the matmul and attention outputs and recomputes the rest (torch >= 2.4).
--precision bf16 = PyTorch's CPU mixed precision as people run it: the forward under
torch.autocast("cpu", dtype=torch.bfloat16) (fp32 master weights, matmuls and SDPA in bf16), the
backward outside it; --compile wraps the model in torch.compile (the first warm-up step compiles).
Exit status 3 when torch is missing or cannot run the combination (compare.py then skips it).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peer  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_peer.add_common_args(ap)
ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
args = ap.parse_args()
threads = _peer.pin_threads(args.threads)

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint
except ImportError:
    _peer.missing("torch", 'pip install "torch==2.13.0+cpu" for the CPU wheel')

torch.set_num_threads(threads)


def rope(x, sin, cos):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H, Q, L = c["d_model"], c["n_heads"], c["head_dim"], c["n_layers"]
        self.d, self.H, self.Q, self.dff = d, H, Q, 4 * d
        self.ln = nn.Parameter(torch.ones(d))
        self.w_in = nn.Parameter(torch.randn(d, H * Q + 2 * Q + 8 * d) * d ** -0.5)
        self.w_out = nn.Parameter(torch.randn(H * Q + 4 * d, d) * (H * Q + 4 * d) ** -0.5 / (2 * L) ** 0.5)

    def forward(self, x, sin, cos):
        B, T, _ = x.shape
        H, Q = self.H, self.Q
        h = F.layer_norm(x, (self.d,), self.ln, None, 1e-5)
        q, k, v, gate, up = (h @ self.w_in).split([H * Q, Q, Q, self.dff, self.dff], -1)
        q = rope(q.view(B, T, H, Q), sin[:, None, :], cos[:, None, :]).transpose(1, 2)
        k = rope(k, sin, cos)[:, None]
        a = F.scaled_dot_product_attention(q, k.expand(B, H, T, Q), v[:, None].expand(B, H, T, Q), is_causal=True)
        a = a.transpose(1, 2).reshape(B, T, H * Q)
        return x + torch.cat([a, F.silu(gate) * up], -1) @ self.w_out


def selective_context():
    """Saves matmul / attention outputs, recomputes the element-wise rest (like palm's selective)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
    ops = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"):
        if hasattr(torch.ops.aten, name):
            ops.add(getattr(torch.ops.aten, name).default)

    def policy(ctx, op, *a, **k):
        return CheckpointPolicy.MUST_SAVE if op in ops else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


class PaLM(nn.Module):
    def __init__(self, c, remat):
        super().__init__()
        d, T, Q = c["d_model"], c["seq_len"], c["head_dim"]
        self.d, self.remat = d, remat
        self.embed = nn.Parameter(torch.randn(_peer.VOCAB, d))
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.ln_f = nn.Parameter(torch.ones(d))
        inv = 1.0 / (10000.0 ** (torch.arange(0, Q, 2, dtype=torch.float32) / Q))
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.register_buffer("cos", ang.cos(), persistent=False)

    def forward(self, inp, tgt):
        x = F.embedding(inp, self.embed)
        for b in self.blocks:
            if self.remat == "full":
                x = checkpoint(b, x, self.sin, self.cos, use_reentrant=False)
            elif self.remat == "selective":
                x = checkpoint(b, x, self.sin, self.cos, use_reentrant=False, context_fn=selective_context)
            else:
                x = b(x, self.sin, self.cos)
        x = F.layer_norm(x, (self.d,), self.ln_f, None, 1e-5)
        logits = ((x @ self.embed.t()) * self.d ** -0.5).reshape(-1, _peer.VOCAB)
        lse = torch.logsumexp(logits, -1)
        return F.cross_entropy(logits, tgt.reshape(-1)) + 1e-4 * (lse * lse).mean()


def main():
    c = dict(_peer.CONFIGS[args.config])
    if args.batch:
        c["batch"] = args.batch
    B, T = c["batch"], c["seq_len"]
    torch.manual_seed(0)
    model = PaLM(c, args.remat)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1) \
        if args.optimizer == "adamw" else None
    forward = torch.compile(model) if args.compile else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    g = torch.Generator().manual_seed(1)
    inp = torch.randint(0, _peer.VOCAB, (B, T), generator=g)
    tgt = torch.randint(0, _peer.VOCAB, (B, T), generator=g)

    def step():
        with autocast:
            loss = forward(inp, tgt)
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
        return float(loss)

    try:
        for _ in range(args.warmup):
            step()
    except Exception as e:  # selective checkpointing needs torch >= 2.4; compile needs a C++ compiler
        sys.stderr.write(f"torch {torch.__version__} cannot run remat={args.remat} precision={args.precision}"
                         f"{' compile' if args.compile else ''}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; skipping.\n")
        sys.exit(3)
    times, loss = [], 0.0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    _peer.emit({"framework": "torch", "version": torch.__version__, "config": args.config, "remat": args.remat,
                "threads": threads, "batch": B, "seq_len": T, "optimizer": args.optimizer,
                "precision": args.precision, "compile": args.compile,
                "step_seconds": times, "median_seconds": med, "tokens_per_second": B * T / med,
                "model_flops_per_token": _peer.model_flops_per_token(c), "last_loss": loss})


if __name__ == "__main__":
    main()
