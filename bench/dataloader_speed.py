"""Loader throughput: batches/s from a latent cache vs decoding audio for on-the-fly encoding.

Uses data/demo/<task>/train.jsonl when present, else synthetic clips. Builds two caches in a temp
folder: the weight-free mel codec's latents, and latents shaped like DashengTokenizer's (1280-d at
25 Hz, random values from a stand-in codec) to show the I/O cost of the real latent size.

Usage:
    python bench/dataloader_speed.py                       # demo ttm data, 2 workers
    python bench/dataloader_speed.py --task tta --workers 0 --batch-size 16 --epochs 5
    python bench/dataloader_speed.py --synthetic 64 --seconds 10 --rate 44100
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from genflow.codecs.base import Codec
from genflow.data import (
    LatentCache,
    LengthBucketSampler,
    TextAudioDataset,
    build_latent_cache,
    collate,
    read_manifest,
)

ROOT = Path(__file__).resolve().parents[1]


class DashengShaped(Codec):
    """Stand-in codec with DashengTokenizer's latent shape (1280-d, 25 Hz at 16 kHz); random values."""

    sample_rate, frame_rate, latent_dim = 16000, 25.0, 1280

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def encode(self, audio, attention_mask=None):
        g = torch.Generator().manual_seed(audio.shape[-1])
        return torch.randn(audio.shape[0], self.num_frames(audio.shape[-1]), self.latent_dim, generator=g)


def synthetic_rows(folder: Path, n: int, seconds: float, rate: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        dur = seconds * rng.uniform(0.5, 1.0)
        t = np.arange(int(dur * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.shape)
        path = folder / f"clip{i:04d}.flac"
        sf.write(path, x.astype(np.float32), rate)
        rows.append(
            {"audio": str(path), "caption": f"synthetic clip {i}", "id": f"clip{i:04d}", "duration": dur}
        )
    return rows


def time_loader(dataset, batch_size: int, workers: int, epochs: int, hop: int) -> tuple[float, float]:
    """(batches/s, clips/s) over ``epochs`` passes (the first batch is excluded: worker start-up)."""
    sampler = LengthBucketSampler(dataset.lengths, batch_size, seed=0)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate, hop_length=hop),
        persistent_workers=workers > 0,
    )
    batches = clips = 0
    start = None
    for _ in range(epochs):
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            batches += 1
            clips += len(batch["id"])
    elapsed = time.perf_counter() - start
    return batches / elapsed, clips / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="ttm", choices=["tta", "ttm"])
    p.add_argument("--synthetic", type=int, default=0, help="use N synthetic clips instead of data/demo")
    p.add_argument("--seconds", type=float, default=10.0, help="longest synthetic clip")
    p.add_argument("--rate", type=int, default=44100, help="sample rate of synthetic clips (Hz)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=10.0, help="crop length")
    args = p.parse_args()
    torch.set_num_threads(1)

    from genflow.codecs import load_codec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = ROOT / "data" / "demo" / args.task / "train.jsonl"
        if args.synthetic or not manifest.exists():
            rows = synthetic_rows(tmp, args.synthetic or 64, args.seconds, args.rate)
            source = f"{len(rows)} synthetic clips"
        else:
            rows = read_manifest(manifest)
            source = str(manifest.relative_to(ROOT))
        total_s = sum(sf.info(r["audio"]).duration for r in rows)
        print(
            f"data: {source}: {len(rows)} clips, {total_s / 60:.1f} min; batch {args.batch_size}, "
            f"{args.workers} workers, torch threads 1"
        )

        for name, codec in (("mel", load_codec("mel")), ("dasheng-shaped", DashengShaped())):
            t0 = time.perf_counter()
            build_latent_cache(rows, codec, tmp / name, fp16=True, shard_size=64, batch_size=8)
            build_s = time.perf_counter() - t0
            cache = LatentCache(tmp / name)
            size = sum(f.stat().st_size for f in (tmp / name).glob("shard-*.safetensors"))
            print(
                f"cache {name:15s} ({codec.latent_dim}-d @ {codec.frame_rate:g} Hz, fp16): built in "
                f"{build_s:.1f} s ({len(rows) / build_s:.1f} clips/s), {size / 2**20:.1f} MiB = "
                f"{size / total_s / 1024:.1f} KiB per second of audio"
            )
            max_frames = int(args.max_seconds * codec.frame_rate)
            ds = TextAudioDataset(
                rows,
                cache=cache,
                codec_sample_rate=codec.sample_rate,
                hop_length=codec.hop_length,
                max_frames=max_frames,
            )
            bps, cps = time_loader(ds, args.batch_size, args.workers, args.epochs, codec.hop_length)
            print(f"  loader from cache : {bps:8.1f} batches/s  {cps:8.1f} clips/s")
        codec = load_codec("mel")
        ds = TextAudioDataset(
            rows,
            codec_sample_rate=codec.sample_rate,
            hop_length=codec.hop_length,
            max_frames=int(args.max_seconds * codec.frame_rate),
        )
        bps, cps = time_loader(ds, args.batch_size, args.workers, args.epochs, codec.hop_length)
        print(f"audio decode + resample to {codec.sample_rate} Hz (for on-the-fly encoding):")
        print(f"  loader from audio : {bps:8.1f} batches/s  {cps:8.1f} clips/s")


if __name__ == "__main__":
    main()
