"""Text-to-audio: flow matching of a DiT on codec latents, conditioned on captions.

    accelerate launch recipes/tta/train.py                          # demo preset on the bundled data (CPU ok)
    accelerate launch recipes/tta/train.py --preset base --data audiocaps/train.jsonl --out runs/tta-base
    accelerate launch recipes/tta/train.py --out runs/tta-demo --resume latest
    python recipes/tta/train.py --help                               # every option

Presets: ``demo`` (weight-free mel codec + offline MiniLM + small DiT; trains on a CPU), ``tiny``
(tests), ``base``/``large`` (DashengTokenizer + flan-t5-large, the paper's setting; GPUs). Any field can
be overridden: ``--model.depth 12 --train.lr 2e-4``. The manifest is JSONL ``{"audio", "caption"}``
(``recipes/tta/prepare.py`` makes one from an AudioCaps-style CSV).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from genflow.cli.common import run_main
from genflow.cli.config import parse_config
from genflow.model import PRESETS as DIT
from genflow.recipe import ALIASES, RESUME_FLAG, DataConfig, RunConfig, train_captioned
from genflow.sampling import SamplingSettings
from genflow.training import TrainConfig

DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo" / "tta"

DEMO = RunConfig(
    codec="mel",
    text_encoder="minilm",
    data=DataConfig(train=str(DEMO_DATA / "train.jsonl"), max_seconds=4.0),
    model=DIT["small"],
    train=TrainConfig(out="runs/tta-demo", max_steps=5000, batch_size=16, lr=5e-4, warmup_steps=100,
                      save_every=500, sample_every=500, log_every=25),
    sampling=SamplingSettings(duration_s=3.0, steps=25, guidance_scale=3.0),
    preview=("a house music kick drum hit", "an ambient choir pad", "a crisp snare drum hit",
             "the amen break drum loop"),
)
BASE = RunConfig(
    codec="mispeech/dashengtokenizer",
    text_encoder="google/flan-t5-large",
    data=DataConfig(train="data/audiocaps/train.jsonl", max_seconds=10.0),
    model=DIT["base"],
    train=TrainConfig(out="runs/tta-base", max_steps=400_000, batch_size=32, lr=1e-4, warmup_steps=2000,
                      mixed_precision="bf16", save_every=5000, sample_every=5000, log_every=50, num_workers=4),
    sampling=SamplingSettings(duration_s=10.0, steps=25, guidance_scale=5.0),
    preview=("a dog barks while cars pass by", "rain falls on a tin roof", "a man speaks then a crowd applauds"),
)
PRESETS = {
    "demo": DEMO,
    "tiny": replace(DEMO, text_encoder="tiny-t5", model=DIT["tiny"], preview=DEMO.preview[:2],
                    data=replace(DEMO.data, max_seconds=1.0),
                    train=replace(DEMO.train, out="runs/tta-tiny", max_steps=4, batch_size=2, save_every=2,
                                  sample_every=4, log_every=1, warmup_steps=1),
                    sampling=replace(DEMO.sampling, duration_s=1.0, steps=2)),
    "base": BASE,
    # activation checkpointing on: with it `large` fits one 80 GB GPU under DDP (bench/memory.py)
    "large": replace(BASE, model=replace(DIT["large"], gradient_checkpointing=True),
                     train=replace(BASE.train, out="runs/tta-large", lr=5e-5)),
}


def main(argv: list[str] | None = None) -> Path:
    """Parse flags, then train on the captioned clips; returns the release folder."""
    cfg, args = parse_config(PRESETS, "demo", argv, __doc__, extra=[RESUME_FLAG], aliases=ALIASES)
    return train_captioned(cfg, resume=args.resume)


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
