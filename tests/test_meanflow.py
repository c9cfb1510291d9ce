"""MeanFlow and CTM distillation: closed forms on a Gaussian target, the JVP on the DiT, r = t, the student init."""

from __future__ import annotations

import math

import pytest
import torch

from genflow.distill import ctm_loss, ctm_target
from genflow.flow import Source, flow_loss, sample
from genflow.meanflow import (
    average_velocity_difference,
    average_velocity_jvp,
    draw_levels,
    meanflow_loss,
    sample_average,
)
from genflow.model import DiT
from genflow.objectives import student_model

MU, S = 0.7, 0.5  # data x ~ N(MU, S^2) in every dimension


def _sd(t, s=S):
    """Std of x_t = (1 - t) x + t eps around its mean (1 - t) MU."""
    return torch.sqrt((1 - t) ** 2 * s**2 + t**2)


def exact_u(s=S):
    """The Gaussian target's average velocity: the flow map z_r = (1-r) MU + sd_r/sd_t (z_t - (1-t) MU)."""
    def u(z, t, *, interval, **_):
        t_, r_ = t[:, None, None], (t - interval)[:, None, None]
        ratio = _sd(r_, s) / _sd(t_, s)
        gap = interval[:, None, None]
        # (z_t - z_r) / (t - r); at r = t the limit d log sd / dt
        slope = torch.where(gap > 0, (1 - ratio) / gap.clamp(min=1e-12), (t_ - (1 - t_) * s**2) / _sd(t_, s) ** 2)
        return -MU + slope * (z - (1 - t_) * MU)
    return u


def marginal_v(z, t, s=S):
    """The Gaussian target's (instantaneous) velocity E[eps - x | x_t = z]."""
    t_ = t[:, None, None]
    return -MU + (t_ - (1 - t_) * s**2) / _sd(t_, s) ** 2 * (z - (1 - t_) * MU)


def test_meanflow_identity_holds_for_the_exact_gaussian_average_velocity():
    """u = v - (t - r) du/dt with the JVP along the marginal velocity: the target equals the exact u."""
    torch.manual_seed(0)
    z = torch.randn(6, 5, 3, dtype=torch.float64)
    t = torch.tensor([1.0, 0.9, 0.6, 0.5, 0.3, 0.8], dtype=torch.float64)
    r = torch.tensor([0.0, 0.2, 0.1, 0.5, 0.0, 0.79], dtype=torch.float64)
    v = marginal_v(z, t)
    u, du_dt = average_velocity_jvp(exact_u(), z, t, r, v, {})
    target = v - (t - r)[:, None, None] * du_dt
    assert torch.allclose(target, u, atol=1e-9)
    wrong = exact_u(s=0.6)  # another Gaussian's average velocity does not satisfy this path's identity
    u2, du2 = average_velocity_jvp(wrong, z, t, r, v, {})
    assert (v - (t - r)[:, None, None] * du2 - u2).abs().max() > 1e-2


def test_meanflow_loss_is_zero_at_the_exact_u_and_not_elsewhere():
    """A point-mass target (S = 0): the sample velocity is the marginal one, so the loss at the exact u is 0."""
    x = torch.full((64, 4, 2), MU, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    exact = meanflow_loss(exact_u(s=0.0), x, ratio=1.0, adaptive_p=0.0, generator=g)
    assert exact.item() < 1e-12
    g = torch.Generator().manual_seed(0)
    off = meanflow_loss(exact_u(s=0.3), x, ratio=1.0, adaptive_p=0.0, generator=g)
    assert off.item() > 1e-3


def test_the_difference_derivative_is_the_jvp_on_a_smooth_u_and_smooths_a_wiggle_in_t():
    """Central differences give the JVP's du/dt on the Gaussian's u (O(h^2)); on u plus a fast wiggle in t the
    JVP sees the wiggle's full slope and a difference over +-h averages it away. The loss takes either."""
    z = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = torch.tensor([1.0, 0.9, 0.6, 0.5, 0.8], dtype=torch.float64)
    r = torch.tensor([0.0, 0.2, 0.1, 0.3, 0.6], dtype=torch.float64)
    v = marginal_v(z, t)
    _, exact = average_velocity_jvp(exact_u(), z, t, r, v, {})
    assert torch.allclose(average_velocity_difference(exact_u(), z, t, r, v, {}, 1e-4), exact, atol=1e-6)

    def wiggly(z_, t_, *, interval, **_):
        return exact_u()(z_, t_, interval=interval) + 1e-3 * torch.sin(2000 * math.pi * t_)[:, None, None]

    _, jvp = average_velocity_jvp(wiggly, z, t, r, v, {})
    smooth = average_velocity_difference(wiggly, z, t, r, v, {}, 0.05)
    assert (jvp - exact).abs().max() > 5.0  # the wiggle's slope, 2 pi: larger than the whole target
    assert (smooth - exact).abs().max() < 0.05
    x = torch.full((64, 4, 2), MU, dtype=torch.float64)
    loss = meanflow_loss(exact_u(s=0.0), x, ratio=1.0, adaptive_p=0.0, derivative_step=1e-4,
                         generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-6  # O(h^2) from the exact u's curvature; another u scores > 1e-3 (above)


def test_one_jump_with_the_exact_u_lands_on_the_target_distribution():
    """One step from noise with the exact average velocity gives N(MU, S^2); one Euler step collapses it."""
    noise = torch.randn(4000, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigmas = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = sample_average(exact_u(), noise, sigmas)
    assert abs(x.mean().item() - MU) < 0.02 and abs(x.std().item() - S) < 0.02
    euler = sample(lambda z, t, **_: marginal_v(z, t), noise, sigmas)
    assert euler.std().item() < 0.1  # v(z, 1) = z - MU: a single Euler step lands every sample on MU


def _random_dit(scale: float = 0.05, **overrides) -> DiT:
    """A tiny DiT with every weight random (zero-init layers would make the checks below trivial), float64."""
    torch.manual_seed(0)
    model = DiT.from_preset("tiny", interval_input=True, **overrides).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return model


def test_jvp_through_the_dit_equals_finite_differences():
    """The forward-mode JVP (math attention) matches a central difference along (v, 1, 0)."""
    model = _random_dit()
    g = torch.Generator().manual_seed(2)
    z, v = (torch.randn(2, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    cond = dict(mask=mask, text=torch.randn(2, 3, 16, generator=g, dtype=torch.float64),
                aligned=torch.randn(2, 6, 12, generator=g, dtype=torch.float64))
    t, r = torch.tensor([0.8, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.1], dtype=torch.float64)
    _, du_dt = average_velocity_jvp(model, z, t, r, v, cond)
    # The DiT computes its timestep embedding and RoPE in float32: ~1e-3 is as close as differences get.
    d = 1e-4
    with torch.no_grad():
        fd = (model(z + d * v, t + d, interval=t + d - r, **cond)
              - model(z - d * v, t - d, interval=t - d - r, **cond)) / (2 * d)
        z_only = (model(z + d * v, t, interval=t - r, **cond) - model(z - d * v, t, interval=t - r, **cond)) / (2 * d)
    scale = fd.abs().max()
    assert (du_dt - fd).abs().max() < 1e-2 * scale
    assert (du_dt - z_only).abs().max() > 0.1 * scale  # the time derivative matters: leaving it out is caught
    assert du_dt[1, 4:].abs().max() == 0  # padded frames stay exactly 0


def test_r_equal_t_is_the_flow_loss():
    """No jumps and no adaptive weight: MeanFlow's loss is flow_loss, draw for draw."""
    model = _random_dit(scale=0.2).float()
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 5 + [False]])
    text = torch.randn(3, 2, 16)
    kw = dict(mask=mask, text=text, text_dropout=0.5)
    a = meanflow_loss(model, x, ratio=0.0, adaptive_p=0.0, generator=torch.Generator().manual_seed(3), **kw)
    b = flow_loss(model, x, generator=torch.Generator().manual_seed(3), **kw)
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and a.item() > 0
    c = meanflow_loss(model, x, ratio=1.0, adaptive_p=0.0, generator=torch.Generator().manual_seed(3), **kw)
    assert abs(c.item() - b.item()) > 1e-4  # jumps do change the loss


def test_a_flow_model_given_the_interval_input_starts_out_as_itself():
    """student_model adds only the zero-initialised interval embedder: same output for every interval."""
    torch.manual_seed(0)
    flow = DiT.from_preset("tiny")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    student = student_model(flow, "meanflow")
    new = set(student.state_dict()) - set(flow.state_dict())
    assert new and all(k.startswith("interval_embedder.") for k in new)
    x, sigma = torch.randn(2, 5, 8), torch.tensor([0.9, 0.4])
    with torch.no_grad():
        base = flow(x, sigma, aligned=torch.zeros(2, 5, 12))
        for gap in (torch.zeros(2), torch.tensor([0.9, 0.1])):
            assert torch.equal(student(x, sigma, interval=gap, aligned=torch.zeros(2, 5, 12)), base)
    with pytest.raises(ValueError, match="no interval input"):
        flow(x, sigma, interval=torch.zeros(2))


def test_draws_start_from_the_flow_source():
    x, aligned = torch.zeros(3, 5, 2), torch.full((3, 5, 2), 4.0)
    common = dict(ratio=0.5, grid_fraction=0.5, text_dropout=0, aligned_dropout=0, timesteps=None)
    plain = draw_levels(x, **common, generator=torch.Generator().manual_seed(0))
    shifted = draw_levels(x, **common, generator=torch.Generator().manual_seed(0), source=Source("aligned", 0.1),
                          aligned=aligned)
    torch.testing.assert_close(shifted[2], aligned + 0.1 * plain[2])  # the same draws, from aligned + 0.1 n
    assert torch.equal(shifted[0], plain[0]) and torch.equal(shifted[1], plain[1])


def test_draws_put_jumps_on_the_sampling_grids():
    x = torch.zeros(4000, 1, 1)
    t, r, *_ = draw_levels(x, ratio=0.5, grid_fraction=1.0, text_dropout=0, aligned_dropout=0, timesteps=None,
                           generator=torch.Generator().manual_seed(0))
    jumps = t > r
    assert 0.45 < jumps.float().mean() < 0.55 and bool((r <= t).all())
    gaps = sorted({round(g, 4) for g in (t - r)[jumps].tolist()})
    assert gaps == [0.25, 0.5, 1.0]


def test_ctm_target_with_the_exact_field_is_the_exact_average_velocity():
    """Teacher = the exact velocity, student = the exact u: the CTM target tends to the exact u."""
    u = exact_u()
    teacher = lambda z, t, **_: marginal_v(z, t)  # noqa: E731
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([1.0, 0.8, 0.6, 0.5, 0.4], dtype=torch.float64)
    r = torch.tensor([0.0, 0.3, 0.6, 0.0, 0.35], dtype=torch.float64)
    exact = u(z, t, interval=t - r)
    errors = [(ctm_target(u, teacher, z, t, r, {}, scale=1.0, span=0.05, teacher_steps=n) - exact).abs().max()
              for n in (8, 64)]
    assert errors[1] < 5e-3 and 6 < errors[0] / errors[1] < 10  # the teacher's Euler error, first order
    # and the loss trains only the student: zero when it already is the exact u
    x = torch.full((8, 3, 2), MU, dtype=torch.float64)
    loss = ctm_loss(exact_u(s=0.0), lambda z, t, **_: marginal_v(z, t, s=0.0), x, adaptive_p=0.0, span=0.1,
                    teacher_steps=8, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-10
    assert math.isfinite(loss.item())


def test_every_prediction_a_release_may_record_has_a_sampler():
    from genflow.objectives import PREDICTION
    from genflow.pipeline import SAMPLERS
    from genflow.release import PREDICTIONS, read_pipeline_dict

    assert set(SAMPLERS) == set(PREDICTIONS) and set(PREDICTION.values()) <= set(PREDICTIONS)
    with pytest.raises(ValueError, match="prediction 'x0'"):
        read_pipeline_dict({"format": "genflow-release-1", "codec": "mel", "prediction": "x0"}, "pipeline.json")
