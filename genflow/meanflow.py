"""MeanFlow: a network that predicts the average velocity over an interval, for 1-4 step sampling.

The convention of ``flow.py`` (sigma in [0, 1], ``x_sigma = (1 - sigma) x + sigma eps``, ``v = eps - x``,
sampling walks sigma from 1 to 0). Write t for the noisier level sigma and r <= t for the level a jump
lands on (Geng et al. 2025, "Mean Flows for One-step Generative Modeling", use the same letters):

    u(z_t, r, t) = 1/(t - r) * integral_r^t v(z_s, s) ds          the average velocity over [r, t]
    z_r = z_t - (t - r) * u(z_t, r, t)                             one exact jump, one network call
    u = v - (t - r) * du/dt,   du/dt = v . d_z u + d_t u            the MeanFlow identity (r held fixed)

Training regresses u on ``sg(v - (t - r) * du/dt)``, the total derivative coming from ONE
Jacobian-vector product of the network with tangents (v, 1, 0) for (z, t, r). At r = t the target is v
itself: the loss is the flow-matching loss. Classifier-free guidance is folded into the target (the
paper's eq. 16: ``v~ = w v + (1 - w) u(z_t, t, t | null)`` on conditioned rows) so sampling needs one
forward per step and no unconditional half.

The model is any callable ``model(x, sigma, *, interval, mask, text, text_mask, aligned, drop_text,
drop_aligned)`` with ``interval = t - r`` (B,); the DiT takes it with ``DiTConfig.interval_input``.
Fused attention kernels have no forward-mode derivative: the JVP runs with PyTorch's math SDPA backend.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from genflow.flow import Source, TimestepSampler, _bernoulli, _draw, _Velocity, interpolate, velocity_target

#: sampling grids the few-step objectives also train on: the steps of 1-, 2- and 4-step linear schedules
GRID_STEPS = (1, 2, 4)


# --------------------------------------------------------------------------- draws

def draw_levels(x: Tensor, *, ratio: float, grid_fraction: float, text_dropout: float, aligned_dropout: float,
                timesteps: TimestepSampler | None, generator: torch.Generator | None, source: Source | None = None,
                aligned: Tensor | None = None):
    """Draws of one few-step batch: (t, r, eps, drop_text, drop_aligned), t and r (B,) with r <= t.

    ``eps`` is the flow's source sample (``source.start`` of the unit noise, with ``aligned``), as in ``flow_loss``.

    In order: t, eps, drop_text, drop_aligned (exactly ``flow_loss``'s draws, so with ``ratio=0`` both losses
    see the same numbers), then a second level, the rows that jump (probability ``ratio``; t, r = the max and
    min of the two levels) and, among those, the rows moved onto a step of a 1/2/4-step linear schedule
    (probability ``grid_fraction``), where few-step sampling evaluates the network.
    """
    B, device = x.shape[0], x.device
    sampler = timesteps or TimestepSampler()
    t = sampler(B, generator=generator, device=device)  # (B,) fp32
    eps = (source or Source()).start(_draw(torch.randn, x.shape, generator, device).to(x.dtype), aligned)
    drop_text = _bernoulli(text_dropout, B, generator, device)
    drop_aligned = _bernoulli(aligned_dropout, B, generator, device)
    other = sampler(B, generator=generator, device=device)
    jump = _bernoulli(ratio, B, generator, device)
    on_grid = jump & _bernoulli(grid_fraction, B, generator, device)
    steps = torch.tensor(GRID_STEPS, device=device, dtype=torch.float32)
    k = steps[(_draw(torch.rand, (B,), generator, device) * len(GRID_STEPS)).long().clamp(max=len(GRID_STEPS) - 1)]
    j = (_draw(torch.rand, (B,), generator, device) * k).floor()  # which step of the k-step schedule
    hi, lo = torch.maximum(t, other), torch.minimum(t, other)
    r = torch.where(jump, lo, t)
    t = torch.where(jump, hi, t)
    t = torch.where(on_grid, 1 - j / k, t)
    r = torch.where(on_grid, 1 - (j + 1) / k, r)
    return t, r, eps, drop_text, drop_aligned


def rows(conditions: dict, index: Tensor) -> dict:
    """The conditions (every tensor batch-first) of the rows ``index``."""
    return {k: (v[index] if torch.is_tensor(v) else v) for k, v in conditions.items()}


# --------------------------------------------------------------------------- target and loss

def average_velocity_jvp(model: Callable, z: Tensor, t: Tensor, r: Tensor, tangent: Tensor,
                         conditions: dict) -> tuple[Tensor, Tensor]:
    """(u(z, r, t), du/dt) with ``du/dt = tangent . d_z u + d_t u``, by one forward-mode JVP (no graph kept).

    z (B,T,C), t/r (B,), tangent (B,T,C) (the velocity along the path). Runs under the math SDPA backend,
    the one attention path with a forward-mode derivative.
    """
    def fn(z_, t_, r_):
        return model(z_, t_, interval=t_ - r_, **conditions)

    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        u, du_dt = torch.func.jvp(fn, (z, t, r), (tangent, torch.ones_like(t), torch.zeros_like(r)))
    return u, du_dt


def average_velocity_difference(model: Callable, z: Tensor, t: Tensor, r: Tensor, tangent: Tensor,
                                 conditions: dict, step: float) -> Tensor:
    """du/dt along the path by a central difference over +-h, h = min(``step``, t - r) (r held fixed; no graph).

    Smooths what the exact JVP sees at scales finer than ``step``: a flow checkpoint's ``1000 sigma``
    sinusoidal timestep embedding leaves wiggles in t that flow training never constrained (docs/fewstep.md).
    """
    h = torch.minimum(torch.full_like(t, step), t - r)  # (B,) > 0 on jump rows

    def at(sign: float) -> Tensor:
        t_ = t + sign * h
        return model(z + sign * h[:, None, None] * tangent, t_, interval=t_ - r, **conditions)

    with torch.no_grad():
        return (at(1.0) - at(-1.0)) / (2 * h[:, None, None])


def adaptive_mse(pred: Tensor, target: Tensor, mask: Tensor | None, p: float, c: float) -> Tensor:
    """Masked MSE, each example weighted by ``1 / (its own MSE + c)^p`` (stop-gradient; p = 0: plain).

    With p = 0 this is exactly ``flow_loss``'s ``sum(err^2 * mask) / (mask.sum() * C)``. MeanFlow's
    adaptive weight (p = 1) keeps rare large errors (long jumps) from dominating the gradient.
    """
    err = (pred.float() - target.float()).square()  # (B, T, C)
    B, T, C = err.shape
    m = mask[..., None].to(err.dtype) if mask is not None else err.new_ones(B, T, 1)
    frames = m.sum(dim=(1, 2))  # (B,)
    per_example = (err * m).sum(dim=(1, 2)) / (frames * C).clamp(min=1)
    weight = (per_example.detach() + c).pow(-p) if p else torch.ones_like(per_example)
    return (weight * per_example * frames).sum() / frames.sum().clamp(min=1)


def _condition_kwargs(mask, text, text_mask, aligned, drop_text, drop_aligned) -> dict:
    return dict(mask=mask, text=text, text_mask=text_mask, aligned=aligned,
                drop_text=drop_text if text is not None else None,
                drop_aligned=drop_aligned if aligned is not None else None)


@torch.no_grad()
def folded_guidance(model: Callable, z: Tensor, t: Tensor, v: Tensor, conditions: dict, scale: float) -> Tensor:
    """``w v + (1 - w) u(z, t, t | null)`` on rows that kept every condition; v on dropped rows (eq. 16)."""
    kept = torch.ones_like(t, dtype=torch.bool)
    for key in ("drop_text", "drop_aligned"):
        if conditions.get(key) is not None:
            kept &= ~conditions[key]
    if scale == 1.0 or not kept.any() or all(conditions.get(k) is None for k in ("drop_text", "drop_aligned")):
        return v
    null = {k: (torch.ones_like(d) if k.startswith("drop_") and d is not None else d) for k, d in conditions.items()}
    u_null = model(z, t, interval=torch.zeros_like(t), **null)
    return torch.where(kept[:, None, None], scale * v + (1 - scale) * u_null.to(v.dtype), v)


def meanflow_loss(model: Callable, x: Tensor, *, mask: Tensor | None = None, text: Tensor | None = None,
                  text_mask: Tensor | None = None, aligned: Tensor | None = None, text_dropout: float = 0.0,
                  aligned_dropout: float = 0.0, timesteps: TimestepSampler | None = None, ratio: float = 0.25,
                  grid_fraction: float = 0.0, guidance_scale: float = 1.0, adaptive_p: float = 1.0,
                  adaptive_c: float = 1e-3, derivative_step: float = 0.0, jvp_model: Callable | None = None,
                  source: Source | None = None, generator: torch.Generator | None = None) -> Tensor:
    """The MeanFlow loss of ``model`` on data x (B,T,C); ``ratio=0, adaptive_p=0`` is ``flow_loss``.

    Draws as ``draw_levels``. The target uses a JVP on the rows with r < t only (at r = t it is the
    velocity itself), through ``jvp_model`` (default ``model``; pass the unwrapped module when ``model``
    is wrapped by DDP). ``guidance_scale`` w != 1 folds classifier-free guidance into the target. ``source``
    as in ``flow_loss``. ``derivative_step`` h > 0 takes du/dt as a central difference over +-h along the
    path (``average_velocity_difference``) instead of the exact JVP.
    """
    if x.dim() != 3:
        raise ValueError(f"meanflow_loss expects latents (B, T, C), got shape {tuple(x.shape)}")
    t, r, eps, drop_text, drop_aligned = draw_levels(
        x, ratio=ratio, grid_fraction=grid_fraction, text_dropout=text_dropout, aligned_dropout=aligned_dropout,
        timesteps=timesteps, generator=generator, source=source, aligned=aligned)
    m = mask[..., None].to(x.dtype) if mask is not None else None  # (B, T, 1)
    z = interpolate(x, eps, t)
    v = velocity_target(x, eps)
    if m is not None:  # padded frames stay 0 along the path, so their velocity is 0 too
        z, v = z * m, v * m
    conditions = _condition_kwargs(mask, text, text_mask, aligned, drop_text, drop_aligned)
    jvp_model = jvp_model or model
    v = folded_guidance(jvp_model, z, t, v, conditions, guidance_scale)
    target = v.clone()
    jump = (t > r).nonzero().squeeze(1)
    if len(jump):
        sub = rows(conditions, jump)
        if derivative_step > 0:
            du_dt = average_velocity_difference(jvp_model, z[jump], t[jump], r[jump], v[jump], sub, derivative_step)
        else:
            _, du_dt = average_velocity_jvp(jvp_model, z[jump], t[jump], r[jump], v[jump], sub)
        target[jump] = v[jump] - (t - r)[jump, None, None] * du_dt.to(v.dtype)
    u = model(z, t, interval=t - r, **conditions)
    return adaptive_mse(u, target.detach(), mask, adaptive_p, adaptive_c)


# --------------------------------------------------------------------------- sampling

class _Jump:
    """The model with the interval of the current jump: ``(x, sigma, **c) -> u(x, sigma - interval, sigma)``."""

    def __init__(self, model: Callable):
        self.model, self.interval = model, 0.0

    def __call__(self, x: Tensor, sigma: Tensor, **conditions) -> Tensor:
        return self.model(x, sigma, interval=torch.full_like(sigma, self.interval), **conditions)


@torch.no_grad()
def sample_average(model: Callable, noise: Tensor, sigmas: Tensor, *, guidance_scale: float = 1.0,
                   guidance_rescale: float = 0.0, mask: Tensor | None = None, text: Tensor | None = None,
                   text_mask: Tensor | None = None, aligned: Tensor | None = None, progress: bool = False) -> Tensor:
    """Jump with the average velocity from ``noise`` at sigmas[0] to sigmas[-1]: ``x <- x - (s - s') u(x, s', s)``.

    One model evaluation per step (S for sigmas of length S + 1). A model trained with folded guidance
    samples at ``guidance_scale`` 1; another scale runs the batched guidance of ``flow.sample`` on u.
    """
    if noise.dim() != 3:
        raise ValueError(f"sample_average expects noise (B, T, C), got shape {tuple(noise.shape)}")
    levels = sigmas.detach().double().cpu().tolist()
    if len(levels) < 2 or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sigmas must be strictly decreasing with at least 2 values (1 ... 0), got {levels}")
    jump = _Jump(model)
    velocity = _Velocity(jump, noise.shape[0], guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                         mask=mask, text=text, text_mask=text_mask, aligned=aligned)
    x = noise * velocity.m.to(noise.dtype) if velocity.m is not None else noise
    steps = list(zip(levels[:-1], levels[1:]))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sample (average velocity)", leave=False)
    for s, s_next in steps:
        jump.interval = s - s_next
        x = x + (s_next - s) * velocity(x, s)
    return x.to(noise.dtype)
