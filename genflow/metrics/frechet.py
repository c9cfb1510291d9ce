"""Fréchet distance between Gaussians fitted to embeddings, and the cached reference statistics.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}). The trace of the matrix square root is
computed from the eigenvalues of the symmetric PSD matrix sqrt(S1) S2 sqrt(S1), which has the same
eigenvalues as S1 S2; unlike ``scipy.linalg.sqrtm(S1 @ S2)`` this never produces complex parts or NaNs
on rank-deficient covariances (fewer clips than embedding dimensions).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genflow.hub import atomic_write


@dataclass
class FrechetStats:
    """Gaussian statistics of one embedding set: mean (D,), covariance (D, D), count and provenance."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    backend: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def compute_stats(emb: np.ndarray, backend: str = "", settings: dict[str, Any] | None = None) -> FrechetStats:
    """(N, D) embeddings -> FrechetStats (float64, unbiased covariance like numpy.cov)."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"got embeddings of shape {emb.shape}, expected (N, D) with N >= 2")
    mu = emb.mean(0)
    centred = emb - mu
    sigma = centred.T @ centred / (emb.shape[0] - 1)
    return FrechetStats(mu, sigma, emb.shape[0], backend, dict(settings or {}))


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; negative rounding eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for PSD S1, S2, via eigvalsh(sqrt(S1) S2 sqrt(S1))."""
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); never negative, never NaN."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}; "
            "both sets must come from the same embedding backend"
        )
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(s1, s2)
    if not math.isfinite(tr_covmean):
        # Fallback for ill-conditioned inputs (e.g. huge dynamic range): offset both diagonals.
        offset = eps * np.eye(s1.shape[0])
        tr_covmean = trace_sqrt_product(s1 + offset, s2 + offset)
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    if not math.isfinite(fd):
        raise ValueError("Fréchet distance is not finite: the embeddings contain NaN/inf values")
    return max(fd, 0.0)


def frechet_distance_stats(a: FrechetStats, b: FrechetStats) -> float:
    """Fréchet distance between two FrechetStats (checked to come from the same backend)."""
    if a.backend and b.backend and (a.backend, a.settings) != (b.backend, b.settings):
        raise ValueError(
            f"statistics from different embeddings: {a.backend} {a.settings} vs {b.backend} {b.settings}"
        )
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def save_stats(path: str | os.PathLike, stats: FrechetStats) -> Path:
    """Write statistics to ``path`` (.npz: mu, sigma, n, backend, settings as JSON), atomically."""
    with atomic_write(path) as tmp:  # the temp name keeps the .npz suffix, so numpy writes exactly there
        np.savez(tmp, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n), backend=np.str_(stats.backend),
                 settings=np.str_(json.dumps(stats.settings, sort_keys=True)))
    return Path(path)


def load_stats(
    path: str | os.PathLike, backend: str | None = None, settings: dict[str, Any] | None = None
) -> FrechetStats:
    """Read statistics written by ``save_stats``; refuse them if backend/settings differ from the given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {str(path)!r} do not exist; expected a .npz file")
    with np.load(path, allow_pickle=False) as f:
        missing = {"mu", "sigma", "n", "backend", "settings"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}; was it written by save_stats?")
        stats = FrechetStats(
            f["mu"], f["sigma"], int(f["n"]), str(f["backend"]), json.loads(str(f["settings"]))
        )
    want = json.loads(json.dumps(settings, sort_keys=True)) if settings is not None else None
    if (backend is not None and stats.backend != backend) or (want is not None and stats.settings != want):
        raise ValueError(
            f"{path} holds statistics of backend {stats.backend!r} with settings {stats.settings}, but "
            f"backend {backend!r} with settings {want} was asked for; embeddings of different backends or "
            "settings are not comparable. Recompute the statistics (pass the reference folder instead) "
            "or choose the matching --backend"
        )
    return stats
