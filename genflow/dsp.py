"""Signal-processing building blocks shared by codecs, metrics and plots: mel filterbanks, STFT,
torchaudio's sinc resampler in plain torch, and the one audio-file finder.

Filterbanks are returned as (n_freqs, n_mels) matrices, so ``spec.T @ fb`` maps a (F, T) spectrogram to
(T, n_mels). Three mel scales are in use, each pinned by a parity test:

- ``slaney_mel_filterbank``: Slaney scale (librosa's default: linear below 1 kHz, log above), with
  ``norm="slaney"`` (librosa's area norm; PANNs), ``"sum"`` (each filter sums to 1; mel codec, plots,
  probe, music metrics) or ``None``;
- ``htk_mel_filterbank``: HTK 2595 log10(1 + f/700), no norm, float32 as torchaudio's ``melscale_fbanks``
  (DashengTokenizer);
- ``vggish_mel_filterbank``: HTK 1127 ln(1 + f/700) evaluated on the mel axis, DC row zeroed, as VGGish's
  ``mel_features`` (VGGish, mel-stats).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

# Every extension libsndfile (through genflow.audio.load_audio) reads that we look for in folders.
AUDIO_EXTENSIONS = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".caf", ".w64", ".rf64", ".au",
)


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted audio files under ``folder`` (recursive; hidden files such as ``._x.wav`` are skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"audio folder {str(root)!r} does not exist or is not a folder; expected a directory of audio "
            f"files ({', '.join(AUDIO_EXTENSIONS)})"
        )
    return [p for p in sorted(root.rglob("*"))
            if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()]


# ---------------------------------------------------------------------------------------------------- mel


def _slaney_hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: 3 mels per 200 Hz below 1 kHz, log-spaced (27 mels per factor 6.4) above."""
    return torch.where(f >= 1000.0, 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0),
                       3.0 * f / 200.0)


def _slaney_mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m >= 15.0, 1000.0 * torch.exp(math.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)


def _triangles(freqs: torch.Tensor, f_pts: torch.Tensor) -> torch.Tensor:
    """(n_freqs, n_mels) triangles rising from f_pts[i] to f_pts[i+1] and falling to f_pts[i+2]."""
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def slaney_mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
    norm: str | None = "sum",
) -> torch.Tensor:
    """Slaney-scale triangular mel filters over ``n_freqs`` bins from 0 to sample_rate/2, (n_freqs, n_mels).

    ``norm="slaney"`` scales each filter by 2 / bandwidth (librosa's ``filters.mel`` default, what PANNs
    and torchlibrosa use); ``norm="sum"`` makes each filter sum to 1, so a mel bin is the weighted mean
    STFT magnitude of its band and its level does not depend on ``n_fft`` (a band narrower than a bin stays
    0); ``None`` leaves peak-1 triangles.
    """
    if norm not in ("slaney", "sum", None):
        raise ValueError(f"norm={norm!r}: expected 'slaney' (librosa's area norm), 'sum' (unit sum) or None")
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    lim = _slaney_hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    f_pts = _slaney_mel_to_hz(torch.linspace(float(lim[0]), float(lim[1]), n_mels + 2, dtype=torch.float64))
    fb = _triangles(freqs, f_pts)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:] - f_pts[:-2]))[None, :]
    elif norm == "sum":
        fb = fb / fb.sum(0, keepdim=True).clamp_min(1e-12)
    return fb.float()


def htk_mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """HTK triangular mel filterbank, no norm, (n_freqs, n_mels), in float32 as torchaudio's ``melscale_fbanks``.

    Computed in float32 on purpose: DashengTokenizer's parity with the official (torchaudio) code is to 1e-6.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    return _triangles(all_freqs, f_pts)


def vggish_mel_filterbank(
    n_freqs: int = 257, n_mels: int = 64, sample_rate: int = 16000, f_min: float = 125.0, f_max: float = 7500.0
) -> torch.Tensor:
    """(n_freqs, n_mels) HTK-mel weights of VGGish's ``mel_features.spectrogram_to_mel_matrix`` (DC row zeroed).

    Unlike the other two, the triangles are evaluated on the mel axis (edges equally spaced in mel).
    """
    hz_to_mel = lambda f: 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)  # noqa: E731
    bins_mel = hz_to_mel(torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64))
    edges = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    lower = (bins_mel[:, None] - lo) / (mid - lo)
    upper = (hi - bins_mel[:, None]) / (hi - mid)
    w = torch.clamp(torch.minimum(lower, upper), min=0.0)
    w[0] = 0.0
    return w.float()


# ---------------------------------------------------------------------------------------------------- STFT


def stft_magnitude(
    wav: torch.Tensor, n_fft: int, hop: int, *, center: bool = True, pad_mode: str = "reflect",
    power: float = 1.0, min_length: bool = False,
) -> torch.Tensor:
    """(..., N) waveform -> (..., n_fft // 2 + 1, frames) |STFT| ** power with a periodic Hann window.

    ``min_length=True`` zero-pads clips shorter than one frame to ``n_fft`` samples first, so every clip
    gives at least one frame.
    """
    if min_length and wav.shape[-1] < n_fft:
        wav = torch.nn.functional.pad(wav, (0, n_fft - wav.shape[-1]))
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, window=window, center=center, pad_mode=pad_mode, return_complex=True).abs()
    return spec if power == 1.0 else spec**power


# ---------------------------------------------------------------------------------------------------- resampling


def _sinc_kernel(
    orig: int, new: int, width_zc: int, rolloff: float, dtype: torch.dtype, beta: float | None, transform: bool
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel (new, 1, taps) for rates already divided by their gcd (Hann, or Kaiser
    with ``beta``); ``transform``: built as ``torchaudio.transforms.Resample`` builds it (float64, then float32)."""
    base = min(orig, new) * rolloff  # cutoff, in units of the lower rate's cycles per gcd-sample
    width = math.ceil(width_zc * orig / base)  # taps each side, in input samples
    idx = torch.arange(-width, width + orig, dtype=torch.float64 if transform else dtype)[None, None] / orig
    # (new, 1, taps): output phase - input position. The transform's phases are int / int, so default float32.
    phase = torch.arange(0, -new, -1, dtype=None if transform else dtype)[:, None, None] / new
    t = phase + idx
    t = (t * base).clamp(-width_zc, width_zc)
    if beta is None:
        window = torch.cos(t * math.pi / width_zc / 2) ** 2
    else:
        b = torch.tensor(float(beta))  # float32, as torchaudio builds it
        window = torch.i0(b * torch.sqrt(1 - (t / width_zc) ** 2)) / torch.i0(b)
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernel = kernel * (window * (base / orig))  # same rounding order as torchaudio
    return (kernel.float() if transform else kernel), width


def sinc_resample(
    wav: torch.Tensor, orig_sr: int, target_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
    kaiser_beta: float | None = None, transform_kernel: bool = False,
) -> torch.Tensor:
    """Resample (..., N) like ``torchaudio.functional.resample``: its defaults give its Hann-windowed sinc,
    ``kaiser_beta`` its ``sinc_interp_kaiser`` with that beta; ``transform_kernel`` builds the kernel as
    ``torchaudio.transforms.Resample`` does (float64, then float32) rather than as the function does.

    Used to follow toolkits that resample with torchaudio (audioldm_eval: defaults; fadtk: Kaiser, width 64);
    output length is ceil(N * target_sr / orig_sr); the kernel is built in the waveform's dtype, as torchaudio does.
    """
    if orig_sr == target_sr:
        return wav
    if wav.shape[-1] == 0:
        raise ValueError("cannot resample an empty waveform (shape[-1] == 0); give at least one sample")
    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    kernel, width = _sinc_kernel(orig, new, lowpass_filter_width, rolloff, wav.dtype, kaiser_beta, transform_kernel)
    lead, n = wav.shape[:-1], wav.shape[-1]
    x = torch.nn.functional.pad(wav.reshape(-1, n), (width, width + orig))  # (B, N + 2 width + orig)
    y = torch.nn.functional.conv1d(x[:, None], kernel.to(wav.device), stride=orig)  # (B, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : math.ceil(new * n / orig)]
    return y.reshape(*lead, y.shape[-1])
