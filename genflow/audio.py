"""Audio files in and out: load to float32 mono at any rate, resample, save WAV/FLAC atomically.

Everything goes through soundfile (libsndfile: WAV, FLAC, OGG, MP3, AIFF, ...) and soxr; no torchaudio.
Bad input raises ``AudioError`` (a ``ValueError``) whose message names the file, what was expected and how
to fix it; a missing file raises ``AudioFileNotFoundError``, which is both an ``AudioError`` and a
``FileNotFoundError``, so callers may catch either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch

_CONVERT_HINT = "convert it with e.g. `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"
_SUBTYPES = {"wav": ("PCM_16", "PCM_24", "PCM_32", "FLOAT"), "flac": ("PCM_16", "PCM_24")}


class AudioError(ValueError):
    """A file or waveform that cannot be used as audio (empty, corrupt, unsupported, non-finite)."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist."""


class AudioWriteError(OSError):
    """An audio file that cannot be written (read-only or full disk, a path that cannot be a folder)."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file: read without decoding the samples."""

    path: str
    duration: float  # seconds
    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    format: str  # e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "FLOAT"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioFileNotFoundError(
            f"audio file {path!r} not found; expected an existing WAV/FLAC/OGG/MP3 file, check the path"
        )
    if not os.path.isfile(path):
        raise AudioError(f"{path!r} is not a file; expected an audio file (WAV/FLAC/OGG/MP3), not a folder")
    if os.path.getsize(path) == 0:
        raise AudioError(f"audio file {path!r} is empty (0 bytes); expected encoded audio, re-create or "
                         "remove it")


def _decode_error(path: str, err: Exception) -> AudioError:
    return AudioError(
        f"cannot decode {path!r} ({err}); expected a file libsndfile reads (WAV, FLAC, OGG, MP3, AIFF); "
        f"if it is corrupt re-create it, otherwise {_CONVERT_HINT}"
    )


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Duration, rate and channels of an audio file from its header (cheap, no decoding)."""
    path = os.fspath(path)
    _check_file(path)
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise _decode_error(path, e) from e
    return AudioInfo(path, info.frames / info.samplerate, info.samplerate, info.channels, info.frames,
                     info.format, info.subtype)


def read_audio_channels(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read any soundfile-readable file as float32 (channels, N) at its own rate; never empty, never NaN."""
    path = os.fspath(path)
    _check_file(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # (N, channels)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise _decode_error(path, e) from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path!r} has no samples (zero length); expected at least one frame, "
                         "re-create or remove it")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"audio file {path!r} contains {bad} NaN/inf samples; expected finite samples, "
                         "re-export it (float WAVs from a diverged model often carry NaN)")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)  # (channels, N)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read any soundfile-readable file as a float32 mono (N,) tensor, resampled to ``sample_rate`` if given.

    Multichannel audio is downmixed by the mean over channels; resampling uses soxr (high quality).
    Returns ``(wav, rate)`` where ``rate`` is ``sample_rate`` if given, else the file's own rate.
    """
    data, sr = read_audio_channels(path)  # (channels, N)
    wav = data.mean(0) if data.shape[0] > 1 else data[0]  # (N,)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav.contiguous(), int(sr)


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample (..., N) from ``orig_sr`` to ``target_sr`` Hz with soxr (HQ); same dtype and device, no grad.

    The output has ``round(N * target_sr / orig_sr)`` samples, halves rounded up (soxr's length rule).
    """
    for name, r in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if int(r) != r or r <= 0:
            raise ValueError(f"{name}={r!r}: expected a positive integer sample rate in Hz")
    if orig_sr == target_sr:
        return wav
    if wav.shape[-1] == 0:
        raise ValueError("cannot resample an empty waveform (shape[-1] == 0); give at least one sample")
    lead, n = wav.shape[:-1], wav.shape[-1]
    dtype = wav.dtype if wav.dtype in (torch.float32, torch.float64) else torch.float32
    x = wav.detach().to("cpu", dtype).reshape(-1, n).T.contiguous().numpy()  # (N, channels)
    y = soxr.resample(x, int(orig_sr), int(target_sr), quality="HQ")  # (N', channels)
    out = torch.from_numpy(np.ascontiguousarray(y.T)).reshape(*lead, y.shape[0])
    return out.to(wav.device)


def save_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int,
               subtype: str | None = None) -> None:
    """Write (N,) mono or (C, N) audio in [-1, 1] as WAV or FLAC (by extension), atomically.

    ``subtype`` defaults to 16-bit PCM ("PCM_16"); WAV also takes "PCM_24", "PCM_32" and "FLOAT" (32-bit
    float, no clipping), FLAC "PCM_24". PCM output is clipped to [-1, 1]. Parent folders are created and the
    file is written to a temporary name in the same folder, then renamed, so readers never see half a file.
    A write that fails raises ``AudioWriteError`` (an ``OSError``) naming the file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in _SUBTYPES:
        raise ValueError(f"cannot save {path!r}: expected a .wav or .flac file name, got extension {ext!r}")
    subtype = (subtype or "PCM_16").upper()
    if subtype not in _SUBTYPES[ext]:
        raise ValueError(f"subtype {subtype!r} is not valid for .{ext}; expected one of {_SUBTYPES[ext]}")
    x = wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if x.ndim == 2:
        x = x.T  # (C, N) -> (N, C) for soundfile
    elif x.ndim != 1:
        raise ValueError(f"cannot save {path!r}: expected (N,) or (C, N) audio, got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"cannot save {path!r}: the waveform has NaN/inf samples; clean it first")
    if subtype != "FLOAT":
        x = np.clip(x, -1.0, 1.0)
    from genflow.hub import atomic_write

    try:
        with atomic_write(path) as tmp:
            sf.write(tmp, x, int(sample_rate), subtype=subtype, format=ext.upper())
    except (OSError, RuntimeError) as e:  # read-only or full disk, a file where a folder should be (libsndfile)
        raise AudioWriteError(f"cannot write {path!r} ({type(e).__name__}: {e}); check that its folder can be "
                              "created and written to and that the disk has space") from None
