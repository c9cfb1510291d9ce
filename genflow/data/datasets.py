"""Map-style datasets: text + audio/latent clips, and clean/noisy speech pairs (with on-the-fly mixing).

Each item is a dict of tensors cut to at most ``max_frames`` latent frames (``max_frames * hop_length``
samples for audio, crops aligned to the hop). With a ``LatentCache`` items hold latents (T, C);
without one they hold waveforms (N,) at the codec's rate for the training loop to encode on the GPU.

Random crops and noise draws come from a generator seeded by (seed, epoch, index), so an epoch is
reproducible (call ``set_epoch``; DataLoader workers see it when they are not persistent).

A file that turns bad after validation never stops an epoch: the item is replaced by another index
(deterministically), a warning is logged and ``num_bad`` counts it (per process/worker).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

_RETRIES = 8


def active_power(
    x: torch.Tensor, sample_rate: int = 16000, frame_ms: float = 20.0, threshold_db: float = -40.0
) -> torch.Tensor:
    """Mean power over active frames (within ``threshold_db`` of the loudest); (..., N) -> (...)."""
    hop = max(1, int(sample_rate * frame_ms / 1000))
    n = x.shape[-1] // hop * hop
    if n == 0:
        return x.pow(2).mean(-1)
    energy = x[..., :n].unflatten(-1, (-1, hop)).pow(2).mean(-1)  # (..., frames)
    active = energy >= energy.amax(-1, keepdim=True) * 10 ** (threshold_db / 10)
    return (energy * active).sum(-1) / active.sum(-1).clamp(min=1)


def mix_at_snr(
    clean: torch.Tensor, noise: torch.Tensor, snr_db: float | torch.Tensor, sample_rate: int = 16000
) -> torch.Tensor:
    """clean + g * noise with g set so active-speech power / noise power = ``snr_db``; (..., N) each.

    Silent noise (or silent speech) gives g = 0, never NaN.
    """
    snr_db = torch.as_tensor(snr_db, dtype=clean.dtype)
    p_speech = active_power(clean, sample_rate)
    p_noise = noise.pow(2).mean(-1)
    gain = torch.where(p_noise > 1e-10, p_speech / (p_noise.clamp(min=1e-10) * 10 ** (snr_db / 10)), 0).sqrt()
    return clean + gain[..., None] * noise


def crop(clips: dict[str, torch.Tensor], size: int, step: int, rng: np.random.Generator,
         random_crop: bool) -> dict[str, torch.Tensor]:
    """One crop of at most ``size`` along dim 0 for all ``clips`` (cut to the shortest), starting at a multiple of
    ``step``: (N,) audio with ``step`` = hop, or (T, C) latents with ``step`` = 1."""
    n = min(c.shape[0] for c in clips.values())
    start = 0
    if n > size and random_crop:
        start = step * int(rng.integers(0, (n - size) // step + 1))
    return {k: c[start : start + min(n, size)] for k, c in clips.items()}


class _ClipDataset(Dataset):
    """Shared parts: rows, crop settings, per-item generators and bad-file replacement."""

    def __init__(self, rows, cache, sample_rate, hop_length, max_frames, random_crop, seed, keys):
        if cache is not None:
            kept = [r for r in rows if str(r["id"]) in cache]
            if len(kept) < len(rows):
                log.warning(
                    "%d of %d rows are not in the latent cache %s and are skipped",
                    len(rows) - len(kept),
                    len(rows),
                    cache.path,
                )
            rows = kept
        if not rows:
            raise ValueError(
                "no rows to read: the manifest is empty or none of its ids is in the latent cache"
            )
        self.rows = rows
        self.cache = cache
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.max_frames = max_frames
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0
        self.num_bad = 0
        frame_rate = sample_rate / hop_length
        # Length in frames of each row (for length-bucketed batching), capped at max_frames.
        self.lengths = [
            min(
                max_frames,
                cache.num_frames(str(r["id"]), keys[0])
                if cache is not None
                else math.ceil(r.get("duration", max_frames / frame_rate) * frame_rate),
            )
            for r in rows
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random crops/noises items get."""
        self.epoch = epoch

    def _load(self, path: str) -> torch.Tensor:
        from genflow.audio import load_audio

        return load_audio(path, self.sample_rate)[0]  # never empty or non-finite (AudioError instead)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(_RETRIES):
            i = (index + attempt * 7919) % len(self.rows)  # a deterministic replacement after a failure
            rng = np.random.default_rng([self.seed, self.epoch, i])
            try:
                return self._item(self.rows[i], rng)
            except (OSError, RuntimeError, ValueError) as e:  # AudioError is a ValueError
                self.num_bad += 1
                log.warning(
                    "skipping bad clip %s (%s); %d skipped so far", self.rows[i].get("id"), e, self.num_bad
                )
        raise RuntimeError(f"{_RETRIES} clips in a row failed to load near index {index}: check the data")

    def _item(self, row: dict, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def _cropped(self, row: dict, keys: tuple[str, ...], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The row's clips under ``keys``, cropped alike: (T, C) latents from the cache, else (N,) waveforms."""
        if self.cache is not None:
            clips = {k: self.cache.get(str(row["id"]), k) for k in keys}
            return crop(clips, self.max_frames, 1, rng, self.random_crop)
        clips = {k: self._load(row[k]) for k in keys}
        return crop(clips, self.max_frames * self.hop_length, self.hop_length, rng, self.random_crop)


class TextAudioDataset(_ClipDataset):
    """Captioned clips: {"id", "caption", "audio"}: (T, C) latents from a cache, else (N,) waveforms."""

    def __init__(
        self,
        rows: list[dict],
        *,
        cache=None,
        codec_sample_rate: int,
        hop_length: int,
        max_frames: int,
        random_crop: bool = True,
        seed: int = 0,
        caption_key: str = "caption",
    ):
        super().__init__(
            rows, cache, codec_sample_rate, hop_length, max_frames, random_crop, seed, ("audio",)
        )
        self.caption_key = caption_key

    def _item(self, row: dict, rng: np.random.Generator) -> dict:
        item = {"id": str(row["id"]), "caption": row.get(self.caption_key, "")}
        return item | self._cropped(row, ("audio",), rng)


class SpeechPairDataset(_ClipDataset):
    """Clean/noisy speech: {"id", "clean", "noisy"} cropped to the same region, (N,) audio or (T, C) latents.

    Rows are {"clean", "noisy"} pairs, or {"clean"} only with ``noise_rows`` ({"audio"}) mixed in at
    an SNR drawn uniformly from ``snr_range`` dB (speech power measured on active frames). Noise
    shorter than the speech is looped. The pair is scaled down together if the mix would clip.
    Cached pairs need a cache built with keys=("clean", "noisy").
    """

    def __init__(
        self,
        rows: list[dict],
        *,
        noise_rows: list[dict] | None = None,
        snr_range: tuple[float, float] = (-5.0, 20.0),
        cache=None,
        codec_sample_rate: int,
        hop_length: int,
        max_frames: int,
        random_crop: bool = True,
        seed: int = 0,
    ):
        paired = all("noisy" in r for r in rows)
        if not paired and not noise_rows:
            raise ValueError(
                "rows without a 'noisy' file need noise_rows (a noise manifest of {'audio': ...})"
            )
        if cache is not None and (not paired or tuple(cache.keys) != ("clean", "noisy")):
            raise ValueError(
                f"a latent cache for speech pairs needs rows with 'clean' and 'noisy' and a cache built with "
                f"keys=('clean', 'noisy'); got cache keys {cache.keys}. On-the-fly noise mixing needs audio."
            )
        super().__init__(
            rows, cache, codec_sample_rate, hop_length, max_frames, random_crop, seed, ("clean",)
        )
        self.noise_rows = None if paired else noise_rows
        self.snr_range = snr_range

    def _item(self, row: dict, rng: np.random.Generator) -> dict:
        item = {"id": str(row["id"])}
        if self.noise_rows is None:  # pairs (the only kind a cache holds)
            return item | self._cropped(row, ("clean", "noisy"), rng)
        clean = self._cropped(row, ("clean",), rng)["clean"]
        noise = self._load(self.noise_rows[int(rng.integers(len(self.noise_rows)))]["audio"])
        if noise.shape[0] < clean.shape[0]:
            noise = noise.repeat(math.ceil(clean.shape[0] / noise.shape[0]))
        offset = int(rng.integers(0, noise.shape[0] - clean.shape[0] + 1))
        noise = noise[offset : offset + clean.shape[0]]
        noisy = mix_at_snr(clean, noise, float(rng.uniform(*self.snr_range)), self.sample_rate)
        peak = noisy.abs().max()
        scale = 0.99 / peak if peak > 0.99 else 1.0  # same scale on both keeps the SNR
        item["clean"], item["noisy"] = clean * scale, noisy * scale
        return item
