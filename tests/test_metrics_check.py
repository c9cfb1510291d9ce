"""KAD against its definition, the `check` sanity checks, protocols end to end, and genflow.dsp helpers."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from genflow import dsp
from genflow.metrics import kad as kad_module
from genflow.metrics.check import distance_checks, main, synthetic_clips
from genflow.metrics.embeddings import EmbeddingBackend
from genflow.metrics.folders import evaluate_generation
from genflow.metrics.kad import kernel_audio_distance


def _kad_by_definition(gen: np.ndarray, ref: np.ndarray) -> float:
    """kadtk's definition written out with loops: 100 * unbiased MMD^2, RBF, bandwidth = median ref distance."""
    dists = sorted(float(np.linalg.norm(ref[i] - ref[j])) for i in range(len(ref)) for j in range(i + 1, len(ref)))
    h = dists[(len(dists) - 1) // 2]  # torch.median: the lower of the two middle values
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h + 1e-8))  # noqa: E731
    m, n = len(ref), len(gen)
    k_rr = sum(k(ref[i], ref[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    k_gg = sum(k(gen[i], gen[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    k_rg = sum(k(ref[i], gen[j]) for i in range(m) for j in range(n)) / (m * n)
    return 100.0 * (k_rr + k_gg - 2 * k_rg)


def test_kad_matches_its_definition(monkeypatch):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(24, 6))
    gen = rng.normal(size=(17, 6)) * 1.3 + 0.4
    want = _kad_by_definition(gen, ref)
    assert kernel_audio_distance(gen, ref) == pytest.approx(want, rel=1e-10)
    monkeypatch.setattr(kad_module, "_BLOCK", 5)  # the blocked sums cross block edges
    assert kernel_audio_distance(gen, ref) == pytest.approx(want, rel=1e-10)
    # The bandwidth comes from the reference set: swapping the sets changes the value.
    assert kernel_audio_distance(ref, gen) != pytest.approx(want, rel=1e-6)
    assert kernel_audio_distance(ref, gen) == pytest.approx(_kad_by_definition(ref, gen), rel=1e-10)


def test_kad_is_near_zero_within_a_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    ref, same = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    near = kernel_audio_distance(same, ref)
    shifted = [kernel_audio_distance(same + s, ref) for s in (0.25, 0.5, 1.0)]
    assert abs(near) < 0.2 * shifted[0] and shifted[0] < shifted[1] < shifted[2]
    with pytest.raises(ValueError, match=r"\(N, D\) and \(M, D\)"):
        kernel_audio_distance(ref[:, :4], ref)


def test_check_command_passes_on_the_offline_backend(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("self_fd", "self_kad", "noise_fd", "noise_kad", "small_set_refused"):
        assert f"PASS  {name}" in out


class _DeafBackend(EmbeddingBackend):
    """A broken embedding that ignores its input (what a wrong front end can degenerate to)."""

    name, sample_rate, settings = "deaf", 16000, {}

    def embed(self, wav):
        g = torch.Generator().manual_seed(int(wav.numel()))
        return torch.randn(2, 4, generator=g), None


def test_check_flags_an_embedding_that_ignores_noise():
    checks = {c.name: c for c in distance_checks(_DeafBackend(), synthetic_clips(n=8, seconds=0.5))}
    assert checks["self_fd"].passed and not checks["noise_fd"].passed and not checks["noise_kad"].passed


def _tone_folder(path, n, freqs_from=200.0, rate=16000, channels=1):
    path.mkdir()
    t = np.arange(int(1.5 * rate)) / rate
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (freqs_from + 37 * i) * t)
        sf.write(path / f"{i}.wav", np.stack([x, 0.5 * x[::-1]], 1) if channels == 2 else x, rate)
    return path


def test_small_sets_refused_unless_allowed(tmp_path):
    gen, ref = _tone_folder(tmp_path / "g", 3), _tone_folder(tmp_path / "r", 12, 300.0)
    with pytest.raises(ValueError, match="3 generated and 12 reference clips.*at least 10.*--allow-small-fd"):
        evaluate_generation(gen, ref, progress=False)
    res = evaluate_generation(gen, ref, progress=False, allow_small_fd=True)
    assert res["small_sample"] and res["metrics"]["fd"] > 0 and math.isfinite(res["metrics"]["kad"])


def test_protocol_is_reported_and_changes_what_the_network_hears(tmp_path):
    gen = _tone_folder(tmp_path / "g", 10, rate=44100, channels=2)
    ref = _tone_folder(tmp_path / "r", 10, 300.0)
    stats = tmp_path / "ref.npz"
    a = evaluate_generation(gen, ref, progress=False, protocol="audioldm_eval", save_reference_stats=stats)
    b = evaluate_generation(gen, ref, progress=False)
    assert a["protocol"]["name"] == "audioldm_eval" and b["protocol"]["name"] == "genflow"
    assert a["metrics"]["fd"] != pytest.approx(b["metrics"]["fd"], rel=1e-3)  # first channel vs mean, padding
    with pytest.raises(ValueError, match="not comparable"):  # statistics of one protocol are refused by another
        evaluate_generation(gen, stats, progress=False)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'audioldm'"):
        evaluate_generation(gen, ref, progress=False, protocol="audioldm")


def test_sinc_resample_length_and_passband():
    t = torch.arange(44100, dtype=torch.float64) / 44100
    x = torch.sin(2 * math.pi * 1000 * t)
    y = dsp.sinc_resample(x, 44100, 16000)
    assert y.shape == (16000,) and y.dtype == torch.float64  # ceil(N * 16000 / 44100)
    ref = torch.sin(2 * math.pi * 1000 * torch.arange(16000, dtype=torch.float64) / 16000)
    assert float((y[200:-200] - ref[200:-200]).abs().max()) < 1e-3  # passband kept, no shift
    assert dsp.sinc_resample(x[:7], 44100, 16000).shape == (3,)
    stereo = torch.stack([x, -x])
    assert torch.allclose(dsp.sinc_resample(stereo, 44100, 16000)[1], -y)


def test_filterbank_norms_and_audio_finder(tmp_path):
    area = dsp.slaney_mel_filterbank(257, 40, 16000, norm="slaney")
    unit = dsp.slaney_mel_filterbank(257, 40, 16000, norm="sum")
    peak = dsp.slaney_mel_filterbank(257, 40, 16000, norm=None)
    assert torch.allclose(unit.sum(0), torch.ones(40), atol=1e-5) and float(peak.max()) == pytest.approx(1, abs=0.05)
    assert torch.allclose(area / area.sum(0), unit, atol=1e-5)  # same triangles, other scaling
    with pytest.raises(ValueError, match="norm='area'"):
        dsp.slaney_mel_filterbank(257, 40, 16000, norm="area")
    for name in ("a.wav", "sub/b.FLAC", "._c.wav", "d.txt", "e.ogg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in dsp.find_audio_files(tmp_path)] == ["a.wav", "e.ogg",
                                                                                              "sub/b.FLAC"]
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        dsp.find_audio_files(tmp_path / "none")
