"""Convenience around any ``Codec``: encode files or arbitrary waveforms, decode to a chosen rate, batch.

The codec's own ``encode``/``decode`` stay strict ((B, N) at ``codec.sample_rate``); these helpers do the
loading, downmixing, resampling, device moves and padding users would otherwise repeat.

    latent = encode_audio(codec, "clip.flac")              # (T, C)
    wav = decode_latent(codec, latent, sample_rate=44100)  # (N,) at 44.1 kHz
"""

from __future__ import annotations

import os

import numpy as np
import torch

from genflow.audio import load_audio, resample
from genflow.codecs.base import Codec

MAX_CHANNELS = 16  # a 2-D array with more rows than this on both axes is not a multichannel waveform


def _to_mono(x: torch.Tensor) -> torch.Tensor:
    """Any waveform shape -> (N,): (N,), (C, N) or soundfile's (N, C); leading size-1 dims are dropped."""
    while x.dim() > 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 1:
        return x
    if x.dim() == 2:
        if x.shape[0] <= MAX_CHANNELS:
            return x.mean(0)  # (C, N)
        if x.shape[1] <= MAX_CHANNELS:
            return x.mean(1)  # (N, C), as soundfile.read returns
    raise ValueError(f"cannot read a waveform of shape {tuple(x.shape)}: expected (N,), (C, N) or (N, C) with "
                     f"C <= {MAX_CHANNELS} channels; pass one clip at a time or use encode_batch")


def encode_audio(
    codec: Codec, audio: str | os.PathLike | torch.Tensor | np.ndarray, sample_rate: int | None = None
) -> torch.Tensor:
    """A file or a waveform (any rate, any channel layout) -> (T, C) latent, T = codec.num_frames(N at codec rate).

    For a file the rate comes from its header (``sample_rate`` must then be None); for a tensor/array
    ``sample_rate`` is its rate, None meaning it is already at ``codec.sample_rate``. Channels are downmixed by
    the mean and the result is resampled to the codec's rate.
    """
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError(f"sample_rate={sample_rate} given with a file ({os.fspath(audio)!r}): the file's own "
                             f"rate is used; drop sample_rate")
        wav, _ = load_audio(audio, codec.sample_rate)  # (N,) at the codec rate
    else:
        x = torch.as_tensor(audio)
        if not x.is_floating_point():
            raise ValueError(f"expected a float waveform in [-1, 1], got dtype {x.dtype}; "
                             f"convert integer PCM with x / 32768")
        if not torch.isfinite(x).all():
            raise ValueError("the waveform contains NaN or inf samples; clean it before encoding")
        wav = _to_mono(x.float())
        if sample_rate is not None and sample_rate != codec.sample_rate:
            wav = resample(wav, sample_rate, codec.sample_rate)
    if codec.num_frames(wav.shape[-1]) < 1:
        need = codec.hop_length / codec.sample_rate
        raise ValueError(f"audio too short for one latent frame: {wav.shape[-1]} samples at {codec.sample_rate} Hz "
                         f"({wav.shape[-1] / codec.sample_rate:.4f} s); the codec needs at least "
                         f"{codec.hop_length} samples ({need:.3f} s); pad it or give a longer clip")
    with torch.no_grad():
        return codec.encode(wav[None].to(codec.encoder_device))[0]  # (T, C)


def decode_latent(codec: Codec, latent: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
    """(T, C) -> (N,) or (B, T, C) -> (B, N) float32 waveform, resampled to ``sample_rate`` if given."""
    if latent.dim() not in (2, 3) or latent.shape[-1] != codec.latent_dim:
        raise ValueError(f"expected a latent (T, {codec.latent_dim}) or (B, T, {codec.latent_dim}), "
                         f"got shape {tuple(latent.shape)}")
    with torch.no_grad():
        wav = codec.decode(latent.to(codec.device) if latent.dim() == 3 else latent[None].to(codec.device))
    wav = wav.float()  # (B, N) at the decoder's rate (a trained wide-band decoder may write 24/44.1 kHz)
    if sample_rate is not None and sample_rate != codec.output_sample_rate:
        wav = resample(wav, codec.output_sample_rate, sample_rate)
    return wav if latent.dim() == 3 else wav[0]


@torch.no_grad()
def encode_padded(codec: Codec, audio: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, N) waveforms of ``lengths`` samples -> latents (B, T, C) zero past each clip's frames,
    and the frame mask (B, T) bool. The one place where pad -> mask -> encode -> trim happens.

    ``lengths`` is a host list (from collate), so encoding on a GPU costs no host sync.
    """
    device = audio.device
    n = torch.tensor(lengths)
    audio_mask = (torch.arange(audio.shape[1])[None, :] < n[:, None]).to(device, non_blocking=True)
    latent = codec.encode(audio, attention_mask=audio_mask).float()  # (B, T, C)
    frames = torch.tensor([codec.num_frames(int(k)) for k in lengths]).to(device, non_blocking=True)
    mask = torch.arange(latent.shape[1], device=device)[None, :] < frames[:, None]  # (B, T)
    return latent * mask[..., None], mask


def encode_batch(codec: Codec, waves: list[torch.Tensor], sample_rate: int | None = None) -> list[torch.Tensor]:
    """Encode mono (N_i,) clips in one padded, masked batch -> list of (codec.num_frames(N_i), C) latents."""
    if not waves:
        return []
    clips = [_to_mono(torch.as_tensor(w).float()) for w in waves]
    if sample_rate is not None and sample_rate != codec.sample_rate:
        clips = [resample(w, sample_rate, codec.sample_rate) for w in clips]
    lengths = [w.shape[-1] for w in clips]
    short = [i for i, n in enumerate(lengths) if codec.num_frames(n) < 1]
    if short:
        raise ValueError(f"clips {short} are shorter than one latent frame ({codec.hop_length} samples at "
                         f"{codec.sample_rate} Hz); drop or pad them")
    audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True).to(codec.encoder_device)  # (B, N_max)
    latent, mask = encode_padded(codec, audio, lengths)
    return [latent[i, : int(m.sum())] for i, m in enumerate(mask.cpu())]
