"""VGGish (Hershey et al. 2017) built natively in torch, with the harritaylor/torchvggish weights.

Front end exactly as ``vggish_input.waveform_to_examples``: 16 kHz mono, 25 ms periodic-Hann frames
every 10 ms, |rfft| with 512 points, 64 HTK-mel bands 125..7500 Hz (DC row zeroed), log(mel + 0.01),
then non-overlapping 0.96 s examples of 96 frames x 64 bands. The network maps each example to a
128-d embedding. As in audioldm_eval and fadtk, FAD uses the raw 128-d output of the last linear layer
(no final ReLU, no PCA/quantisation post-processing), one embedding per 0.96 s example.

Weights: https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth (a plain
state_dict of tensors: loads with ``torch.load(weights_only=True)``), or the same keys as .safetensors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from genflow import hub
from genflow.dsp import vggish_mel_filterbank

VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
SAMPLE_RATE = 16000
WIN, HOP, N_FFT, N_MELS, EXAMPLE_FRAMES = 400, 160, 512, 64, 96
LOG_OFFSET = 0.01


def vggish_log_mel(wav: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) 16 kHz waveform -> (frames, 64) log-mel, frames = 1 + (N - 400) // 160 (N >= 400 by padding)."""
    mel = vggish_mel_filterbank().to(wav.device) if mel is None else mel
    wav = wav.float().reshape(-1)
    if wav.numel() < WIN:
        wav = nn.functional.pad(wav, (0, WIN - wav.numel()))
    frames = wav.unfold(0, WIN, HOP)  # (T, 400), no centring, as vggish's stride-trick framing
    window = 0.5 - 0.5 * torch.cos(2 * math.pi / WIN * torch.arange(WIN, device=wav.device))
    mag = torch.fft.rfft(frames * window, n=N_FFT).abs()  # (T, 257)
    return torch.log(mag @ mel + LOG_OFFSET)  # (T, 64)


def vggish_examples(wav: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) 16 kHz waveform -> (E, 1, 96, 64) non-overlapping 0.96 s log-mel examples (at least one)."""
    logmel = vggish_log_mel(wav, mel)
    if logmel.shape[0] < EXAMPLE_FRAMES:
        # vggish drops clips under 0.975 s; we pad with silence's log-mel so every clip counts once.
        pad = logmel.new_full((EXAMPLE_FRAMES - logmel.shape[0], N_MELS), math.log(LOG_OFFSET))
        logmel = torch.cat([logmel, pad])
    return logmel.unfold(0, EXAMPLE_FRAMES, EXAMPLE_FRAMES).transpose(1, 2).unsqueeze(1)  # (E,1,96,64)


class VGGish(nn.Module):
    """VGGish: 4 conv stages (64-128-256x2-512x2, max-pool) + 3 linear layers -> 128-d per example."""

    def __init__(self, channels: tuple[int, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"),
                 hidden: int = 4096, dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for v in channels:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)  # key names features.{0,3,6,8,11,13} as in torchvggish
        n_pool = sum(v == "M" for v in channels)
        flat = c_in * (EXAMPLE_FRAMES >> n_pool) * (N_MELS >> n_pool)  # 512 * 6 * 4 for the real model
        # torchvggish ends with a ReLU after the 128-d layer; FAD tools strip it, so there is none here.
        self.embeddings = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )
        self.register_buffer("mel", vggish_mel_filterbank(), persistent=False)
        self.dim = dim

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """(E, 1, 96, 64) log-mel examples -> (E, 128) embeddings."""
        x = self.features(examples)  # (E, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # channels last, as TF VGGish flattens (torchvggish order)
        return self.embeddings(x)

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """(N,) 16 kHz waveform -> (E, 128): one embedding per 0.96 s example."""
        return self(vggish_examples(wav.to(self.mel.device), self.mel))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a plain-state_dict .pth (``weights_only=True``, no pickles)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return hub.read_weights(path)  # a damaged file: one line naming it
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal means "convert first"
        raise ValueError(
            f"{path}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: {e}). Convert it "
            "once, in an environment you trust, to safetensors: safetensors.torch.save_file(state_dict, "
            "'weights.safetensors') and pass that file"
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]  # training checkpoints such as PANNs' {"model": state_dict, ...}
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors, got {type(sd).__name__}")
    return sd


def strict_load(model: nn.Module, sd: dict[str, torch.Tensor], source: str, allow_missing=()) -> None:
    """Load ``sd`` into ``model`` strictly: any unexpected, missing or mis-shaped key is a ValueError."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(tuple(allow_missing))]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: weights do not match the {type(model).__name__} architecture; missing keys "
            f"{missing[:8]}, unexpected keys {unexpected[:8]}, shape mismatches {shapes[:8]}"
        )
    model.load_state_dict({**own, **sd}, strict=True)


def _sizes_from(sd: dict[str, torch.Tensor]) -> dict:
    """Layer widths read from the weights' shapes (the official file gives the published VGGish)."""
    conv = [int(sd[f"features.{i}.weight"].shape[0]) if f"features.{i}.weight" in sd else c
            for i, c in zip((0, 3, 6, 8, 11, 13), (64, 128, 256, 256, 512, 512))]
    channels = (conv[0], "M", conv[1], "M", conv[2], conv[3], "M", conv[4], conv[5], "M")
    hidden = int(sd["embeddings.0.weight"].shape[0]) if "embeddings.0.weight" in sd else 4096
    dim = int(sd["embeddings.4.weight"].shape[0]) if "embeddings.4.weight" in sd else 128
    return {"channels": channels, "hidden": hidden, "dim": dim}


def load_vggish(weights: str | os.PathLike | None = None, device: str | torch.device | None = None) -> VGGish:
    """VGGish with official weights from a local .pth/.safetensors file (default: $GENFLOW_VGGISH)."""
    weights = weights or os.environ.get("GENFLOW_VGGISH")
    if not weights or not Path(weights).is_file():
        raise FileNotFoundError(
            f"VGGish weights not found (given {weights!r}). Download {VGGISH_URL} on a machine with internet, "
            "then pass --backend vggish:/path/to/vggish-10086976.pth or set GENFLOW_VGGISH"
        )
    sd = read_state_dict(weights)
    model = VGGish(**_sizes_from(sd))
    strict_load(model, sd, str(weights))
    return model.eval().to(device or "cpu")
