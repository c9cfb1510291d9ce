"""Evaluation protocols: how an audio file becomes the waveform an embedding network sees.

Published numbers depend on these steps as much as on the network (docs/evaluation.md). A protocol names
them all, so a report can say which one it followed and a cached reference is only reused under the same:

- ``genflow`` (default): mean of the channels; soxr HQ resampling; PANNs clips centred (DC removed) and
  zero-padded to 2 s after resampling, VGGish clips under 0.96 s padded with silence's log-mel to one example;
  IS with fewer than 10 clips uses one split of all clips.
- ``audioldm_eval``: first channel only; DC offset removed from every clip *before* resampling; torchaudio's
  default Hann-windowed sinc resampler (``genflow.dsp.sinc_resample``, plain torch); every clip zero-padded
  to 2 s (32000 samples) before *every* network, VGGish included. Its IS is NaN with fewer than 10 clips;
  genflow then uses one split of all clips and the report says so (``is_splits``).
- ``fadtk``: channel mean; no DC removal; resampled only when the rate differs, with torchaudio's
  Kaiser-windowed sinc (width 64, rolloff 0.9476, beta 14.77, fadtk's default path); a 16-bit round trip
  (fadtk always writes the converted file as 16-bit WAV and reads it back); zero-padded to 1 s; embeddings rounded
  to float16 (fadtk caches them so) before the statistics.

``audioldm_eval`` follows ``audioldm_eval/datasets/load_mel.py`` (``WaveDataset.read_from_file``), which
feeds the same waveform to VGGish (FAD) and PANNs (FD, KL, IS).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch

from genflow.audio import read_audio_channels, resample
from genflow.dsp import sinc_resample


@dataclass(frozen=True)
class Protocol:
    """The loading steps of one toolkit; ``prepare_in_backend`` lets genflow's own backends pad/centre."""

    name: str
    channels: str  # "mean": average the channels; "first": keep channel 0
    remove_dc: bool  # subtract each clip's mean at the file's rate, before resampling
    resampler: str  # "soxr" (genflow.audio.resample) or "sinc" (torchaudio's kernel, genflow.dsp.sinc_resample)
    min_seconds: float  # zero-pad every clip to this length after resampling (0: leave it to the backend)
    prepare_in_backend: bool  # backends apply their own preparation (genflow: PANNs centres and pads to 2 s)
    follows: str  # the toolkit and file whose steps these are
    sinc: dict = field(default_factory=dict)  # keyword arguments of genflow.dsp.sinc_resample
    pcm_bits: int = 0  # quantise to this many bits after resampling, as a 16-bit WAV round trip does (0: never)
    embedding_dtype: str = "float32"  # "float16": embeddings rounded as a toolkit caching them in fp16 does

    def load(self, path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
        """(N,) float32 waveform at ``sample_rate`` read from ``path`` the way this protocol does."""
        data, sr = read_audio_channels(path)  # (channels, N)
        wav = data.mean(0) if self.channels == "mean" and data.shape[0] > 1 else data[0]
        if self.remove_dc:
            wav = wav - wav.mean()
        if sr != sample_rate:
            wav = (sinc_resample(wav, sr, sample_rate, **self.sinc) if self.resampler == "sinc"
                   else resample(wav, sr, sample_rate))
        if self.pcm_bits:  # float -> PCM: round to nearest, clip (FFmpeg's conversion), then back to float
            scale = float(2 ** (self.pcm_bits - 1))
            wav = torch.round(wav * scale).clamp(-scale, scale - 1) / scale
        min_len = math.ceil(self.min_seconds * sample_rate)
        if wav.shape[-1] < min_len:
            wav = torch.nn.functional.pad(wav, (0, min_len - wav.shape[-1]))
        return wav.contiguous()

    def to_dict(self) -> dict:
        """Every setting, for reports and cached statistics."""
        return asdict(self)


PROTOCOLS = {
    "genflow": Protocol("genflow", "mean", False, "soxr", 0.0, True, "genflow (docs/evaluation.md)"),
    "audioldm_eval": Protocol("audioldm_eval", "first", True, "sinc", 2.0, False,
                              "haoheliu/audioldm_eval datasets/load_mel.py WaveDataset"),
    "fadtk": Protocol("fadtk", "mean", False, "sinc", 1.0, False, "microsoft/fadtk fad.py load_audio + ModelLoader",
                      sinc={"lowpass_filter_width": 64, "rolloff": 0.9475937167399596,
                            "kaiser_beta": 14.769656459379492, "transform_kernel": True},
                      pcm_bits=16, embedding_dtype="float16"),
}


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol called ``name`` (see ``PROTOCOLS``)."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; expected one of {sorted(PROTOCOLS)} "
                         "(--protocol audioldm_eval reproduces AudioLDM / Tango / DashengTokenizer tables, "
                         "--protocol fadtk fadtk's FAD)")
    return PROTOCOLS[name]
