"""From data to DiT inputs: the frozen codec and text encoder, one path for training and inference.

``build_conditioner`` assembles them (training and ``genflow.load`` both call it); the training loop
calls ``conditioner(batch, device)``, ``Generator`` calls ``encode_text`` / ``encode_audio``. Recipes
differ only in the ``BatchKeys`` they pass: text-to-audio/music generate ``"audio"`` conditioned on
``"caption"``; speech enhancement generates ``"clean"`` conditioned, time-aligned, on ``"noisy"``.
Whether the batch holds cached latents is decided once, by whoever built the dataset, and passed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genflow.codecs.base import Codec
from genflow.codecs.waveform import encode_padded


@dataclass(frozen=True)
class BatchKeys:
    """Which batch entries a run trains on, and whether they hold cached latents instead of waveforms."""

    target: str = "audio"
    text: str | None = None
    aligned: str | None = None
    cached: bool = False


class Conditioner(nn.Module):
    """Frozen codec + optional text encoder; ``conditioner(batch, device)`` -> ``flow_loss`` inputs."""

    def __init__(self, codec: Codec, text_encoder: nn.Module | None = None, keys: BatchKeys | None = None,
                 prompt_template: str = "{}"):
        super().__init__()
        if keys is not None and keys.text and text_encoder is None:
            raise ValueError(f"BatchKeys.text={keys.text!r} needs a text encoder; build the conditioner with one")
        if prompt_template.count("{}") != 1:
            raise ValueError(f"prompt_template={prompt_template!r}: expected exactly one '{{}}' where the prompt goes")
        self.codec, self.text_encoder, self.keys = codec, text_encoder, keys
        # How a model wants its captions written (e.g. a task prefix); users always pass plain captions.
        self.prompt_template = prompt_template

    def with_keys(self, keys: BatchKeys) -> Conditioner:
        """The same frozen models, reading training batches through ``keys``."""
        return Conditioner(self.codec, self.text_encoder, keys, self.prompt_template)

    def place(self, device: torch.device | str) -> Conditioner:
        """Move the frozen models to ``device``, except the codec's encoder when every batch holds cached latents.

        Then nothing encodes during training: the encoder's weights stay on the CPU (the rare preview encodes,
        e.g. the noisy inputs of speech-enhancement previews, run there) and the decoder stays on ``device``.
        """
        self.to(device)
        if self.keys is not None and self.keys.cached:
            self.codec.encoder_to("cpu")
        return self

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, lengths: list[int] | None = None):
        """(B, N) zero-padded waveforms of ``lengths`` samples -> latents (B, T, C) fp32, frame mask (B, T).

        Encoded where the codec's encoder is (``place``), returned on ``audio``'s device.
        """
        lengths = lengths if lengths is not None else [audio.shape[-1]] * len(audio)
        latent, mask = encode_padded(self.codec, audio.to(self.codec.encoder_device), lengths)
        return latent.to(audio.device), mask.to(audio.device)

    def format_prompt(self, prompt: str) -> str:
        """``prompt`` in the template; a prompt already written in it (e.g. with extra tags) is kept as it is."""
        prefix = self.prompt_template.split("{}")[0].strip()
        prompt = prompt.strip()
        return prompt if prefix and prompt.startswith(prefix) else self.prompt_template.replace("{}", prompt, 1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str], device: torch.device | None = None):
        """Captions -> (embeddings (B, L, D) float32, mask (B, L) bool), on ``device`` when given."""
        if self.text_encoder is None:
            raise ValueError("this model has no text encoder (an enhancement model?): it cannot take prompts")
        emb, mask = self.text_encoder([self.format_prompt(p) for p in prompts])
        emb, mask = emb.float(), mask.bool()
        return (emb, mask) if device is None else (emb.to(device), mask.to(device))

    def _latents(self, batch: dict, key: str, device: torch.device):
        """(B, T, C) latents of ``batch[key]`` and their mask: read from the cache or encoded now."""
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
        value = batch[key].to(device, non_blocking=True).float()
        lengths = batch["lengths"]  # collate's (B,) CPU lengths: frames if cached, else samples
        if self.keys.cached:
            mask = (torch.arange(value.shape[1])[None, :] < lengths[:, None]).to(device, non_blocking=True)
            return value * mask[..., None], mask
        return self.encode_audio(value, lengths.tolist())

    def forward(self, batch: dict, device: torch.device) -> dict:
        """Collated batch -> ``{"x", "mask", "text", "text_mask", "aligned"}`` on ``device``."""
        if self.keys is None:
            raise ValueError("this conditioner was built for inference (no BatchKeys); pass keys=BatchKeys(...)")
        x, mask = self._latents(batch, self.keys.target, device)
        if bool((batch["lengths"] == batch["lengths"].max()).all()):  # CPU lengths: no device sync
            mask = None  # no padding: no attention mask, so SDPA may pick its flash/efficient kernels
        inputs = {"x": x, "mask": mask, "text": None, "text_mask": None, "aligned": None}
        if self.keys.text:
            inputs["text"], inputs["text_mask"] = self.encode_text(batch[self.keys.text], device)
        if self.keys.aligned:
            aligned, _ = self._latents(batch, self.keys.aligned, device)
            # Same audio region as the target, so the same frame count; guard against codec rounding.
            inputs["aligned"] = aligned[:, : x.shape[1]]
        return inputs


def inside(root: Path | None, name: str) -> str:
    """``name`` as shipped inside a release folder (``root/name``) when it is there, else as given."""
    return str(root / name) if root is not None and (root / name).is_dir() else name


def build_conditioner(codec: str, text_encoder: str | None = None, *, device: torch.device | str | None = None,
                      root: str | Path | None = None, keys: BatchKeys | None = None,
                      prompt_template: str = "{}", text_cache: str | Path | None = None) -> Conditioner:
    """The one assembly of a codec and a text encoder (prompt-cached) by name, for training and inference.

    ``root``: a release folder whose ``codec/`` or ``text_encoder/`` subfolders stand for those names.
    ``text_cache``: a folder keeping the text encoder's states of every caption on disk (training).
    """
    from genflow.codecs import load_codec
    from genflow.text import CachedTextEncoder, load_text_encoder

    root = Path(root) if root is not None else None
    text = None
    if text_encoder:
        text = CachedTextEncoder(load_text_encoder(inside(root, text_encoder), device=device), cache_dir=text_cache)
    return Conditioner(load_codec(inside(root, codec), device=device), text, keys, prompt_template)
