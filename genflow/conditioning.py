"""From a data batch to DiT inputs: the frozen codec and text encoder at work.

Recipes differ only in which batch keys they name: text-to-audio/music generate ``"audio"`` (or its
cached ``"latent"``) conditioned on ``"caption"``; speech enhancement generates ``"clean"``
conditioned, time-aligned, on ``"noisy"``. The library never knows which task it serves.
"""

from __future__ import annotations

import torch
from torch import nn

from genflow.codecs.base import Codec


class Conditioner(nn.Module):
    """Frozen codec + optional text encoder; ``conditioner(batch, device)`` -> ``flow_loss`` inputs."""

    def __init__(
        self,
        codec: Codec,
        text_encoder: nn.Module | None = None,
        *,
        target_key: str = "audio",
        text_key: str | None = None,
        aligned_key: str | None = None,
    ):
        super().__init__()
        if text_key and text_encoder is None:
            raise ValueError(f"text_key={text_key!r} needs a text encoder; pass text_encoder=load_text_encoder(...)")
        self.codec = codec
        self.text_encoder = text_encoder
        self.target_key, self.text_key, self.aligned_key = target_key, text_key, aligned_key

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, audio_mask: torch.Tensor | None = None):
        """(B, N) waveforms (zero-padded, ``audio_mask`` True = valid) -> latents (B, T, C), mask (B, T).

        Pass ``audio_mask`` as collate made it (on the CPU): the frame counts are read from it there, so
        encoding on the GPU costs no host sync.
        """
        lengths = audio_mask.sum(-1).tolist() if audio_mask is not None else [audio.shape[-1]] * audio.shape[0]
        device_mask = audio_mask.to(audio.device, non_blocking=True) if audio_mask is not None else None
        latent = self.codec.encode(audio, attention_mask=device_mask).float()
        frames = torch.tensor([self.codec.num_frames(int(n)) for n in lengths]).to(latent.device, non_blocking=True)
        mask = torch.arange(latent.shape[1], device=latent.device)[None, :] < frames[:, None]
        return latent * mask[..., None], mask

    @torch.no_grad()
    def encode_text(self, prompts: list[str]):
        """Captions -> (embeddings (B, L, D) float32, mask (B, L) bool)."""
        emb, mask = self.text_encoder(list(prompts))
        return emb.float(), mask.bool()

    def _latents(self, batch: dict, key: str, device: torch.device):
        """Latents of ``batch[key]``: cached (B, T, C) with ``mask``, or (B, N) audio encoded now.

        Cached text-audio batches name the target ``latent``; cached speech pairs keep their keys.
        """
        name = "latent" if key == self.target_key and key not in batch and "latent" in batch else key
        if name not in batch:
            raise KeyError(f"batch has no {key!r} audio nor cached latent (keys: {sorted(batch)})")
        value = batch[name].to(device, non_blocking=True).float()
        if value.dim() == 3:  # cached latents, padded by collate
            mask = batch.get("mask")
            mask = mask.to(device).bool() if mask is not None else torch.ones(value.shape[:2], dtype=torch.bool,
                                                                              device=device)
            return value * mask[..., None], mask
        return self.encode_audio(value, batch.get("audio_mask"))

    def forward(self, batch: dict, device: torch.device) -> dict:
        """Collated batch -> ``{"x", "mask", "text", "text_mask", "aligned"}`` on ``device``."""
        x, mask = self._latents(batch, self.target_key, device)
        inputs = {"x": x, "mask": mask, "text": None, "text_mask": None, "aligned": None}
        if self.text_key:
            inputs["text"], inputs["text_mask"] = self.encode_text(batch[self.text_key])
            inputs["text"] = inputs["text"].to(device)
            inputs["text_mask"] = inputs["text_mask"].to(device)
        if self.aligned_key:
            aligned, _ = self._latents(batch, self.aligned_key, device)
            # Same audio region as the target, so the same frame count; guard against codec rounding.
            inputs["aligned"] = aligned[:, : x.shape[1]]
        return inputs
