"""Flow matching: the path, its target, timestep sampling, the masked loss, guidance and ODE samplers.

One convention, the one of diffusers' flow-matching schedulers, SD3 and the official Dasheng-AudioGen /
UniFlow-Audio code, so their weights and schedulers plug in without sign flips:

    sigma in [0, 1]                                   sigma = 0 is data, sigma = 1 is noise
    x_sigma = (1 - sigma) * x + sigma * eps           eps ~ N(0, I)
    v       = d x_sigma / d sigma = eps - x           what the model predicts
    sampling walks sigma from 1 down to 0:  x <- x + (sigma_next - sigma) * v

The model receives sigma itself, shape (B,); the DiT multiplies it by 1000 for its timestep embedding
(diffusers' ``timesteps = sigmas * num_train_timesteps``), so nothing here ever sees the 0..1000 scale.

The model is any callable ``model(x (B,T,C), sigma (B,), *, mask, text, text_mask, aligned, drop_text,
drop_aligned) -> v (B,T,C)``; rows whose ``drop_*`` flag is True use the model's null condition. Nothing in
this file knows the network, so tests run on closed-form velocity fields.

The flow's source (what sits at sigma = 1) is N(0, I) unless a ``Source`` says otherwise: ``Source("aligned",
std)`` starts from the time-aligned condition plus ``std`` noise, ``eps = aligned + std * n`` (a data-to-data
flow, as in bridge and flow-matching speech enhancement): the model then learns the way from a noisy
recording's latents to the clean ones, and an untrained velocity returns its input instead of noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

SIGMA_KINDS = ("logit_normal", "uniform")
SOURCES = ("noise", "aligned")
SCHEDULES = ("linear", "shifted", "sway")
SOLVERS = ("euler", "heun", "midpoint")
# dt/du of the sway schedule is 1 + c * (1 - pi/2 * sin(pi/2 * u)): it stays >= 0 for c in this range.
SWAY_RANGE = (-1.0, 1.0 / (math.pi / 2 - 1))


# --------------------------------------------------------------------------- noise and timesteps

def _draw(fn: Callable, shape, generator: torch.Generator | None, device, dtype=torch.float32) -> Tensor:
    """Draw with ``fn`` on the generator's device (else on ``device``), then move: same numbers for a seed."""
    where = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=where, dtype=dtype).to(device)


def make_noise(shape, generator: torch.Generator | None = None, seed: int | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn in fp32 on the CPU (from ``seed`` or ``generator``), then moved/cast.

    Drawing on the CPU makes a seed give the same noise on every device; a CUDA generator draws on CUDA.
    """
    if generator is not None and seed is not None:
        raise ValueError(f"make_noise: got both generator and seed={seed}; pass one of them")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    noise = _draw(torch.randn, tuple(shape), generator, generator.device if generator is not None else "cpu")
    return noise.to(device=device, dtype=dtype)


def shift_sigmas(sigma: Tensor, shift: float) -> Tensor:
    """SD3 resolution/length shift ``s*sigma / (1 + (s-1)*sigma)``: s > 1 spends more time at high noise."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}; 1.0 means no shift, 3.0 is SD3's default")
    return sigma if shift == 1.0 else shift * sigma / (1 + (shift - 1) * sigma)


def sample_sigmas(batch: int, *, kind: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                  shift: float = 1.0, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Tensor:
    """Training noise levels (B,) in [0, 1): logit-normal ``sigmoid(N(mean, std))`` or uniform, then shifted."""
    if kind not in SIGMA_KINDS:
        raise ValueError(f"timestep sampling kind {kind!r} is unknown; expected one of {SIGMA_KINDS}")
    if std <= 0:
        raise ValueError(f"logit-normal std must be > 0, got {std}")
    if kind == "logit_normal":  # SD3 / UniFlow-Audio: most of the mass at mid noise levels
        sigma = torch.sigmoid(_draw(torch.randn, (batch,), generator, device) * std + mean)
    else:
        sigma = _draw(torch.rand, (batch,), generator, device)
    return shift_sigmas(sigma, shift)


@dataclass
class TimestepSampler:
    """How training draws sigma: ``kind`` "logit_normal" (mean, std) or "uniform", then the SD3 ``shift``."""

    kind: str = "logit_normal"
    mean: float = 0.0
    std: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        if self.kind not in SIGMA_KINDS:
            raise ValueError(f"timestep sampling kind {self.kind!r} is unknown; expected one of {SIGMA_KINDS}")
        if self.std <= 0 or self.shift <= 0:
            raise ValueError(f"std and shift must be > 0, got std={self.std}, shift={self.shift}")

    def __call__(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        return sample_sigmas(batch, kind=self.kind, mean=self.mean, std=self.std, shift=self.shift,
                             generator=generator, device=device)


@dataclass(frozen=True)
class Source:
    """The flow's source at sigma = 1: "noise" (N(0, I)) or "aligned" (the aligned condition + ``std`` noise)."""

    kind: str = "noise"
    std: float = 1.0  # of the noise added to the aligned latents (unused by "noise": N(0, I) itself)

    def __post_init__(self):
        if self.kind not in SOURCES:
            raise ValueError(f"source kind {self.kind!r} is unknown; expected one of {SOURCES}")
        if not self.std > 0:
            raise ValueError(f"source std must be > 0, got {self.std}")

    def start(self, noise: Tensor, aligned: Tensor | None) -> Tensor:
        """The source sample for unit Gaussian ``noise`` (B,T,C): ``noise``, or ``aligned + std * noise``."""
        if self.kind == "noise":
            return noise
        if aligned is None or aligned.shape != noise.shape:
            given = None if aligned is None else tuple(aligned.shape)
            raise ValueError(f"this flow starts from the aligned condition: it needs aligned latents of the "
                             f"target's shape {tuple(noise.shape)}, got {given} (a model trained with source "
                             "'aligned' enhances its input; it cannot generate from text alone)")
        return aligned.to(noise.dtype) + self.std * noise


# --------------------------------------------------------------------------- path, target, loss

def _per_example(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma (B,) or scalar -> broadcastable against x (B, ...)."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    return sigma.reshape(-1, *([1] * (x.dim() - 1))) if sigma.dim() else sigma


def interpolate(x: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """The straight path ``x_sigma = (1 - sigma) * x + sigma * eps``; sigma (B,) or a scalar."""
    s = _per_example(sigma, x)
    return (1 - s) * x + s * eps


def velocity_target(x: Tensor, eps: Tensor) -> Tensor:
    """What the model regresses: ``d x_sigma / d sigma = eps - x`` (points from data to noise)."""
    return eps - x


def _bernoulli(p: float, batch: int, generator, device) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout rate must be in [0, 1], got {p}")
    return _draw(torch.rand, (batch,), generator, device) < p  # rand is in [0, 1): p=0 never, p=1 always


def flow_loss(model: Callable, x: Tensor, *, mask: Tensor | None = None, text: Tensor | None = None,
              text_mask: Tensor | None = None, aligned: Tensor | None = None, text_dropout: float = 0.0,
              aligned_dropout: float = 0.0, timesteps: TimestepSampler | None = None,
              source: Source | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Masked flow-matching MSE of ``model`` on data x (B,T,C): ``sum(err^2 * mask) / (mask.sum() * C)``.

    mask (B,T) bool, True = valid frame. Padded frames of x_sigma are zeroed (as they are while sampling)
    and never reach the loss. Text and aligned conditions are dropped per example with independent
    Bernoulli rates; the flags go to the model as ``drop_text`` / ``drop_aligned`` (None when the
    condition is absent); ``source`` (default N(0, I)) is what eps is. Draws, in order: sigma, eps,
    drop_text, drop_aligned, all from ``generator``.
    """
    if x.dim() != 3:
        raise ValueError(f"flow_loss expects latents (B, T, C), got shape {tuple(x.shape)}")
    B, T, C = x.shape
    sigma = (timesteps or TimestepSampler())(B, generator=generator, device=x.device)  # (B,) fp32
    eps = (source or Source()).start(_draw(torch.randn, x.shape, generator, x.device).to(x.dtype), aligned)
    drop_text = _bernoulli(text_dropout, B, generator, x.device)
    drop_aligned = _bernoulli(aligned_dropout, B, generator, x.device)

    x_sigma = interpolate(x, eps, sigma)
    m = mask[..., None].to(x.dtype) if mask is not None else None  # (B, T, 1)
    if m is not None:
        x_sigma = x_sigma * m
    v = model(x_sigma, sigma, mask=mask, text=text, text_mask=text_mask, aligned=aligned,
              drop_text=drop_text if text is not None else None,
              drop_aligned=drop_aligned if aligned is not None else None)
    err = (v.float() - velocity_target(x, eps).float()).square()  # (B, T, C), fp32 under autocast too
    if m is None:
        return err.mean()
    return (err * m).sum() / (m.sum() * C).clamp(min=1)


# --------------------------------------------------------------------------- schedules

def sigma_schedule(steps: int, kind: str = "linear", shift: float = 3.0, sway_coef: float = -1.0,
                   device: torch.device | str | None = None) -> Tensor:
    """Sampling noise levels (steps + 1,) fp32, from exactly 1 down to exactly 0.

    "linear": 1 - u; "shifted": the SD3 shift of linear (more steps at high noise for shift > 1);
    "sway": F5-TTS's ``t = u + c * (cos(pi/2 * u) - 1 + u)``, ``sigma = 1 - t`` (c = -1, the released
    Dasheng-AudioGen setting, gives ``cos(pi/2 * u)``: small steps near the data). u = linspace(0, 1).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    u = torch.linspace(0, 1, int(steps) + 1, dtype=torch.float64)
    if kind == "linear":
        sigma = 1 - u
    elif kind == "shifted":
        sigma = shift_sigmas(1 - u, shift)
    elif kind == "sway":
        if not SWAY_RANGE[0] <= sway_coef <= SWAY_RANGE[1]:
            raise ValueError(f"sway_coef {sway_coef} makes the schedule non-monotone; expected a value in "
                             f"[{SWAY_RANGE[0]}, {SWAY_RANGE[1]:.3f}] (F5-TTS uses -1)")
        t = u + sway_coef * (torch.cos(math.pi / 2 * u) - 1 + u)
        sigma = 1 - t
    else:
        raise ValueError(f"sigma schedule {kind!r} is unknown; expected one of {SCHEDULES}")
    sigma[0], sigma[-1] = 1.0, 0.0  # exact endpoints whatever the rounding of cos
    return sigma.to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------- guidance and samplers

def _masked_std(v: Tensor, m: Tensor | None) -> Tensor:
    """Per-example std (B, 1, 1) of v (B,T,C) over valid frames and channels."""
    if m is None:
        return v.std(dim=tuple(range(1, v.dim())), keepdim=True)
    n = (m.sum(dim=(1, 2), keepdim=True) * v.shape[-1]).clamp(min=2)
    mean = (v * m).sum(dim=(1, 2), keepdim=True) / n
    return (((v - mean) * m).square().sum(dim=(1, 2), keepdim=True) / (n - 1)).sqrt()


class _Velocity:
    """v(x, sigma) with classifier-free guidance, conditions concatenated once for the whole run."""

    def __init__(self, model, batch, *, guidance_scale, guidance_rescale, mask, text, text_mask, aligned):
        self.model, self.batch = model, batch
        self.scale, self.rescale = float(guidance_scale), float(guidance_rescale)
        self.m = mask[..., None].float() if mask is not None else None  # (B, T, 1)
        # With no condition at all both halves would be identical: run the single forward.
        self.guided = self.scale != 1.0 and (text is not None or aligned is not None)
        if not self.guided:
            self.kwargs = dict(mask=mask, text=text, text_mask=text_mask, aligned=aligned)
            return

        def two(t):  # (B, ...) -> (2B, ...): conditional half first, unconditional half second
            return torch.cat([t, t]) if t is not None else None

        device = (text if text is not None else aligned).device
        drop = torch.arange(2 * batch, device=device) >= batch  # [False]*B + [True]*B
        # The unconditional half drops every condition present, as the official sampler zeroes all contexts.
        self.kwargs = dict(mask=two(mask), text=two(text), text_mask=two(text_mask), aligned=two(aligned),
                           drop_text=drop if text is not None else None,
                           drop_aligned=drop if aligned is not None else None)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        if not self.guided:
            v = self.model(x, torch.full((self.batch,), sigma, device=x.device), **self.kwargs)
        else:
            out = self.model(torch.cat([x, x]), torch.full((2 * self.batch,), sigma, device=x.device),
                             **self.kwargs)  # ONE forward of batch 2B
            v_c, v_u = out.chunk(2)
            v = v_u + self.scale * (v_c - v_u)
            if self.rescale > 0:  # Lin et al. 2023: match the conditional prediction's std, then blend
                rescaled = v * (_masked_std(v_c.float(), self.m) / (_masked_std(v.float(), self.m) + 1e-6))
                v = self.rescale * rescaled + (1 - self.rescale) * v
        return v * self.m if self.m is not None else v  # padded frames stay exactly 0


@torch.no_grad()
def sample(model: Callable, noise: Tensor, sigmas: Tensor, *, solver: str = "euler", guidance_scale: float = 1.0,
           guidance_rescale: float = 0.0, mask: Tensor | None = None, text: Tensor | None = None,
           text_mask: Tensor | None = None, aligned: Tensor | None = None, progress: bool = False) -> Tensor:
    """Integrate the flow ODE from ``noise`` (B,T,C) at sigmas[0] to the data at sigmas[-1]; returns x0.

    sigmas (S+1,) strictly decreasing, usually ``sigma_schedule(S, ...)``. Solvers: "euler" (S model
    evaluations), "heun" (2S - 1: second order, the step that ends at sigma = 0 is Euler as in EDM and
    diffusers' FlowMatchHeunDiscreteScheduler) and "midpoint" (2S, never evaluates sigma = 0).
    Classifier-free guidance (scale != 1) runs both halves as one forward of batch 2B, the second half with
    every present condition dropped; ``v = v_u + scale * (v_c - v_u)``, then the optional std-rescale
    ``guidance_rescale`` in [0, 1] (per example, over valid frames). Padded frames (mask False) start and
    end at 0, so the result is zero there.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r} is unknown; expected one of {SOLVERS}")
    if noise.dim() != 3:
        raise ValueError(f"sample expects noise (B, T, C), got shape {tuple(noise.shape)}")
    if sigmas.dim() != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 values (1 ... 0), got shape {tuple(sigmas.shape)}")
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
    levels = sigmas.detach().double().cpu().tolist()  # one host read for the run, none per step
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sigmas must be strictly decreasing (from 1 towards 0), got {levels}")
    velocity = _Velocity(model, noise.shape[0], guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                         mask=mask, text=text, text_mask=text_mask, aligned=aligned)
    x = noise * velocity.m.to(noise.dtype) if velocity.m is not None else noise

    steps = zip(levels[:-1], levels[1:])
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=len(levels) - 1, desc=f"sample ({solver})", leave=False)
    for s, s_next in steps:
        h = s_next - s  # < 0: sigma decreases
        v = velocity(x, s)
        if solver == "euler" or (solver == "heun" and s_next == 0.0):
            x = x + h * v
        elif solver == "heun":  # trapezoid: average the slopes at both ends of an Euler predictor
            x = x + h / 2 * (v + velocity(x + h * v, s_next))
        else:  # midpoint: the slope half-way along
            x = x + h * velocity(x + h / 2 * v, s + h / 2)
    return x.to(noise.dtype)
