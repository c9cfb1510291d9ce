"""genflow.audio: bad files fail clearly, downmix/resample are right, saves round-trip and are atomic."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from genflow.audio import AudioError, audio_info, load_audio, resample, save_audio

SPEECH = os.path.join(os.path.dirname(__file__), "fixtures", "audio", "speech.wav")


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(x.numel(), dtype=x.dtype)).abs()
    return float(spec.argmax()) * sr / x.numel()


# ---------------------------------------------------------------- bad files


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.wav"
    for fn in (load_audio, audio_info):
        with pytest.raises(FileNotFoundError, match="nope.wav.*not found"):
            fn(path)
        with pytest.raises(AudioError):  # also catchable as AudioError / ValueError
            fn(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav.*0 bytes"):
        load_audio(path)
    with pytest.raises(AudioError, match="0 bytes"):
        audio_info(path)


@pytest.mark.parametrize("name", ["corrupt.wav", "garbage.xyz", "notes.txt"])
def test_corrupt_or_unsupported_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"RIFF\x00\x01garbage, not audio at all" * 10)
    with pytest.raises(AudioError, match=f"cannot decode .*{name}.*ffmpeg"):
        load_audio(path)
    with pytest.raises(AudioError, match="cannot decode"):
        audio_info(path)


def test_truncated_wav(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _sine(440, 16000, 0.5), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(good.read_bytes()[:20])  # header cut mid-way
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)


def test_nan_samples_in_float_wav(tmp_path):
    x = _sine(440, 16000, 0.2)
    x[100] = np.nan
    x[200] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*2 NaN/inf"):
        load_audio(path)


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    assert os.path.getsize(path) > 0  # a valid header, no samples
    assert audio_info(path).frames == 0
    with pytest.raises(AudioError, match="zero.wav.*no samples"):
        load_audio(path)


# ---------------------------------------------------------------- decoding, downmix, resampling


def test_stereo_downmix_is_channel_mean(tmp_path):
    left, right = _sine(440, 16000, 0.25, 0.6), _sine(1000, 16000, 0.25, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    info = audio_info(path)
    assert (info.channels, info.sample_rate, info.frames) == (2, 16000, 4000)
    wav, sr = load_audio(path)
    assert sr == 16000 and wav.dtype == torch.float32 and wav.shape == (4000,)
    torch.testing.assert_close(wav, torch.from_numpy((left + right) / 2), atol=1e-6, rtol=0)


def test_load_resamples_and_keeps_frequency(tmp_path):
    path = tmp_path / "tone44k.flac"
    sf.write(path, _sine(1000, 44100, 1.0), 44100)
    wav, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and wav.shape == (16000,)
    assert abs(_peak_hz(wav, 16000) - 1000) < 2
    assert abs(wav[2000:-2000].abs().max().item() - 0.5) < 0.01  # gain kept (16-bit FLAC + HQ resampler)


def test_resample_tensor_shapes_and_frequency():
    x = torch.from_numpy(_sine(440, 44100, 1.0)).repeat(2, 3, 1)  # (2, 3, 44100)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 3, 16000) and y.dtype == torch.float32
    assert abs(_peak_hz(y[1, 2], 16000) - 440) < 2
    assert resample(x, 44100, 44100) is x
    for n, want in ((1001, 501), (999, 500), (7, 4)):  # round(n / 2), halves up
        assert resample(torch.zeros(n), 16000, 8000).shape == (want,)
    with pytest.raises(ValueError, match="positive integer"):
        resample(x, 0, 16000)


def test_real_speech_fixture():
    wav, sr = load_audio(SPEECH)
    info = audio_info(SPEECH)
    assert sr == info.sample_rate == 16000
    assert wav.shape == (info.frames,) and abs(info.duration - wav.numel() / sr) < 1e-9
    assert 0.05 < wav.abs().max() <= 1.0


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("ext,subtype,tol", [("wav", None, 1 / 32768), ("flac", None, 1 / 32768),
                                             ("wav", "FLOAT", 0.0), ("flac", "PCM_24", 1 / 2**23)])
def test_save_load_round_trip(tmp_path, ext, subtype, tol):
    wav = torch.from_numpy(_sine(300, 22050, 0.3, 0.8))
    path = tmp_path / "deep" / "er" / f"x.{ext}"  # parent folders are created
    save_audio(path, wav, 22050, subtype=subtype)
    back, sr = load_audio(path)
    assert sr == 22050 and back.shape == wav.shape
    assert (back - wav).abs().max().item() <= tol
    assert audio_info(path).subtype == (subtype or "PCM_16")
    assert os.listdir(path.parent) == [f"x.{ext}"]  # atomic: no temp file left behind


def test_save_clips_pcm_and_writes_channels(tmp_path):
    save_audio(tmp_path / "loud.wav", torch.tensor([2.0, -3.0, 0.5]), 8000)
    back, _ = load_audio(tmp_path / "loud.wav")
    assert back.max().item() == pytest.approx(1.0, abs=1e-4) and back.min().item() == -1.0
    save_audio(tmp_path / "st.wav", torch.zeros(2, 100), 8000)
    assert audio_info(tmp_path / "st.wav").channels == 2


def test_save_rejects_bad_input_and_leaves_no_temp(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\.wav or \.flac"):
        save_audio(tmp_path / "x.mp3", torch.zeros(10), 16000)
    with pytest.raises(ValueError, match="subtype 'FLOAT' is not valid for .flac"):
        save_audio(tmp_path / "x.flac", torch.zeros(10), 16000, subtype="float")
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "x.wav", torch.tensor([0.0, float("nan")]), 16000)
    save_audio(tmp_path / "y.wav", torch.full((10,), 0.5), 16000)
    before = (tmp_path / "y.wav").read_bytes()

    def failing_write(file, *args, **kwargs):  # a crash half-way through writing
        open(file, "wb").write(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_audio(tmp_path / "y.wav", torch.zeros(10), 16000)
    assert os.listdir(tmp_path) == ["y.wav"]  # no temp file left
    assert (tmp_path / "y.wav").read_bytes() == before  # the old file is intact


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "a.wav"
    save_audio(path, torch.full((50,), 0.25), 16000)
    save_audio(path, torch.full((80,), -0.5), 16000)
    back, _ = load_audio(path)
    assert back.shape == (80,) and back[0].item() == -0.5
