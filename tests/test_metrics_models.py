"""VGGish and PANNs CNN14-16k: strict loading of official key names, front ends, shapes, resampling."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from genflow.dsp import slaney_mel_filterbank
from genflow.metrics.embeddings import embed_files, load_backend
from genflow.metrics.panns import load_panns
from genflow.metrics.vggish import load_vggish, vggish_examples, vggish_log_mel


def _sine(freq, seconds, sr):
    return torch.sin(2 * math.pi * freq * torch.arange(int(seconds * sr)) / sr) * 0.5


def _official_vggish_state_dict(width=8, hidden=32):
    """torchvggish's published key names (vggish-10086976.pth) at reduced widths (real: 64..512, 4096)."""
    g = torch.Generator().manual_seed(0)
    shapes = {}
    c = [1, width, width, width, width, width, width]
    for n, idx in enumerate([0, 3, 6, 8, 11, 13]):
        shapes[f"features.{idx}.weight"], shapes[f"features.{idx}.bias"] = (c[n + 1], c[n], 3, 3), (c[n + 1],)
    for idx, (fin, fout) in zip([0, 2, 4], [(width * 6 * 4, hidden), (hidden, hidden), (hidden, 128)]):
        shapes[f"embeddings.{idx}.weight"], shapes[f"embeddings.{idx}.bias"] = (fout, fin), (fout,)
    return {k: torch.randn(s, generator=g) * (0.5 / math.sqrt(math.prod(s[1:]) or 1)) for k, s in shapes.items()}


def test_vggish_front_end_frames_and_mel_peak():
    wav = _sine(1000.0, 2.0, 16000)
    logmel = vggish_log_mel(wav)
    assert logmel.shape == (1 + (32000 - 400) // 160, 64)
    # HTK mel 125..7500 Hz: 1 kHz falls in band ~ (mel(1000)-mel(125)) / (mel(7500)-mel(125)) * 65 - 1.
    mel = lambda f: 1127 * math.log1p(f / 700)  # noqa: E731
    expected = (mel(1000) - mel(125)) / (mel(7500) - mel(125)) * 65 - 1
    assert abs(int(logmel.mean(0).argmax()) - expected) <= 1
    assert vggish_examples(wav).shape == (2, 1, 96, 64)  # 2 s -> two 0.96 s examples
    assert vggish_examples(wav[:4000]).shape == (1, 1, 96, 64)  # short clips padded to one example


def test_vggish_strict_official_keys(tmp_path):
    sd = _official_vggish_state_dict()
    torch.save(sd, tmp_path / "vggish.pth")
    model = load_vggish(tmp_path / "vggish.pth")
    assert torch.equal(model.embeddings[4].weight, sd["embeddings.4.weight"])
    emb = model.embed(_sine(440.0, 2.0, 16000))
    assert emb.shape == (2, 128) and torch.isfinite(emb).all() and (emb < 0).any()  # no final ReLU
    bad = dict(sd)
    bad["embeddings.6.weight"] = bad.pop("embeddings.4.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing keys .*embeddings.4.weight"):
        load_vggish(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="vggish-10086976.pth"):
        load_vggish(tmp_path / "absent.pth")


def _official_panns_state_dict(chans=(1, 4, 8, 8, 8, 16, 32)):
    """PANNs Cnn14_16k key names (Cnn14_16k_mAP=0.438.pth, under "model"); real widths 64..2048."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    n = torch.arange(512, dtype=torch.float64)
    k = torch.arange(257, dtype=torch.float64)[:, None]
    window = torch.hann_window(512, dtype=torch.float64)
    sd["spectrogram_extractor.stft.conv_real.weight"] = (torch.cos(2 * math.pi * k * n / 512) * window)[:, None]
    sd["spectrogram_extractor.stft.conv_imag.weight"] = (-torch.sin(2 * math.pi * k * n / 512) * window)[:, None]
    sd["logmel_extractor.melW"] = slaney_mel_filterbank(257, 64, 16000, 50, 8000, norm="slaney") * 1.01
    bn = lambda p, c: {f"{p}.weight": torch.ones(c), f"{p}.bias": torch.zeros(c), f"{p}.running_mean": torch.zeros(c),  # noqa: E731
                       f"{p}.running_var": torch.ones(c), f"{p}.num_batches_tracked": torch.tensor(0)}
    sd.update(bn("bn0", 64))
    for i in range(6):
        cin, cout = chans[i], chans[i + 1]
        sd[f"conv_block{i + 1}.conv1.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2 / (9 * cin))
        sd[f"conv_block{i + 1}.conv2.weight"] = torch.randn(cout, cout, 3, 3, generator=g) * math.sqrt(2 / (9 * cout))
        sd.update(bn(f"conv_block{i + 1}.bn1", cout))
        sd.update(bn(f"conv_block{i + 1}.bn2", cout))
    d = chans[-1]
    sd["fc1.weight"], sd["fc1.bias"] = torch.randn(d, d, generator=g) / math.sqrt(d), torch.zeros(d)
    sd["fc_audioset.weight"], sd["fc_audioset.bias"] = torch.randn(527, d, generator=g) / math.sqrt(d), torch.zeros(527)
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def test_panns_strict_official_keys_and_shapes(tmp_path):
    sd = _official_panns_state_dict()
    torch.save({"model": sd, "iteration": 0}, tmp_path / "cnn14.pth")
    model = load_panns(tmp_path / "cnn14.pth")
    assert torch.equal(model.logmel_extractor.melW, sd["logmel_extractor.melW"])  # filterbank from the file
    out = model.embed(_sine(440.0, 1.5, 16000))
    assert out["embedding"].shape == (1, 32) and out["logits"].shape == (527,)
    assert (out["embedding"] >= 0).all() and torch.isfinite(out["logits"]).all()
    assert model.log_mel(torch.zeros(1, 16000)).shape == (1, 1, 101, 64)
    bad = dict(sd)
    bad["spectrogram_extractor.stft.conv_real.weight"] = bad["spectrogram_extractor.stft.conv_real.weight"][:, :, :256]
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="Cnn14_16k"):
        load_panns(tmp_path / "bad.pth")
    extra = {**sd, "head.weight": torch.zeros(1)}
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected keys .*head.weight"):
        load_panns(tmp_path / "extra.pth")


def test_slaney_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000).T
    assert np.allclose(slaney_mel_filterbank(257, 64, 16000, 50, 8000, norm="slaney").numpy(), ref, atol=1e-6)


def test_backend_resamples_files(tmp_path):
    tone = _sine(700.0, 2.0, 44100).numpy()
    sf.write(tmp_path / "a44k.wav", tone, 44100, subtype="FLOAT")
    sf.write(tmp_path / "a16k.wav", _sine(700.0, 2.0, 16000).numpy(), 16000, subtype="FLOAT")
    backend = load_backend("mel-stats")
    emb = embed_files(backend, {"a": tmp_path / "a44k.wav", "b": tmp_path / "a16k.wav", "c": tmp_path / "no.wav"})
    assert emb.ids == ["a", "b"] and list(emb.failures) == ["c"]
    assert emb.embeddings[0].shape == emb.embeddings[1].shape == (2, 128)
    # Same tone at 44.1 and 16 kHz: the log-mel means under 1.8 kHz (where the tone's energy is) agree
    # once both are at 16 kHz; near-silent high bands only carry float32 phase-rounding noise.
    assert torch.allclose(emb.embeddings[0][:, :24], emb.embeddings[1][:, :24], atol=0.01)
    with pytest.raises(ValueError, match="unknown embedding backend"):
        load_backend("openl3")


def test_panns_backend_kl_and_is_through_folders(tmp_path):
    from genflow.metrics.folders import evaluate_generation

    sd = _official_panns_state_dict()
    sd["fc_audioset.weight"] = sd["fc_audioset.weight"] * 0.002  # O(1) logits: softmax not saturated
    torch.save({"model": sd}, tmp_path / "cnn14.pth")
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir(), gen.mkdir()
    for i, f in enumerate([300.0, 900.0, 2000.0]):
        sf.write(ref / f"{i}.wav", _sine(f, 1.0, 16000).numpy(), 16000)
        sf.write(gen / f"{i}.wav", _sine(f * 1.5, 1.0, 16000).numpy(), 16000)
    sf.write(gen / "extra.wav", _sine(500.0, 1.0, 16000).numpy(), 16000)  # no reference: not in KL
    res = evaluate_generation(gen, ref, backend=f"panns:{tmp_path / 'cnn14.pth'}", progress=False,
                               allow_small_fd=True)
    m = res["metrics"]
    assert res["backend"] == "panns-cnn14-16k" and res["n_kl_pairs"] == 3
    assert m["is_mean"] >= 1.0 and m["fd"] > 0
    same = evaluate_generation(ref, ref, backend=f"panns:{tmp_path / 'cnn14.pth'}", progress=False,
                               allow_small_fd=True)["metrics"]
    # Identical clips: FD 0 and KL ~0 (slightly negative: the 1e-6 inside the log, as in audioldm_eval).
    assert same["fd"] == pytest.approx(0.0, abs=1e-6) and -1e-3 < same["kl_softmax"] <= 0
    assert m["kl_softmax"] > same["kl_softmax"]
    # The sigmoid "KL" is no divergence (sigmoid outputs do not sum to 1): it may go either way, even < 0.
    assert math.isfinite(m["kl_sigmoid"]) and m["kl_sigmoid"] != pytest.approx(same["kl_sigmoid"])
