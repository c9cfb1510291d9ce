"""The mel codec with a neural decoder: the weight-free mel encoder, and a Vocos decoder trained by recipes/codec.

    audio (B, N) at 16 kHz -> MelCodec.encode -> latent (B, T, n_mels)       (the same latents as "mel")
    latent (B, T, n_mels)  -> upsampler (x upsample) -> Vocos ConvNeXt -> ISTFT head -> audio (B, hop_out * T)

A release folder holds ``config.json`` (``model_type`` "genflow-mel-vocos", the mel settings and the decoder's)
and ``model.safetensors`` (``upsampler.*``, ``decoder.*``: the module names of DashengTokenizer's decoder),
and loads with ``load_codec(folder)``. The latents are exactly those of the weight-free codec with the same
mel settings, so a DiT trained on ``mel`` latents decodes through this codec unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from genflow.codecs.base import Codec
from genflow.codecs.dasheng import ISTFTHead, VocosBackbone
from genflow.codecs.mel import MelCodec, MelCodecConfig
from genflow.config import from_dict

MODEL_TYPE = "genflow-mel-vocos"


@dataclass
class MelVocosConfig:
    """The mel encoder's settings and the decoder's sizes; every field is saved in ``config.json``."""

    mel: MelCodecConfig = field(default_factory=MelCodecConfig)
    output_sample_rate: int = 16000
    upsample: int = 2  # decoder frames per latent frame (a ConvTranspose1d, as DashengTokenizer's upsampler)
    dim: int = 384
    intermediate_dim: int = 1152
    depth: int = 8
    n_fft: int | None = None  # None -> 4 * ISTFT hop

    def __post_init__(self):
        if isinstance(self.mel, dict):
            self.mel = MelCodecConfig.from_dict(self.mel)
        per_frame = self.output_sample_rate / self.mel.frame_rate
        if self.upsample < 1 or abs(per_frame / self.upsample - round(per_frame / self.upsample)) > 1e-6:
            raise ValueError(f"output_sample_rate={self.output_sample_rate} / frame_rate={self.mel.frame_rate} = "
                             f"{per_frame:g} samples per latent frame must split into upsample={self.upsample} "
                             "whole ISTFT hops; pick upsample dividing it (e.g. 2 for 640 or 960)")
        if min(self.dim, self.intermediate_dim, self.depth) < 1:
            raise ValueError(f"dim, intermediate_dim and depth must be >= 1, got {self.dim}, "
                             f"{self.intermediate_dim}, {self.depth}")

    @property
    def istft_hop(self) -> int:
        """Output samples per decoder frame."""
        return round(self.output_sample_rate / self.mel.frame_rate / self.upsample)

    @classmethod
    def from_dict(cls, d: dict) -> MelVocosConfig:
        """Parse ``config.json``; ``model_type`` is ignored, unknown keys fail with the nearest valid name."""
        return from_dict(cls, d, "mel-vocos config", ignore=("model_type",))

    def to_dict(self) -> dict:
        """``config.json`` content: ``model_type`` plus every field (the mel settings nested)."""
        d = dataclasses.asdict(self)
        d["mel"].pop("model_type", None)
        return {"model_type": MODEL_TYPE, **d}


class MelVocosCodec(Codec):
    """Mel latents (as ``MelCodec``) decoded by a trained Vocos decoder instead of Griffin-Lim."""

    def __init__(self, config: MelVocosConfig | None = None):
        super().__init__()
        self.config = cfg = config or MelVocosConfig()
        self.mel = MelCodec(cfg.mel)  # weight-free: its buffers are not saved
        self.sample_rate, self.frame_rate = cfg.mel.sample_rate, float(cfg.mel.frame_rate)
        self.latent_dim = c = cfg.mel.n_mels
        self.upsampler = nn.ConvTranspose1d(c, c, cfg.upsample, stride=cfg.upsample) if cfg.upsample > 1 else None
        self.decoder = nn.Module()
        self.decoder.backbone = VocosBackbone(c, cfg.dim, cfg.intermediate_dim, cfg.depth)
        self.decoder.head = ISTFTHead(cfg.dim, cfg.n_fft or 4 * cfg.istft_hop, cfg.istft_hop)

    @property
    def output_sample_rate(self) -> int:
        return self.config.output_sample_rate

    @property
    def output_hop_length(self) -> int:
        """Decoded samples per latent frame."""
        return self.config.istft_hop * self.config.upsample

    def encoder_parts(self) -> tuple[nn.Module, ...]:
        """The weight-free mel front end (its STFT window and filterbank buffers)."""
        return (self.mel,)

    def num_frames(self, num_samples: int) -> int:
        return self.mel.num_frames(num_samples)

    def encode(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) 16 kHz -> (B, N // hop, n_mels): the weight-free codec's latents."""
        return self.mel.encode(audio, attention_mask)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, output_hop_length * T)
        x = latent.transpose(1, 2).to(self.decoder.backbone.embed.weight.dtype)  # (B, C, T)
        if self.upsampler is not None:
            x = self.upsampler(x)  # (B, C, upsample * T)
        return self.decoder.head(self.decoder.backbone(x))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> (B, output_hop_length * T) waveform at ``output_sample_rate``; fp32."""
        if latent.dim() != 3 or latent.shape[-1] != self.latent_dim or latent.shape[1] < 1:
            raise ValueError(f"MelVocosCodec.decode expects a latent (B, T >= 1, {self.latent_dim}), "
                             f"got {tuple(latent.shape)}")
        return self._decode(latent)

    def frozen_prefixes(self, train_injection: bool) -> tuple[str, ...]:
        """Nothing to freeze: the mel encoder has no weights (there is no injection layer to train)."""
        if train_injection:
            raise ValueError("the mel codec's encoder has no weights to train; set --decoder.train_injection "
                             "false (it applies to DashengTokenizer's acoustic injection)")
        return ()

    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) 16 kHz -> (B, output_hop_length * T): the training path (gradients into the decoder)."""
        return self._decode(self.mel.encode(audio))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (atomic writes)."""
        from genflow import hub

        folder = os.fspath(path)
        hub.write_weights(os.path.join(folder, "model.safetensors"), self.state_dict(), metadata={"format": "pt"})
        hub.write_json(os.path.join(folder, "config.json"), self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MelVocosCodec:
        """Load a folder written by ``save_pretrained``: strict, a frozen codec in eval mode."""
        from genflow import hub

        folder = hub.resolve(path, files=("config.json", "model.safetensors"), what="mel-vocos codec folder")
        model = cls(MelVocosConfig.from_dict(hub.read_json(folder / "config.json")))
        hub.load_weights(model, folder / "model.safetensors")
        return model.freeze()
