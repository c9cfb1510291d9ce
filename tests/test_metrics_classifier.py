"""KL divergence and Inception Score against hand-written formulas."""

import math

import numpy as np
import pytest
import torch

from genflow.metrics.classifier_scores import inception_score, kl_scores, paired_kl


def test_kl_matches_manual_formula():
    ref = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    gen = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    p, q = ref.double().softmax(-1), gen.double().softmax(-1)
    manual_softmax = float((p * (p / (q + 1e-6)).log()).sum(-1).mean())
    ps, qs = ref.double().sigmoid(), gen.double().sigmoid()
    manual_sigmoid = float((ps * (ps / (qs + 1e-6)).log()).sum(-1).mean())
    out = kl_scores(gen, ref)
    assert out["kl_softmax"] == pytest.approx(manual_softmax, rel=1e-9)
    assert out["kl_sigmoid"] == pytest.approx(manual_sigmoid, rel=1e-9)
    # KL(ref || gen) is not symmetric: swapping the roles changes the value.
    assert kl_scores(ref, gen)["kl_softmax"] != pytest.approx(out["kl_softmax"], rel=1e-3)
    same = paired_kl(ref, ref)["kl_softmax"]
    assert torch.allclose(same, torch.zeros(2, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="paired"):
        paired_kl(gen[:1], ref)


def test_inception_score_uniform_is_one_and_confident_is_num_classes():
    assert inception_score(torch.zeros(40, 10), splits=4)["is_mean"] == pytest.approx(1.0, abs=1e-12)
    # Confident, evenly spread predictions over C classes: IS = C (within each split).
    logits = torch.full((40, 4), -50.0)
    logits[torch.arange(40), torch.arange(40) % 4] = 50.0
    out = inception_score(logits, splits=1, seed=None)
    assert out["is_mean"] == pytest.approx(4.0, rel=1e-6)


def test_inception_score_manual_formula():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(6, 5)))
    p = logits.softmax(-1).numpy()
    marginal = p.mean(0, keepdims=True)
    manual = math.exp(float((p * (np.log(p) - np.log(marginal))).sum(1).mean()))
    assert inception_score(logits, splits=1, seed=None)["is_mean"] == pytest.approx(manual, rel=1e-9)
    # More splits than clips never yields an empty chunk.
    assert np.isfinite(inception_score(logits, splits=10)["is_mean"])
