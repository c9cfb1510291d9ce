"""Classifier-based scores on AudioSet logits: paired KL divergence and Inception Score.

Both follow audioldm_eval (haoheliu/audioldm_eval, ``metrics/kl.py`` and ``metrics/isc.py``) so numbers
line up with AudioLDM / AudioLDM2 / Tango tables:

- ``kl_softmax`` ("KL" in those papers, AudioGen's formulation): softmax over the 527 logits of each
  clip, KL(ref || gen) = sum_c p_ref log(p_ref / (p_gen + 1e-6)), summed over classes, averaged over
  the paired clips.
- ``kl_sigmoid`` ("KL_Sigmoid"): the same sum over classes with per-class sigmoid probabilities. It is
  *not* a sum of Bernoulli KLs (the 1 - p terms are ignored), exactly as in audioldm_eval.
- Inception Score: softmax over logits, exp(E_x KL(p(y|x) || p(y))) on ``splits`` chunks after a
  seeded shuffle (seed 2020, 10 splits in audioldm_eval); mean and std over chunks. With fewer clips
  than splits audioldm_eval returns NaN (empty chunks); genflow then uses one split of all clips (the
  textbook IS; one clip per split would always give 1) and the report says so (``is_splits``).
"""

from __future__ import annotations

import numpy as np
import torch

KL_EPS = 1e-6  # added to the generated-side probabilities before the log, as in audioldm_eval


def _kl_rows(p_ref: torch.Tensor, p_gen: torch.Tensor) -> torch.Tensor:
    """Per-row sum_c p_ref log(p_ref / (p_gen + eps)) with 0 log 0 = 0. (N, C) -> (N,)."""
    return (torch.xlogy(p_ref, p_ref) - p_ref * torch.log(p_gen + KL_EPS)).sum(-1)


def paired_kl(gen_logits: torch.Tensor, ref_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip KL(ref || gen) of paired (N, C) logits: {"kl_softmax": (N,), "kl_sigmoid": (N,)}."""
    gen, ref = gen_logits.double(), ref_logits.double()
    if gen.shape != ref.shape or gen.ndim != 2:
        raise ValueError(
            f"got generated logits {tuple(gen.shape)} and reference logits {tuple(ref.shape)}; "
            "expected two (N, C) tensors with rows paired by clip id"
        )
    return {
        "kl_softmax": _kl_rows(ref.softmax(-1), gen.softmax(-1)),
        "kl_sigmoid": _kl_rows(ref.sigmoid(), gen.sigmoid()),
    }


def kl_scores(gen_logits: torch.Tensor, ref_logits: torch.Tensor) -> dict[str, float]:
    """Mean paired KL(ref || gen) over clips: {"kl_softmax": float, "kl_sigmoid": float}."""
    return {k: float(v.mean()) for k, v in paired_kl(gen_logits, ref_logits).items()}


def inception_splits(n: int, splits: int = 10) -> int:
    """Splits actually used for ``n`` clips: ``splits``, or 1 when there are fewer clips than splits."""
    return splits if n >= splits else 1


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int | None = 2020) -> dict[str, float]:
    """Inception Score of (N, C) logits: {"is_mean", "is_std"} over ``splits`` shuffled chunks."""
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"got logits of shape {tuple(logits.shape)}, expected (N, C) with N >= 1")
    x = logits.double()
    n = x.shape[0]
    if seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    splits = inception_splits(n, splits)
    log_p = x.log_softmax(-1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = torch.logsumexp(chunk, 0) - np.log(chunk.shape[0])  # log mean_x p(y|x)
        kl = (chunk.exp() * (chunk - log_marginal)).sum(-1)
        scores.append(float(kl.mean().exp()))
    return {"is_mean": float(np.mean(scores)), "is_std": float(np.std(scores))}
