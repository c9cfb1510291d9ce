"""Speech enhancement: flow matching of clean-speech latents, conditioned (time-aligned) on noisy ones.

    accelerate launch recipes/se/train.py                           # demo preset on the bundled speech (CPU ok)
    accelerate launch recipes/se/train.py --preset base --data vbd/train.jsonl --out runs/se-base
    accelerate launch recipes/se/train.py --out runs/se-demo --resume latest
    python recipes/se/train.py --help                                # every option

The DiT generates the clean latent sequence; the noisy recording's latents, same length, are added in every block (no
text). The demo preset's flow starts from the noisy latents (``--train.source.kind aligned``) and its enhanced mel takes
the noisy input's phase (sampling ``phase="input"``). Manifests are JSONL ``{"clean", "noisy"}`` pairs
(``recipes/se/prepare.py`` makes them from VoiceBank-DEMAND), or ``{"clean"}`` rows plus ``--data.noise noise.jsonl``
(``{"audio"}`` rows) mixed on the fly at an SNR drawn from ``[data.snr_min, data.snr_max]`` dB. Pairs can use the latent
cache; on-the-fly mixing encodes every batch (each step hears new mixtures). ``--data`` also takes tar shards of either
(``python -m genflow.data.stream write``; streamed, see docs/scaling.md).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from genflow.audio import load_audio
from genflow.cli.common import run_main
from genflow.cli.config import parse_config
from genflow.conditioning import BatchKeys
from genflow.data import SpeechPairDataset
from genflow.data.stream import is_stream
from genflow.flow import Source
from genflow.model import PRESETS as DIT
from genflow.recipe import (
    ALIASES,
    RESUME_FLAG,
    DataConfig,
    RunConfig,
    latent_cache,
    load_rows,
    max_frames,
    run_training,
    setup,
    shard_dataset,
)
from genflow.sampling import SamplingSettings
from genflow.training import TrainConfig

DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo" / "se"

# The demo: a 128-bin 50 Hz mel (the 64-bin 25 Hz default caps ESTOI at 0.73 / PESQ 1.27, below most noisy
# inputs); a data-to-data flow from the noisy latents (+ 0.05 noise), so the model learns the way to the clean
# ones and a weak model gives its input back; the output takes the noisy input's phase (no Griffin-Lim).
# 2500 steps at a constant learning rate: longer, or annealed to the end, it fits the 48 training voices and
# scores lower on held-out ones (docs/quality.md).
DEMO = RunConfig(
    codec="mel:n_mels=128,frame_rate=50,griffin_lim_iters=64",
    data=DataConfig(train=str(DEMO_DATA / "train.jsonl"), noise=str(DEMO_DATA / "noise_train.jsonl"), cache="",
                    max_seconds=2.0),
    model=replace(DIT["small"], long_skip=False),
    train=TrainConfig(out="runs/se-demo", max_steps=2500, batch_size=8, lr=5e-4, warmup_steps=100,
                      lr_schedule="constant", aligned_dropout=0.1, source=Source("aligned", 0.05), save_every=500,
                      sample_every=500, log_every=25),
    sampling=SamplingSettings(steps=10, guidance_scale=1.0, schedule="linear", phase="input"),
    preview=tuple(str(DEMO_DATA / "test" / "noisy" / f) for f in (
        "allison_check-number-dial-again.flac", "allison_conf-extended.flac")),
)
BASE = RunConfig(
    codec="mispeech/dashengtokenizer",
    data=DataConfig(train="data/voicebank-demand/train.jsonl", cache="auto", max_seconds=4.0),
    model=DIT["base"],
    train=TrainConfig(out="runs/se-base", max_steps=200_000, batch_size=32, lr=1e-4, warmup_steps=2000,
                      aligned_dropout=0.1, mixed_precision="bf16", save_every=5000, sample_every=5000,
                      log_every=50, num_workers=4),
    sampling=SamplingSettings(steps=25, guidance_scale=1.0, schedule="linear"),
)
PRESETS = {
    "demo": DEMO,
    # the shared 64-bin mel: the tests' tiny runs stay fast
    "tiny": replace(DEMO, codec="mel", model=DIT["tiny"], preview=DEMO.preview[:1],
                    data=replace(DEMO.data, max_seconds=1.0),
                    train=replace(DEMO.train, out="runs/se-tiny", max_steps=4, batch_size=2, save_every=2,
                                  sample_every=4, log_every=1, warmup_steps=1),
                    sampling=replace(DEMO.sampling, steps=2)),
    "base": BASE,
    # activation checkpointing on: with it `large` fits one 80 GB GPU under DDP (bench/memory.py)
    "large": replace(BASE, model=replace(DIT["large"], gradient_checkpointing=True),
                     train=replace(BASE.train, out="runs/se-large", lr=5e-5)),
}


def main(argv: list[str] | None = None) -> Path:
    """Parse flags, set up pairs (or clean + noise) and the aligned conditioning, run the loop."""
    cfg, args = parse_config(PRESETS, "demo", argv, __doc__, extra=[RESUME_FLAG], aliases=ALIASES)
    cfg, conditioner, model = setup(cfg, aligned=True)
    codec = conditioner.codec
    mixing = bool(cfg.data.noise)
    noise_rows = (load_rows(cfg.data.noise, ("audio",), replace(cfg.data, min_seconds=0.1), out=cfg.train.out)
                  if mixing else None)
    snr_range = (cfg.data.snr_min, cfg.data.snr_max)
    # tar shards (audio pairs, clean audio to mix, or cached latents): streamed
    dataset = shard_dataset(cfg, codec, ("clean", "noisy"), noise_rows=noise_rows, snr_range=snr_range)
    cached = is_stream(cfg.data.cache)
    if dataset is None:
        rows = load_rows(cfg.data.train, ("clean",) if mixing else ("clean", "noisy"), cfg.data, out=cfg.train.out)
        # Pairs are fixed, so their latents can be cached; on-the-fly mixtures change every step.
        cache = None if mixing else latent_cache(cfg, rows, codec, ("clean", "noisy"))
        cached = cache is not None
        dataset = SpeechPairDataset(rows, noise_rows=noise_rows, snr_range=snr_range, cache=cache,
                                    codec_sample_rate=codec.sample_rate, hop_length=codec.hop_length,
                                    max_frames=max_frames(cfg, codec), seed=cfg.train.seed)
    noisy = {Path(p).stem: load_audio(p, codec.sample_rate) for p in cfg.preview}

    def preview(generator) -> dict:
        return {name: generator.enhance(wav, sr, seed=0) for name, (wav, sr) in noisy.items()}

    keys = BatchKeys(target="clean", aligned="noisy", cached=cached)
    return run_training(cfg, conditioner, model, dataset, keys, preview=preview if noisy else None,
                        resume=args.resume)


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
