"""Spectrogram pictures of waveforms, for TensorBoard, sample grids and evaluation reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genflow.dsp import slaney_mel_filterbank, stft_magnitude
from genflow.hub import atomic_write


def log_mel_db(wav: torch.Tensor, sample_rate: int, n_mels: int = 80, top_db: float = 80.0) -> np.ndarray:
    """(N,) waveform -> (n_mels, frames) log-mel power in dB, floored ``top_db`` under its peak."""
    wav = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
    n_fft = 1024 if sample_rate > 20000 else 512
    hop = n_fft // 4
    spec = stft_magnitude(wav, n_fft, hop, power=2.0, min_length=True)  # (freqs, frames)
    fb = slaney_mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).T  # (n_mels, freqs)
    db = 10.0 * torch.log10(torch.clamp(fb @ spec, min=1e-10))
    return torch.clamp(db, min=db.max() - top_db).numpy()


def spectrogram_rgb(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    """(N,) waveform -> (H, W, 3) uint8 image, low frequencies at the bottom (for TensorBoard)."""
    from matplotlib import colormaps

    db = log_mel_db(wav, sample_rate)[::-1]
    norm = (db - db.min()) / max(float(db.max() - db.min()), 1e-6)
    return (colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)


def save_spectrogram_grid(
    wavs: Sequence[torch.Tensor], titles: Sequence[str], sample_rate: int, path: str | Path, cols: int = 2
) -> Path:
    """Save a PNG grid with one titled log-mel spectrogram per waveform."""
    # A Figure with its own Agg canvas: no pyplot, so a user's notebook backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not wavs:
        raise ValueError("save_spectrogram_grid needs at least one waveform")
    cols = min(cols, len(wavs))
    rows = math.ceil(len(wavs) / cols)
    fig = Figure(figsize=(5 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, wav, title in zip(axes.flat, wavs, titles):
        db = log_mel_db(wav, sample_rate)
        seconds = torch.as_tensor(wav).numel() / sample_rate
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, db.shape[0]))
        ax.set_title(title if len(title) <= 60 else title[:57] + "...", fontsize=8)
        ax.set_axis_on()
        ax.set_xlabel("s", fontsize=7)
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(path) as tmp:  # the temp name keeps the .png suffix (matplotlib picks the format by it)
        fig.savefig(tmp, dpi=80)
    return Path(path)
