"""Codec training: a Vocos decoder (and optionally DashengTokenizer's injection) on a frozen encoder, as a GAN.

Read top to bottom, as ``genflow.training`` (whose pieces it reuses: the Accelerator set-up, the loop over
steps with its data order, meter, stop signals and checkpoint life cycle, previews): Accelerator -> generator
(the trainable codec) and discriminators, two AdamW optimizers and LR schedules -> ``prepare`` -> optional EMA
of the generator -> resume -> ``training.loop`` over steps: discriminator step (hinge), then generator step
(multi-resolution mel L1 + hinge + feature matching; mel only before ``gan_start_step``) -> log, preview
audio + spectrograms, checkpoints -> at the end, a codec folder ``load_codec`` reads.

The losses are Vocos': generator = period terms + ``resolution_weight`` x resolution terms (adversarial and
feature matching) + ``mel_weight`` x mel. Checkpoints hold only what training changes (no frozen ViT), as
safetensors + JSON with a manifest (``genflow.checkpoint``): nothing is unpickled on resume.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from genflow import checkpoint, hub
from genflow.audio import resample
from genflow.codecs.discriminators import DiscriminatorConfig, Discriminators
from genflow.codecs.losses import MultiResolutionMelLoss, discriminator_loss, feature_matching, generator_loss
from genflow.ema import EMA
from genflow.training import RunState, TrainConfig, loop, lr_lambda, make_accelerator, restore_counters, write_preview

logger = logging.getLogger("genflow.codec_training")


@dataclass
class GanConfig:
    """What codec training adds to ``TrainConfig`` (whose ``lr`` and betas are the generator's)."""

    disc_lr: float = 2e-4  # its schedule (train.lr_schedule, warm-up) counts discriminator steps, from gan_start_step
    mel_weight: float = 45.0  # Vocos' mel_loss_coeff
    resolution_weight: float = 0.1  # Vocos' mrd_loss_coeff: weight of the multi-resolution terms
    gan_start_step: int = 0  # mel loss only before this step (Vocos' pretrain_mel_steps)
    ema: bool = False  # keep an EMA of the decoder (train.ema_decay) and release it
    mel_n_ffts: tuple[int, ...] = (512, 1024, 2048)
    mel_n_mels: tuple[int, ...] = (40, 80, 128)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self):
        if self.disc_lr <= 0 or self.mel_weight < 0 or self.resolution_weight < 0 or self.gan_start_step < 0:
            raise ValueError(f"gan settings {self}: need disc_lr > 0 and mel_weight, resolution_weight, "
                             "gan_start_step >= 0")


class Reconstruction(nn.Module):
    """The generator as one module for ``prepare``: (B, N) input audio -> (B, N') decoded audio."""

    def __init__(self, codec: nn.Module):
        super().__init__()
        self.codec = codec

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.codec.reconstruct(audio)


@dataclass
class CodecRun:
    """What the steps of one codec training run share."""

    cfg: TrainConfig
    gan: GanConfig
    out: Path
    accelerator: object
    model: nn.Module  # Reconstruction, prepared
    disc: nn.Module  # Discriminators, prepared
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    disc_scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    mel_loss: MultiResolutionMelLoss
    frozen: tuple[str, ...]  # state-dict prefixes of the codec that training never changes
    state: RunState = field(default_factory=RunState)
    bad_streak: int = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def codec(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).codec


def build(cfg: TrainConfig, gan: GanConfig, codec: nn.Module, frozen: tuple[str, ...], run_config: dict) -> CodecRun:
    """Accelerator, generator + discriminators, their optimizers and schedules, EMA."""
    if cfg.grad_accum != 1:
        raise ValueError(f"train.grad_accum={cfg.grad_accum}: codec training steps both optimizers every batch; "
                         "use --train.grad_accum 1 and a larger --train.batch_size")
    if cfg.mixed_precision == "fp16":  # one grad scaler for two optimizers is not handled (nor tested) here
        raise ValueError("train.mixed_precision=fp16: codec training runs in fp32 or bf16; use --train.mixed_precision "
                         "bf16 (or no)")
    accelerator = make_accelerator(cfg, run_config)
    disc = Discriminators(gan.discriminator)
    params = [p for p in codec.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=gan.disc_lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                              weight_decay=cfg.weight_decay)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda(cfg))  # plain, saved as JSON (as training.py)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda(cfg))
    model, disc, opt_g, opt_d = accelerator.prepare(Reconstruction(codec), disc, opt_g, opt_d)
    ema = EMA(model.parameters(), decay=cfg.ema_decay) if gan.ema else None
    mel = MultiResolutionMelLoss(codec.output_sample_rate, gan.mel_n_ffts, gan.mel_n_mels).to(accelerator.device)
    return CodecRun(cfg, gan, Path(cfg.out), accelerator, model, disc, opt_g, opt_d, sched_g, sched_d, ema, mel,
                    frozen)


def trained_state(run: CodecRun) -> dict[str, torch.Tensor]:
    """The codec's state dict without the frozen parts (what a checkpoint holds)."""
    sd = run.codec.state_dict()
    return {k: v for k, v in sd.items() if not k.startswith(run.frozen)} if run.frozen else sd


def save_checkpoint(run: CodecRun, tag: str | None = None) -> None:
    """Generator, discriminators, both optimizers, EMA, RNG, counters -> checkpoints/checkpoint-STEP."""
    acc = run.accelerator
    with checkpoint.staged(acc, run.out / "checkpoints", run.state.step, run.cfg.save_total_limit, tag) as tmp:
        if acc.is_main_process:
            hub.write_weights(tmp / "model.safetensors", trained_state(run))
            hub.write_weights(tmp / "discriminator.safetensors", acc.unwrap_model(run.disc).state_dict())
            checkpoint.save_optimizer(tmp / "optimizer.safetensors", run.optimizer.state_dict())
            checkpoint.save_optimizer(tmp / "optimizer_disc.safetensors", run.disc_optimizer.state_dict())
            if run.ema is not None:
                run.ema.save(tmp / "ema.safetensors")
            scaler = acc.scaler.state_dict() if acc.scaler is not None else None
            hub.write_json(tmp / checkpoint.STATE, {
                **run.state.state_dict(), "scheduler": run.scheduler.state_dict(),
                "disc_scheduler": run.disc_scheduler.state_dict(), "scaler": scaler, "accelerator_step": acc.step})


def resume(run: CodecRun, ckpt: Path) -> None:
    """Load a verified checkpoint; only the files its manifest lists, as safetensors or JSON."""
    files = checkpoint.listed(ckpt)
    state = hub.read_json(ckpt / checkpoint.STATE)
    model_sd = hub.read_weights(ckpt / "model.safetensors")
    hub.check_keys(trained_state(run), model_sd, str(ckpt / "model.safetensors"))  # strict on the trained keys
    run.codec.load_state_dict({**run.codec.state_dict(), **model_sd}, strict=True)  # frozen parts: as built
    disc = run.accelerator.unwrap_model(run.disc)
    hub.load_weights(disc, ckpt / "discriminator.safetensors")
    run.optimizer.load_state_dict(checkpoint.load_optimizer(ckpt / "optimizer.safetensors"))
    run.disc_optimizer.load_state_dict(checkpoint.load_optimizer(ckpt / "optimizer_disc.safetensors"))
    run.scheduler.load_state_dict(state["scheduler"])
    run.disc_scheduler.load_state_dict(state["disc_scheduler"])
    restore_counters(run, state)
    if run.ema is not None:
        if "ema.safetensors" not in files:
            raise ValueError(f"{ckpt}: no ema.safetensors (saved without --gan.ema); resume with the setting it "
                             "was saved with")
        run.ema.load(ckpt / "ema.safetensors")
    checkpoint.restore_rng(ckpt, run.accelerator.process_index)
    logger.info("resumed from %s at step %d", ckpt, run.state.step)


def _inputs(run: CodecRun, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of target clips at the decoder's rate -> (input at the encoder's rate, target), whole frames."""
    codec = run.codec
    hop_out = codec.output_hop_length
    target = batch["audio"]
    target = target[:, : target.shape[1] // hop_out * hop_out]  # (B, hop_out * T)
    if target.shape[1] == 0:
        raise ValueError(f"a batch shorter than one latent frame ({hop_out} samples at {codec.output_sample_rate} Hz)"
                         "; raise --data.min_seconds")
    audio = resample(target, codec.output_sample_rate, codec.sample_rate)  # (B, hop_in * T), CPU (soxr)
    return audio.to(run.device, non_blocking=True), target.to(run.device, non_blocking=True)


def _adversarial(run: CodecRun, real: torch.Tensor, fake: torch.Tensor, discriminator_step: bool):
    """One discriminator pass over real and fake together (one forward per backward, as DDP wants)."""
    logits, feats = run.disc(torch.cat([real, fake]))
    b = real.shape[0]
    lr, lf = [x[:b] for x in logits], [x[b:] for x in logits]
    kinds = run.accelerator.unwrap_model(run.disc).kinds()
    w = [1.0 if k == "period" else run.gan.resolution_weight for k in kinds]
    if discriminator_step:
        return sum(wi * li for wi, li in zip(w, discriminator_loss(lr, lf)))
    fr, ff = [[x[:b] for x in f] for f in feats], [[x[b:] for x in f] for f in feats]
    adv = sum(wi * li for wi, li in zip(w, generator_loss(lf)))
    fm = sum(wi * li for wi, li in zip(w, feature_matching(fr, ff)))
    return adv, fm


def _step(run: CodecRun, optimizer, scheduler, params) -> torch.Tensor:
    """Clip, then step unless the gradient is non-finite; returns the grad norm."""
    grad_norm = run.accelerator.clip_grad_norm_(params, run.cfg.max_grad_norm)
    if torch.isfinite(grad_norm).item():
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def train_step(run: CodecRun, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator step, then generator step. Returns (generator loss, generator grad norm, the loss's parts)."""
    audio, real = _inputs(run, batch)
    fake = run.model(audio)  # (B, N') at the decoder's rate
    gan_on = run.state.step >= run.gan.gan_start_step
    parts: dict[str, torch.Tensor] = {}
    if gan_on:
        loss_d = _adversarial(run, real, fake.detach(), discriminator_step=True)
        run.accelerator.backward(loss_d)
        d_norm = _step(run, run.disc_optimizer, run.disc_scheduler, run.disc.parameters())
        parts |= {"loss_disc": loss_d.detach(), "grad_norm_disc": d_norm.detach()}
    mel = run.mel_loss(fake, real)
    loss = run.gan.mel_weight * mel
    if gan_on:
        adv, fm = _adversarial(run, real, fake, discriminator_step=False)
        loss = loss + adv + fm
        parts |= {"loss_adv": adv.detach(), "loss_fm": fm.detach()}
    run.accelerator.backward(loss)
    run.disc_optimizer.zero_grad(set_to_none=True)  # the generator step also reached the discriminators
    g_norm = _step(run, run.optimizer, run.scheduler, [p for p in run.model.parameters() if p.requires_grad])
    if not torch.isfinite(g_norm).item():
        run.bad_streak += 1
        run.state.bad_steps_total += 1
        logger.warning("non-finite generator gradient at step %d: update skipped", run.state.step)
        if run.bad_streak >= run.cfg.max_bad_steps:
            raise RuntimeError(f"{run.bad_streak} non-finite steps in a row at step {run.state.step}: lower "
                               "--train.lr / --gan.disc_lr or check the data")
    else:
        run.bad_streak = 0
        if run.ema is not None:
            run.ema.update()
    return loss.detach(), g_norm, {"loss_mel": mel.detach(), **parts}


def _ema(run: CodecRun):
    return run.ema.applied() if run.ema is not None else contextlib.nullcontext()


@torch.no_grad()
def make_preview(run: CodecRun, clips: dict[str, torch.Tensor]) -> None:
    """Decode the preview clips ((N,) at the encoder's rate) with the (EMA) weights -> WAVs, PNG, TensorBoard."""
    codec = run.codec
    with _ema(run):
        codec.eval()
        out = {name: codec.reconstruct(wav[None].to(run.device))[0].float().cpu() for name, wav in clips.items()}
        codec.train()
    write_preview(run, out, codec.output_sample_rate)


def write_release(run: CodecRun) -> Path:
    """The codec with the (EMA) weights -> RUN/release, a folder ``load_codec`` reads."""
    folder = run.out / "release"
    if run.accelerator.is_main_process:
        with _ema(run), hub.atomic_folder(folder) as tmp:
            run.codec.save_pretrained(tmp)
        logger.info("release folder (load_codec reads it): %s", folder)
    run.accelerator.wait_for_everyone()
    return folder


def train(cfg: TrainConfig, gan: GanConfig, codec: nn.Module, frozen: tuple[str, ...], dataset: Dataset,
          batch_sampler, collate_fn: Callable, *, run_config: dict, preview: dict[str, torch.Tensor] | None = None,
          resume_from: str | None = None) -> Path:
    """Train ``codec``'s trainable parts on ``dataset`` (items {"audio": (N,) at the decoder's rate}); the release."""
    ckpt = checkpoint.find_checkpoint(Path(cfg.out), resume_from) if resume_from else None
    run = build(cfg, gan, codec, frozen, run_config)
    if ckpt is not None:
        resume(run, ckpt)
    previews = bool(preview) and cfg.sample_every > 0
    loop(run, partial(train_step, run), dataset, batch_sampler, collate_fn, save=partial(save_checkpoint, run),
         preview=partial(make_preview, run, preview) if previews else None, desc="train codec")
    release = write_release(run)
    run.accelerator.end_training()
    return release
