"""The losses a Vocos-style decoder trains with: multi-resolution log-mel L1, hinge GAN losses, feature matching.

    mel = MultiResolutionMelLoss(sample_rate=16000)
    loss_g = mel_weight * mel(fake, real) + generator_loss(logits_fake) + feature_matching(feats_real, feats_fake)
    loss_d = discriminator_loss(logits_real, logits_fake_detached)

Tensors in, tensors out: no network is named here. The hinge form and the feature-matching sum are those of
Vocos (``vocos/loss.py``); the mel loss is the multi-resolution one of DAC/BigVGAN (Vocos itself uses one
resolution), each resolution a mean absolute error of ``log(clamp(mel, 1e-5))``.
"""

from __future__ import annotations

import torch
from torch import nn

from genflow.codecs.mel import slaney_mel_filterbank


class MultiResolutionMelLoss(nn.Module):
    """Mean over resolutions of the L1 distance between log-mel spectrograms; (B, N) waveforms -> scalar."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (512, 1024, 2048),
                 n_mels: tuple[int, ...] = (40, 80, 128), floor: float = 1e-5):
        super().__init__()
        if len(n_ffts) != len(n_mels) or not n_ffts:
            raise ValueError(f"n_ffts {n_ffts} and n_mels {n_mels} must be non-empty and of the same length")
        self.n_ffts, self.floor = tuple(n_ffts), floor
        for n_fft, m in zip(n_ffts, n_mels):
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)
            # (n_mels, F): unit-sum Slaney filters, so levels do not depend on n_fft
            self.register_buffer(f"fb_{n_fft}", slaney_mel_filterbank(n_fft // 2 + 1, m, sample_rate).T,
                                 persistent=False)

    def log_mel(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        """(B, N) -> (B, n_mels, frames) natural-log mel magnitude at one resolution (fp32)."""
        window = getattr(self, f"window_{n_fft}")
        spec = torch.stft(wav.float(), n_fft, n_fft // 4, window=window, center=True, return_complex=True).abs()
        return torch.log(torch.clamp(getattr(self, f"fb_{n_fft}") @ spec, min=self.floor))

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.shape != real.shape:
            raise ValueError(f"mel loss needs equal shapes, got decoded {tuple(fake.shape)} vs target "
                             f"{tuple(real.shape)}; crop both to the decoder's output length")
        with torch.autocast(fake.device.type, enabled=False):
            losses = [(self.log_mel(fake, n) - self.log_mel(real, n)).abs().mean() for n in self.n_ffts]
        return torch.stack(losses).mean()


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> list[torch.Tensor]:
    """Hinge loss per sub-discriminator: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return [torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real, fake)]


def generator_loss(fake: list[torch.Tensor]) -> list[torch.Tensor]:
    """Hinge loss of the generator per sub-discriminator: mean(relu(1 - D(fake)))."""
    return [torch.relu(1 - f).mean() for f in fake]


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Per sub-discriminator: sum over its layers of mean |features(real) - features(fake)| (real detached)."""
    return [sum((r.detach() - f).abs().mean() for r, f in zip(rs, fs)) for rs, fs in zip(real, fake)]
