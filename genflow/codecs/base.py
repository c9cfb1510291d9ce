"""The codec contract every downstream part of genflow relies on.

A codec maps mono waveforms at ``sample_rate`` to latent sequences at ``frame_rate`` and back:

    encode(audio: (B, N), attention_mask: (B, N) | None) -> latent (B, T, latent_dim)
    decode(latent: (B, T, latent_dim))                    -> audio  (B, N')

Training, sampling and enhancement only use this contract, so a new codec (a VAE, say) plugs in
without touching them. Codecs are frozen ``nn.Module``s: move them with ``.to(device)``; ``encoder_to`` moves
the encoder apart (training from cached latents keeps it off the GPU).
"""

from __future__ import annotations

import torch
from torch import nn


class Codec(nn.Module):
    """Base class: a frozen waveform <-> latent codec."""

    #: samples per second of the waveforms this codec reads and writes
    sample_rate: int
    #: latent frames per second
    frame_rate: float
    #: channels of one latent frame
    latent_dim: int

    @property
    def device(self) -> torch.device:
        """Where the codec's decoding weights live (the CPU for a weight-free codec); see ``encoder_device``."""
        encoder = {id(t) for part in self.encoder_parts() for t in (*part.parameters(), *part.buffers())}
        for t in (*self.parameters(), *self.buffers()):
            if id(t) not in encoder:
                return t.device
        return self.encoder_device if encoder else torch.device("cpu")

    @property
    def encoder_device(self) -> torch.device:
        """Where ``encode`` runs: the device of the encoder's own weights (``encoder_to``), else ``device``."""
        for part in self.encoder_parts():
            for t in (*part.parameters(), *part.buffers()):
                return t.device
        return self.device

    def encoder_parts(self) -> tuple[nn.Module, ...]:
        """Submodules only ``encode`` uses (none in a weight-free codec): what ``encoder_to`` moves."""
        return ()

    def encoder_to(self, device: torch.device | str) -> Codec:
        """Move the encoder's weights alone (e.g. to the CPU while training reads cached latents); decode stays."""
        for part in self.encoder_parts():
            part.to(device)
        return self

    @property
    def output_sample_rate(self) -> int:
        """Samples per second of what ``decode`` returns: ``sample_rate`` unless a wider decoder was trained."""
        return self.sample_rate

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return round(self.sample_rate / self.frame_rate)

    @property
    def output_hop_length(self) -> int:
        """Decoded samples per latent frame (``hop_length`` unless the decoder writes another rate)."""
        if self.output_sample_rate == self.sample_rate:
            return self.hop_length
        return round(self.output_sample_rate / self.frame_rate)

    def num_frames(self, num_samples: int) -> int:
        """Latent frames that ``encode`` returns for ``num_samples`` samples."""
        raise NotImplementedError

    def encode(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) waveform at ``sample_rate`` -> (B, T, latent_dim) latent."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, latent_dim) latent -> (B, N') waveform at ``output_sample_rate``."""
        raise NotImplementedError

    def decode_with_phase(self, latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, T, latent_dim) latent -> (B, N') waveform whose phase is that of ``reference`` (B, N) at
        ``sample_rate``, the frames aligned: enhancement's ``phase="input"``. Only codecs whose latents hold a
        magnitude spectrum can do it (the mel codec); the others decode the waveform as a whole."""
        raise ValueError(f"phase='input' needs a codec whose latents are a magnitude spectrum (the mel codec); "
                         f"{type(self).__name__} decodes waveforms itself: use phase='decoder'")

    def freeze(self) -> Codec:
        """Eval mode, no gradients: codecs are never trained by genflow."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self
