"""Flow-matching maths against closed forms: convention, loss, guidance, samplers, schedules, seeds."""

import math

import pytest
import torch

from genflow.flow import (
    Source,
    TimestepSampler,
    flow_loss,
    interpolate,
    make_noise,
    sample,
    sample_sigmas,
    sigma_schedule,
    velocity_target,
)


def point_field(target):
    """The exact velocity field of the single data point ``target`` (B,T,C): v = (x_sigma - target) / sigma."""

    def model(x, sigma, **kw):
        return (x - target) / sigma[:, None, None]

    return model


def gaussian_field(mu, s):
    """Exact marginal velocity of data ~ N(mu, s^2) per coordinate: x_sigma ~ N((1-sigma) mu, var(sigma))."""

    def model(x, sigma, **kw):
        sig = sigma[:, None, None].double()
        var = (1 - sig) ** 2 * s**2 + sig**2
        # v = dm/dsigma + (dvar/dsigma) / (2 var) * (x - m)
        return (-mu + (sig - (1 - sig) * s**2) / var * (x.double() - (1 - sig) * mu)).to(x.dtype)

    return model


class Recorder:
    """A frame-wise model that logs every call; conditions shift v unless dropped."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, *, mask=None, text=None, text_mask=None, aligned=None, drop_text=None,
                 drop_aligned=None):
        self.calls.append(dict(x=x.clone(), sigma=sigma.clone(), batch=x.shape[0], mask=mask, drop_text=drop_text,
                               drop_aligned=drop_aligned))
        v = 0.5 * x + sigma[:, None, None]
        if text is not None:
            keep = ~drop_text if drop_text is not None else torch.ones(x.shape[0], dtype=torch.bool)
            v = v + keep[:, None, None] * text.mean(1, keepdim=True)[..., : x.shape[-1]]
        if aligned is not None:
            keep = ~drop_aligned if drop_aligned is not None else torch.ones(x.shape[0], dtype=torch.bool)
            v = v + keep[:, None, None] * 2 * aligned
        return v


def lengths_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------- convention


def test_path_endpoints_and_target_is_the_path_derivative():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    assert torch.equal(interpolate(x, eps, 0.0), x)  # sigma = 0 is data
    assert torch.equal(interpolate(x, eps, 1.0), eps)  # sigma = 1 is noise
    assert torch.equal(velocity_target(x, eps), eps - x)  # v points from data to noise
    sigma, d = torch.tensor([0.2, 0.5, 0.9]), 1e-3
    fd = (interpolate(x, eps, sigma + d) - interpolate(x, eps, sigma - d)) / (2 * d)
    torch.testing.assert_close(fd, velocity_target(x, eps), atol=1e-3, rtol=0)
    # per-example sigma broadcasts over frames and channels
    torch.testing.assert_close(interpolate(x, eps, sigma)[1], 0.5 * x[1] + 0.5 * eps[1])


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
@pytest.mark.parametrize("steps,kind", [(1, "linear"), (3, "sway"), (25, "sway"), (7, "shifted")])
def test_sampler_on_exact_field_of_a_point_lands_on_it(solver, steps, kind):
    target = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1))
    noise = make_noise(target.shape, seed=2)
    x0 = sample(point_field(target), noise, sigma_schedule(steps, kind), solver=solver)
    torch.testing.assert_close(x0, target, atol=1e-5, rtol=0)


def test_euler_moves_toward_data_every_step():
    target = torch.full((1, 4, 2), 3.0)
    noise = make_noise(target.shape, seed=0)
    sigmas = sigma_schedule(10)
    x, dists = noise, [float((noise - target).norm())]
    for i in range(10):  # one Euler step at a time; the distance to the data falls like sigma
        x = sample(point_field(target), x, sigmas[i : i + 2])
        dists.append(float((x - target).norm()))
    assert all(b < a for a, b in zip(dists, dists[1:]))
    assert dists[5] == pytest.approx(dists[0] * float(sigmas[5]), rel=1e-5)


# ---------------------------------------------------------------- loss


def test_loss_of_the_exact_field_is_zero_and_a_constant_error_costs_its_square():
    x = torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(0))
    sampler = TimestepSampler(kind="uniform", shift=1.0)
    exact = point_field(x)
    # Keep sigma away from 0 where (x_sigma - x)/sigma loses precision.
    loss = flow_loss(exact, x, timesteps=TimestepSampler(mean=0.5), generator=torch.Generator().manual_seed(1))
    assert float(loss) < 1e-9

    def off(xs, sigma, **kw):
        return exact(xs, sigma) + 0.3

    loss = flow_loss(off, x, timesteps=sampler, generator=torch.Generator().manual_seed(1))
    assert float(loss) == pytest.approx(0.09, rel=1e-3)


def test_aligned_source_puts_the_aligned_condition_plus_std_noise_at_sigma_one():
    g = torch.Generator().manual_seed(0)
    x, aligned = torch.randn(64, 20, 4, generator=g), 3.0 + torch.randn(64, 20, 4, generator=g)
    seen = {}

    def model(xs, sigma, **kw):
        seen.update(xs=xs, sigma=sigma, aligned=kw["aligned"])
        return (xs - x) / sigma[:, None, None]  # the exact velocity of the data point x, whatever the source

    loss = flow_loss(model, x, aligned=aligned, source=Source("aligned", 0.25), aligned_dropout=0.5,
                     timesteps=TimestepSampler(mean=0.5), generator=torch.Generator().manual_seed(1))
    assert float(loss) < 1e-9
    s = seen["sigma"][:, None, None]
    start = (seen["xs"] - (1 - s) * x) / s  # the source sample of every row
    n = (start - aligned) / 0.25
    assert abs(float(n.mean())) < 0.02 and abs(float(n.std()) - 1) < 0.02  # aligned + 0.25 * N(0, 1)
    assert torch.equal(seen["aligned"], aligned)  # the condition itself still goes to the model (and drops)
    # the default source is N(0, I) with the same draws: a run without the setting is unchanged
    plain, explicit = (flow_loss(point_field(x), x, aligned=aligned, source=src,
                                 generator=torch.Generator().manual_seed(1)) for src in (None, Source()))
    assert torch.equal(plain, explicit)


def test_source_rejects_bad_settings_and_missing_aligned_latents():
    with pytest.raises(ValueError, match="unknown"):
        Source("condition")
    with pytest.raises(ValueError, match="std must be > 0"):
        Source("aligned", 0.0)
    noise = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"needs aligned latents of the target's shape \(2, 5, 3\), got None"):
        Source("aligned", 0.5).start(noise, None)
    with pytest.raises(ValueError, match=r"got \(2, 5, 4\)"):
        Source("aligned", 0.5).start(noise, torch.zeros(2, 5, 4))
    start = Source("aligned", 0.5).start(noise + 1, torch.full_like(noise, 2.0))
    assert torch.equal(start, torch.full_like(noise, 2.5))


def test_masked_loss_ignores_padded_frames_and_matches_a_manual_computation():
    B, T, C = 3, 8, 4
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(0))
    mask = lengths_mask([8, 5, 2], T)
    rec = Recorder()
    loss = flow_loss(rec, x, mask=mask, generator=torch.Generator().manual_seed(3))
    call = rec.calls[0]
    assert torch.all(call["x"][~mask] == 0)  # padded frames of x_sigma are zeroed
    assert call["mask"] is mask and call["drop_text"] is None and call["drop_aligned"] is None
    # manual: recover eps from x_sigma on valid frames, target = eps - x = (x_sigma - x) / sigma
    sig = call["sigma"][:, None, None]
    target = (call["x"] - x) / sig
    err = (0.5 * call["x"] + sig - target).square() * mask[..., None]
    manual = err.sum() / (mask.sum() * C)
    torch.testing.assert_close(loss, manual, rtol=1e-4, atol=1e-6)

    x_other = x.clone()
    x_other[~mask] = 1e3  # garbage in padded frames changes nothing
    loss_other = flow_loss(Recorder(), x_other, mask=mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss, loss_other)
    # without a mask the padding counts, so the loss differs
    assert not torch.allclose(loss, flow_loss(Recorder(), x_other, generator=torch.Generator().manual_seed(3)))


def test_condition_dropout_flags():
    B = 20000
    x = torch.zeros(B, 1, 1)
    text, aligned = torch.zeros(B, 2, 1), torch.zeros(B, 1, 1)
    for p_t, p_a in [(0.0, 1.0), (1.0, 0.0)]:
        rec = Recorder()
        flow_loss(rec, x, text=text, aligned=aligned, text_dropout=p_t, aligned_dropout=p_a)
        assert rec.calls[0]["drop_text"].all().item() == (p_t == 1.0)
        assert (~rec.calls[0]["drop_text"]).all().item() == (p_t == 0.0)
        assert rec.calls[0]["drop_aligned"].all().item() == (p_a == 1.0)
    rec = Recorder()
    flow_loss(rec, x, text=text, aligned=aligned, text_dropout=0.2, aligned_dropout=0.5,
              generator=torch.Generator().manual_seed(0))
    dt, da = rec.calls[0]["drop_text"], rec.calls[0]["drop_aligned"]
    assert dt.float().mean().item() == pytest.approx(0.2, abs=0.015)
    assert da.float().mean().item() == pytest.approx(0.5, abs=0.015)
    assert (dt & da).float().mean().item() == pytest.approx(0.1, abs=0.015)  # independent draws
    with pytest.raises(ValueError, match="dropout"):
        flow_loss(rec, x, text=text, text_dropout=1.5)


# ---------------------------------------------------------------- guidance


def _conditions(B=2, T=5, C=3):
    g = torch.Generator().manual_seed(7)
    return dict(text=torch.randn(B, 4, C, generator=g), text_mask=torch.ones(B, 4, dtype=torch.bool),
                aligned=torch.randn(B, T, C, generator=g))


def test_guidance_scale_one_is_the_conditional_prediction_in_a_single_forward():
    cond = _conditions()
    noise = make_noise((2, 5, 3), seed=0)
    rec = Recorder()
    x0 = sample(rec, noise, sigma_schedule(1), guidance_scale=1.0, **cond)
    assert [c["batch"] for c in rec.calls] == [2]
    assert rec.calls[0]["drop_text"] is None and rec.calls[0]["drop_aligned"] is None
    v_c = Recorder()(noise, torch.ones(2), **cond)
    torch.testing.assert_close(x0, noise - v_c)  # one Euler step from sigma 1 to 0


@pytest.mark.parametrize("present", ["text", "aligned", "both"])
def test_cfg_is_one_batched_forward_with_the_uncond_half_dropping_every_condition(present):
    B, scale = 2, 4.0
    cond = _conditions(B)
    if present == "text":
        cond["aligned"] = None
    if present == "aligned":
        cond["text"] = cond["text_mask"] = None
    noise = make_noise((B, 5, 3), seed=0)
    rec = Recorder()
    x0 = sample(rec, noise, sigma_schedule(3), guidance_scale=scale, **cond)
    assert [c["batch"] for c in rec.calls] == [2 * B] * 3
    flags = torch.tensor([False] * B + [True] * B)
    for key, name in [("drop_text", "text"), ("drop_aligned", "aligned")]:
        got = rec.calls[0][key]
        assert torch.equal(got, flags) if cond[name] is not None else got is None

    # manual CFG, one Euler step
    x1 = sample(Recorder(), noise, sigma_schedule(1), guidance_scale=scale, **cond)
    ones, f, t = torch.ones(B), torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)
    v_c = Recorder()(noise, ones, **cond, drop_text=f, drop_aligned=f)
    v_u = Recorder()(noise, ones, **cond, drop_text=t, drop_aligned=t)
    torch.testing.assert_close(x1, noise - (v_u + scale * (v_c - v_u)))
    assert not torch.allclose(x0, sample(Recorder(), noise, sigma_schedule(3), **cond))  # guidance did something


def test_guidance_rescale():
    B, T = 2, 6
    cond = _conditions(B, T)
    mask = lengths_mask([6, 3], T)
    noise = make_noise((B, T, 3), seed=0)
    sig = sigma_schedule(1)
    plain = sample(Recorder(), noise, sig, guidance_scale=5.0, mask=mask, **cond)
    assert torch.equal(plain, sample(Recorder(), noise, sig, guidance_scale=5.0, guidance_rescale=0.0, mask=mask,
                                     **cond))
    full = sample(Recorder(), noise, sig, guidance_scale=5.0, guidance_rescale=1.0, mask=mask, **cond)
    # rescale 1: the guided velocity has, per example over valid frames, the conditional prediction's std
    m = mask[..., None].float()
    v_c = Recorder()(noise * m, torch.ones(B), mask=mask, **cond) * m
    for b, n in enumerate([6, 3]):
        v = (noise * m - full)[b, :n]
        assert v.std().item() == pytest.approx(v_c[b, :n].std().item(), rel=1e-4)
    assert not torch.allclose(full, plain)
    half = sample(Recorder(), noise, sig, guidance_scale=5.0, guidance_rescale=0.5, mask=mask, **cond)
    torch.testing.assert_close(half, (plain + full) / 2)  # a linear blend in v, hence in one Euler step


# ---------------------------------------------------------------- second order, masks, seeds


def test_second_order_solvers_beat_euler_on_a_gaussian_target():
    mu, s = 2.0, 0.5
    noise = make_noise((4096, 1, 1), seed=0, dtype=torch.float64)
    exact = mu + s * noise  # the ODE maps noise z to mu + s z
    field = gaussian_field(mu, s)

    def err(solver, steps):
        return (sample(field, noise, sigma_schedule(steps).double(), solver=solver) - exact).abs().max().item()

    for steps in (4, 8):
        e = err("euler", steps)
        assert err("heun", steps) < e / 2 and err("midpoint", steps) < e / 10
    # convergence orders: halving h halves Euler's error and quarters Heun's (its last, Euler, step
    # included); midpoint does at least as well on this linear-in-x field
    assert err("euler", 8) / err("euler", 16) == pytest.approx(2, rel=0.15)
    assert err("heun", 8) / err("heun", 16) == pytest.approx(4, rel=0.25)
    assert err("midpoint", 8) / err("midpoint", 16) > 3.5
    out = sample(field, noise, sigma_schedule(16).double(), solver="heun")
    assert out.mean().item() == pytest.approx(mu, abs=0.03) and out.std().item() == pytest.approx(s, abs=0.02)


@pytest.mark.parametrize("solver,evals", [("euler", 5), ("heun", 9), ("midpoint", 10)])
def test_model_evaluations_per_solver(solver, evals):
    rec = Recorder()
    sample(rec, make_noise((1, 2, 3), seed=0), sigma_schedule(5), solver=solver)
    assert len(rec.calls) == evals
    sigmas = [round(c["sigma"].item(), 6) for c in rec.calls]
    assert min(sigmas) > 0  # no solver evaluates the model at sigma = 0 (Heun's last step is Euler, as in EDM)
    with pytest.raises(ValueError, match="solver"):
        sample(rec, make_noise((1, 2, 3), seed=0), sigma_schedule(5), solver="rk4")


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_variable_lengths_padded_frames_never_touch_valid_ones(solver):
    T, C = 9, 3
    cond = _conditions(2, T, C)
    lengths = [9, 4]
    mask = lengths_mask(lengths, T)
    noise = make_noise((2, T, C), seed=5)
    x0 = sample(Recorder(), noise, sigma_schedule(4, "sway"), solver=solver, guidance_scale=3.0, mask=mask, **cond)
    assert torch.all(x0[~mask] == 0)
    for b, n in enumerate(lengths):  # each clip alone, cropped to its length, gives the same frames
        alone = sample(Recorder(), noise[b : b + 1, :n], sigma_schedule(4, "sway"), solver=solver,
                       guidance_scale=3.0, text=cond["text"][b : b + 1], text_mask=cond["text_mask"][b : b + 1],
                       aligned=cond["aligned"][b : b + 1, :n])
        torch.testing.assert_close(x0[b, :n], alone[0])


def test_seeds_reproduce_exactly():
    a = make_noise((2, 3, 4), seed=11)
    assert torch.equal(a, make_noise((2, 3, 4), seed=11))
    assert not torch.equal(a, make_noise((2, 3, 4), seed=12))
    assert torch.equal(a, make_noise((2, 3, 4), generator=torch.Generator().manual_seed(11)))
    assert torch.equal(make_noise((2, 3, 4), seed=11, dtype=torch.bfloat16), a.bfloat16())
    with pytest.raises(ValueError, match="both"):
        make_noise((1,), seed=1, generator=torch.Generator())
    x = torch.randn(3, 5, 2)

    torch.manual_seed(0)
    text = torch.randn(3, 2, 2)
    l1 = flow_loss(Recorder(), x, text=text, text_dropout=0.5, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(99)  # the global RNG plays no part
    l2 = flow_loss(Recorder(), x, text=text, text_dropout=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(l1, l2)
    l3 = flow_loss(Recorder(), x, text=text, text_dropout=0.5, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(l1, l3)
    s = sample_sigmas(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, sample_sigmas(5, generator=torch.Generator().manual_seed(1)))


# ---------------------------------------------------------------- schedules and timestep sampling


@pytest.mark.parametrize("kind", ["linear", "shifted", "sway"])
@pytest.mark.parametrize("steps", [1, 2, 25])
def test_schedules_run_from_one_to_zero_monotonically(kind, steps):
    s = sigma_schedule(steps, kind)
    assert s.shape == (steps + 1,) and s[0].item() == 1.0 and s[-1].item() == 0.0
    assert torch.all(s[1:] < s[:-1])


def test_schedule_formulas():
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sigma_schedule(10, "linear"), (1 - u).float())
    torch.testing.assert_close(sigma_schedule(10, "sway", sway_coef=0.0), sigma_schedule(10, "linear"))
    # the released coefficient -1 collapses to cos(pi/2 u): fine steps near the data
    torch.testing.assert_close(sigma_schedule(10, "sway", sway_coef=-1.0), torch.cos(math.pi / 2 * u).float(),
                               atol=1e-7, rtol=0)
    sh = sigma_schedule(10, "shifted", shift=3.0)
    torch.testing.assert_close(sh, (3 * (1 - u) / (1 + 2 * (1 - u))).float())
    assert torch.all(sh[1:-1] > sigma_schedule(10)[1:-1])  # shift > 1 stays longer at high noise
    torch.testing.assert_close(sigma_schedule(10, "shifted", shift=1.0), sigma_schedule(10))
    for bad in [dict(kind="cosine"), dict(kind="sway", sway_coef=-2.0)]:
        with pytest.raises(ValueError):
            sigma_schedule(10, **bad)
    with pytest.raises(ValueError, match="decreasing"):
        sample(Recorder(), torch.zeros(1, 2, 3), torch.tensor([0.0, 1.0]))


def test_timestep_sampling_range_median_and_shift():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    n = 40000
    for kind in ("logit_normal", "uniform"):
        for shift in (1.0, 3.0):
            s = sample_sigmas(n, kind=kind, shift=shift, generator=g())
            assert s.shape == (n,) and s.min() > 0 and s.max() < 1
    ln = sample_sigmas(n, mean=0.5, std=1.0, generator=g())
    assert ln.median().item() == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.01)  # sigmoid(mean)
    assert ln.std().item() < sample_sigmas(n, mean=0.5, std=2.0, generator=g()).std().item()
    un = sample_sigmas(n, kind="uniform", generator=g())
    sh = sample_sigmas(n, kind="uniform", shift=3.0, generator=g())
    torch.testing.assert_close(sh, 3 * un / (1 + 2 * un))  # the SD3 shift, same draws
    assert sh.median().item() == pytest.approx(0.75, abs=0.01)  # median s/(1+s)
    sampler = TimestepSampler(kind="uniform", shift=3.0)
    assert torch.equal(sampler(n, generator=g()), sh)
    with pytest.raises(ValueError, match="unknown"):
        TimestepSampler(kind="beta")
