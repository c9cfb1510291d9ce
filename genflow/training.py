"""The one training loop: flow matching of a DiT on codec latents, on Accelerate.

Read top to bottom: Accelerator -> model, optimizer, LR schedule -> ``prepare`` (the frozen codec and
text encoder are only moved) -> EMA -> resume -> loop over optimizer steps inside
``accelerator.accumulate`` -> on sync: clip, skip non-finite, step, EMA -> periodic log, preview samples
and ``save_state`` -> at the end, a release folder with the EMA weights.

Task-agnostic: a recipe passes the data (dataset, batch sampler, collate) and a ``Conditioner`` that
turns a batch into DiT inputs; text-to-audio and speech enhancement differ only there. Launch with
``accelerate launch`` for any number of GPUs/nodes (DDP, or FSDP from ``accelerate config``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, ProjectConfiguration, parse_flag_from_env, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from genflow import hub
from genflow.conditioning import Conditioner
from genflow.data import SkipBatches
from genflow.ema import EMA
from genflow.flow import TimestepSampler
from genflow.objectives import FewStepConfig, objective_loss
from genflow.release import save_release
from genflow.sampling import SamplingSettings

logger = logging.getLogger("genflow.training")


@dataclass
class TrainConfig:
    """Optimisation, checkpointing and logging settings of one run (model and data live elsewhere)."""

    out: str = "runs/demo"  # run folder: config.json, checkpoints/, logs/, samples/, release/
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # clips per process per micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" (to min_lr_ratio * lr) | "constant" (after warm-up)
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (the `accelerate launch` flag wins when given)
    seed: int = 0
    timesteps: str = "logit_normal"  # "logit_normal" | "uniform"
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    timestep_shift: float = 1.0
    text_dropout: float = 0.2  # probability of training a row with the null text (for CFG)
    aligned_dropout: float = 0.2  # same for the time-aligned condition
    objective: str = "flow"  # "flow" | "meanflow" | "ctm" (genflow.objectives; ctm needs --init, the teacher)
    fewstep: FewStepConfig = field(default_factory=FewStepConfig)  # settings of meanflow / ctm
    log_every: int = 10
    save_every: int = 500
    save_total_limit: int = 3
    sample_every: int = 500  # preview samples with the EMA weights (0 = never)
    max_bad_steps: int = 10  # abort after this many non-finite steps in a row
    num_workers: int = 0
    log_with: str = "tensorboard"  # "tensorboard" | "wandb" | "none"


class RunState:
    """Counters restored on resume: step, data position, skipped work."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed
        self.bad_steps_total = 0
        self.bad_files_total = 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, int(v))


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio``."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    return f


def find_checkpoint(out: Path, resume: str) -> Path | None:
    """``latest`` -> newest complete checkpoint of the run (None if there is none); else the given path."""
    if resume != "latest":
        path = Path(resume)
        if not (path / "genflow_state.json").exists():
            raise FileNotFoundError(f"--resume {resume}: not a genflow training checkpoint (no genflow_state.json); "
                                    f"pass a folder under RUN/checkpoints/ or 'latest'")
        return path
    # checkpoint-N only: a checkpoint-N.tmp left by a kill during the rename is incomplete by definition.
    done = [p for p in (out / "checkpoints").glob("checkpoint-*")
            if p.name.split("-", 1)[1].isdigit() and (p / "genflow_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def process_state() -> PartialState:
    """The process group, on the CPU when asked (``accelerate launch --cpu``) or when there is no GPU.

    Without ``cpu=True`` Accelerate treats several processes on a GPU-less machine (``torchrun
    --nproc_per_node 2``) as unrelated single processes; with it they form a gloo process group.
    """
    return PartialState(cpu=_use_cpu())


def _use_cpu() -> bool:
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def _memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Run:
    """What the steps of one training run share: the Accelerator, the model and its optimisation state."""

    cfg: TrainConfig
    out: Path
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    conditioner: Conditioner
    sigma_sampler: TimestepSampler
    ema_file: str
    state: RunState = field(default_factory=RunState)
    bad_streak: int = 0
    teacher: torch.nn.Module | None = None  # frozen, for distillation objectives; moved, never prepared

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def build(cfg: TrainConfig, model: torch.nn.Module, conditioner: Conditioner, run_config: dict | None = None) -> Run:
    """Accelerator, optimizer, LR schedule, EMA; the frozen conditioner is moved, never prepared."""
    out = Path(cfg.out)
    log_with = None if cfg.log_with == "none" else cfg.log_with
    accelerator = Accelerator(
        cpu=_use_cpu(),
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=None if cfg.mixed_precision == "no" else cfg.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    set_seed(cfg.seed, device_specific=True)
    if accelerator.is_main_process and run_config is not None:
        hub.write_json(out / "config.json", run_config)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        logger.info("resolved config:\n%s", json.dumps(run_config, indent=2))
    if log_with:
        # TensorBoard's hparams take flat scalars: the nested few-step settings go in as "fewstep.NAME"
        hparams = {k: v for k, v in vars(cfg).items() if k != "fewstep"}
        hparams.update({f"fewstep.{k}": "none" if v is None else v for k, v in vars(cfg.fewstep).items()})
        accelerator.init_trackers("genflow", config=hparams)
    conditioner.to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    # A plain LambdaLR (not prepared, so Accelerate does not step it once per process) checkpointed below.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    # Accelerate saves registered objects from the main process only; sharded (FSDP) EMA needs every
    # process to write its own shard, so the EMA is saved beside the Accelerate state by hand.
    sharded = accelerator.distributed_type == DistributedType.FSDP
    run = Run(cfg, out, accelerator, model, optimizer, scheduler, EMA(model.parameters(), decay=cfg.ema_decay),
              conditioner, TimestepSampler(kind=cfg.timesteps, mean=cfg.timestep_mean, std=cfg.timestep_std,
                                           shift=cfg.timestep_shift),
              f"ema-rank{accelerator.process_index}.safetensors" if sharded else "ema.safetensors")
    for obj in (scheduler, run.state):
        accelerator.register_for_checkpointing(obj)
    return run


def resume(run: Run, resume_from: str | None) -> None:
    """Load the checkpoint ``resume_from`` names ('latest' or a path) into the run, if there is one."""
    if not resume_from:
        return
    ckpt = find_checkpoint(run.out, resume_from)
    if ckpt is None:
        logger.info("--resume latest: no checkpoint in %s, starting from scratch", run.out / "checkpoints")
        return
    run.accelerator.load_state(str(ckpt))
    run.ema.load(ckpt / run.ema_file)
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, run.state.step, run.state.epoch,
                run.state.batch_in_epoch)


def batches(run: Run, dataset: Dataset, batch_sampler, collate_fn: Callable) -> Iterator[dict]:
    """Micro-batches from the run's data position on, epoch after epoch (exact data order on resume)."""
    # The loader gets its own generator: creating an iterator must not draw from the global RNG, or a
    # resumed run (new iterator mid-epoch) would see other noise than an uninterrupted one.
    kwargs = dict(collate_fn=collate_fn, num_workers=run.cfg.num_workers, pin_memory=run.device.type == "cuda",
                  generator=torch.Generator().manual_seed(run.cfg.seed))
    state = run.state
    while True:
        batch_sampler.set_epoch(state.epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(state.epoch)  # random crops/noises differ per epoch, reproducibly
        for batch in DataLoader(dataset, batch_sampler=SkipBatches(batch_sampler, state.batch_in_epoch), **kwargs):
            state.batch_in_epoch += 1
            state.bad_files_total += int(batch.get("num_skipped", 0))
            yield batch
        state.epoch += 1  # the epoch ended: the next one starts from its first batch
        state.batch_in_epoch = 0


def train_step(run: Run, batch: dict, text_dropout: float, aligned_dropout: float):
    """One micro-batch: conditions, flow loss, backward; on sync also clip, skip non-finite, step, EMA.

    Returns (loss, grad norm) on an optimizer step, (loss, None) on an accumulation micro-step.
    """
    cfg, accelerator = run.cfg, run.accelerator
    with accelerator.accumulate(run.model):
        inputs = run.conditioner(batch, run.device)
        loss = objective_loss(cfg.objective, run.model, inputs, fewstep=cfg.fewstep, text_dropout=text_dropout,
                              aligned_dropout=aligned_dropout, timesteps=run.sigma_sampler, teacher=run.teacher,
                              plain_model=accelerator.unwrap_model(run.model))
        accelerator.backward(loss)
        if not accelerator.sync_gradients:
            return loss.detach(), None
        grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
        # One host sync per optimizer step (as AMP's GradScaler does) to skip a non-finite update.
        if torch.isfinite(grad_norm).item():
            run.optimizer.step()
            run.scheduler.step()
            run.ema.update()
            run.bad_streak = 0
        else:
            run.bad_streak += 1
            run.state.bad_steps_total += 1
            logger.warning("non-finite loss/gradient at step %d: update skipped (%d in a row)",
                           run.state.step, run.bad_streak)
            if run.bad_streak >= cfg.max_bad_steps:
                raise RuntimeError(f"{run.bad_streak} non-finite steps in a row at step {run.state.step}: "
                                   "lower the learning rate, enable gradient clipping or check the data")
        run.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), grad_norm


class Meter:
    """Loss and speed since the last log line."""

    def __init__(self, run: Run):
        self.loss_sum = torch.zeros((), device=run.device)
        self.count, self.t_last, self.step_last = 0, time.perf_counter(), run.state.step

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.count += 1

    def log(self, run: Run, grad_norm, dataset: Dataset, progress: tqdm) -> None:
        """Reduce, print and track the loss, LR, grad norm, speed, memory and skipped work."""
        elapsed, steps = time.perf_counter() - self.t_last, run.state.step - self.step_last
        per_step = run.cfg.batch_size * run.cfg.grad_accum * run.accelerator.num_processes
        logs = {
            "loss": run.accelerator.reduce(self.loss_sum / max(1, self.count), "mean").item(),
            "lr": run.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "steps_per_s": steps / elapsed,
            "samples_per_s": steps * per_step / elapsed,
            "memory_gb": _memory_gb(run.device),
            # clips replaced by the dataset (counted here with num_workers=0) + dropped by collate
            "bad_files": run.state.bad_files_total + getattr(dataset, "num_bad", 0),
            "bad_steps": run.state.bad_steps_total,
        }
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        if run.cfg.log_with != "none":
            run.accelerator.log(logs, step=run.state.step)
        if run.accelerator.is_main_process:
            logger.info("step %d %s", run.state.step, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        self.loss_sum.zero_()
        self.count, self.t_last, self.step_last = 0, time.perf_counter(), run.state.step


def save_checkpoint(run: Run, tag: str | None = None) -> None:
    """Accelerate state + EMA -> checkpoints/checkpoint-STEP, written to a temp name then renamed."""
    accelerator, state = run.accelerator, run.state
    final = run.out / "checkpoints" / f"checkpoint-{state.step}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if run.ema_file != "ema.safetensors" or accelerator.is_main_process:  # every shard, or the one file
        run.ema.save(tmp / run.ema_file)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        hub.write_json(tmp / "genflow_state.json", state.state_dict())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted((p for p in final.parent.glob("checkpoint-*") if not p.name.endswith(".tmp")),
                      key=lambda p: int(p.name.split("-")[1]))
        for old in done[: max(0, len(done) - run.cfg.save_total_limit)]:
            shutil.rmtree(old)
        logger.info("saved %s%s", final, f" ({tag})" if tag else "")
    accelerator.wait_for_everyone()


def make_preview(run: Run, preview: Callable, settings: SamplingSettings, prediction: str = "velocity") -> None:
    """Sample ``preview(generator)`` with the EMA weights; write WAVs, spectrograms and TensorBoard entries."""
    from genflow.pipeline import Generator

    unwrapped = run.accelerator.unwrap_model(run.model)
    with run.ema.applied():
        unwrapped.eval()
        clips = preview(Generator(unwrapped, run.conditioner, settings, prediction=prediction))
        unwrapped.train()
    if run.accelerator.is_main_process:
        write_preview(run.out / "samples" / f"step-{run.state.step:07d}", clips, run.conditioner.codec.sample_rate,
                      run.accelerator, run.state.step)


def write_release(run: Run, release: dict) -> Path:
    """The EMA weights, unwrapped and gathered, + ``release`` as pipeline.json -> RUN/release."""
    release_dir = run.out / "release"
    with run.ema.applied():
        # Gathers full weights under FSDP (all ranks call). Cloned: the state dict shares storage with
        # the parameters, which get their raw values back when the context exits.
        weights = {k: v.detach().clone() for k, v in run.accelerator.get_state_dict(run.model).items()}
    if run.accelerator.is_main_process:
        save_release(release_dir, run.accelerator.unwrap_model(run.model), weights, release)
        logger.info("release folder: %s", release_dir)
    run.accelerator.wait_for_everyone()
    return release_dir


@contextmanager
def stop_signals() -> Iterator[dict]:
    """SIGTERM/SIGINT (pre-emption, Ctrl-C) set ``flag["asked"]``: checkpoint at the next step, then exit."""
    flag = {"asked": False}
    previous = {s: signal.signal(s, lambda *_: flag.update(asked=True)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _agree(run: Run, asked: bool) -> bool:
    """Every rank must agree to stop at the same step."""
    if run.accelerator.num_processes == 1:
        return asked
    return bool(run.accelerator.reduce(torch.tensor(float(asked), device=run.device), "max").item())


def train(cfg: TrainConfig, model: torch.nn.Module, dataset: Dataset, batch_sampler, collate_fn: Callable,
          conditioner: Conditioner, *, release: dict, run_config: dict, preview: Callable | None = None,
          resume_from: str | None = None, teacher: torch.nn.Module | None = None) -> Path:
    """Train ``model`` and return the release folder.

    ``batch_sampler`` yields lists of dataset indices for this process (it shards by rank itself) and
    has ``set_epoch``; ``conditioner(batch, device)`` returns the DiT inputs of a collated batch;
    ``preview(generator) -> {name: waveform}`` makes the periodic samples; ``release`` is written as
    ``pipeline.json`` next to the EMA weights; ``run_config`` is the resolved config of the whole run;
    ``teacher`` is the frozen model a distillation objective learns from.
    """
    run = build(cfg, model, conditioner, run_config)
    run.teacher = teacher.to(run.device) if teacher is not None else None
    resume(run, resume_from)
    settings = SamplingSettings.from_dict(release.get("sampling") or {})
    prediction = release.get("prediction", "velocity")
    previews = preview is not None and cfg.sample_every > 0
    progress = tqdm(total=cfg.max_steps, initial=run.state.step, disable=not run.accelerator.is_main_process,
                    desc="train", dynamic_ncols=True)
    meter, stopped = Meter(run), False
    run.model.train()
    with stop_signals() as stop:
        data = batches(run, dataset, batch_sampler, collate_fn)
        while run.state.step < cfg.max_steps and not stopped:
            loss, grad_norm = train_step(run, next(data), cfg.text_dropout, cfg.aligned_dropout)
            meter.add(loss)
            if grad_norm is None:  # accumulating
                continue
            run.state.step += 1
            progress.update(1)
            if run.state.step % cfg.log_every == 0 or run.state.step == cfg.max_steps:
                meter.log(run, grad_norm, dataset, progress)
            if previews and run.state.step % cfg.sample_every == 0:
                make_preview(run, preview, settings, prediction)
            stopped = _agree(run, stop["asked"])
            if stopped:
                save_checkpoint(run, "interrupted")
            elif run.state.step % cfg.save_every == 0:
                save_checkpoint(run)
    progress.close()
    if stopped:
        logger.info("stopped by signal at step %d; resume with --resume latest", run.state.step)
        run.accelerator.end_training()
        raise SystemExit(0)
    if run.state.step % cfg.save_every != 0:
        save_checkpoint(run, "final")
    if previews and run.state.step % cfg.sample_every != 0:
        make_preview(run, preview, settings, prediction)
    bad_files = run.state.bad_files_total + getattr(dataset, "num_bad", 0)
    if bad_files and run.accelerator.is_main_process:
        logger.warning("%d unreadable clips were skipped during training", bad_files)
    release_dir = write_release(run, release)
    run.accelerator.end_training()
    return release_dir


def write_preview(folder: Path, clips: dict[str, torch.Tensor], sample_rate: int, accelerator, step: int) -> None:
    """Preview clips -> WAVs + a spectrogram grid in the run folder, and audio + images in TensorBoard."""
    from genflow.audio import save_audio
    from genflow.plots import save_spectrogram_grid, spectrogram_rgb

    names = list(clips)
    for i, name in enumerate(names):
        save_audio(folder / f"{i:02d}.wav", clips[name], sample_rate)
    (folder / "names.json").write_text(json.dumps(names, indent=1))
    save_spectrogram_grid([clips[n] for n in names], names, sample_rate, folder / "spectrograms.png")
    try:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
    except Exception:  # no TensorBoard tracker configured
        return
    if not hasattr(writer, "add_audio"):
        return
    for i, name in enumerate(names):
        wav = clips[name].float().clamp(-1, 1).reshape(1, -1).cpu()
        writer.add_audio(f"sample/{i:02d}", wav, step, sample_rate=sample_rate)
        writer.add_image(f"spectrogram/{i:02d}", spectrogram_rgb(wav[0], sample_rate), step, dataformats="HWC")
        writer.add_text(f"sample/{i:02d}", name, step)
