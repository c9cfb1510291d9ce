"""Fréchet distance maths against a scipy reference, rank-deficient inputs and the stats cache."""

import numpy as np
import pytest

from genflow.metrics.frechet import (
    compute_stats,
    frechet_distance,
    frechet_distance_stats,
    load_stats,
    save_stats,
)


def _scipy_fd(mu1, s1, mu2, s2):
    linalg = pytest.importorskip("scipy.linalg")
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    b = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) + 0.5
    sa, sb = compute_stats(a), compute_stats(b)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    ref = _scipy_fd(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert np.allclose(sa.sigma, np.cov(a, rowvar=False))


def test_rank_deficient_is_finite_and_nonnegative():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64))  # n < dim: singular covariances
    sa, sb = compute_stats(a), compute_stats(b)
    fd = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(sa.mu, sa.sigma, sa.mu, sa.sigma) == pytest.approx(0.0, abs=1e-6)


def test_identical_sets_near_zero_and_shift_is_squared_norm():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 16))
    s = compute_stats(a)
    assert frechet_distance(s.mu, s.sigma, s.mu, s.sigma) == pytest.approx(0.0, abs=1e-8)
    shifted = compute_stats(a + 3.0)  # same covariance, mean moved by 3 in 16 dims
    assert frechet_distance(s.mu, s.sigma, shifted.mu, shifted.sigma) == pytest.approx(9.0 * 16, rel=1e-6)


def test_stats_cache_round_trip_and_mismatch_refused(tmp_path):
    rng = np.random.default_rng(3)
    s = compute_stats(rng.normal(size=(20, 8)), backend="vggish", settings={"sample_rate": 16000})
    path = save_stats(tmp_path / "ref.npz", s)
    back = load_stats(path, backend="vggish", settings={"sample_rate": 16000})
    assert np.array_equal(back.mu, s.mu) and np.array_equal(back.sigma, s.sigma) and back.n == 20
    assert frechet_distance_stats(back, s) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="not comparable"):
        load_stats(path, backend="panns-cnn14-16k")
    with pytest.raises(ValueError, match="not comparable"):
        load_stats(path, backend="vggish", settings={"sample_rate": 48000})
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "absent.npz")
