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
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, ProjectConfiguration, parse_flag_from_env, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from genflow.conditioning import Conditioner
from genflow.ema import EMA
from genflow.flow import TimestepSampler, flow_loss
from genflow.release import save_release

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


class _Resumed:
    """A batch sampler for one epoch with its first ``skip`` batches dropped (exact data-order resume)."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


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


def train(
    cfg: TrainConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    batch_sampler,
    collate_fn: Callable,
    conditioner: Conditioner,
    *,
    release: dict,
    run_config: dict,
    preview: Callable | None = None,
    resume: str | None = None,
) -> Path:
    """Train ``model`` and return the release folder.

    ``batch_sampler`` yields lists of dataset indices for this process (it shards by rank itself) and
    has ``set_epoch``; ``conditioner(batch, device)`` returns the DiT inputs of a collated batch;
    ``preview(generator) -> {name: waveform}`` makes the periodic samples; ``release`` is written as
    ``pipeline.json`` next to the EMA weights; ``run_config`` is the resolved config of the whole run.
    """
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
    device = accelerator.device
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(run_config, indent=2))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        logger.info("resolved config:\n%s", json.dumps(run_config, indent=2))
    if log_with:
        accelerator.init_trackers("genflow", config={k: v for k, v in vars(cfg).items()})

    # Model, optimizer, schedule. The frozen codec/text encoder are moved, never prepared.
    conditioner.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    # A plain LambdaLR (not prepared, so Accelerate does not step it once per process) checkpointed below.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMA(model.parameters(), decay=cfg.ema_decay)
    state = RunState()
    for obj in (scheduler, state):
        accelerator.register_for_checkpointing(obj)
    # Accelerate saves registered objects from the main process only; sharded (FSDP) EMA needs every
    # process to write its own shard, so the EMA is saved beside the Accelerate state by hand.
    sharded = accelerator.distributed_type == DistributedType.FSDP
    ema_file = f"ema-rank{accelerator.process_index}.safetensors" if sharded else "ema.safetensors"
    sigma_sampler = TimestepSampler(kind=cfg.timesteps, mean=cfg.timestep_mean, std=cfg.timestep_std,
                                    shift=cfg.timestep_shift)

    if resume:
        ckpt = find_checkpoint(out, resume)
        if ckpt is None:
            logger.info("--resume latest: no checkpoint in %s, starting from scratch", out / "checkpoints")
        else:
            accelerator.load_state(str(ckpt))
            ema.load(ckpt / ema_file)
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, state.step, state.epoch,
                        state.batch_in_epoch)

    # SIGTERM/SIGINT (pre-emption, Ctrl-C) ask for a checkpoint at the next step boundary, then exit.
    stop = {"asked": False}
    previous = {s: signal.signal(s, lambda *_: stop.update(asked=True)) for s in (signal.SIGTERM, signal.SIGINT)}

    def save(tag: str | None = None) -> None:
        """Accelerate state -> checkpoints/checkpoint-STEP, written to a temp name then renamed."""
        final = out / "checkpoints" / f"checkpoint-{state.step}"
        tmp = final.with_name(final.name + ".tmp")
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if sharded or accelerator.is_main_process:
            ema.save(tmp / ema_file)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "genflow_state.json").write_text(json.dumps(state.state_dict()))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            done = sorted((p for p in final.parent.glob("checkpoint-*") if not p.name.endswith(".tmp")),
                          key=lambda p: int(p.name.split("-")[1]))
            for old in done[: max(0, len(done) - cfg.save_total_limit)]:
                shutil.rmtree(old)
            logger.info("saved %s%s", final, f" ({tag})" if tag else "")
        accelerator.wait_for_everyone()

    def make_preview() -> None:
        from genflow.pipeline import Generator

        unwrapped = accelerator.unwrap_model(model)
        with ema.applied():
            unwrapped.eval()
            gen = Generator(unwrapped, conditioner.codec, conditioner.text_encoder, defaults=release.get("defaults"))
            clips = preview(gen)
            unwrapped.train()
        if accelerator.is_main_process:
            write_preview(out / "samples" / f"step-{state.step:07d}", clips, conditioner.codec.sample_rate,
                          accelerator, state.step)

    # The loader gets its own generator: creating an iterator must not draw from the global RNG, or a
    # resumed run (new iterator mid-epoch) would see other noise than an uninterrupted one.
    loader_kwargs = dict(collate_fn=collate_fn, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                         generator=torch.Generator().manual_seed(cfg.seed))
    per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    progress = tqdm(total=cfg.max_steps, initial=state.step, disable=not accelerator.is_main_process,
                    desc="train", dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)
    loss_count, bad_streak, t_last, step_last = 0, 0, time.perf_counter(), state.step
    model.train()
    while state.step < cfg.max_steps and not stop["asked"]:
        batch_sampler.set_epoch(state.epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(state.epoch)  # random crops/noises differ per epoch, reproducibly
        loader = DataLoader(dataset, batch_sampler=_Resumed(batch_sampler, state.batch_in_epoch), **loader_kwargs)
        for batch in loader:
            state.batch_in_epoch += 1
            state.bad_files_total += int(batch.get("num_skipped", 0))
            with accelerator.accumulate(model):
                inputs = conditioner(batch, device)
                loss = flow_loss(model, **inputs, text_dropout=cfg.text_dropout, aligned_dropout=cfg.aligned_dropout,
                                 timesteps=sigma_sampler)
                accelerator.backward(loss)
                loss_sum += loss.detach()
                loss_count += 1
                if not accelerator.sync_gradients:
                    continue
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                # One host sync per optimizer step (as AMP's GradScaler does) to skip a non-finite update.
                if torch.isfinite(grad_norm).item():
                    optimizer.step()
                    scheduler.step()
                    ema.update()
                    bad_streak = 0
                else:
                    bad_streak += 1
                    state.bad_steps_total += 1
                    logger.warning("non-finite loss/gradient at step %d: update skipped (%d in a row)",
                                   state.step, bad_streak)
                    if bad_streak >= cfg.max_bad_steps:
                        raise RuntimeError(f"{bad_streak} non-finite steps in a row at step {state.step}: "
                                           "lower the learning rate, enable gradient clipping or check the data")
                optimizer.zero_grad(set_to_none=True)
            state.step += 1
            progress.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                elapsed = time.perf_counter() - t_last
                steps = state.step - step_last
                logs = {
                    "loss": accelerator.reduce(loss_sum / max(1, loss_count), "mean").item(),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "steps_per_s": steps / elapsed,
                    "samples_per_s": steps * per_step / elapsed,
                    "memory_gb": _memory_gb(device),
                    # clips replaced by the dataset (counted here with num_workers=0) + dropped by collate
                    "bad_files": state.bad_files_total + getattr(dataset, "num_bad", 0),
                    "bad_steps": state.bad_steps_total,
                }
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                if log_with:
                    accelerator.log(logs, step=state.step)
                if accelerator.is_main_process:
                    logger.info("step %d %s", state.step, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
                loss_sum.zero_()
                loss_count, t_last, step_last = 0, time.perf_counter(), state.step
            if preview is not None and cfg.sample_every and state.step % cfg.sample_every == 0:
                make_preview()
            asked = stop["asked"]
            if accelerator.num_processes > 1:  # every rank must agree to stop at the same step
                asked = bool(accelerator.reduce(torch.tensor(float(asked), device=device), "max").item())
                stop["asked"] = asked
            if asked:
                save("interrupted")
                break
            if state.step % cfg.save_every == 0:
                save()
            if state.step >= cfg.max_steps:
                break
        else:  # the epoch ended: next one starts from its first batch
            state.epoch += 1
            state.batch_in_epoch = 0
    progress.close()
    for sig, handler in previous.items():
        signal.signal(sig, handler)

    if stop["asked"]:
        logger.info("stopped by signal at step %d; resume with --resume latest", state.step)
        accelerator.end_training()
        raise SystemExit(0)
    if state.step % cfg.save_every != 0:
        save("final")
    if preview is not None and cfg.sample_every and state.step % cfg.sample_every != 0:
        make_preview()
    bad_files = state.bad_files_total + getattr(dataset, "num_bad", 0)
    if bad_files and accelerator.is_main_process:
        logger.warning("%d unreadable clips were skipped during training", bad_files)
    release_dir = out / "release"
    with ema.applied():
        # Gathers full weights under FSDP (all ranks call). Cloned: the state dict shares storage with
        # the parameters, which get their raw values back when the context exits.
        weights = {k: v.detach().clone() for k, v in accelerator.get_state_dict(model).items()}
    if accelerator.is_main_process:
        save_release(release_dir, accelerator.unwrap_model(model), weights, release)
        logger.info("release folder: %s", release_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
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
