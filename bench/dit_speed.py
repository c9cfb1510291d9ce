"""Speed and memory of the DiT presets: one training step and 25-step guided sampling.

    python bench/dit_speed.py                                   # tiny,small on CPU, batch 2
    python bench/dit_speed.py --presets small --batch 4 --repeats 5
    python bench/dit_speed.py --presets base,large --device cuda --batch 8   # bf16 autocast, MFU
    python bench/dit_speed.py --presets tiny,small,base,large --count-only    # params + FLOPs, meta device

Inputs follow the DashengTokenizer setting: T=250 latent frames (10 s at 25 Hz), C=1280, 77 text tokens
of the preset's text dim (1024 for base/large, flan-t5-large), the aligned condition when the preset has one.
Per preset and activation-checkpointing setting it prints: parameters; train step (forward + backward +
AdamW, 20 % text dropout, masked MSE) time and tokens/s (frames/s); sampling time of 25 Euler steps with
classifier-free guidance (one forward per step on a doubled batch: conditional rows + dropped rows);
all times are the fastest of several calls (train: --repeats steps; sampling: fastest step x 25),
so other processes sharing the machine distort them less;
peak memory (CUDA: max_memory_allocated; CPU: 16 B/parameter for weights+grad+AdamW plus the tensors
autograd saved for backward, measured with saved-tensor hooks, checkpoint inputs not counted).

FLOPs per train step are counted exactly with torch.utils.flop_counter on the meta device (matmuls, SDPA,
convs; no recompute from checkpointing, i.e. model FLOPs). Closed form, for reference:
    train FLOPs ~= 6 * B * (T * N_frame + L * N_text) + 12 * n_blocks * B * (T^2 * d + T * L * d)
(N_frame: parameters applied per latent frame, i.e. all but adaLN/time MLP/nulls; N_text: the text MLP
and cross-attention K/V, applied per text token; 2 FLOPs per multiply-add, backward = 2 x forward; the
attention term is QK^T and AV of self- and cross-attention; conv counted as its parameters).
MFU = FLOPs / step time / peak, peak = 989 TFLOP/s (H100 SXM dense bf16). On CPU it also times one
block against a plain reference block with naive attention softmax(QK^T/sqrt(hd))V, to show the SDPA
block is not slower (and agrees numerically).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from genflow.model import DiT, modulate, preset_config

H100_BF16_PEAK = 989e12  # FLOP/s, dense


def make_inputs(cfg, batch, frames, tokens, device):
    """Random latents/text/aligned with ragged lengths (last row 80 % long) and 20 % text dropout."""
    x = torch.randn(batch, frames, cfg.latent_dim, device=device)
    lengths = torch.full((batch,), frames, device=device)
    lengths[-1] = int(0.8 * frames)
    kw = {"mask": torch.arange(frames, device=device) < lengths[:, None]}
    if cfg.text_dim:
        kw["text"] = torch.randn(batch, tokens, cfg.text_dim, device=device)
        kw["text_mask"] = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        kw["drop_text"] = torch.rand(batch, device=device) < 0.2
    if cfg.aligned_dim:
        kw["aligned"] = torch.randn(batch, frames, cfg.aligned_dim, device=device)
    return x, kw


def train_flops(cfg, batch, frames, tokens) -> int:
    """Exact FLOPs of forward + backward, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = DiT(cfg)
        x, kw = make_inputs(cfg, batch, frames, tokens, "meta")
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, torch.rand(batch), **kw).square().mean().backward()
    return counter.get_total_flops()


class SavedBytes:
    """Sum of the bytes autograd saves for backward (distinct storages)."""

    def __init__(self):
        self.seen, self.bytes = set(), 0

    def pack(self, t):
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in self.seen:
            self.seen.add(key)
            self.bytes += t.untyped_storage().nbytes()
        return t


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def min_time(fn, n, device) -> float:
    """Fastest of n calls in seconds: the least disturbed by other processes and CPU-quota throttling."""
    times = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_preset(name, args, device, checkpointing):
    """Time a train step and guided sampling for one preset; returns a dict of figures."""
    overrides = {"latent_dim": args.latent_dim, "gradient_checkpointing": checkpointing}
    cfg = preset_config(name, **overrides)
    torch.manual_seed(0)
    model = DiT(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, kw = make_inputs(cfg, args.batch, args.frames, args.tokens, device)
    target = torch.randn_like(x)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    saved = SavedBytes()

    def step(measure=False):
        sigma = torch.rand(args.batch, device=device)
        with autocast:
            if measure:
                with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                    v = model(x, sigma, **kw)
            else:
                v = model(x, sigma, **kw)
            m = kw["mask"][..., None]
            loss = ((v.float() - target).square() * m).sum() / (m.sum() * cfg.latent_dim)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step(measure=True)  # warm-up (allocates AdamW state) and saved-tensor measurement
    t_train = min_time(step, args.repeats, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = 16 * params + saved.bytes

    model.eval()
    B = args.batch
    cond = {k: torch.cat([v, v]) for k, v in kw.items() if k != "drop_text"}  # doubled batch
    if cfg.text_dim:
        cond["drop_text"] = torch.arange(2 * B, device=device) >= B  # second half: null text
    if cfg.aligned_dim:
        cond["drop_aligned"] = torch.arange(2 * B, device=device) >= B
    sigmas = torch.linspace(1, 0, args.steps + 1, device=device)
    z, i = torch.randn_like(x), 0

    def euler_step():  # one batched CFG forward, then an Euler step from sigma_i to sigma_i+1
        nonlocal z, i
        v = model(torch.cat([z, z]), sigmas[i].expand(2 * B), **cond).float()
        v_c, v_u = v.chunk(2)
        z = z + (sigmas[i + 1] - sigmas[i]) * (v_u + args.guidance * (v_c - v_u))
        i += 1

    with torch.inference_mode(), autocast:
        t_sample = min_time(euler_step, args.steps, device) * args.steps
    flops = train_flops(dataclasses.replace(cfg, gradient_checkpointing=False), B, args.frames, args.tokens)
    return {"params": params, "train_s": t_train, "tok_s": B * args.frames / t_train, "sample_s": t_sample,
            "peak": peak, "flops": flops,
            "mfu": flops / t_train / H100_BF16_PEAK}


def naive_attention(q, k, v, mask):
    """softmax(QK^T / sqrt(hd)) V with a boolean key mask; q, k, v (B, H, T, hd)."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(dim=-1) @ v


def reference_block(blk, x, t, mask, rope, ctx, ctx_mask):
    """A plain re-implementation of DiTBlock.forward (no skip/aligned) with naive attention."""
    B, T, D = x.shape
    H = blk.attn.heads
    cos, sin = rope

    def heads(y):  # (B, S, D) -> (B, H, S, hd)
        return y.view(B, -1, H, D // H).transpose(1, 2)

    def rot(y):
        y1, y2 = y.chunk(2, dim=-1)
        return y * cos + torch.cat([-y2, y1], dim=-1) * sin

    shift1, scale1, g1, shift2, scale2, g2 = blk.adaLN(t).unsqueeze(1).chunk(6, dim=-1)
    h = modulate(F.layer_norm(x, (D,), eps=1e-6), shift1, scale1)
    q, k, v = (heads(w) for w in blk.attn.qkv(h).split(D, dim=-1))
    q, k = rot(blk.attn.q_norm(q)), rot(blk.attn.k_norm(k))
    x = x + g1 * blk.attn.proj(naive_attention(q, k, v, mask).transpose(1, 2).reshape(B, T, D))
    c = blk.norm_ctx(ctx)
    q = heads(blk.cross_attn.q(blk.norm_cross(x)))
    k, v = (heads(w) for w in blk.cross_attn.kv(c).split(D, dim=-1))
    q, k = blk.cross_attn.q_norm(q), blk.cross_attn.k_norm(k)
    x = x + blk.cross_attn.proj(naive_attention(q, k, v, ctx_mask).transpose(1, 2).reshape(B, T, D))
    h = modulate(F.layer_norm(x, (D,), eps=1e-6), shift2, scale2)
    a, gate = blk.mlp.fc1(h).chunk(2, dim=-1)
    return x + g2 * blk.mlp.fc2(a * F.gelu(gate))


def bench_block(name, args):
    """CPU: one block (SDPA) vs the naive reference block, forward and forward+backward."""
    from genflow.model import rope_tables

    cfg = preset_config(name, aligned_dim=0)
    torch.manual_seed(0)
    model = DiT(cfg)
    blk = model.blocks[0]
    with torch.no_grad():  # non-zero adaLN/cross projections so every path does real work
        for p in blk.parameters():
            p.add_(0.02 * torch.randn_like(p))
    B, T, L, d = args.batch, args.frames, args.tokens, cfg.width
    x = torch.randn(B, T, d, requires_grad=True)
    t, ctx = torch.randn(B, d), torch.randn(B, L, d)
    valid = torch.arange(T) < torch.tensor([T] * (B - 1) + [int(0.8 * T)])[:, None]
    mask, ctx_mask = valid[:, None, None, :], torch.ones(B, 1, 1, L, dtype=torch.bool)
    rope = rope_tables(T, d // cfg.heads, cfg.rope_base, "cpu")
    fns = {"sdpa block": lambda: blk(x, t, None, mask, rope, ctx, ctx_mask, None, None),
           "naive reference": lambda: reference_block(blk, x, t, mask, rope, ctx, ctx_mask)}
    diff = (fns["sdpa block"]() - fns["naive reference"]()).abs().max().item()
    print(f"\n[{name}] one block, B={B} T={T} L={L} d={d} (max |sdpa - naive| = {diff:.2e})")
    cpu = torch.device("cpu")
    for label, fn in fns.items():
        times = {}
        for mode in ("forward", "fwd+bwd"):
            def run(fn=fn, mode=mode):
                if mode == "forward":
                    with torch.no_grad():
                        fn()
                else:
                    fn().sum().backward()
            run()  # warm-up
            times[mode] = min_time(run, 5 * args.repeats, cpu) * 1e3
        print(f"  {label:16s} forward {times['forward']:8.2f} ms   fwd+bwd {times['fwd+bwd']:8.2f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small", help="comma-separated preset names")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 8 on CUDA")
    ap.add_argument("--frames", type=int, default=250, help="T (latent frames; 250 = 10 s of DashengTokenizer)")
    ap.add_argument("--latent-dim", type=int, default=1280)
    ap.add_argument("--tokens", type=int, default=77, help="text tokens L")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3, help="timed train steps")
    ap.add_argument("--checkpointing", default="off,on", help="activation checkpointing settings to run")
    ap.add_argument("--count-only", action="store_true", help="only parameters and FLOPs (meta device)")
    ap.add_argument("--no-block", action="store_true", help="skip the CPU block-vs-naive comparison")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.batch = args.batch or (8 if device.type == "cuda" else 2)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    print(f"device={device} ({torch.get_num_threads()} threads)  B={args.batch} T={args.frames} "
          f"C={args.latent_dim} L={args.tokens}  steps={args.steps}  torch {torch.__version__}")

    if args.count_only:
        print(f"{'preset':8s} {'params':>10s} {'blocks':>6s} {'train GFLOP/step':>17s} {'closed form':>12s}")
        for name in names:
            cfg = preset_config(name, latent_dim=args.latent_dim)
            with torch.device("meta"):
                model = DiT(cfg)
            n = sum(p.numel() for p in model.parameters())
            flops = train_flops(cfg, args.batch, args.frames, args.tokens)
            B, T, L, nb = args.batch, args.frames, args.tokens, len(model.blocks)
            n_tok = sum(p.numel() for k, p in model.named_parameters() if "text_embedder" in k or ".kv." in k)
            per_sample = ("adaLN", "t_embedder", "null_", "norm_ctx")  # applied once per row, not per frame
            n_frame = sum(p.numel() for k, p in model.named_parameters() if not any(s in k for s in per_sample))
            n_frame -= n_tok
            attn = T * T * cfg.width + (T * L * cfg.width if cfg.text_dim else 0)
            closed = 6 * B * (T * n_frame + L * n_tok) + 12 * nb * B * attn
            print(f"{name:8s} {n / 1e6:9.2f}M {nb:6d} {flops / 1e9:17.1f} {closed / 1e9:12.1f}")
        return

    print(f"{'preset':8s} {'ckpt':4s} {'params':>9s} {'train s/step':>12s} {'frames/s':>9s} "
          f"{'sample 25x CFG s':>16s} {'peak MiB':>9s} {'GFLOP/step':>10s} {'MFU':>6s}")
    for name in names:
        for ck in args.checkpointing.split(","):
            r = bench_preset(name, args, device, ck.strip() == "on")
            mfu = f"{r['mfu']:.1%}" if device.type == "cuda" else "-"
            print(f"{name:8s} {ck:4s} {r['params'] / 1e6:8.2f}M {r['train_s']:12.3f} {r['tok_s']:9.0f} "
                  f"{r['sample_s']:16.2f} {r['peak'] / 2**20:9.0f} {r['flops'] / 1e9:10.1f} {mfu:>6s}")
    if device.type == "cpu" and not args.no_block:
        for name in names:
            bench_block(name, args)


if __name__ == "__main__":
    main()
