"""What every recipe's ``train.py`` shares: the run config, the frozen models, the data and the call into the loop.

A recipe keeps only what is its own: presets, which manifest keys it reads, the dataset class, the
batch keys and its preview. Everything here is task-agnostic.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from genflow.cli.config import config_to_dict
from genflow.conditioning import BatchKeys, Conditioner, build_conditioner, inside
from genflow.data import (
    LatentCache,
    LengthBucketSampler,
    build_latent_cache,
    collate,
    read_manifest,
    resolve_cache_dir,
    validate_manifest,
)
from genflow.model import DiT, DiTConfig
from genflow.objectives import (
    PREDICTION,
    check_objective,
    load_teacher,
    release_sampling,
    resolve_fewstep,
    student_model,
)
from genflow.release import load_release
from genflow.sampling import SamplingSettings
from genflow.training import TrainConfig, process_state, train

logger = logging.getLogger("genflow.recipe")


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
class RunConfig:
    """One training run: codec, text encoder, data, model, optimisation, sampling settings of the release."""

    codec: str = "mel"
    text_encoder: str = ""  # "" = no text conditioning
    init: str = ""  # fine-tune: a release folder or hub id whose model, codec, text encoder and sampling settings
    # the run starts from (they replace the preset's)
    prompt_template: str = "{}"  # how captions reach the text encoder ("{}" = as they are)
    data: DataConfig = field(default_factory=DataConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
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


def setup(cfg: RunConfig, *, aligned: bool) -> tuple[RunConfig, Conditioner, torch.nn.Module]:
    """The frozen codec/text encoder (``build_conditioner``) and the model to train.

    From scratch, the model's widths come from the codec and text encoder. With ``init`` (fine-tuning) the
    release's model, codec, text encoder, prompt template and sampling settings are used as they are. A few-step
    objective (``--objective meanflow|ctm``) gets the model's zero-initialised interval input added.
    """
    check_objective(cfg.train.objective, cfg.init)
    device = process_state().device
    if cfg.init:
        model, meta, folder = load_release(cfg.init)
        model = student_model(model, cfg.train.objective)
        codec, text = inside(folder, meta["codec"]), meta.get("text_encoder") or ""
        cfg = dataclasses.replace(cfg, codec=codec, text_encoder=text and inside(folder, text),
                                  model=getattr(model, "config", cfg.model),
                                  prompt_template=meta.get("prompt_template", "{}"),
                                  sampling=SamplingSettings.from_dict(meta.get("sampling") or {}))
        logger.info("fine-tuning %s (codec %s, text encoder %s)", cfg.init, cfg.codec, cfg.text_encoder or None)
    conditioner = build_conditioner(cfg.codec, cfg.text_encoder or None, device=device,
                                    prompt_template=cfg.prompt_template)
    if cfg.init:
        return cfg, conditioner, model
    codec, text = conditioner.codec, conditioner.text_encoder
    model_cfg = dataclasses.replace(cfg.model, latent_dim=codec.latent_dim, text_dim=text.dim if text else 0,
                                    aligned_dim=codec.latent_dim if aligned else 0,
                                    interval_input=cfg.model.interval_input or PREDICTION[cfg.train.objective]
                                    == "average_velocity")
    set_seed(cfg.train.seed)  # the same initial weights on every process and in every rerun
    return dataclasses.replace(cfg, model=model_cfg), conditioner, DiT(model_cfg)


def latent_cache(cfg: RunConfig, rows: list[dict], codec, keys: tuple[str, ...]) -> LatentCache | None:
    """Build (once, resumably, split across processes) and open the latent cache, or None when disabled."""
    folder = resolve_cache_dir(cfg.data.cache, Path(cfg.train.out) / "latents")
    if folder is None:
        return None
    state = process_state()
    build_latent_cache(rows, codec, folder, keys=keys, fp16=cfg.data.cache_fp16,
                       accelerator=state if state.num_processes > 1 else None)
    state.wait_for_everyone()
    return LatentCache(folder, codec=codec)


def run_training(cfg: RunConfig, conditioner: Conditioner, model: torch.nn.Module, dataset, keys: BatchKeys, *,
                 preview: Callable | None, resume: str | None) -> Path:
    """Build the batch sampler, then run ``genflow.training.train`` on ``model`` (and a distillation teacher)."""
    state = process_state()
    objective = cfg.train.objective
    fewstep = resolve_fewstep(objective, cfg.train.fewstep, cfg.sampling.guidance_scale)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fewstep=fewstep))
    sampler = LengthBucketSampler(dataset.lengths, cfg.train.batch_size, seed=cfg.train.seed,
                                  num_replicas=state.num_processes, rank=state.process_index)
    release = {"codec": cfg.codec, "text_encoder": cfg.text_encoder or None, "prompt_template": cfg.prompt_template,
               "sampling": release_sampling(objective, cfg.sampling.to_dict()), "prediction": PREDICTION[objective]}
    return train(cfg.train, model, dataset, sampler, collate, conditioner.with_keys(keys), release=release,
                 run_config=config_to_dict(cfg), preview=preview, resume_from=resume,
                 teacher=load_teacher(objective, cfg.init))


def max_frames(cfg: RunConfig, codec) -> int:
    """Latent frames of the longest training crop."""
    return max(1, round(cfg.data.max_seconds * codec.frame_rate))


def train_captioned(cfg: RunConfig, resume: str | None = None) -> Path:
    """Train on captioned clips ({"audio", "caption"} rows): text-to-audio and text-to-music alike."""
    from genflow.data import TextAudioDataset

    cfg, conditioner, model = setup(cfg, aligned=False)
    codec = conditioner.codec
    rows = load_rows(cfg.data.train, ("audio",), cfg.data)
    cache = latent_cache(cfg, rows, codec, ("audio",))
    dataset = TextAudioDataset(rows, cache=cache, codec_sample_rate=codec.sample_rate, hop_length=codec.hop_length,
                               max_frames=max_frames(cfg, codec), seed=cfg.train.seed)
    prompts = list(cfg.preview)

    def preview(generator) -> dict:
        return dict(zip(prompts, generator.generate(prompts, seed=0)))

    keys = BatchKeys(target="audio", text="caption", cached=cache is not None)
    return run_training(cfg, conditioner, model, dataset, keys, preview=preview if prompts else None, resume=resume)


#: Short flags every recipe accepts, on top of ``--FIELD.PATH value`` for any config field.
ALIASES = {"data": "data.train", "max-steps": "train.max_steps", "objective": "train.objective",
           "out": "train.out"}
RESUME_FLAG = ("--resume", {"default": None, "metavar": "latest|PATH", "help": "continue a run from its checkpoint"})
