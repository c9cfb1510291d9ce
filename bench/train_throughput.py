"""Train throughput: steps/s and samples/s with cached latents vs on-the-fly encoding, and the loader alone.

Each train step is the training loop's own ``genflow.training.train_step`` (Conditioner -> flow_loss ->
backward -> clip -> AdamW -> LR schedule -> EMA) on the loop's ``build`` (bf16 autocast when CUDA is
present). The loader must outrun the model by a wide margin.

Usage:
    python bench/train_throughput.py --batch-size 16 --steps 20            # CPU: small DiT, mel codec
    python bench/train_throughput.py --codec dasheng-random --preset small  # real-size on-the-fly encoding
    python bench/train_throughput.py --preset base --batch-size 32          # on a GPU: bf16
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from genflow.codecs import load_codec
from genflow.codecs.dasheng import DashengTokenizer
from genflow.conditioning import BatchKeys, Conditioner
from genflow.data import LatentCache, LengthBucketSampler, TextAudioDataset, build_latent_cache, collate, read_manifest
from genflow.model import DiT
from genflow.training import Run, TrainConfig, build, train_step

ROOT = Path(__file__).resolve().parents[1]


def make_loader(rows, codec, cache, args) -> DataLoader:
    """Endless-capable loader of TextAudioDataset batches (cached latents when ``cache`` is given)."""
    max_frames = int(args.seconds * codec.frame_rate)
    ds = TextAudioDataset(rows, cache=cache, codec_sample_rate=codec.sample_rate, hop_length=codec.hop_length,
                          max_frames=max_frames)
    sampler = LengthBucketSampler(ds.lengths, args.batch_size, seed=0)
    return DataLoader(ds, batch_sampler=sampler, num_workers=args.num_workers,
                      collate_fn=collate,
                      persistent_workers=args.num_workers > 0)


def batches(loader: DataLoader):
    """Batches forever, one epoch after another."""
    while True:
        yield from loader


def time_loader(loader: DataLoader, args) -> tuple[float, float]:
    """(batches/s, clips/s) of the loader alone, after warmup."""
    it = batches(loader)
    for _ in range(args.warmup_steps):
        next(it)
    t0, clips = time.perf_counter(), 0
    for batch in itertools.islice(it, args.steps):
        clips += len(batch["id"])
    dt = time.perf_counter() - t0
    return args.steps / dt, clips / dt


def time_train(loader: DataLoader, run: Run, args) -> tuple[float, float]:
    """(steps/s, samples/s) of the loop's own ``train_step`` (clip, EMA, LR schedule) fed by ``loader``."""
    it = batches(loader)
    samples = 0

    def step() -> int:
        batch = next(it)
        train_step(run, batch, text_dropout=0.0, aligned_dropout=0.0)
        return len(batch["id"])

    for _ in range(args.warmup_steps):
        step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        samples += step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return args.steps / dt, samples / dt


def main() -> None:
    """Run the four measurements and print a markdown table."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base" if cuda else "small")
    p.add_argument("--codec", default="mel", help='"mel", "dasheng-random" (real size, random weights) or a path')
    p.add_argument("--data", default=str(ROOT / "data/demo/tta/train.jsonl"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="crop length of each clip")
    args = p.parse_args()

    codec = DashengTokenizer().freeze() if args.codec == "dasheng-random" else load_codec(args.codec)
    rows = read_manifest(args.data, ("audio",))
    model = DiT.from_preset(args.preset, latent_dim=codec.latent_dim, text_dim=0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=tmp, batch_size=args.batch_size, mixed_precision="bf16" if cuda else "no",
                          log_with="none", warmup_steps=1)
        run = build(cfg, model, Conditioner(codec))
        run.model.train()
        print(f"device={run.device} precision={run.accelerator.mixed_precision} preset={args.preset} "
              f"codec={args.codec} clips={len(rows)} batch={args.batch_size} steps={args.steps} "
              f"workers={args.num_workers} params={sum(q.numel() for q in model.parameters()) / 1e6:.1f}M")
        t0 = time.perf_counter()
        build_latent_cache(rows, codec, Path(tmp) / "cache", batch_size=args.batch_size,
                           num_workers=args.num_workers)
        print(f"cache built in {time.perf_counter() - t0:.1f} s")
        cached = make_loader(rows, codec, LatentCache(Path(tmp) / "cache"), args)
        audio = make_loader(rows, codec, None, args)
        res = {"(a) loader, cached latents": time_loader(cached, args),
               "(b) loader, audio decoding": time_loader(audio, args)}
        run.conditioner = run.conditioner.with_keys(BatchKeys(target="audio", cached=True))
        res["(c) train, cached latents"] = time_train(cached, run, args)
        run.conditioner = run.conditioner.with_keys(BatchKeys(target="audio", cached=False))
        res["(d) train, on-the-fly encoding"] = time_train(audio, run, args)
    print("\n| measurement | batches (steps)/s | clips (samples)/s |\n|---|---:|---:|")
    for name, (bps, cps) in res.items():
        print(f"| {name} | {bps:.2f} | {cps:.1f} |")
    for kind, (lo, tr) in {"cached": ("(a) loader, cached latents", "(c) train, cached latents"),
                           "audio": ("(b) loader, audio decoding", "(d) train, on-the-fly encoding")}.items():
        print(f"loader/train ratio ({kind}): {res[lo][0] / res[tr][0]:.1f}x")


if __name__ == "__main__":
    main()
