# Usage: python3 torch_train.py --data FILE [--d-model 256 --layers 4 --heads 4 --head-dim 64
#        --seq-len 256 --batch 16 --lr 1e-3 --warmup 100 --time-budget 600 | --steps N] [--threads 2]
#        [--eval-every 100 --eval-batches 20] [--seed 0] [--log out.jsonl]
"""PyTorch CPU peer for `palm train`: the same PaLM-style model trained on a byte-level text file.

The anchor script of ../shared/anchors/torch_train_text.py, kept as it was measured (train_race.py
runs it beside `palm train`). Exit status 3 when torch is missing.

Model: shared input/output embedding (logits scaled by d^-0.5), no biases, bias-free LayerNorm,
parallel block x + Attn(LN(x)) + SwiGLU(LN(x)) with one fused input projection, multi-query
attention (one K/V head), rotary embeddings (rotate-half), d_ff = 4 d. AdamW (0.9, 0.95, wd 0.1),
linear warm-up then cosine to 10% over the step or time budget, gradient clipping at 1.0.
Data: bytes of the file (vocab 256); the last 10% is validation. Prints one JSON object per eval.
"""
import argparse
import json
import math
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--d-model", type=int, default=256)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--head-dim", type=int, default=64)
ap.add_argument("--seq-len", type=int, default=256)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--warmup", type=int, default=100)
ap.add_argument("--steps", type=int, default=0)
ap.add_argument("--time-budget", type=float, default=600.0)
ap.add_argument("--eval-every", type=int, default=100)
ap.add_argument("--eval-batches", type=int, default=20)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--compile", action="store_true")
ap.add_argument("--log", default="")
args = ap.parse_args()
if args.threads:
    os.sched_setaffinity(0, set(range(args.threads)))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
try:
    import torch  # noqa: E402
except ImportError:
    print("torch is not installed", flush=True)
    raise SystemExit(3)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(len(os.sched_getaffinity(0)))
VOCAB = 256


def rope(x, sin, cos):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Block(nn.Module):
    def __init__(self, d, H, Q, L):
        super().__init__()
        self.d, self.H, self.Q, self.dff = d, H, Q, 4 * d
        self.ln = nn.Parameter(torch.ones(d))
        self.w_in = nn.Parameter(torch.randn(d, H * Q + 2 * Q + 8 * d) * d ** -0.5)
        self.w_o = nn.Parameter(torch.randn(H * Q, d) * (H * Q) ** -0.5 / (2 * L) ** 0.5)
        self.w_out = nn.Parameter(torch.randn(4 * d, d) * (4 * d) ** -0.5 / (2 * L) ** 0.5)

    def forward(self, x, sin, cos):
        B, T, _ = x.shape
        H, Q = self.H, self.Q
        h = F.layer_norm(x, (self.d,), self.ln, None, 1e-6)
        q, k, v, gate, up = (h @ self.w_in).split([H * Q, Q, Q, self.dff, self.dff], -1)
        q = rope(q.view(B, T, H, Q), sin[:, None, :], cos[:, None, :]).transpose(1, 2)
        k = rope(k, sin, cos)[:, None]
        v = v[:, None]
        a = F.scaled_dot_product_attention(q, k.expand(B, H, T, Q), v.expand(B, H, T, Q), is_causal=True)
        a = a.transpose(1, 2).reshape(B, T, H * Q)
        return x + a @ self.w_o + (F.silu(gate) * up) @ self.w_out


class PaLM(nn.Module):
    def __init__(self, d, L, H, Q, T):
        super().__init__()
        self.d = d
        self.embed = nn.Parameter(torch.randn(VOCAB, d))
        self.blocks = nn.ModuleList([Block(d, H, Q, L) for _ in range(L)])
        self.ln_f = nn.Parameter(torch.ones(d))
        inv = 1.0 / (10000.0 ** (torch.arange(0, Q, 2, dtype=torch.float32) / Q))
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.register_buffer("cos", ang.cos(), persistent=False)

    def forward(self, tokens):
        inp, tgt = tokens[:, :-1], tokens[:, 1:]
        x = F.embedding(inp, self.embed)
        T = inp.shape[1]
        for b in self.blocks:
            x = b(x, self.sin[:T], self.cos[:T])
        x = F.layer_norm(x, (self.d,), self.ln_f, None, 1e-6)
        logits = (x @ self.embed.t()) * self.d ** -0.5
        return F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1))


def main():
    raw = np.fromfile(args.data, dtype=np.uint8).astype(np.int64)
    split = int(len(raw) * 0.9)
    train, val = torch.from_numpy(raw[:split]), torch.from_numpy(raw[split:])
    T, B = args.seq_len, args.batch
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = PaLM(args.d_model, args.layers, args.heads, args.head_dim, T)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    fwd = torch.compile(model) if args.compile else model
    flops_per_token = 6 * n_params + 12 * args.layers * args.heads * args.head_dim * T

    def batch(src, g):
        ix = torch.randint(len(src) - T - 1, (B,), generator=g)
        return torch.stack([src[i:i + T + 1] for i in ix])

    @torch.no_grad()
    def evaluate():
        g = torch.Generator().manual_seed(1234)
        return float(np.mean([float(fwd(batch(val, g))) for _ in range(args.eval_batches)]))

    log = open(args.log, "w") if args.log else None
    print(json.dumps({"params": n_params, "flops_per_token": flops_per_token, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    t_train, step, tokens = 0.0, 0, 0
    while True:
        budget_frac = step / args.steps if args.steps else t_train / args.time_budget
        if budget_frac >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if step >= args.warmup:
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, budget_frac))))
        for gr in opt.param_groups:
            gr["lr"] = lr
        t0 = time.perf_counter()
        loss = fwd(batch(train, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t_train += time.perf_counter() - t0
        step += 1
        tokens += B * T
        if step % args.eval_every == 0:
            rec = {"step": step, "train_seconds": round(t_train, 2), "tokens": tokens, "train_loss": float(loss.detach()),
                   "val_loss": evaluate(), "tokens_per_s": round(tokens / t_train, 1)}
            print(json.dumps(rec), flush=True)
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
    rec = {"final": True, "step": step, "train_seconds": round(t_train, 2), "tokens": tokens, "val_loss": evaluate()}
    print(json.dumps(rec), flush=True)
    if log:
        log.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
