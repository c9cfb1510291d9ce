"""A small, fast audio classifier ("probe") for benchmarks on small labelled sets.

    probe = fit_probe(train_wavs, train_labels)             # 1-D 16 kHz float tensors, string labels
    probe.accuracy(test_wavs, test_labels)                   # fraction of clips whose top-1 label is right
    emb = probe.embed(test_wavs)                             # (B, hidden) penultimate features, for a Fréchet distance
    probe.save("out/probe-tta"); AudioProbe.load("out/probe-tta")

Features are pooled statistics of a log-mel spectrogram (per band: mean, standard deviation, maximum over
time and mean absolute frame-to-frame change), standardised with the training set's statistics and fed
to a two-layer MLP. On a few hundred clips it trains in about a second on one CPU core, so a benchmark can
refit it instead of shipping weights. Training clips are augmented with random crops and gains, so the
probe does not key on clip length or loudness (generated clips differ from real ones in both).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genflow import hub
from genflow.dsp import slaney_mel_filterbank, stft_magnitude

MODEL_TYPE = "genflow-probe"


@dataclass
class ProbeConfig:
    """Front end and training settings of a probe (saved in its ``config.json``)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256  # 16 ms frames
    n_mels: int = 64
    hidden: int = 64  # width of both hidden layers; ``embed`` returns the second
    dropout: float = 0.2
    epochs: int = 400  # full-batch AdamW steps
    lr: float = 3e-3
    weight_decay: float = 1e-2
    crops_per_clip: int = 4  # random crops per training clip, on top of the whole clip
    crop_s: float = 1.0  # crop length in seconds (a clip shorter than this is used whole)
    gain_db: float = 6.0  # random gain in [-gain_db, gain_db] on every training view
    seed: int = 0


class LogMelStats(nn.Module):
    """(N,) waveform at ``sample_rate`` -> (4 * n_mels,) pooled log-mel statistics."""

    def __init__(self, cfg: ProbeConfig):
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop
        fb = slaney_mel_filterbank(cfg.n_fft // 2 + 1, cfg.n_mels, cfg.sample_rate)
        self.register_buffer("mel", fb, persistent=False)  # (F, n_mels)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.float().reshape(-1)
        # shorter than one frame: zero-padded, so every clip gives features
        spec = stft_magnitude(wav, self.n_fft, self.hop, center=False, min_length=True)  # (F, T)
        logmel = torch.log(spec.T @ self.mel + 1e-5)  # (T, n_mels)
        delta = logmel.diff(dim=0).abs().mean(0) if logmel.shape[0] > 1 else torch.zeros_like(logmel[0])
        std = logmel.std(0, unbiased=False)
        return torch.cat([logmel.mean(0), std, logmel.amax(0), delta])  # (4 * n_mels,)


class AudioProbe(nn.Module):
    """Pooled log-mel statistics -> standardise -> MLP -> class logits; ``embed`` gives the hidden features."""

    def __init__(self, labels: Sequence[str], config: ProbeConfig | None = None):
        super().__init__()
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"a probe needs at least 2 distinct class labels, got {list(labels)!r}")
        self.labels = list(labels)
        self.config = cfg = config or ProbeConfig()
        self.features = LogMelStats(cfg)
        dim = 4 * cfg.n_mels
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.body = nn.Sequential(
            nn.Linear(dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(),
        )
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, len(self.labels)))

    def featurize(self, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of (N_i,) waveforms at ``config.sample_rate`` -> (B, 4 * n_mels) standardised features."""
        if len(wavs) == 0:
            raise ValueError("got no waveforms; pass a non-empty list of 1-D tensors")
        feats = torch.stack([self.features(w.to(self.feat_mean.device)) for w in wavs])
        return (feats - self.feat_mean) / self.feat_std

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) standardised features -> (B, K) logits."""
        return self.head(self.body(feats))

    @torch.no_grad()
    def embed(self, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of waveforms -> (B, hidden) penultimate features (eval mode)."""
        self.eval()
        return self.body(self.featurize(wavs))

    @torch.no_grad()
    def predict_proba(self, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of waveforms -> (B, K) class probabilities, columns in the order of ``labels``."""
        self.eval()
        return self(self.featurize(wavs)).softmax(-1)

    def predict(self, wavs: Sequence[torch.Tensor]) -> list[str]:
        """List of waveforms -> the top-1 label of each."""
        return [self.labels[i] for i in self.predict_proba(wavs).argmax(-1).tolist()]

    def accuracy(self, wavs: Sequence[torch.Tensor], labels: Sequence[str]) -> float:
        """Fraction of clips whose top-1 prediction equals its label."""
        if len(wavs) != len(labels):
            raise ValueError(f"got {len(wavs)} waveforms but {len(labels)} labels; pass one label per clip")
        return sum(p == t for p, t in zip(self.predict(wavs), labels)) / len(labels)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` (settings + labels) and ``model.safetensors`` into ``folder``."""
        meta = {"model_type": MODEL_TYPE, "labels": self.labels, **dataclasses.asdict(self.config)}
        return hub.save_model(folder, self, None, meta)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> AudioProbe:
        """Read a folder written by ``save`` (strict: every weight must match)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} is not a probe folder: expected config.json + model.safetensors "
                                    "written by AudioProbe.save")
        meta = hub.read_json(folder / "config.json")
        if meta.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{folder}/config.json: model_type is not {MODEL_TYPE!r}; not a probe folder")
        labels = meta.pop("labels")
        return hub.load_weights(cls(labels, ProbeConfig(**meta)), folder / "model.safetensors").eval()


def _views(wav: torch.Tensor, cfg: ProbeConfig, gen: torch.Generator) -> list[torch.Tensor]:
    """The whole clip plus ``crops_per_clip`` random crops, each at a random gain."""
    crop = round(cfg.crop_s * cfg.sample_rate)
    views = [wav]
    if wav.numel() > crop:
        starts = torch.randint(0, wav.numel() - crop + 1, (cfg.crops_per_clip,), generator=gen).tolist()
        views += [wav[s : s + crop] for s in starts]
    gains = 10 ** ((torch.rand(len(views), generator=gen) * 2 - 1) * cfg.gain_db / 20)
    return [v * g for v, g in zip(views, gains.tolist())]


def fit_probe(wavs: Sequence[torch.Tensor], labels: Sequence[str], config: ProbeConfig | None = None) -> AudioProbe:
    """Train a probe on 1-D waveforms at ``config.sample_rate`` and their string labels (seeded, CPU)."""
    cfg = config or ProbeConfig()
    if len(wavs) != len(labels) or len(wavs) == 0:
        raise ValueError(f"got {len(wavs)} waveforms and {len(labels)} labels; pass one label per clip")
    classes = sorted(set(labels))
    torch.manual_seed(cfg.seed)
    probe = AudioProbe(classes, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    index = {c: i for i, c in enumerate(classes)}
    views, targets = [], []
    for wav, label in zip(wavs, labels):
        v = _views(torch.as_tensor(wav, dtype=torch.float32).reshape(-1), cfg, gen)
        views += v
        targets += [index[label]] * len(v)
    with torch.no_grad():
        feats = torch.stack([probe.features(v) for v in views])  # (V, D) raw statistics
        probe.feat_mean.copy_(feats.mean(0))
        probe.feat_std.copy_(feats.std(0).clamp_min(1e-3))
        x = (feats - probe.feat_mean) / probe.feat_std
    y = torch.tensor(targets)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    probe.train()
    # Matrices this small run ~100x slower with 2+ OpenMP threads on a loaded CPU (thread hand-off
    # dominates the ~1 ms step), so train on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(cfg.epochs):  # full batch: a few hundred rows of a few hundred features
            loss = nn.functional.cross_entropy(probe(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return probe.eval()
