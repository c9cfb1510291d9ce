"""Training memory per GPU of the genflow DiT presets: DDP vs FSDP, bf16, activation checkpointing on/off.

    python bench/memory.py                                  # base and large, 8 GPUs, 32 x 10 s and 8 x 10 s
    python bench/memory.py --presets large --batch 16 --seconds 30 --gpus 64
    python bench/memory.py --check                          # the model above against measured CPU peaks

Parameters are counted on the meta device. Activations are measured, not guessed: one block of the
preset's width runs forward under bf16 autocast with ``torch.autograd.graph.saved_tensors_hooks``,
summing the distinct storages autograd keeps for backward (parameters excluded), at 1 and 2 clips, so
the part that grows with the batch (activations) and the part that does not (autocast's bf16 copies of
the weights) are told apart. With checkpointing a block keeps only its input, plus one block's
activations while it is recomputed in backward.

State per trainable parameter: fp32 weight + fp32 gradient + AdamW's two fp32 moments + fp32 EMA.
DDP: ``gradient_as_bucket_view`` (genflow's setting) keeps no second gradient copy in the buckets.
FSDP (fully sharded over ``--gpus``): state / GPUs, plus the unsharded bf16 parameters of two blocks
(the one running and the one prefetched) and one block's fp32 gradients before the reduce-scatter.
Frozen models: flan-t5-large's encoder + DashengTokenizer in fp32, as the training loop holds them
when text states and latents are not cached. Not included: CUDA context (~0.5-1 GiB), allocator
fragmentation, NCCL buffers.

``--check`` runs small DiTs on the CPU (fp32 and bf16 autocast, checkpointing on/off) in fresh
processes: peak RSS (reset first, with glibc's mmap threshold fixed so freed tensors leave RSS) minus RSS
before building the model, AdamW and EMA and running 2 steps, against the model's total for the same
configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from genflow.model import DiT, DiTBlock, DiTConfig, preset_config, rope_tables  # noqa: E402

GB = 2**30
T5_LARGE_ENCODER = 341_231_104  # parameters of flan-t5-large's encoder
DASHENG_TOKENIZER = 804_920_450  # parameters of the DashengTokenizer (encoder + decoder)
FRAME_RATE = 25.0  # DashengTokenizer latents


def _saved_bytes(cfg: DiTConfig, frames: int, tokens: int, batch: int, dtype: torch.dtype | None) -> int:
    """Bytes of the distinct non-parameter storages one block saves for backward (autocast ``dtype``)."""
    block = DiTBlock(cfg, skip=False)
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(batch, frames, cfg.width, requires_grad=True)
    t = torch.randn(batch, cfg.width)
    ctx = torch.randn(batch, tokens, cfg.width) if cfg.text_dim else None
    rope = rope_tables(frames, cfg.width // cfg.heads, cfg.rope_base, "cpu")
    aligned = torch.randn(batch, frames, cfg.aligned_dim) if cfg.aligned_dim else None
    autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, t, None, None, rope, ctx, None, aligned, None)
    return sum(seen.values())


@functools.cache
def _block_bytes(cfg_json: str, frames: int, tokens: int, dtype: torch.dtype | None) -> tuple[int, int]:
    cfg = DiTConfig.from_dict(json.loads(cfg_json))
    one, two = (_saved_bytes(cfg, frames, tokens, b, dtype) for b in (1, 2))
    return two - one, 2 * one - two


def block_activation_bytes(cfg: DiTConfig, frames: int, tokens: int,
                           dtype: torch.dtype | None = torch.bfloat16) -> tuple[int, int]:
    """(bytes per clip, fixed bytes) one block keeps for backward: measured at 1 and 2 clips.

    The fixed part is autocast's low-precision copies of the block's weights (saved for the backward of
    each matmul); the per-clip part is the activations.
    """
    return _block_bytes(json.dumps(dataclasses.asdict(cfg), sort_keys=True), frames, tokens, dtype)


def activation_bytes(cfg: DiTConfig, frames: int, tokens: int, batch: int, checkpointing: bool,
                     dtype: torch.dtype | None = torch.bfloat16) -> int:
    """Bytes of activations held for backward by the whole DiT, per GPU (batch clips of ``frames``)."""
    per_clip, fixed = block_activation_bytes(cfg, frames, tokens, dtype)
    blocks = 2 * (cfg.depth // 2) + 1 if cfg.long_skip else cfg.depth
    one_block = per_clip * batch + fixed
    if not checkpointing:
        return blocks * one_block
    element = 4 if dtype is None else 2  # the block input (output of the previous block)
    # every block's input kept (U-ViT skips are in-block outputs: inputs of later blocks, so kept anyway),
    # + one block's activations while it is recomputed in backward
    return blocks * batch * frames * cfg.width * element + one_block


def block_parameters(cfg: DiTConfig) -> int:
    """Parameters of one DiT block."""
    with torch.device("meta"):
        return sum(p.numel() for p in DiTBlock(cfg, skip=True).parameters())


def rows(cfg: DiTConfig, strategy: str, gpus: int, batch: int, seconds: float, checkpointing: bool,
         tokens: int = 64, frozen: bool = True, dtype: torch.dtype | None = torch.bfloat16) -> dict[str, float]:
    """{component: GiB per GPU} for one configuration; ``strategy`` "DDP" or "FSDP"."""
    with torch.device("meta"):
        params = sum(p.numel() for p in DiT(cfg).parameters())
    shard = gpus if strategy == "FSDP" else 1
    frames = round(seconds * FRAME_RATE)
    out = {
        "parameters (fp32)": params * 4 / shard,
        "gradients (fp32)": params * 4 / shard,
        "AdamW moments (fp32)": params * 8 / shard,
        "EMA (fp32)": params * 4 / shard,
    }
    if strategy == "FSDP":  # two blocks unsharded (running + prefetched) in bf16, one block's fp32 gradient
        out["FSDP unsharded blocks"] = block_parameters(cfg) * (2 * 2 + 4)
    out["activations"] = activation_bytes(cfg, frames, tokens, batch, checkpointing, dtype)
    if frozen:
        out["frozen T5-large encoder + DashengTokenizer (fp32)"] = (T5_LARGE_ENCODER + DASHENG_TOKENIZER) * 4
    out = {k: v / GB for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def table(args) -> None:
    """Print one table per preset: strategies x checkpointing, for each batch size."""
    for name in args.presets:
        cfg = preset_config(name)
        with torch.device("meta"):
            n = sum(p.numel() for p in DiT(cfg).parameters())
        print(f"\n## {name}: {n / 1e9:.2f} B parameters ({cfg.depth} blocks x {cfg.width}), bf16 autocast, "
              f"{args.gpus} GPUs, {args.tokens} text tokens\n")
        configs = [(s, c, b) for b in args.batch for s in ("DDP", "FSDP") for c in (False, True)]
        heads = [f"{s} b{b}x{args.seconds:g}s {'ckpt' if c else 'no ckpt'}" for s, c, b in configs]
        results = [rows(cfg, s, args.gpus, b, args.seconds, c, args.tokens) for s, c, b in configs]
        print("| GiB per GPU | " + " | ".join(heads) + " |")
        print("|---|" + "---:|" * len(heads))
        for key in [*dict.fromkeys(k for r in results for k in r if k != "total"), "total"]:
            print(f"| {key} | " + " | ".join(f"{r[key]:.1f}" if key in r else "-" for r in results) + " |")


# -- checking the model against measured CPU peaks ----------------------------------------------------------
CHECKS = [  # (width, depth, heads, batch, frames, bf16, checkpointing); bf16 ones small: CPUs without
    # AVX-512 emulate bf16 matmuls slowly
    (512, 4, 8, 8, 500, False, False),
    (512, 4, 8, 8, 500, False, True),
    (1024, 2, 16, 4, 500, False, False),
    (256, 2, 4, 8, 500, True, False),
    (256, 2, 4, 8, 500, True, True),
]


def _measure(spec: list) -> dict:
    """One configuration in this process: peak RSS growth (GiB) over building and 2 training steps."""
    from genflow.ema import EMA
    from genflow.flow import flow_loss

    width, depth, heads, batch, frames, bf16, ckpt = spec
    cfg = DiTConfig(latent_dim=64, width=width, depth=depth, heads=heads, text_dim=0, gradient_checkpointing=ckpt)
    x = torch.randn(batch, frames, 64)
    torch.manual_seed(0)
    base = _status_bytes("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS: earlier peaks do not count
    model = DiT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    ema = EMA(model.parameters())
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = flow_loss(model, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()
    return {"measured": (_status_bytes("VmHWM:") - base) / GB}


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}: --check needs Linux")


def check() -> None:
    """Measured CPU peaks of small DiTs (fresh processes) against ``rows`` for the same configuration."""
    print("| width x depth | batch x frames | bf16 | ckpt | measured GiB | model GiB | model / measured |")
    print("|---|---|---|---|---:|---:|---:|")
    for spec in CHECKS:
        # a fixed mmap threshold: glibc then returns every large freed block at once, so max RSS is the
        # peak of live tensors rather than of heap fragments glibc keeps
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True,
                              text=True, check=True, env=env)
        measured = json.loads(done.stdout.strip().splitlines()[-1])["measured"]
        width, depth, heads, batch, frames, bf16, ckpt = spec
        cfg = DiTConfig(latent_dim=64, width=width, depth=depth, heads=heads, text_dim=0)
        model = rows(cfg, "DDP", 1, batch, frames / FRAME_RATE, ckpt, frozen=False,
                     dtype=torch.bfloat16 if bf16 else None)["total"]
        print(f"| {width} x {depth} | {batch} x {frames} | {bf16} | {ckpt} | {measured:.2f} | {model:.2f} | "
              f"{model / max(measured, 1e-9):.2f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["base", "large"])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--batch", type=int, nargs="+", default=[32, 8])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=64, help="T5 tokens per caption")
    p.add_argument("--check", action="store_true", help="compare the model with measured CPU peaks")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # one --check configuration, in a fresh process
    args = p.parse_args()
    if args.measure:
        print(json.dumps(_measure(json.loads(args.measure))))
    elif args.check:
        check()
    else:
        table(args)


if __name__ == "__main__":
    main()

