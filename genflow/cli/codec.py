"""Codec command line: round-trip a file through a codec and report its speed.

    python -m genflow.codecs reconstruct speech.wav out.wav --codec mel
    genflow-codec reconstruct speech.wav out.wav --codec mispeech/dashengtokenizer --device cuda

Prints the duration, encode and decode times and the real-time factor (processing seconds / audio seconds,
below 1 is faster than real time). OUT is written at the input file's sample rate.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from genflow.audio import AudioError, audio_info, save_audio
from genflow.cli.common import device_arg
from genflow.codecs import VALID_FORMS, decode_latent, encode_audio, load_codec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reconstruct(args: argparse.Namespace) -> None:
    """Encode IN, decode, write OUT; print timings and the real-time factor."""
    info = audio_info(args.input)
    device = torch.device(args.device)
    codec = load_codec(args.codec, device=device)
    print(f"codec: {args.codec} ({type(codec).__name__}, {codec.sample_rate} Hz, {codec.frame_rate:g} frames/s, "
          f"{codec.latent_dim} channels) on {device}")
    print(f"input: {args.input}: {info.duration:.2f} s, {info.sample_rate} Hz, {info.channels} channel(s)")
    _sync(device)
    t0 = time.perf_counter()
    latent = encode_audio(codec, args.input)  # (T, C)
    _sync(device)
    t1 = time.perf_counter()
    wav = decode_latent(codec, latent, sample_rate=info.sample_rate)  # (N,)
    _sync(device)
    t2 = time.perf_counter()
    save_audio(args.output, wav.cpu(), info.sample_rate)
    enc, dec = t1 - t0, t2 - t1
    print(f"latent: {tuple(latent.shape)}, {latent.dtype}")
    print(f"encode {enc:.3f} s, decode {dec:.3f} s (decode includes resampling to {info.sample_rate} Hz)")
    print(f"RTF {(enc + dec) / info.duration:.4f} (processing s / audio s; encode {enc / info.duration:.4f}, "
          f"decode {dec / info.duration:.4f})")
    print(f"wrote {args.output}: {wav.shape[-1] / info.sample_rate:.2f} s at {info.sample_rate} Hz")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m genflow.codecs`` and the ``genflow-codec`` console script."""
    parser = argparse.ArgumentParser(prog="genflow-codec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reconstruct", help="encode then decode a file; print speed")
    p.add_argument("input", help="audio file (anything soundfile reads, any rate, any channels)")
    p.add_argument("output", help="output .wav or .flac (written at the input's sample rate)")
    p.add_argument("--codec", default="mel", help=f"codec to use: {VALID_FORMS}")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        reconstruct(args)
    except (AudioError, OSError, ValueError) as e:  # bad input, damaged codec folder, unwritable output
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
