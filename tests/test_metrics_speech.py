"""Speech-enhancement metrics on known signals and on the real speech fixture."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from genflow.metrics.speech import align_pair, dnsmos, pesq_wb, si_sdr, speech_metrics, stoi

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def _speech_and_noise():
    speech, sr = sf.read(FIXTURES / "speech.wav", dtype="float32")
    noise, sr_n = sf.read(FIXTURES / "noise.wav", dtype="float32")
    assert sr == sr_n == 16000
    n = min(len(speech), len(noise))
    return torch.from_numpy(speech[:n]), torch.from_numpy(noise[:n])


def test_si_sdr_known_values():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(16000, generator=g)
    assert float(si_sdr(0.3 * ref, ref)) > 100  # a scaled copy is perfect
    noise = torch.randn(16000, generator=g)
    noise = noise - (noise @ ref) / (ref @ ref) * ref  # exactly orthogonal to the reference
    noise = noise * ref.norm() / noise.norm() * 10 ** (-10 / 20)  # 10 dB below the reference
    assert float(si_sdr(ref + noise, ref)) == pytest.approx(10.0, abs=0.05)
    batch = si_sdr(torch.stack([ref + noise, ref]), torch.stack([ref, ref]))
    assert batch.shape == (2,) and batch[1] > batch[0]


def test_pesq_stoi_clean_beats_noisy():
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    speech, noise = _speech_and_noise()
    noisy = speech + noise * (speech.norm() / noise.norm()) * 10 ** (-5 / 20)  # 5 dB SNR
    assert pesq_wb(speech, speech) > 4.4 > pesq_wb(noisy, speech)
    assert stoi(speech, speech) > 0.99 > stoi(noisy, speech)
    assert stoi(speech, speech, extended=True) > stoi(noisy, speech, extended=True)


def test_alignment_trims_and_warns():
    a, b = torch.zeros(100), torch.zeros(80)
    with pytest.warns(UserWarning, match="differ"):
        x, y = align_pair(a, b, name="clip")
    assert x.shape == y.shape == (80,)


def test_speech_metrics_resamples_to_16k():
    pytest.importorskip("pesq")
    soxr = pytest.importorskip("soxr")
    speech, _ = _speech_and_noise()
    up = torch.from_numpy(soxr.resample(speech.numpy(), 16000, 48000))
    out = speech_metrics(up, up, sample_rate=48000, with_dnsmos=False)
    assert out["pesq_wb"] > 4.4 and out["stoi"] > 0.99 and out["si_sdr"] > 50


def test_dnsmos_offline_on_speech():
    pytest.importorskip("speechmos")
    speech, noise = _speech_and_noise()
    clean = dnsmos(speech)
    assert set(clean) >= {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    assert all(1.0 <= clean[k] <= 5.0 for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"))
    noisy = dnsmos(speech + 2 * noise)
    assert clean["dnsmos_bak"] > noisy["dnsmos_bak"]  # background noise is what BAK rates
    assert np.isfinite(list(noisy.values())).all()
