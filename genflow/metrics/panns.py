"""PANNs CNN14 at 16 kHz (Kong et al. 2020) built natively in torch, with its official weights.

Architecture and front end of ``Cnn14_16k``: periodic-Hann STFT (window 512, hop 160, centred with
reflect padding), power spectrum, 64 Slaney mel bands 50..8000 Hz, 10 log10(max(x, 1e-10)), BatchNorm
over mel bands, six conv blocks (64..2048 channels), mean over frequency, max + mean over time,
fc1 (2048, ReLU) -> the 2048-d embedding, fc_audioset -> 527 AudioSet logits. Same settings as
audioldm_eval's 16 kHz evaluator (its "FD" is on the 2048-d embedding; KL and IS on the logits).

Weights: https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth ({"model": state_dict});
keys are mapped strictly: the STFT as 1-D convolutions (``spectrogram_extractor.stft.conv_real/imag``)
is checked against the DFT used here and dropped, ``logmel_extractor.melW`` is loaded as the filterbank.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genflow.dsp import slaney_mel_filterbank
from genflow.metrics.vggish import read_state_dict, strict_load

PANNS_URL = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"
SAMPLE_RATE, N_FFT, HOP, N_MELS, FMIN, FMAX = 16000, 512, 160, 64, 50.0, 8000.0
MIN_SECONDS = 2.0  # shorter clips are zero-padded to 2 s, as audioldm_eval does (pad_short_audio, 32000 samples)


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU layers followed by 2-D average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class LogMel(nn.Module):
    """Holds the mel filterbank under the official key name ``logmel_extractor.melW``."""

    def __init__(self, mel: torch.Tensor):
        super().__init__()
        self.melW = nn.Parameter(mel, requires_grad=False)  # (257, 64)


class Cnn14(nn.Module):
    """CNN14 audio tagger: (B, N) 16 kHz waveforms -> 2048-d embeddings and 527 AudioSet logits."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048), classes: int = 527):
        super().__init__()
        self.logmel_extractor = LogMel(
            slaney_mel_filterbank(N_FFT // 2 + 1, N_MELS, SAMPLE_RATE, FMIN, FMAX, norm="slaney"))  # librosa's
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)  # periodic, as librosa
        self.bn0 = nn.BatchNorm2d(N_MELS)
        chans = (1, *widths)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.fc_audioset = nn.Linear(widths[-1], classes)
        self.dim = widths[-1]

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, 1, frames, 64) log-mel power in dB (frames = N // 160 + 1)."""
        spec = torch.stft(wav, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs() ** 2  # (B, 257, T)
        mel = spec.transpose(1, 2) @ self.logmel_extractor.melW  # (B, T, 64)
        return (10.0 * torch.log10(mel.clamp(min=1e-10))).unsqueeze(1)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N) waveforms -> {"embedding": (B, 2048), "logits": (B, 527)}."""
        x = self.log_mel(wav)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel band
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
        x = x.mean(3)  # (B, C, T'): average over frequency
        x = x.amax(2) + x.mean(2)  # (B, C)
        emb = F.relu(self.fc1(x))
        return {"embedding": emb, "logits": self.fc_audioset(emb)}

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N,) 16 kHz waveform, as given -> {"embedding": (1, 2048), "logits": (527,)}.

        Centring and padding to 2 s are the evaluation protocol's job (``PannsBackend.prepare`` for genflow's,
        ``genflow.metrics.protocols`` for audioldm_eval's, which centres before resampling).
        """
        wav = wav.float().reshape(1, -1).to(self.fc1.weight.device)
        out = self(wav)
        return {"embedding": out["embedding"], "logits": out["logits"][0]}


def map_official_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official PANNs keys -> this module's keys: check and drop the conv-STFT kernels, keep the rest."""
    sd = dict(sd)
    k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(N_FFT, dtype=torch.float64)[None, :]
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    expected = {
        "spectrogram_extractor.stft.conv_real.weight": torch.cos(2 * math.pi * k * n / N_FFT) * window,
        "spectrogram_extractor.stft.conv_imag.weight": -torch.sin(2 * math.pi * k * n / N_FFT) * window,
    }
    for key, want in expected.items():
        if key not in sd:
            continue
        got = sd.pop(key).double()
        if got.numel() != want.numel() or not torch.allclose(got.reshape(want.shape), want, atol=1e-4):
            raise ValueError(
                f"{key}: the checkpoint's STFT is not a {N_FFT}-point periodic-Hann DFT (shape "
                f"{tuple(got.shape)}); expected the Cnn14_16k checkpoint (window 512, hop 160)"
            )
    return sd


def load_panns(weights: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Cnn14:
    """CNN14-16k with official weights from a local .pth/.safetensors file (default: $GENFLOW_PANNS)."""
    weights = weights or os.environ.get("GENFLOW_PANNS")
    if not weights or not Path(weights).is_file():
        raise FileNotFoundError(
            f"PANNs CNN14-16k weights not found (given {weights!r}). Download {PANNS_URL} on a machine with "
            "internet, then pass --backend panns:/path/to/Cnn14_16k_mAP=0.438.pth or set GENFLOW_PANNS"
        )
    sd = map_official_keys(read_state_dict(weights))
    # Widths come from the weights' shapes (the official file gives the published 64..2048 CNN14).
    widths = tuple(int(sd[f"conv_block{i}.conv1.weight"].shape[0]) if f"conv_block{i}.conv1.weight" in sd else w
                   for i, w in zip(range(1, 7), (64, 128, 256, 512, 1024, 2048)))
    classes = int(sd["fc_audioset.weight"].shape[0]) if "fc_audioset.weight" in sd else 527
    model = Cnn14(widths, classes)
    strict_load(model, sd, str(weights),
                allow_missing=("num_batches_tracked",))
    return model.eval().to(device or "cpu")
