"""The two GAN discriminators Vocos trains its decoder with: multi-period (HiFi-GAN) and multi-resolution.

    disc = Discriminators(DiscriminatorConfig())
    logits, features = disc(wav)        # wav (B, N): one logit map and a list of feature maps per sub-discriminator

Multi-period (Kong et al. 2020): the waveform is folded into (N / p, p) for p in ``periods`` and each fold
goes through 2-D convolutions over time only, so each sub-discriminator sees one phase of a periodic
structure. Multi-resolution (Jang et al. 2021, as in Vocos): 2-D convolutions over STFT magnitudes at
several (n_fft, hop) resolutions. Both are network-agnostic about the generator: waveforms in, logits and
features out. Widths scale with ``channels`` so tests run a tiny pair; the defaults are the published sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LRELU = 0.1  # leaky-ReLU slope of HiFi-GAN and Vocos


@dataclass
class DiscriminatorConfig:
    """Sizes of the multi-period and multi-resolution discriminators (defaults: Vocos / HiFi-GAN)."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: int = 32  # first layer; x4 per layer up to 1024 (HiFi-GAN: 32, 128, 512, 1024, 1024)
    resolutions: tuple[int, ...] = (512, 1024, 2048)  # STFT sizes; hop n_fft // 4, Hann window of n_fft
    resolution_channels: int = 32

    def __post_init__(self):
        if not self.periods and not self.resolutions:
            raise ValueError("DiscriminatorConfig needs at least one period or one resolution")
        if any(p < 1 for p in self.periods) or any(r < 4 for r in self.resolutions):
            raise ValueError(f"periods must be >= 1 and resolutions >= 4, got {self.periods} and {self.resolutions}")
        if self.period_channels < 1 or self.resolution_channels < 1:
            raise ValueError("period_channels and resolution_channels must be >= 1")


class PeriodDiscriminator(nn.Module):
    """One period p: (B, N) -> fold to (B, 1, N / p, p) -> 5 strided convs over time -> logits."""

    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        # HiFi-GAN at channels=32: 1 -> 32 -> 128 -> 512 -> 1024 -> 1024
        widths = [1] + [min(1024, channels * 4**i) for i in range(4)] + [min(1024, channels * 4**3)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, n = x.shape
        pad = (-n) % self.period
        x = F.pad(x, (0, pad), mode="reflect" if pad < n else "constant")
        x = x.view(b, 1, -1, self.period)  # (B, 1, N / p, p)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class ResolutionDiscriminator(nn.Module):
    """One STFT resolution: (B, N) -> magnitude (B, 1, frames, n_fft // 2 + 1) -> 2-D convs -> logits."""

    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
            *[weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))) for _ in range(3)],
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast(x.device.type, enabled=False):  # the STFT in fp32
            spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, center=True,
                              return_complex=True).abs()  # (B, F, frames)
        x = spec.transpose(1, 2).unsqueeze(1)  # (B, 1, frames, F)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class Discriminators(nn.Module):
    """All sub-discriminators: (B, N) waveform -> (list of logits, list of feature-map lists), one per sub."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = cfg = config or DiscriminatorConfig()
        self.period = nn.ModuleList(PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods)
        self.resolution = nn.ModuleList(ResolutionDiscriminator(n, cfg.resolution_channels) for n in cfg.resolutions)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for d in (*self.period, *self.resolution):
            lg, ft = d(wav)
            logits.append(lg)
            features.append(ft)
        return logits, features

    def kinds(self) -> list[str]:
        """'period' or 'resolution' per sub-discriminator, in output order (the loss weighs them apart, as Vocos)."""
        return ["period"] * len(self.period) + ["resolution"] * len(self.resolution)
