"""Speed and peak memory of the native DashengTokenizer at its real size (random weights, no download).

    python -m bench.codec_speed                      # from the repo root; CUDA + bf16 autocast if present
    python -m bench.codec_speed --device cpu --seconds 10 --repeats 2
    python -m bench.codec_speed --config path/to/config.json --chunk-frames 250

(or ``python bench/codec_speed.py`` once genflow is installed with ``pip install -e .``)

Prints seconds of audio processed per second of wall time for encode and decode of one clip, and
peak memory: process RSS high-water mark on CPU (weights included), torch.cuda.max_memory_allocated
on CUDA. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from genflow.codecs.dasheng import DashengTokenizer, DashengTokenizerConfig


def peak_rss_gib() -> float:
    """Process peak resident set size so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` calls after one warm-up call, and the last output."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Build the model, time encode and decode, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up; best is kept")
    p.add_argument("--config", default=None, help="official config.json (default: the real model's sizes)")
    p.add_argument("--chunk-frames", type=int, default=None, help="decode in chunks of this many tokens")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = DashengTokenizerConfig()
    if args.config:
        with open(args.config) as f:
            cfg = DashengTokenizerConfig.from_dict(json.load(f))
    t0 = time.perf_counter()
    model = DashengTokenizer(cfg).freeze().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {cfg}")
    print(f"params {n_params:,}  built in {time.perf_counter() - t0:.1f} s  device {device}  "
          f"threads {torch.get_num_threads()}  torch {torch.__version__}")
    if device.type == "cpu":
        print(f"peak RSS after build: {peak_rss_gib():.2f} GiB")

    torch.manual_seed(0)
    n = int(args.seconds * model.sample_rate)
    audio = 0.1 * torch.randn(args.batch, n, device=device)
    use_amp = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp)
    audio_seconds = args.batch * args.seconds

    def encode():
        with amp:
            return model.encode(audio)

    def decode():
        with torch.no_grad(), amp:
            return model.decode(latent, chunk_frames=args.chunk_frames)

    for name, fn in (("encode", encode), ("decode", decode)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sec, out = timed(fn, device, args.repeats)
        if name == "encode":
            latent = out
        if device.type == "cuda":
            mem = f"peak CUDA allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (bf16 autocast)"
        else:
            mem = f"peak RSS {peak_rss_gib():.2f} GiB (fp32, weights included)"
        print(f"{name}: {audio_seconds:.1f} s of audio in {sec:.3f} s -> {audio_seconds / sec:.2f} "
              f"audio-s/s; output {tuple(out.shape)}; {mem}")


if __name__ == "__main__":
    main()
