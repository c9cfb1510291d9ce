"""Embedding backends for Fréchet distances, by name, and embedding of whole folders with failures counted.

``mel-stats`` is an offline smoke-test embedding: its numbers are comparable with nothing published.

``load_backend(spec)`` understands:

| spec | embedding | rate | per clip |
|---|---|---|---|
| ``mel-stats`` | weight-free mean+std of VGGish log-mels (128-d), **not comparable** | 16 kHz | 1 / 0.96 s |
| ``vggish[:weights.pth]`` | VGGish 128-d (FAD of Kilgour et al., audioldm_eval, fadtk) | 16 kHz | 1 / 0.96 s |
| ``panns[:weights.pth]`` | PANNs CNN14-16k 2048-d + 527 AudioSet logits (FD, KL, IS of audioldm_eval) | 16 kHz | one |
| ``clap[:id-or-folder]``, or a folder | CLAP projected audio embedding (512-d) | 48 kHz | one |
| ``laion-clap:ckpt.pt`` | the optional ``laion_clap`` package (only where installed) | 48 kHz | one |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genflow import hub
from genflow.metrics.frechet import FrechetStats, compute_stats, load_stats
from genflow.metrics.protocols import Protocol, get_protocol

log = logging.getLogger(__name__)

BACKENDS = ("mel-stats", "vggish", "panns", "clap", "laion-clap")


class EmbeddingBackend:
    """Maps waveforms at ``sample_rate`` to (T, D) embeddings and, for classifiers, (C,) logits."""

    name: str = ""
    sample_rate: int = 16000
    settings: dict[str, Any] = {}
    has_logits: bool = False

    def prepare(self, wav: torch.Tensor) -> torch.Tensor:
        """genflow protocol only: this backend's own padding/centring of a loaded (N,) clip (default none)."""
        return wav

    def embed(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N,) waveform -> ((T, D) embeddings, (C,) logits or None)."""
        raise NotImplementedError

    def embed_batch(self, wavs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Several clips at once (backends that batch override this)."""
        return [self.embed(w) for w in wavs]


class MelStatsBackend(EmbeddingBackend):
    """Weight-free log-mel statistics (mean and std over each 0.96 s window): a smoke-test embedding."""

    name = "mel-stats"
    sample_rate = 16000
    settings = {"sample_rate": 16000, "n_mels": 64, "window_s": 0.96, "stats": "mean+std", "version": 1}

    def __init__(self):
        from genflow.dsp import vggish_mel_filterbank

        self.mel = vggish_mel_filterbank()

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> tuple[torch.Tensor, None]:
        from genflow.metrics.vggish import vggish_examples

        ex = vggish_examples(wav, self.mel)[:, 0]  # (E, 96, 64)
        return torch.cat([ex.mean(1), ex.std(1)], dim=-1), None  # (E, 128)


class VGGishBackend(EmbeddingBackend):
    """VGGish 128-d embeddings, one per 0.96 s example."""

    name = "vggish"
    sample_rate = 16000

    def __init__(self, weights: str | None, device=None):
        from genflow.metrics.vggish import load_vggish

        self.model = load_vggish(weights, device)
        self.settings = {"sample_rate": 16000, "weights": "vggish-10086976", "layer": "fc2-linear"}

    def embed(self, wav):
        return self.model.embed(wav).cpu(), None


class PannsBackend(EmbeddingBackend):
    """PANNs CNN14-16k: one 2048-d embedding and 527 logits per clip."""

    name = "panns-cnn14-16k"
    sample_rate = 16000
    has_logits = True

    def __init__(self, weights: str | None, device=None):
        from genflow.metrics.panns import load_panns

        self.model = load_panns(weights, device)
        self.settings = {"sample_rate": 16000, "weights": "Cnn14_16k_mAP=0.438", "layer": "fc1-relu"}

    def prepare(self, wav):
        """DC offset removed, zero-padded to 2 s (audioldm_eval's steps, after genflow's soxr resampling)."""
        from genflow.metrics.panns import MIN_SECONDS, SAMPLE_RATE

        wav = wav - wav.mean()
        return torch.nn.functional.pad(wav, (0, max(0, int(MIN_SECONDS * SAMPLE_RATE) - wav.shape[-1])))

    def embed(self, wav):
        out = self.model.embed(wav)
        return out["embedding"].cpu(), out["logits"].cpu()


class ClapBackend(EmbeddingBackend):
    """CLAP projected audio embeddings (unit norm), batched through ClapProcessor."""

    def __init__(self, name_or_path: str, device=None):
        from genflow.metrics.clap import load_clap

        self.clap = load_clap(name_or_path, device)
        self.sample_rate = self.clap.sample_rate
        model_id = Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path
        self.name = "clap"
        self.settings = {"sample_rate": self.sample_rate, "model": model_id}

    def embed(self, wav):
        return self.embed_batch([wav])[0]

    def embed_batch(self, wavs):
        return [(e[None].cpu(), None) for e in self.clap.embed_audio(wavs)]


class LaionClapBackend(EmbeddingBackend):
    """The optional laion_clap package (import guarded)."""

    name = "laion-clap"
    sample_rate = 48000

    def __init__(self, checkpoint: str):
        from genflow.metrics.clap import load_laion_clap

        self.module = load_laion_clap(checkpoint)
        self.settings = {"sample_rate": 48000, "checkpoint": Path(checkpoint).name}

    @torch.no_grad()
    def embed(self, wav):
        emb = self.module.get_audio_embedding_from_data(x=wav.float().reshape(1, -1).numpy(), use_tensor=False)
        return torch.as_tensor(np.asarray(emb)).float(), None


def load_backend(spec: str, device: str | torch.device | None = None) -> EmbeddingBackend:
    """Backend from ``name[:weights]`` or a local CLAP folder (see the module docstring)."""
    if Path(spec).is_dir():
        model_type = hub.model_type(spec)
        if model_type != "clap":
            raise ValueError(
                f"--backend {spec!r} is a folder whose config.json has model_type {model_type!r}; expected a "
                "transformers CLAP checkpoint folder (model_type 'clap'), or one of " + ", ".join(BACKENDS)
            )
        return ClapBackend(spec, device)
    name, _, arg = spec.partition(":")
    if name == "mel-stats":
        return MelStatsBackend()
    if name == "vggish":
        return VGGishBackend(arg or None, device)
    if name in ("panns", "panns-cnn14-16k"):
        return PannsBackend(arg or None, device)
    if name == "clap":
        from genflow.metrics.clap import CLAP_GENERAL

        return ClapBackend(arg or CLAP_GENERAL, device)
    if name == "laion-clap":
        if not arg:
            raise ValueError("--backend laion-clap needs a checkpoint: laion-clap:/path/630k-audioset-best.pt")
        return LaionClapBackend(arg)
    raise ValueError(
        f"unknown embedding backend {spec!r}; expected one of {', '.join(BACKENDS)} (optionally "
        "name:weights-path) or a local CLAP checkpoint folder"
    )


@dataclass
class EmbeddedSet:
    """Embeddings of a set of clips: ids, per-clip (T_i, D) embeddings, (N, C) logits, and failures."""

    ids: list[str] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None
    failures: dict[str, str] = field(default_factory=dict)

    def stacked(self) -> np.ndarray:
        """All frame embeddings of all clips as one (sum T_i, D) float64 array."""
        return torch.cat(self.embeddings).double().numpy()

    def clip_means(self) -> torch.Tensor:
        """(N, D) per-clip mean embedding."""
        return torch.stack([e.mean(0) for e in self.embeddings])


def embed_files(
    backend: EmbeddingBackend, files: dict[str, str | os.PathLike], batch_size: int = 8, progress: bool = True,
    desc: str = "embedding", protocol: str | Protocol = "genflow",
) -> EmbeddedSet:
    """Embed ``{clip_id: path}`` loaded as ``protocol`` says; unreadable files go to ``failures``, not raise."""
    from tqdm import tqdm

    protocol = get_protocol(protocol)
    out, logits = EmbeddedSet(), []
    items = list(files.items())
    bar = tqdm(total=len(items), desc=desc, disable=not progress or len(items) < 2, leave=False)
    for start in range(0, len(items), batch_size):
        batch_ids, wavs = [], []
        for clip_id, path in items[start : start + batch_size]:
            try:
                wav = protocol.load(path, backend.sample_rate)
                wav = backend.prepare(wav) if protocol.prepare_in_backend else wav
            except (OSError, ValueError, RuntimeError) as e:  # missing, corrupt or undecodable
                out.failures[clip_id] = f"{path}: {e}"
                log.warning("skipping %s: %s", path, e)
                continue
            batch_ids.append(clip_id)
            wavs.append(wav)
        for clip_id, (emb, lg) in zip(batch_ids, backend.embed_batch(wavs) if wavs else []):
            out.ids.append(clip_id)
            # A toolkit that caches fp16 embeddings (fadtk) computes its statistics from the rounded values.
            out.embeddings.append(emb.half().float() if protocol.embedding_dtype == "float16" else emb.float())
            if lg is not None:
                logits.append(lg.float())
        bar.update(len(items[start : start + batch_size]))
    bar.close()
    out.logits = torch.stack(logits) if logits else None
    return out


def stats_settings(backend: EmbeddingBackend, protocol: str | Protocol = "genflow") -> dict[str, Any]:
    """What makes two sets' statistics comparable: the backend's settings and the loading protocol."""
    protocol = get_protocol(protocol)
    return backend.settings if protocol.name == "genflow" else {**backend.settings, "protocol": protocol.name}


def stats_of(backend: EmbeddingBackend, emb: EmbeddedSet, protocol: str | Protocol = "genflow") -> FrechetStats:
    """Fréchet statistics of an embedded set, stamped with the backend's name, settings and protocol."""
    if len(emb.embeddings) == 0:
        raise ValueError("no clip could be embedded: every file is missing or unreadable (see the failures)")
    return compute_stats(emb.stacked(), backend.name, stats_settings(backend, protocol))


def reference_stats(
    backend: EmbeddingBackend, reference: str | os.PathLike, protocol: str | Protocol = "genflow"
) -> FrechetStats:
    """Statistics from a cached .npz (refused if it was made with another backend/settings/protocol)."""
    return load_stats(reference, backend.name, stats_settings(backend, protocol))
