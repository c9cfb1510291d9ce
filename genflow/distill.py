"""Consistency-trajectory distillation (CTM) of a frozen flow teacher into an average-velocity student.

The student is the same kind of network as MeanFlow's (``model(x, sigma, *, interval, ...)`` predicts the
average velocity u over [sigma - interval, sigma]; see ``meanflow.py``), so one sampler serves both. For
a draw t > r (Kim et al. 2024, "Consistency Trajectory Models", in the average-velocity form):

    the teacher solves the guided ODE from t to s = max(r, t - span) in ``teacher_steps`` Euler steps
    the student, without gradient, jumps the rest from s to r:  z_r = z_s - (s - r) u(z_s, r, s)
    target:  u(z_t, r, t) = (z_t - z_r) / (t - r)

Rows with r = t regress the teacher's guided velocity (guidance folded in: one forward per sampling
step). The teacher covers short spans exactly; the student's own jumps carry its knowledge of long
ones, which starts out as the teacher's own Euler step (a flow checkpoint with a zero interval
embedding) and improves as it trains. Why CTM here, and not consistency, shortcut or progressive
distillation: see ``docs/fewstep.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genflow.flow import Source, TimestepSampler, interpolate
from genflow.meanflow import _condition_kwargs, adaptive_mse, draw_levels


@torch.no_grad()
def guided_velocity(teacher: Callable, z: Tensor, sigma: Tensor, conditions: dict, scale: float) -> Tensor:
    """The teacher's velocity with classifier-free guidance, both halves in one forward of batch 2B.

    Each row's own drop flags hold in the conditional half, so a row trained unconditionally gets the
    unconditional velocity; ``scale`` 1 (or no condition) is one plain forward.
    """
    drops = [k for k in ("drop_text", "drop_aligned") if conditions.get(k) is not None]
    if scale == 1.0 or not drops:
        return teacher(z, sigma, **conditions)
    two = {k: (torch.cat([v, v]) if torch.is_tensor(v) else v) for k, v in conditions.items()}
    for k in drops:  # second half: every present condition dropped
        two[k] = torch.cat([conditions[k], torch.ones_like(conditions[k])])
    v_c, v_u = teacher(torch.cat([z, z]), torch.cat([sigma, sigma]), **two).chunk(2)
    return v_u + scale * (v_c - v_u)


def ctm_target(model: Callable, teacher: Callable, z: Tensor, t: Tensor, r: Tensor, conditions: dict, *,
               scale: float, span: float, teacher_steps: int) -> Tensor:
    """The average velocity (B,T,C) over [r, t] the teacher + the student's own jump give (no gradient)."""
    if teacher_steps < 1 or span <= 0:
        raise ValueError(f"teacher_steps={teacher_steps}, span={span}: expected >= 1 step over a span > 0")
    m = conditions["mask"][..., None].to(z.dtype) if conditions.get("mask") is not None else 1.0
    s_end = torch.maximum(r, t - span)  # where the teacher hands over to the student
    h = (s_end - t) / teacher_steps  # (B,) <= 0
    with torch.no_grad():
        z_s, s, first = z, t, None
        for _ in range(teacher_steps):
            v = guided_velocity(teacher, z_s, s, conditions, scale).to(z.dtype) * m
            first = v if first is None else first
            z_s, s = z_s + h[:, None, None] * v, s + h
        s = s_end  # exactly, whatever the rounding of the sum
        rest = s - r
        u_rest = model(z_s, s, interval=rest, **conditions).to(z.dtype) * m
        z_r = z_s - rest[:, None, None] * u_rest
        gap = (t - r)[:, None, None]
        # r = t: the teacher's guided velocity at t itself
        return torch.where(gap > 0, (z - z_r) / gap.clamp(min=1e-8), first)


def ctm_loss(model: Callable, teacher: Callable, x: Tensor, *, mask: Tensor | None = None,
             text: Tensor | None = None, text_mask: Tensor | None = None, aligned: Tensor | None = None,
             text_dropout: float = 0.0, aligned_dropout: float = 0.0, timesteps: TimestepSampler | None = None,
             ratio: float = 0.5, grid_fraction: float = 0.5, guidance_scale: float = 1.0, span: float = 0.25,
             teacher_steps: int = 2, adaptive_p: float = 1.0, adaptive_c: float = 1e-3,
             target_model: Callable | None = None, source: Source | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """CTM distillation loss of the student ``model`` from the frozen ``teacher`` on data x (B,T,C).

    Draws as ``meanflow.draw_levels`` (t from the data path of x, jumps with probability ``ratio``).
    ``target_model`` (default ``model``) makes the student's stop-gradient jump (the unwrapped module
    when ``model`` is wrapped by DDP).
    """
    if x.dim() != 3:
        raise ValueError(f"ctm_loss expects latents (B, T, C), got shape {tuple(x.shape)}")
    t, r, eps, drop_text, drop_aligned = draw_levels(
        x, ratio=ratio, grid_fraction=grid_fraction, text_dropout=text_dropout, aligned_dropout=aligned_dropout,
        timesteps=timesteps, generator=generator, source=source, aligned=aligned)
    z = interpolate(x, eps, t)
    if mask is not None:
        z = z * mask[..., None].to(z.dtype)
    conditions = _condition_kwargs(mask, text, text_mask, aligned, drop_text, drop_aligned)
    target = ctm_target(target_model or model, teacher, z, t, r, conditions, scale=guidance_scale, span=span,
                        teacher_steps=teacher_steps)
    u = model(z, t, interval=t - r, **conditions)
    return adaptive_mse(u, target, mask, adaptive_p, adaptive_c)

