"""The training loop at steady state: valid latent frames/s per GPU, MFU, time split, padding, SDPA backend, memory.

    accelerate launch --num_processes 8 --mixed_precision bf16 bench/train_gpu.py --preset large --batch 32
    accelerate launch --config_file recipes/accelerate/fsdp.yaml bench/train_gpu.py --preset large --batch 32
    python bench/train_gpu.py --preset base --batch 16 --checkpointing
    OMP_NUM_THREADS=2 python bench/train_gpu.py --preset small --batch 4 --seconds 4 --steps 6   # CPU: no MFU

It runs the loop's own pieces (``genflow.training.build``: Accelerator, fused AdamW, EMA; ``batches``:
one persistent loader over length-bucketed batches) on cached-latent batches of the preset's size
(1280-d latents at 25 Hz, clip lengths uniform in [--min-seconds, --seconds], captions as random
64-token text states: no hub download), and times every step in phases, synchronising the device
between them (which costs a little throughput, so the sum is a lower bound on the real speed):
data wait, conditioning, forward, backward + gradient communication, optimizer + clip + EMA.

MFU = model FLOPs (matmuls 2 x parameters x padded frames, attention 4 x T^2 x width per block, x3 for
forward + backward; recomputation under checkpointing not counted) / step time / the device's dense bf16
peak from ``PEAKS`` (the device name is matched; unknown devices print no MFU). Prints figures only.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from genflow.data import LengthBucketSampler, collate  # noqa: E402
from genflow.flow import flow_loss  # noqa: E402
from genflow.model import DiT, preset_config  # noqa: E402
from genflow.training import TrainConfig, batches, build, frozen_autocast, optimizer_step  # noqa: E402

# Dense (no sparsity) peak TFLOP/s in bf16 by device-name substring, most specific first; fp32 runs use TF32.
PEAKS = [
    ("H200", {"bf16": 989.0, "fp32": 494.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.0, "fp32": 494.0}),  # SXM
    ("B200", {"bf16": 2250.0, "fp32": 1100.0}),
    ("A100", {"bf16": 312.0, "fp32": 156.0}),
    ("L40S", {"bf16": 362.0, "fp32": 183.0}),
    ("A10G", {"bf16": 70.0, "fp32": 35.0}),
    ("RTX 4090", {"bf16": 165.0, "fp32": 83.0}),
]
PHASES = ("data wait", "conditioning", "forward", "backward + comm", "optimizer + EMA")


class Latents(torch.utils.data.Dataset):
    """Random cached-latent clips of the given frame lengths, with a caption id."""

    def __init__(self, lengths: list[int], dim: int):
        self.lengths, self.dim = lengths, dim

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"audio": torch.randn(self.lengths[i], self.dim, generator=g), "caption": f"clip {i}"}


class RandomText(nn.Module):
    """Stands in for the conditioner: latents as they are (mask only with padding), random text states."""

    def __init__(self, text_dim: int, tokens: int = 64):
        super().__init__()
        self.text_dim, self.tokens = text_dim, tokens

    def forward(self, batch: dict, device: torch.device) -> dict:
        x, lengths = batch["audio"].to(device, non_blocking=True), batch["lengths"]
        mask = None
        if not bool((lengths == lengths.max()).all()):
            mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).to(device, non_blocking=True)
        text = torch.randn(len(x), self.tokens, self.text_dim, device=device) if self.text_dim else None
        return {"x": x, "mask": mask, "text": text, "text_mask": None, "aligned": None}


def step_flops(model: DiT, frames: int, batch: int, tokens: int) -> float:
    """Model FLOPs of one training step (forward + backward) on ``batch`` clips padded to ``frames``."""
    cfg = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    blocks = len(model.blocks)
    attention = blocks * (4 * frames * frames * cfg.width + (4 * frames * tokens * cfg.width if cfg.text_dim else 0))
    return 3 * batch * (2 * matmul * frames + attention)


def sdpa_backend(run, batch: dict) -> str:
    """Which SDPA kernel one forward uses, from the profiler's op names."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    with profile(activities=activities) as prof, torch.no_grad(), run.accelerator.autocast():
        flow_loss(run.model, **run.conditioner(batch, run.device))
    names = " ".join(e.name for e in prof.events()).lower()
    for key, name in (("flash", "flash"), ("efficient_attention", "memory-efficient"), ("cudnn_attention", "cudnn"),
                      ("_scaled_dot_product_attention_math", "math")):
        if key in names:
            return name
    return "math (unfused)"


def timed_step(run, data, times: dict) -> dict:
    """One optimizer step of the loop, phase by phase (device synchronised between phases)."""
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    batch = next(data)
    t1 = time.perf_counter()
    with frozen_autocast(run):
        inputs = run.conditioner(batch, run.device)
    sync()
    t2 = time.perf_counter()
    loss = flow_loss(run.model, **inputs, timesteps=run.sigma_sampler)
    sync()
    t3 = time.perf_counter()
    run.accelerator.backward(loss)
    sync()
    t4 = time.perf_counter()
    finite = torch.isfinite(run.accelerator.clip_grad_norm_(run.model.parameters(), run.cfg.max_grad_norm))
    optimizer_step(run, finite)  # the loop's step: a non-finite one is skipped on the device
    run.scheduler.step()
    run.ema.update(finite)
    run.optimizer.zero_grad(set_to_none=True)
    sync()
    t5 = time.perf_counter()
    for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
        times[name] = times.get(name, 0.0) + dt
    return batch


def device_peak(device: torch.device, precision: str) -> tuple[str, float | None]:
    """(device name, dense peak TFLOP/s) or (name, None) when unknown or on the CPU."""
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAKS:
        if key.lower() in name.lower():
            return name, peaks["bf16" if precision in ("bf16", "fp16") else "fp32"]
    return name, None


def setup(args, out: str):
    """The run (loop's build) and its data iterator over length-bucketed synthetic latents."""
    cfg = preset_config(args.preset, gradient_checkpointing=args.checkpointing)
    cuda = torch.cuda.is_available()
    train = TrainConfig(out=out, batch_size=args.batch, mixed_precision=args.precision or ("bf16" if cuda else "no"),
                        log_with="none", warmup_steps=1, num_workers=args.workers, compile_blocks=args.compile,
                        sample_every=0)
    torch.manual_seed(0)
    run = build(train, DiT(cfg), RandomText(cfg.text_dim))
    run.model.train()
    rng = np.random.default_rng(0)
    lengths = rng.integers(round(args.min_seconds * 25), round(args.seconds * 25) + 1, size=args.clips).tolist()
    state = run.accelerator.state
    sampler = LengthBucketSampler(lengths, args.batch, seed=0, num_replicas=state.num_processes,
                                  rank=state.process_index, max_frames=args.max_batch_frames)
    return run, batches(run, Latents(lengths, cfg.latent_dim), sampler, collate), cfg


def measure(args) -> None:
    """Warm up, time ``--steps`` steps, print the table on the main process."""
    # the run folder must be one every process sees (genflow checks it at start)
    run, data, cfg = setup(args, args.out)
    model = run.accelerator.unwrap_model(run.model)
    for _ in range(args.warmup):
        first = timed_step(run, data, {})
    backend = sdpa_backend(run, first)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    times, valid, padded, flops = {}, 0, 0, 0.0
    for _ in range(args.steps):
        batch = timed_step(run, data, times)
        valid += int(batch["lengths"].sum())
        padded += batch["audio"].shape[0] * batch["audio"].shape[1]
        flops += step_flops(model, batch["audio"].shape[1], batch["audio"].shape[0], 64)
    total = sum(times.values())
    name, peak = device_peak(run.device, run.accelerator.mixed_precision)
    memory = (torch.cuda.max_memory_allocated(run.device) / 2**30 if run.device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    if not run.accelerator.is_main_process:
        return
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{args.preset} ({params / 1e9:.2f} B), {run.accelerator.num_processes} x {name}, "
          f"{run.accelerator.mixed_precision}, {run.accelerator.distributed_type}, batch {args.batch} x "
          f"[{args.min_seconds:g}, {args.seconds:g}] s, checkpointing {args.checkpointing}, "
          f"compile {args.compile or 'off'}, {args.steps} steps after {args.warmup} warm-up\n")
    rows = {"valid latent frames/s per GPU": f"{valid / total:,.0f}",
            "steps/s": f"{args.steps / total:.3f}",
            "MFU": f"{100 * flops / total / (peak * 1e12):.1f} %" if peak else "n/a (no known peak)",
            "padding (padded frames not valid)": f"{100 * (1 - valid / padded):.1f} %",
            "SDPA backend": backend,
            "peak memory (GiB; CPU: max RSS)": f"{memory:.2f}"}
    rows |= {f"time: {k}": f"{1000 * v / args.steps:.1f} ms ({100 * v / total:.0f} %)" for k, v in times.items()}
    print("| figure | value |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=16, help="clips per GPU (the most, with --max-batch-frames)")
    p.add_argument("--seconds", type=float, default=10.0, help="longest clip")
    p.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip")
    p.add_argument("--clips", type=int, default=4096, help="synthetic clips in the data set")
    p.add_argument("--max-batch-frames", type=int, default=None, help="frame budget per batch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), default=None, help="default: bf16 on GPU")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every block")
    p.add_argument("--compile", default="", help="torch.compile backend for the blocks, e.g. inductor")
    p.add_argument("--out", default="runs/bench-train-gpu", help="run folder (config, logs); shared by all processes")
    measure(p.parse_args())


if __name__ == "__main__":
    main()
