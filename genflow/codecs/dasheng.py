"""Native DashengTokenizer (``mispeech/dashengtokenizer``) in plain PyTorch.

Reproduces the official remote code (Apache-2.0) number for number without torchaudio, transformers or
``trust_remote_code``: the module and buffer names are those of the official state dict, so the
official ``model.safetensors`` loads with ``strict=True``.

    audio (B, N) 16 kHz -> encode -> latent (B, T, 1280) at 25 Hz, T = (1 + N // 160) // 4
    latent (B, T, 1280) -> decode -> audio (B, 640 * T)

Encoder: a frozen Dasheng ViT (64-bin log-mel, 10.08 s windows) whose tokens are summed with a
linear "acoustic injection" of a 128-bin log-mel. Decoder: ConvTranspose1d x2 upsampler, a Vocos
ConvNeXt backbone at 50 Hz and an ISTFT head (n_fft 1280, hop 320, "same" padding).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genflow.codecs.base import Codec
from genflow.config import from_dict
from genflow.dsp import htk_mel_filterbank

SAMPLE_RATE = 16000
SEM_HOP = 160  # semantic mel hop (hard-coded in the official code)
SEM_CHUNK_FRAMES = 1008  # ViT target_length: 10.08 s windows, 252 tokens each
PATCH_T = 4  # mel frames per token, both branches
MIN_SAMPLES = 513  # acoustic STFT reflect-pads 512 samples per side
HF_KEYS = ("architectures", "auto_map", "model_type", "dtype", "transformers_version")


@dataclass
class DashengTokenizerConfig:
    """Hyper-parameters, with the field names of the official ``config.json``."""

    embed_dim: int = 1280  # ViT width = latent dim
    depth: int = 32
    num_heads: int = 16
    n_mels_patch: int = 128  # acoustic mel bins
    hop_length: int = 160  # acoustic mel hop
    upsample_tokens: int = 2  # decoder frames per token
    decoder_embed_dim: int = 1280
    decoder_intermediate_size: int = 5120
    decoder_depth: int = 12
    istft_n_fft: int = 1280
    istft_hop: int = 320
    # genflow extension (absent from the official config): the rate decode writes, for decoders trained to
    # render the 16 kHz latents as 24 or 44.1 kHz audio (recipes/codec). None = 16 kHz, the official decoder.
    output_sample_rate: int | None = None

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        out_rate = self.output_sample_rate or SAMPLE_RATE
        if self.istft_hop * self.upsample_tokens * SAMPLE_RATE != self.hop_length * PATCH_T * out_rate:
            raise ValueError(
                f"istft_hop * upsample_tokens ({self.istft_hop} * {self.upsample_tokens}) must be one token "
                f"({self.hop_length * PATCH_T} samples at {SAMPLE_RATE} Hz) at output_sample_rate={out_rate}, "
                f"i.e. {self.hop_length * PATCH_T * out_rate / SAMPLE_RATE:g} samples, so decode(encode(x)) keeps "
                "the duration; e.g. istft_hop 480 for 24000 Hz, 882 for 44100 Hz (with upsample_tokens 2)"
            )

    @classmethod
    def from_dict(cls, d: dict) -> DashengTokenizerConfig:
        """Parse an official config dict; HF bookkeeping keys are ignored, unknown keys are errors."""
        return from_dict(cls, d, "DashengTokenizer config", ignore=HF_KEYS)

    def to_dict(self) -> dict:
        """The official ``config.json`` layout (``model_type`` lets loaders dispatch on it)."""
        d = dataclasses.asdict(self)
        if d["output_sample_rate"] is None:  # the official layout, key for key
            del d["output_sample_rate"]
        return {"model_type": "dashengtokenizer", **d}


# ----------------------------------------------------------------------------------------------------
# Front-ends (torchaudio-equivalent MelSpectrogram / AmplitudeToDB with the same buffer names)
# ----------------------------------------------------------------------------------------------------


class Spectrogram(nn.Module):
    """Centred (reflect-padded) STFT magnitude ** power; holds the ``window`` buffer."""

    def __init__(self, n_fft: int, hop_length: int, power: float):
        super().__init__()
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, n_fft // 2 + 1, 1 + N // hop)
        spec = torch.stft(
            x, self.n_fft, self.hop_length, self.n_fft, self.window.to(x.dtype),
            center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        )
        return spec.abs().pow(self.power)


class MelScale(nn.Module):
    """Linear-frequency spectrogram -> mel; holds the ``fb`` (n_freqs, n_mels) buffer."""

    def __init__(self, n_mels: int, n_freqs: int):
        super().__init__()
        self.register_buffer("fb", htk_mel_filterbank(n_freqs, n_mels, SAMPLE_RATE))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # (B, F, T) -> (B, n_mels, T)
        return torch.matmul(spec.transpose(-1, -2), self.fb.to(spec.dtype)).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    """torchaudio ``MelSpectrogram`` layout: ``spectrogram.window`` and ``mel_scale.fb``."""

    def __init__(self, n_fft: int, hop_length: int, n_mels: int, power: float):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length, power)
        self.mel_scale = MelScale(n_mels, n_fft // 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mel_scale(self.spectrogram(x))


class AmplitudeToDB(nn.Module):
    """10*log10(power), floored at (max - top_db) where max is over the WHOLE batch (torchaudio quirk)."""

    def __init__(self, top_db: float = 120.0):
        super().__init__()
        self.top_db = top_db

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n_mels, T)
        x_db = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
        # torchaudio packs a rank-3 input as (1, B, F, T): one max for the batch, not one per item.
        return torch.max(x_db, x_db.amax() - self.top_db)


class VocosMelSpec(nn.Module):
    """Acoustic front-end: log(max(|STFT| mel, 1e-7)), n_fft 1024, centre padding."""

    def __init__(self, n_mels: int, hop_length: int):
        super().__init__()
        self.mel_spec = MelSpectrogram(n_fft=1024, hop_length=hop_length, n_mels=n_mels, power=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, n_mels, 1 + N // hop)
        return torch.log(torch.clip(self.mel_spec(x), min=1e-7))


class SwapFreqChannel(nn.Module):
    """(b, c, f, t) <-> (b, f, c, t): the einops Rearrange around the mel-axis BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------
# Semantic encoder: Dasheng ViT
# ----------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention; masked keys get -inf, fully masked rows give zeros."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        # qkv outputs are ordered [q | k | v], heads contiguous inside each
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) True = valid key
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, D)
        if mask is not None:
            x = torch.nan_to_num(x, nan=0.0)  # softmax over no valid key: official zeroes it
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping (64 mel x 4 frame) patches -> tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=(64, PATCH_T), stride=(64, PATCH_T))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 64, F) -> (B, D, 1, F // 4)
        return self.proj(x)


class DashengEncoder(nn.Module):
    """Frozen Dasheng audio ViT: dB-mel -> BN over mel bins -> independent 10.08 s windows of tokens."""

    def __init__(self, dim: int, depth: int, num_heads: int):
        super().__init__()
        self.front_end = nn.Sequential(
            MelSpectrogram(n_fft=512, hop_length=SEM_HOP, n_mels=64, power=2.0), AmplitudeToDB(top_db=120.0)
        )
        self.init_bn = nn.Sequential(SwapFreqChannel(), nn.BatchNorm2d(64, momentum=0.01), SwapFreqChannel())
        self.patch_embed = PatchEmbed(dim)
        self.time_pos_embed = nn.Parameter(torch.randn(1, dim, 1, SEM_CHUNK_FRAMES // PATCH_T) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, dim, 1, 1) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform -> (B, 1, 64, 1 + N // 160) normalised dB-mel (mel in fp32, then model dtype)."""
        with torch.autocast(audio.device.type, enabled=False):
            x = self.front_end(audio.float())
        return self.init_bn(x.unsqueeze(1).to(self.init_bn[1].weight.dtype))

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One window: (B, 1, 64, F <= 1008) features, (B, F // 4) bool token mask -> (B, F // 4, D)."""
        x = self.patch_embed(x)  # (B, D, 1, t)
        x = x + self.time_pos_embed[..., : x.shape[-1]] + self.freq_pos_embed
        x = x.flatten(2).transpose(1, 2)  # (B, t, D); one frequency patch, so tokens are time steps
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def forward_chunks(self, x: torch.Tensor, num_valid_frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, 64, F) features -> (B, sum_c floor(F_c / 4), D), windows of 1008 frames.

        Windows are independent (positions restart, no cross-window attention). With ``num_valid_frames``
        (B,), padded keys are masked and padded tokens are zeroed in every window but the first, as the
        official code does. A last window of < 4 frames (padded to 4 there) is skipped: its token is
        always truncated away by the acoustic length, and windows never interact.
        """
        B, F_total = x.shape[0], x.shape[-1]
        starts = list(range(0, F_total - PATCH_T + 1, SEM_CHUNK_FRAMES))
        lengths = [min(SEM_CHUNK_FRAMES, F_total - s) for s in starts]
        # windows of equal length run as one batch: (num_windows * B, 1, 64, L)
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n, []).append(i)
        outs: list[torch.Tensor | None] = [None] * len(starts)
        for n, idx in groups.items():
            xs = torch.cat([x[..., starts[i] : starts[i] + n] for i in idx])
            mask = zero = None
            if num_valid_frames is not None:
                start = torch.tensor([starts[i] for i in idx], device=x.device).repeat_interleave(B)
                frames = (num_valid_frames.repeat(len(idx)) - start).clamp(0, n)  # valid frames per window
                mask = torch.arange(n // PATCH_T, device=x.device) < (frames // PATCH_T)[:, None]
                zero = (mask | (start == 0)[:, None]).unsqueeze(-1)  # the first window is never zeroed
            y = self.forward_features(xs, mask)
            if zero is not None:
                y = y * zero
            for j, i in enumerate(idx):
                outs[i] = y[j * B : (j + 1) * B]
        return torch.cat(outs, dim=1)

    def forward(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) waveform, (B, N) sample mask -> (B, T_sem, D) semantic tokens."""
        x = self.features(audio)
        num_valid = None if attention_mask is None else attention_mask.sum(-1).long() // SEM_HOP
        return self.forward_chunks(x, num_valid)


class DashengTokenizerEncoder(nn.Module):
    """Semantic ViT tokens + linear acoustic injection of a 128-bin log-mel = the latent."""

    def __init__(self, cfg: DashengTokenizerConfig):
        super().__init__()
        self.model = DashengEncoder(cfg.embed_dim, cfg.depth, cfg.num_heads)
        self.front_end = VocosMelSpec(cfg.n_mels_patch, cfg.hop_length)
        self.patch_embed = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=(cfg.n_mels_patch, PATCH_T), stride=(cfg.n_mels_patch, PATCH_T)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)  # default eps 1e-5, unlike the ViT's 1e-6

    def acoustic(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, (1 + N // hop) // 4, D); ignores any mask, no windowing."""
        with torch.autocast(audio.device.type, enabled=False):
            mel = self.front_end(audio.float())  # (B, n_mels, F)
        x = self.patch_embed(mel.unsqueeze(1).to(self.patch_embed.weight.dtype))  # (B, D, 1, F // 4)
        return self.norm(x.flatten(2).transpose(1, 2))

    def forward(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        acoustic = self.acoustic(audio)
        semantic = self.model(audio, attention_mask)
        return semantic[:, : acoustic.shape[1]] + acoustic


# ----------------------------------------------------------------------------------------------------
# Decoder: Vocos backbone + ISTFT head
# ----------------------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """Vocos ConvNeXt-1D block: depthwise k=7 conv, LN, MLP, layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    """(B, C_in, T) -> (B, T, hidden)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            [ConvNeXtBlock(dim, intermediate_dim, 1.0 / num_layers) for _ in range(num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding (not torch.istft): irfft, window, overlap-add, envelope."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # (B, n_fft // 2 + 1, L) complex -> (B, hop * L)
        n_fft, hop = self.n_fft, self.hop_length
        pad = (n_fft - hop) // 2
        L = spec.shape[-1]
        window = self.window.float()
        frames = torch.fft.irfft(spec, n_fft, dim=1, norm="backward") * window[None, :, None]
        size = (L - 1) * hop + n_fft  # overlap-add of L frames: (B, n_fft, L) -> (B, 1, 1, size)
        fold = dict(output_size=(1, size), kernel_size=(1, n_fft), stride=(1, hop))
        y = F.fold(frames, **fold)[:, 0, 0, pad:-pad]
        win_sq = window.square().expand(1, L, -1).transpose(1, 2)  # (1, n_fft, L)
        env = F.fold(win_sq, **fold)[0, 0, 0, pad:-pad]  # squared-window envelope, > 0 for Hann/hop 1/4
        return y / env


class ISTFTHead(nn.Module):
    """Linear -> (log-magnitude, phase) -> ISTFT; always fp32."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, dim) -> (B, hop * L)
        with torch.autocast(x.device.type, enabled=False):
            x = F.linear(x.float(), self.out.weight.float(), self.out.bias.float()).transpose(1, 2)
            mag, p = x.chunk(2, dim=1)
            mag = torch.clip(torch.exp(mag), max=1e2)
            return self.istft(mag * (torch.cos(p) + 1j * torch.sin(p)))  # (B, n_fft // 2 + 1, L) complex


class VocosDecoder(nn.Module):
    """Vocos: ConvNeXt backbone at 50 Hz + ISTFT head."""

    def __init__(self, cfg: DashengTokenizerConfig):
        super().__init__()
        self.backbone = VocosBackbone(
            cfg.embed_dim, cfg.decoder_embed_dim, cfg.decoder_intermediate_size, cfg.decoder_depth
        )
        self.head = ISTFTHead(cfg.decoder_embed_dim, cfg.istft_n_fft, cfg.istft_hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, hop * L)
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------------


class DashengTokenizer(Codec):
    """Native DashengTokenizer: 16 kHz mono <-> (B, T, 1280) latents at 25 Hz, as the official code."""

    sample_rate = SAMPLE_RATE

    def __init__(self, config: DashengTokenizerConfig | None = None):
        super().__init__()
        self.config = cfg = config or DashengTokenizerConfig()
        self.encoder = DashengTokenizerEncoder(cfg)
        self.upsampler = None
        if cfg.upsample_tokens > 1:
            self.upsampler = nn.ConvTranspose1d(
                cfg.embed_dim, cfg.embed_dim, kernel_size=cfg.upsample_tokens, stride=cfg.upsample_tokens
            )
        self.decoder = VocosDecoder(cfg)
        self.eval()

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / (self.config.hop_length * PATCH_T)

    @property
    def latent_dim(self) -> int:
        return self.config.embed_dim

    @property
    def output_sample_rate(self) -> int:
        return self.config.output_sample_rate or SAMPLE_RATE

    @property
    def output_hop_length(self) -> int:
        """Decoded samples per latent frame (640 for the official 16 kHz decoder)."""
        return self.config.istft_hop * max(1, self.config.upsample_tokens)

    def train(self, mode: bool = True) -> DashengTokenizer:
        """Train mode for the trainable parts only: the frozen ViT's BatchNorm keeps its running statistics."""
        super().train(mode)
        self.encoder.model.eval()
        return self

    def encoder_parts(self) -> tuple[nn.Module, ...]:
        """The ViT, its front end and the acoustic injection: decoding needs none of them."""
        return (self.encoder,)

    def frozen_prefixes(self, train_injection: bool) -> tuple[str, ...]:
        """State-dict prefixes codec training never updates: the ViT (and the injection unless trained)."""
        fixed = ("encoder.model.", "encoder.front_end.")
        return fixed if train_injection else (*fixed, "encoder.patch_embed.", "encoder.norm.")

    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) 16 kHz -> (B, output_hop_length * T) decoded audio, differentiable in the injection and decoder.

        The training path of ``recipes/codec``: the semantic ViT runs without gradients, the acoustic
        injection and the decoder with them (whichever of them require grad get one).
        """
        with torch.no_grad():
            semantic = self.encoder.model(audio)
        acoustic = self.encoder.acoustic(audio)
        return self._decode(semantic[:, : acoustic.shape[1]] + acoustic)

    def num_frames(self, num_samples: int) -> int:
        """T = (1 + N // hop) // 4 latent frames for N samples."""
        return (1 + num_samples // self.config.hop_length) // PATCH_T

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) 16 kHz waveform, optional (B, N) mask (1 = valid sample) -> (B, T, latent_dim)."""
        if audio.ndim != 2:
            raise ValueError(
                f"DashengTokenizer.encode expects audio of shape (batch, samples), got {tuple(audio.shape)}; "
                "add a batch dim with audio[None] or drop a channel dim with audio[:, 0]"
            )
        if audio.shape[1] < MIN_SAMPLES:
            raise ValueError(
                f"DashengTokenizer.encode needs at least {MIN_SAMPLES} samples (32 ms at 16 kHz), "
                f"got {audio.shape[1]}; pad the clip"
            )
        if attention_mask is not None and attention_mask.shape != audio.shape:
            raise ValueError(
                f"attention_mask must have the shape of audio {tuple(audio.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        return self.encoder(audio, attention_mask)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent.transpose(1, 2).to(self.decoder.backbone.embed.weight.dtype)  # (B, C, T)
        if self.upsampler is not None:
            x = self.upsampler(x)  # (B, C, upsample_tokens * T)
        return self.decoder(x)

    def decode(
        self, latent: torch.Tensor, chunk_frames: int | None = None, context_frames: int = 24
    ) -> torch.Tensor:
        """(B, T, latent_dim) -> (B, output_hop_length * T) waveform at ``output_sample_rate``; fp32.

        With ``chunk_frames``, long latents are decoded in windows of ``chunk_frames`` tokens plus
        ``context_frames`` tokens of context each side, and the centres are concatenated: memory is
        bounded and the result equals one-shot decoding (the decoder sees +-21 tokens: 13 k=7 convs at
        50 Hz plus the synthesis window).
        """
        if latent.ndim != 3 or latent.shape[-1] != self.latent_dim or latent.shape[1] < 1:
            raise ValueError(
                f"DashengTokenizer.decode expects a latent of shape (batch, frames >= 1, {self.latent_dim}), "
                f"got {tuple(latent.shape)}"
            )
        T = latent.shape[1]
        if chunk_frames is None or T <= chunk_frames:
            return self._decode(latent)
        if chunk_frames < 1 or context_frames < 0:
            raise ValueError(
                f"chunk_frames must be >= 1 and context_frames >= 0, got {chunk_frames} and {context_frames}"
            )
        hop = self.output_hop_length
        out = []
        for s in range(0, T, chunk_frames):
            e = min(T, s + chunk_frames)
            lo, hi = max(0, s - context_frames), min(T, e + context_frames)
            wav = self._decode(latent[:, lo:hi])
            out.append(wav[:, (s - lo) * hop : (e - lo) * hop])
        return torch.cat(out, dim=1)

    # -- loading -------------------------------------------------------------------------------------

    def load_state_dict_strict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Strict load whose errors name the missing / unexpected / mis-shaped keys."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(
                "DashengTokenizer checkpoint does not match the model built from its config: "
                f"missing keys {missing}, unexpected keys {unexpected}; check config.json against the weights"
            )
        bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
               for k, v in state_dict.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(f"DashengTokenizer checkpoint has wrong shapes: {bad}; check config.json")
        self.load_state_dict(state_dict, strict=True)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str = "mispeech/dashengtokenizer", revision: str | None = None
    ) -> DashengTokenizer:
        """Load ``config.json`` + ``model.safetensors`` from a local folder or a Hugging Face hub id."""
        from genflow import hub

        folder = hub.resolve(path_or_hub_id, files=("config.json", "model.safetensors"), revision=revision,
                             what="DashengTokenizer folder")
        model = cls(DashengTokenizerConfig.from_dict(hub.read_json(folder / "config.json")))
        model.load_state_dict_strict(hub.read_weights(folder / "model.safetensors"))
        return model.freeze()  # eval, no parameter gradients (inputs can still get them through decode)

    def save_pretrained(self, path: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` in the official layout (atomic writes)."""
        from genflow import hub

        hub.write_weights(os.path.join(path, "model.safetensors"), self.state_dict(), metadata={"format": "pt"})
        hub.write_json(os.path.join(path, "config.json"), self.config.to_dict())
