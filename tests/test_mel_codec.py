"""MelCodec: frame arithmetic, round-trip quality on real speech, determinism, masks, save/load, load_codec."""

import json
import math
import os

import numpy as np
import pytest
import torch

from genflow.audio import load_audio, save_audio
from genflow.codecs import MelCodec, MelCodecConfig, decode_latent, encode_audio, encode_batch, load_codec
from genflow.codecs.mel_vocos import MelVocosConfig

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SPEECH = os.path.join(FIXTURES, "audio", "speech.wav")
DASHENG_TINY = os.path.join(FIXTURES, "dasheng-tiny-a")


@pytest.fixture(scope="module")
def mel() -> MelCodec:
    return load_codec("mel")


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return load_audio(SPEECH, 16000)[0]  # (N,) 3.17 s


def _log_mel_l1(codec: MelCodec, latent: torch.Tensor, audio: torch.Tensor) -> float:
    """Mean |log-mel difference| in nats between a latent and the re-encoded audio."""
    return ((codec.encode(audio) - latent).abs().mean() * codec.config.log_std).item()


# ---------------------------------------------------------------- frame arithmetic


SPECS = [("mel:", 640), ("mel:n_mels=80,frame_rate=50,", 320), ("mel:frame_rate=100,", 160)]


@pytest.mark.parametrize("spec,hop", SPECS)
def test_num_frames_and_shapes(spec, hop):
    codec = load_codec(spec + "griffin_lim_iters=1")  # output length does not depend on the iterations
    assert codec.hop_length == hop and codec.num_frames(10 * hop + hop - 1) == 10
    for n in (hop, hop + 1, 2 * hop - 1, 2 * hop, 7 * hop + 3, 16001):
        latent = codec.encode(torch.randn(2, n) * 0.1)
        assert latent.shape == (2, n // hop, codec.latent_dim) == (2, codec.num_frames(n), codec.latent_dim)
        assert torch.isfinite(latent).all()
        audio = codec.decode(latent)
        assert audio.shape == (2, hop * (n // hop))
    assert codec.encode(torch.zeros(1, hop - 1)).shape == (1, 0, codec.latent_dim)
    assert codec.decode(torch.zeros(1, 0, codec.latent_dim)).shape == (1, 0)


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="whole hop"):
        MelCodecConfig(frame_rate=33)
    with pytest.raises(ValueError, match="did you mean 'n_mels'"):
        load_codec("mel:n_mel=80")
    with pytest.raises(ValueError, match="mel-vocos config: unknown key 'dmi' \\(did you mean 'dim'"):
        MelVocosConfig.from_dict({"model_type": "mel-vocos", "dmi": 64})
    with pytest.raises(ValueError, match="not a valid"):
        load_codec("mel:n_mels=eighty")
    with pytest.raises(ValueError, match="key=value"):
        load_codec("mel:n_mels")
    c = load_codec("mel:n_mels=128, frame_rate=50, griffin_lim_iters=64, n_fft=1024, f_max=none")
    assert (c.latent_dim, c.frame_rate, c.config.griffin_lim_iters, c.config.fft_size) == (128, 50.0, 64, 1024)
    assert c.config.f_max is None and isinstance(c.config.n_mels, int)


def test_filterbank_matches_librosa_slaney_shapes():
    librosa = pytest.importorskip("librosa")
    codec = MelCodec(n_mels=40, frame_rate=50)  # n_fft 1280
    ref = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=1280, n_mels=40, norm=None, htk=False)).T.double()
    ref = ref / ref.sum(0, keepdim=True)  # ours: each filter sums to 1
    torch.testing.assert_close(codec.mel_fb.double(), ref, atol=2e-5, rtol=1e-3)


def test_sine_lands_in_its_band():
    codec = MelCodec()
    t = torch.arange(16000) / 16000
    for freq in (250.0, 1000.0, 4000.0):
        latent = codec.encode(0.5 * torch.sin(2 * math.pi * freq * t)[None])  # (1, 25, 64)
        band = int(latent[0, 5:-5].mean(0).argmax())
        assert codec.mel_fb[round(freq * codec.config.fft_size / 16000), band] > 0  # the bin is in that filter


# ---------------------------------------------------------------- quality, determinism, masks


def test_round_trip_real_speech(mel, speech):
    speech = speech[:32000]  # the first 2 s ("That feature is not av-"): keeps the test fast
    latent = mel.encode(speech[None])  # (1, 50, 64)
    # Latents are O(1) on speech (the fixed normalisation constants were measured on Asterisk prompts).
    assert abs(latent.mean().item()) < 1.0 and 0.4 < latent.std().item() < 1.6
    audio = mel.decode(latent)  # (1, 32000)
    # Measured: 0.15 nats with 32 iterations, 0.60 with none (random phase only); 0.25 leaves a margin.
    err = _log_mel_l1(mel, latent, audio)
    assert err < 0.25, f"log-mel L1 {err:.3f} nats"
    assert _log_mel_l1(mel, latent, mel.decode(latent, griffin_lim_iters=0)) > 2 * err  # GL does the work
    # The waveform's loudness follows the input's (magnitude normalisation is undone correctly).
    ratio = audio.pow(2).mean().sqrt() / speech[: audio.shape[-1]].pow(2).mean().sqrt()
    assert 0.7 < ratio.item() < 1.3


def test_decode_with_the_input_phase(speech):
    fine = load_codec("mel:n_mels=128,frame_rate=50")
    speech = speech[:32000]
    latent = fine.encode(speech[None])  # (1, 100, 128)
    own = fine.decode_with_phase(latent, speech[None])[0]
    assert own.shape == (32000,)
    # The speech's own phase with its mel magnitude gives it back closely; Griffin-Lim's phase does not.
    corr = float(torch.corrcoef(torch.stack([own, speech]))[0, 1])
    assert corr > 0.9, corr
    gl = fine.decode(latent)[0]
    assert float(torch.corrcoef(torch.stack([gl, speech]))[0, 1]) < 0.5
    # A reference shorter than the latents is padded; a silent one gives phase 0, not NaN.
    assert torch.isfinite(fine.decode_with_phase(latent, torch.zeros(1, 1000))).all()
    with pytest.raises(ValueError, match=r"reference audio \(B=1, N\)"):
        fine.decode_with_phase(latent, speech)
    from genflow.codecs.base import Codec

    with pytest.raises(ValueError, match="phase='decoder'"):
        Codec().decode_with_phase(latent, speech[None])


def test_deterministic(mel, speech):
    x = speech[None, :16000]
    z1, z2 = mel.encode(x), mel.encode(x.clone())
    assert torch.equal(z1, z2)
    assert torch.equal(mel.decode(z1), mel.decode(z2))
    assert torch.equal(MelCodec().decode(z1), mel.decode(z1))  # a fresh instance too (seeded phase)


def test_mask_zeroes_padding_and_batches_match_single(mel, speech):
    a, b = speech[:20000], speech[25000:33000]
    padded = torch.stack([a, torch.cat([b, torch.randn(12000)])])  # garbage past b's end
    mask = torch.arange(20000)[None] < torch.tensor([[20000], [8000]])
    batch = mel.encode(padded, mask)
    alone = mel.encode(b[None])
    torch.testing.assert_close(batch[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[0], mel.encode(a[None])[0], atol=1e-5, rtol=0)
    # without the mask the garbage leaks into b's frames
    assert not torch.allclose(mel.encode(padded)[1, : alone.shape[1]], alone[0], atol=1e-3)
    out = encode_batch(mel, [a, b, speech])
    assert [o.shape[0] for o in out] == [mel.num_frames(n) for n in (20000, 8000, speech.numel())]
    torch.testing.assert_close(out[1], alone[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- save / load / dispatch


def test_save_load_pretrained(tmp_path, speech):
    codec = MelCodec(n_mels=80, frame_rate=50, griffin_lim_iters=4)
    assert len(codec.state_dict()) == 0  # weight-free
    codec.save_pretrained(tmp_path / "mel80")
    cfg = json.loads((tmp_path / "mel80" / "config.json").read_text())
    assert cfg["model_type"] == "genflow-mel" and cfg["n_mels"] == 80 and cfg["frame_rate"] == 50
    assert sorted(os.listdir(tmp_path / "mel80")) == ["config.json"]
    for loaded in (MelCodec.from_pretrained(tmp_path / "mel80"), load_codec(str(tmp_path / "mel80"))):
        assert isinstance(loaded, MelCodec) and loaded.config == codec.config and not loaded.training
        x = speech[None, :8000]
        assert torch.equal(loaded.encode(x), codec.encode(x))
        assert torch.equal(loaded.decode(codec.encode(x)), codec.decode(codec.encode(x)))


def test_load_codec_dispatch(tmp_path, monkeypatch):
    codec = load_codec("mel", device="cpu")
    assert isinstance(codec, MelCodec) and not codec.training and codec.config == MelCodecConfig()
    # a DashengTokenizer folder (the tiny parity fixture) dispatches on model_type
    dasheng = load_codec(DASHENG_TINY)
    assert type(dasheng).__name__ == "DashengTokenizer" and not dasheng.training
    assert all(not p.requires_grad for p in dasheng.parameters())
    # names and hub ids are downloaded (stubbed: no network in tests), then dispatched on model_type like a folder
    from genflow import hub

    MelCodec(n_mels=80).save_pretrained(tmp_path / "mel80")
    snapshots = {"mispeech/dashengtokenizer": DASHENG_TINY, "someone/my-mel": tmp_path / "mel80"}
    calls = []

    def fake_download(repo, revision=None, allow_patterns=None):
        calls.append((repo, revision, tuple(allow_patterns)))
        return str(snapshots[repo])

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    assert type(load_codec("dasheng")).__name__ == "DashengTokenizer"
    assert type(load_codec("mispeech/dashengtokenizer")).__name__ == "DashengTokenizer"
    assert load_codec("someone/my-mel@v2").config.n_mels == 80  # a hub id is not assumed to be DashengTokenizer
    assert [c[:2] for c in calls] == [("mispeech/dashengtokenizer", None), ("mispeech/dashengtokenizer", None),
                                      ("someone/my-mel", "v2")]
    assert hub.parse_ref("someone/vaes@v1:vae") == ("someone/vaes", "v1", "vae")
    # errors list the valid forms
    for bad in ("melody", "./no/such/folder", "a/b/c"):
        with pytest.raises(ValueError, match="Valid forms: 'mel'"):
            load_codec(bad)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "encodec"}')
    with pytest.raises(ValueError, match="model_type 'encodec'"):
        load_codec(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_codec(tmp_path / "empty")


# ---------------------------------------------------------------- waveform helpers


def test_encode_audio_from_files_and_arrays(tmp_path, mel, speech):
    from_file = encode_audio(mel, SPEECH)
    assert torch.equal(from_file, mel.encode(speech[None])[0])
    # 44.1 kHz stereo, as (C, N) tensor, soundfile-style (N, C) array and a file: all resampled + downmixed
    t = np.arange(44100) / 44100
    st = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    a = encode_audio(mel, torch.from_numpy(st), sample_rate=44100)
    b = encode_audio(mel, st.T.copy(), sample_rate=44100)
    save_audio(tmp_path / "st.wav", torch.from_numpy(st), 44100, subtype="FLOAT")
    c = encode_audio(mel, tmp_path / "st.wav")
    assert a.shape == (25, 64) and torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="too short.*640 samples"):
        encode_audio(mel, torch.zeros(639))
    with pytest.raises(ValueError, match="drop sample_rate"):
        encode_audio(mel, SPEECH, sample_rate=16000)
    with pytest.raises(ValueError, match="NaN"):
        encode_audio(mel, torch.tensor([float("nan")] * 1000))
    with pytest.raises(ValueError, match="shape"):
        encode_audio(mel, torch.zeros(40, 40))


def test_decode_latent_resamples(mel, speech):
    latent = encode_audio(mel, speech[:16000])  # (25, 64)
    assert decode_latent(mel, latent).shape == (16000,)
    assert decode_latent(mel, latent[None].repeat(2, 1, 1), sample_rate=22050).shape == (2, 22050)
    with pytest.raises(ValueError, match=r"\(T, 64\)"):
        decode_latent(mel, latent[:, :10])
