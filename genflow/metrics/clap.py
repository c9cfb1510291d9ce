"""CLAP audio/text embeddings and the CLAP score, through ``transformers.ClapModel``.

Official checkpoints: ``laion/clap-htsat-unfused`` (general audio, the usual text-to-audio CLAP score)
and ``laion/larger_clap_music_and_speech`` (music/speech). Audio is resampled to the rate of the
checkpoint's ``ClapFeatureExtractor`` (48 kHz); the extractor computes its log-mel features in numpy
(no torchaudio). Clips longer than its window (10 s) are cropped or fused at random by the extractor;
we fix numpy's seed around each call so scores are reproducible.

CLAP score = cosine similarity between the L2-normalised projected text and audio embeddings,
in [-1, 1] (some papers report it x100 or clipped at 0; genflow reports the raw cosine).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLAP_GENERAL = "laion/clap-htsat-unfused"
CLAP_MUSIC = "laion/larger_clap_music_and_speech"


class ClapEmbedder:
    """A frozen ClapModel + ClapProcessor: ``embed_audio`` and ``embed_text`` give unit-norm vectors."""

    def __init__(self, model, processor, name: str):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        self.device = next(model.parameters()).device

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers >= 5 returns a model output whose pooler_output is the projection; 4.x a tensor.
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def embed_audio(self, wavs: Sequence[torch.Tensor], seed: int = 0) -> torch.Tensor:
        """List of (N_i,) waveforms at ``self.sample_rate`` -> (B, D) unit-norm audio embeddings."""
        state = np.random.get_state()
        np.random.seed(seed)  # the extractor's random crop / fusion chunks become reproducible
        try:
            inputs = self.processor(
                audio=[w.float().reshape(-1).cpu().numpy() for w in wavs], sampling_rate=self.sample_rate,
                return_tensors="pt",
            )
        finally:
            np.random.set_state(state)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self._features(self.model.get_audio_features(**inputs))

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """List of B captions -> (B, D) unit-norm text embeddings."""
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        return self._features(self.model.get_text_features(**inputs))

    def clap_scores(self, wavs: Sequence[torch.Tensor], texts: Sequence[str]) -> torch.Tensor:
        """(B,) cosine similarity of each clip with its caption, in [-1, 1]."""
        if len(wavs) != len(texts):
            raise ValueError(f"got {len(wavs)} clips and {len(texts)} captions; expected one caption per clip")
        return (self.embed_audio(wavs) * self.embed_text(texts)).sum(-1)


def _cached(repo_id: str) -> bool:
    """Whether the hub cache already holds this checkpoint's config."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except (ImportError, ValueError):
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A 3 s TCP probe of the hub endpoint (respects HF_ENDPOINT and HF_HUB_OFFLINE)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_clap(name_or_path: str = CLAP_GENERAL, device: str | torch.device | None = None) -> ClapEmbedder:
    """ClapModel + ClapProcessor from a local folder or a hub id (never remote code)."""
    from transformers import ClapModel, ClapProcessor

    # Local folder or hub cache first; the hub only when reachable (its client retries for minutes).
    local = Path(name_or_path).is_dir() or _cached(name_or_path) or not _hub_reachable()
    try:
        processor = ClapProcessor.from_pretrained(name_or_path, local_files_only=local)
        model = ClapModel.from_pretrained(name_or_path, local_files_only=local, use_safetensors=True)
    except (OSError, ValueError) as e:  # no such folder, not cached and hub unreachable, or an invalid id
        raise FileNotFoundError(
            f"could not load the CLAP checkpoint {name_or_path!r} ({e.__class__.__name__}: {str(e)[:200]}). "
            f"Expected a local folder with config.json, model.safetensors and the processor files, or a hub "
            f"id such as {CLAP_GENERAL!r} / {CLAP_MUSIC!r} reachable online. Offline: on a machine with internet "
            f"run `huggingface-cli download {CLAP_GENERAL} --local-dir clap`, then pass --clap ./clap (CLAP score) "
            "or --backend ./clap (Fréchet distance on CLAP embeddings)"
        ) from e
    return ClapEmbedder(model.to(device or "cpu"), processor, str(name_or_path))


def load_laion_clap(checkpoint: str | os.PathLike, fusion: bool = False, amodel: str = "HTSAT-tiny"):
    """The optional ``laion_clap`` package's CLAP_Module (only where it is installed; trusted files only)."""
    try:
        import laion_clap
    except ImportError as e:
        raise ImportError(
            "the laion-clap backend needs the `laion_clap` package (pip install laion-clap); it is optional, "
            f"use --backend clap:{CLAP_GENERAL} (transformers) instead"
        ) from e
    # laion_clap's own load_ckpt unpickles arbitrary objects; read the tensors with weights_only=True
    # instead and load them strictly (DDP "module." prefixes stripped; position_ids buffers are rebuilt).
    module = laion_clap.CLAP_Module(enable_fusion=fusion, amodel=amodel)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("position_ids")}
    expected = {k for k in module.model.state_dict() if not k.endswith("position_ids")}
    if set(state) != expected:
        raise ValueError(f"{checkpoint}: keys differ from laion_clap's {amodel} (fusion={fusion}): missing "
                         f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
    own = {k: v for k, v in module.model.state_dict().items() if k.endswith("position_ids")}
    module.model.load_state_dict({**own, **state}, strict=True)
    return module
