"""Speed and peak memory of the Oobleck VAE codec at Stable Audio Open's size (random weights, no download).

    python bench/vae_codec_speed.py --device cpu --seconds 5 --repeats 2
    python bench/vae_codec_speed.py                  # CUDA when present

Builds diffusers' ``AutoencoderOobleck()`` with its default config (Stable Audio Open's VAE: 44.1 kHz stereo,
strides 2-4-4-8-8 = hop 2048, 64 latent channels, ~157 M parameters), saves it to a temporary folder and loads
it back through ``genflow.codecs.load_codec`` (the strict safetensors path), then times ``encode`` and
``decode`` of one mono clip. Prints seconds of audio per second of wall time (best of ``--repeats``) and peak
memory (process RSS on CPU, torch.cuda.max_memory_allocated on CUDA). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from genflow.codecs import load_codec


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``fn`` (synchronised on CUDA), and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    """Build, save, load, time; print one table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import AutoencoderOobleck

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        AutoencoderOobleck().save_pretrained(tmp, safe_serialization=True)
        t0 = time.perf_counter()
        codec = load_codec(tmp, device=device)
        load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in codec.parameters())
    audio = 0.1 * torch.randn(1, round(args.seconds * codec.sample_rate), device=device)
    with torch.inference_mode():
        enc_s, latent = timed(lambda: codec.encode(audio), device, args.repeats)
        dec_s, wav = timed(lambda: codec.decode(latent), device, args.repeats)
    mem = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(f"Oobleck VAE (Stable Audio Open size), random weights: {n_params / 1e6:.1f} M parameters, "
          f"{codec.sample_rate} Hz, hop {codec.hop_length}, {codec.frame_rate:.2f} frames/s, {codec.latent_dim} ch; "
          f"load {load_s:.1f} s; torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")
    print(f"clip {args.seconds:g} s -> latent {tuple(latent.shape)} -> audio {tuple(wav.shape)}")
    print("| encode (audio s / s) | decode (audio s / s) | peak memory GiB |")
    print("|---|---|---|")
    print(f"| {args.seconds / enc_s:.2f} | {args.seconds / dec_s:.2f} | {mem:.2f} |")


if __name__ == "__main__":
    main()
