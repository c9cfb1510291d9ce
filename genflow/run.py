"""What every recipe's ``train.py`` shares: the run config, data set-up and the call into the loop.

A recipe keeps only what is its own: presets, which manifest keys it reads, the dataset class, the
conditioning keys and its preview. Everything here is task-agnostic.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from genflow.cli import config_to_dict
from genflow.codecs import Codec, load_codec
from genflow.codecs.latent_stats import codec_with_latent_stats
from genflow.conditioning import Conditioner
from genflow.data import (
    LatentCache,
    LengthBucketSampler,
    build_latent_cache,
    collate,
    read_manifest,
    validate_manifest,
)
from genflow.model import DiT, DiTConfig
from genflow.text import CachedTextEncoder, load_text_encoder
from genflow.training import TrainConfig, process_state, train

logger = logging.getLogger("genflow.run")


@dataclass
class DataConfig:
    """Where the clips are and how they are cut."""

    train: str = ""  # JSONL manifest, paths relative to it
    noise: str = ""  # noise manifest {"audio"} mixed on the fly (speech enhancement without pairs)
    snr_min: float = -5.0
    snr_max: float = 20.0
    cache: str = "auto"  # latent cache folder; "auto" = RUN/latents, "" = encode on the fly every step
    cache_fp16: bool = True
    max_seconds: float = 10.0  # random crops to this length
    min_seconds: float = 0.2  # shorter clips are reported and skipped by validation
    validate: bool = True


@dataclass
class SamplingConfig:
    """Sampling defaults written into the release and used for previews."""

    duration_s: float = 10.0
    steps: int = 25
    guidance_scale: float = 3.0
    sampler: str = "euler"
    schedule: str = "sway"
    shift: float = 3.0
    sway_coef: float = -1.0


@dataclass
class RunConfig:
    """One training run: codec, text encoder, data, model, optimisation, sampling defaults."""

    codec: str = "mel"
    text_encoder: str = ""  # "" = no text conditioning
    data: DataConfig = field(default_factory=DataConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    preview: tuple[str, ...] = ()  # prompts (or audio paths) sampled every train.sample_every steps


def load_rows(manifest: str, audio_keys: tuple[str, ...], data: DataConfig) -> list[dict]:
    """Read a manifest and drop bad rows (missing, corrupt, silent, NaN, too short), logging counts."""
    if not manifest:
        raise ValueError(f"no manifest given for {audio_keys}: pass --data.train PATH.jsonl")
    rows = read_manifest(manifest, audio_keys)
    if not data.validate:
        return rows
    good, report = validate_manifest(rows, audio_keys, min_duration=data.min_seconds)
    logger.info("%s: %s", manifest, report.summary())
    if not good:
        raise ValueError(f"{manifest}: no usable rows ({report.summary()}); check the paths and files")
    return good


def setup(cfg: RunConfig, *, aligned: bool) -> tuple[RunConfig, Codec, CachedTextEncoder | None]:
    """Load the frozen codec/text encoder and fill the model's latent/text/aligned widths from them."""
    state = process_state()
    codec = load_codec(cfg.codec, device=state.device)
    # A VAE without latent statistics gets them from the training data, in RUN/codec (kept on resume,
    # shipped with the release); cfg.codec then names that folder.
    codec_id, codec = codec_with_latent_stats(cfg.codec, codec, cfg.data.train, Path(cfg.train.out) / "codec", state)
    cfg = dataclasses.replace(cfg, codec=codec_id)
    text_encoder = None
    if cfg.text_encoder:
        text_encoder = CachedTextEncoder(load_text_encoder(cfg.text_encoder, device=state.device))
    model_cfg = dataclasses.replace(cfg.model, latent_dim=codec.latent_dim,
                                    text_dim=text_encoder.dim if text_encoder else 0,
                                    aligned_dim=codec.latent_dim if aligned else 0)
    return dataclasses.replace(cfg, model=model_cfg), codec, text_encoder


def latent_cache(cfg: RunConfig, rows: list[dict], codec, keys: tuple[str, ...]) -> LatentCache | None:
    """Build (once, resumably, split across processes) and open the latent cache, or None when disabled."""
    if not cfg.data.cache:
        return None
    folder = Path(cfg.train.out) / "latents" if cfg.data.cache == "auto" else Path(cfg.data.cache)
    state = process_state()
    build_latent_cache(rows, codec, folder, keys=keys, fp16=cfg.data.cache_fp16,
                       accelerator=state if state.num_processes > 1 else None)
    state.wait_for_everyone()
    return LatentCache(folder, codec=codec)


def run_training(
    cfg: RunConfig,
    codec,
    text_encoder,
    dataset,
    *,
    target_key: str,
    text_key: str | None,
    aligned_key: str | None,
    preview: Callable | None,
    resume: str | None,
) -> Path:
    """Build the DiT, the sampler and the conditioner, then run ``genflow.training.train``."""
    state = process_state()
    set_seed(cfg.train.seed)  # the same initial weights on every process and in every rerun
    model = DiT(cfg.model)
    sampler = LengthBucketSampler(dataset.lengths, cfg.train.batch_size, seed=cfg.train.seed,
                                  num_replicas=state.num_processes, rank=state.process_index)
    conditioner = Conditioner(codec, text_encoder, target_key=target_key, text_key=text_key,
                              aligned_key=aligned_key)
    release = {"codec": cfg.codec, "text_encoder": cfg.text_encoder or None,
               "defaults": dataclasses.asdict(cfg.sampling)}
    return train(cfg.train, model, dataset, sampler, collate, conditioner, release=release,
                 run_config=config_to_dict(cfg), preview=preview, resume=resume)


def max_frames(cfg: RunConfig, codec) -> int:
    """Latent frames of the longest training crop."""
    return max(1, round(cfg.data.max_seconds * codec.frame_rate))


def train_captioned(cfg: RunConfig, resume: str | None = None) -> Path:
    """Train on captioned clips ({"audio", "caption"} rows): text-to-audio and text-to-music alike."""
    from genflow.data import TextAudioDataset

    cfg, codec, text_encoder = setup(cfg, aligned=False)
    rows = load_rows(cfg.data.train, ("audio",), cfg.data)
    dataset = TextAudioDataset(rows, cache=latent_cache(cfg, rows, codec, ("audio",)),
                               codec_sample_rate=codec.sample_rate, hop_length=codec.hop_length,
                               max_frames=max_frames(cfg, codec), seed=cfg.train.seed)
    prompts = list(cfg.preview)

    def preview(generator) -> dict:
        return dict(zip(prompts, generator.generate(prompts, duration_s=cfg.sampling.duration_s, seed=0)))

    return run_training(cfg, codec, text_encoder, dataset, target_key="audio", text_key="caption",
                        aligned_key=None, preview=preview if prompts else None, resume=resume)


#: Short flags every recipe accepts, on top of ``--FIELD.PATH value`` for any config field.
ALIASES = {"data": "data.train", "max-steps": "train.max_steps", "out": "train.out"}
RESUME_FLAG = ("--resume", {"default": None, "metavar": "latest|PATH", "help": "continue a run from its checkpoint"})
