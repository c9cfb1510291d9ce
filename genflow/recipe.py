"""What every recipe's ``train.py`` shares: the run config, the frozen models, the data and the call into the loop.

A recipe keeps only what is its own: presets, which manifest keys it reads, the dataset class, the
batch keys and its preview. Everything here is task-agnostic.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import IterableDataset

from genflow import hub
from genflow.cli.config import config_to_dict
from genflow.codecs.latent_stats import codec_with_latent_stats
from genflow.conditioning import BatchKeys, Conditioner, build_conditioner, inside
from genflow.data import (
    LatentCache,
    LengthBucketSampler,
    ValidationReport,
    build_latent_cache,
    collate,
    drop_uncaptioned,
    read_manifest,
    resolve_cache_dir,
    validate_spread,
)
from genflow.data.cache import codec_signature
from genflow.data.latent_shards import LatentShardStream
from genflow.data.stream import ShardStream, expand_shards, is_stream
from genflow.data.stream_pairs import SpeechPairStream
from genflow.lora import LoraSettings, add_lora
from genflow.model import DiT, DiTConfig
from genflow.objectives import (
    PREDICTION,
    check_objective,
    load_teacher,
    new_modules,
    release_sampling,
    resolve_fewstep,
    student_model,
)
from genflow.pipeline import release_options
from genflow.release import load_release
from genflow.sampling import SamplingSettings
from genflow.training import DATA_REPORT, TrainConfig, configure_logging, process_state, train

logger = logging.getLogger("genflow.recipe")


@dataclass
class DataConfig:
    """Where the clips are and how they are cut."""

    train: str = ""  # JSONL manifest (paths relative to it), or WebDataset tar shards ('shards/train-{000..127}.tar',
    # local or any URL webdataset opens): streamed, see genflow.data.stream
    noise: str = ""  # noise manifest {"audio"} mixed on the fly (speech enhancement without pairs)
    snr_min: float = -5.0
    snr_max: float = 20.0
    cache: str = "auto"  # latent cache folder; "auto" = RUN/latents, "" = encode on the fly every step; or tar shards
    # of a cache ('latents/train-{000..015}.tar', genflow.data.latent_shards): streamed, data.train is not read
    cache_fp16: bool = True
    text_cache: str = "auto"  # text-encoder states on disk, one file per caption: "auto" = RUN/text_states,
    # "" = in memory only (an LRU of 4096 captions)
    max_seconds: float = 10.0  # random crops to this length
    min_seconds: float = 0.2  # shorter clips are reported and skipped by validation
    validate: bool = True
    strict: bool = False  # stop at the first bad row (not JSON, no caption, bad audio) instead of skipping it

    def __post_init__(self):
        """Check the lengths and SNR range on construction (a bad ``--data.*`` flag fails before loading)."""
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ValueError(f"data.min_seconds={self.min_seconds}, data.max_seconds={self.max_seconds}: expected "
                             "0 <= min_seconds < max_seconds; fix --data.min_seconds / --data.max_seconds")
        if self.snr_min > self.snr_max:
            raise ValueError(f"data.snr_min={self.snr_min} > data.snr_max={self.snr_max}: expected a range low to high")


@dataclass
class RunConfig:
    """One training run: codec, text encoder, data, model, optimisation, sampling settings of the release."""

    codec: str = "mel"
    text_encoder: str = ""  # "" = no text conditioning
    init: str = ""  # fine-tune: a release folder or hub id whose model, codec, text encoder and sampling settings
    # the run starts from (they replace the preset's)
    prompt_template: str = "{}"  # how captions reach the text encoder ("{}" = as they are)
    lora: LoraSettings = field(default_factory=LoraSettings)  # --lora.rank N: adapters on the --init model
    data: DataConfig = field(default_factory=DataConfig)
    model: DiTConfig = field(default_factory=DiTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    preview: tuple[str, ...] = ()  # prompts (or audio paths) sampled every train.sample_every steps


def load_rows(manifest: str, audio_keys: tuple[str, ...], data: DataConfig, *, out: str | Path,
              text_key: str | None = None) -> list[dict]:
    """Read a manifest and drop bad rows, reporting per-reason counts on the console and in RUN/data_report.json.

    Dropped: lines that are not JSON objects with the audio key(s), rows without a caption (``text_key``),
    and missing, empty, corrupt, silent, non-finite or too short audio. ``data.strict`` stops at any of them.
    """
    if not manifest:
        raise ValueError(f"no manifest given for {audio_keys}: pass --data.train PATH.jsonl")
    if is_stream(manifest):
        raise ValueError(f"{manifest}: tar shards are streamed as --data.train of the tta, ttm and se recipes; "
                         f"rows with {list(audio_keys)} read here need a JSONL manifest")
    bad: list[dict] = []
    try:
        rows = read_manifest(manifest, audio_keys, bad=None if data.strict else bad)
    except ValueError as e:  # --data.strict: the first bad line
        raise ValueError(f"{e}; fix the line, or drop --data.strict to skip bad rows") from None
    if text_key:
        rows = drop_uncaptioned(rows, text_key, bad)
    if data.validate:
        rows, report = validated(rows, audio_keys, data, Path(out))
    else:
        report = ValidationReport(total=len(rows), kept=len(rows))
    report.add_bad(bad)
    if data.strict and report.bad:
        first = report.bad[0]
        raise ValueError(f"{manifest}: {report.summary()}; first: {first['reason']} at {first['path']} "
                         f"({first['detail']}); fix the rows, or drop --data.strict to skip them")
    _report(manifest, report, Path(out))
    if not rows:
        raise ValueError(f"{manifest}: no usable rows ({report.summary()}); check the paths and files")
    return rows


def validated(rows: list[dict], audio_keys: tuple[str, ...], data: DataConfig,
              out: Path) -> tuple[list[dict], ValidationReport]:
    """``validate_spread`` once per run and manifest: the result is kept in RUN/validated/ for later launches.

    Every process decodes a part of the rows (no rank waits for one that decodes all); a relaunch or
    resume with the same rows and settings reads the stored result instead of decoding again (delete
    RUN/validated/ after changing audio files in place).
    """
    key = hashlib.sha256(json.dumps([rows, list(audio_keys), data.min_seconds]).encode()).hexdigest()[:16]
    path = out / "validated" / f"rows-{key}.json"
    if path.is_file():
        stored = hub.read_json(path)
        report = stored["report"]
        return stored["rows"], ValidationReport(report["total"], report["kept"], Counter(report["counts"]),
                                                report["bad"])
    state = process_state()
    good, report = validate_spread(rows, audio_keys, state, min_duration=data.min_seconds)
    if state.is_main_process:
        hub.write_json(path, {"rows": good, "report": report.to_dict(max_rows=len(report.bad))})
    return good, report


_REPORTS: dict[Path, dict] = {}  # run folder -> {manifest: report}, this process's runs


def _report(manifest: str, report: ValidationReport, out: Path) -> None:
    """Log the counts (a warning when rows were dropped) and write RUN/data_report.json (main process)."""
    if not process_state().is_main_process:
        return
    level = logging.WARNING if report.bad else logging.INFO
    logger.log(level, "data %s: %s", manifest, report.summary())
    for row in report.bad[:5]:
        logger.log(level, "  %s: %s (%s)", row["reason"], row["path"], row["detail"])
    if len(report.bad) > 5:
        logger.log(level, "  ... and %d more (listed in %s)", len(report.bad) - 5, out / DATA_REPORT)
    reports = _REPORTS.setdefault(out.resolve(), {})
    reports[str(manifest)] = report.to_dict()
    hub.write_json(out / DATA_REPORT, reports)


def setup(cfg: RunConfig, *, aligned: bool) -> tuple[RunConfig, Conditioner, torch.nn.Module]:
    """The frozen codec/text encoder (``build_conditioner``) and the model to train.

    From scratch, the model's widths come from the codec and text encoder. With ``init`` (fine-tuning) the
    release's model, codec, text encoder, prompt template, sampling settings and flow source are used as they are.
    A few-step objective (``--objective meanflow|ctm``) gets the model's zero-initialised interval input added.
    """
    check_objective(cfg.train.objective, cfg.init)
    state = process_state(cfg.train.process_group_timeout_s)  # first: it creates the process group
    configure_logging()  # before the data report, so its counts reach the console
    device = state.device
    if cfg.init:
        model, meta, folder = load_release(cfg.init)
        set_seed(cfg.train.seed)  # a new interval input starts the same in every rerun and on every process
        model = student_model(model, cfg.train.objective, cfg.train.fewstep)
        for dit in (m for m in model.modules() if isinstance(m, DiT)):  # a training choice, not the release's
            dit.gradient_checkpointing = cfg.model.gradient_checkpointing
        codec, text, options = inside(folder, meta["codec"]), meta.get("text_encoder") or "", release_options(meta)
        cfg = dataclasses.replace(cfg, codec=codec, text_encoder=text and inside(folder, text),
                                  model=getattr(model, "config", cfg.model),
                                  prompt_template=meta.get("prompt_template", "{}"),
                                  sampling=options["settings"],
                                  train=dataclasses.replace(cfg.train, source=options["source"]))
        logger.info("fine-tuning %s (codec %s, text encoder %s)", cfg.init, cfg.codec, cfg.text_encoder or None)
    with state.local_main_process_first():  # hub weights are downloaded once per node, then read by the others
        conditioner = build_conditioner(cfg.codec, cfg.text_encoder or None, device=device,
                                        prompt_template=cfg.prompt_template,
                                        text_cache=resolve_cache_dir(cfg.data.text_cache,
                                                                     Path(cfg.train.out) / "text_states"))
    # A VAE without latent statistics gets them from the training data, in RUN/codec (kept on resume, shipped
    # with the release); cfg.codec then names that folder.
    codec_id, codec = codec_with_latent_stats(cfg.codec, conditioner.codec, cfg.data.train,
                                              Path(cfg.train.out) / "codec", process_state())
    if codec_id != cfg.codec:
        cfg = dataclasses.replace(cfg, codec=codec_id)
        conditioner = Conditioner(codec, conditioner.text_encoder, prompt_template=cfg.prompt_template)
    if cfg.init:
        if cfg.lora.rank:
            set_seed(cfg.train.seed)  # the same adapter initialisation on every process and in every rerun
            model = add_lora(model, cfg.lora, full=new_modules(cfg.train.objective))  # they train whole
            logger.info("LoRA rank %d on %s: %.2f M trainable parameters", cfg.lora.rank, cfg.lora.targets,
                        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
        return cfg, conditioner, model
    if cfg.lora.rank:
        raise ValueError(f"--lora.rank {cfg.lora.rank} needs a model to adapt: pass --init RELEASE (a release "
                         "folder or hub id), or drop --lora.rank to train from scratch")
    text = conditioner.text_encoder
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


def shard_dataset(cfg: RunConfig, codec, keys: tuple[str, ...], **kw) -> ShardStream | None:
    """The run's tar shards, streamed: cached latents (``--data.cache SHARDS``, ``data.train`` not read), audio
    (``--data.train SHARDS``, decoded in the workers, encoded on the GPU), or None (a manifest: map-style data)."""
    state = process_state()
    common = dict(sample_rate=codec.sample_rate, hop_length=codec.hop_length, max_frames=max_frames(cfg, codec),
                  batch_size=cfg.train.batch_size, seed=cfg.train.seed, rank=state.process_index,
                  world=state.num_processes)
    if is_stream(cfg.data.cache):
        if cfg.data.noise:
            raise ValueError(f"--data.cache {cfg.data.cache} (latent shards) with --data.noise: on-the-fly mixing "
                             "needs audio; drop --data.noise, or stream audio shards with --data.train")
        logger.info("streaming cached latents from %s (data.train is not read)", cfg.data.cache)
        return LatentShardStream(expand_shards(cfg.data.cache), keys=keys, codec=codec_signature(codec),
                                 caption_key=kw.get("caption_key"), **common)
    if not is_stream(cfg.data.train):
        return None
    if keys == ("audio",):
        return ShardStream(expand_shards(cfg.data.train), **kw, **common)
    return SpeechPairStream(expand_shards(cfg.data.train), **kw, **common)


def run_training(cfg: RunConfig, conditioner: Conditioner, model: torch.nn.Module, dataset, keys: BatchKeys, *,
                 preview: Callable | None, resume: str | None) -> Path:
    """Build the batch sampler, then run ``genflow.training.train`` on ``model`` (and a distillation teacher)."""
    state = process_state()
    objective = cfg.train.objective
    fewstep = resolve_fewstep(objective, cfg.train.fewstep, cfg.sampling.guidance_scale)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fewstep=fewstep))
    sampler = None if isinstance(dataset, IterableDataset) else LengthBucketSampler(
        dataset.lengths, cfg.train.batch_size, seed=cfg.train.seed, num_replicas=state.num_processes,
        rank=state.process_index, max_frames=cfg.train.max_batch_frames or None)
    collate_fn = None if sampler is None else collate  # a stream yields collated batches
    release = {"codec": cfg.codec, "text_encoder": cfg.text_encoder or None, "prompt_template": cfg.prompt_template,
               "sampling": release_sampling(objective, cfg.sampling.to_dict(), fewstep),
               "prediction": PREDICTION[objective],
               "source": dataclasses.asdict(cfg.train.source),
               "trained_seconds": [cfg.data.min_seconds, cfg.data.max_seconds]}
    return train(cfg.train, model, dataset, sampler, collate_fn, conditioner.with_keys(keys), release=release,
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
    dataset = shard_dataset(cfg, codec, ("audio",), caption_key="caption")
    cached = is_stream(cfg.data.cache)
    if dataset is None:
        rows = load_rows(cfg.data.train, ("audio",), cfg.data, out=cfg.train.out, text_key="caption")
        cache = latent_cache(cfg, rows, codec, ("audio",))
        cached = cache is not None
        dataset = TextAudioDataset(rows, cache=cache, codec_sample_rate=codec.sample_rate,
                                   hop_length=codec.hop_length, max_frames=max_frames(cfg, codec), seed=cfg.train.seed)
    prompts = list(cfg.preview)

    def preview(generator) -> dict:
        return dict(zip(prompts, generator.generate(prompts, seed=0)))

    keys = BatchKeys(target="audio", text="caption", cached=cached)
    return run_training(cfg, conditioner, model, dataset, keys, preview=preview if prompts else None, resume=resume)


#: Short flags every recipe accepts, on top of ``--FIELD.PATH value`` for any config field.
ALIASES = {"data": "data.train", "max-steps": "train.max_steps", "objective": "train.objective",
           "out": "train.out"}


def resume_arg(text: str) -> str:
    """An argparse type: ``latest`` or an existing checkpoint folder (verified later, before loading it)."""
    if text != "latest" and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'latest' nor a checkpoint folder "
                                         "(RUN/checkpoints/checkpoint-STEP)")
    return text


RESUME_FLAG = ("--resume", {"default": None, "metavar": "latest|PATH", "type": resume_arg,
                            "help": "continue a run from its checkpoint"})
