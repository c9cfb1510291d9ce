"""An Oobleck VAE (Stable Audio's autoencoder) through diffusers' ``AutoencoderOobleck``, as a genflow codec.

    audio (B, N) at the VAE's rate -> encode -> latent (B, T, C), T = N // hop, hop = prod(downsampling_ratios)
    latent (B, T, C)               -> decode -> audio (B, hop * T)

Where the VAE comes from (the ``load_codec`` forms):

    load_codec("path/to/vae")                              # a diffusers folder: config.json (AutoencoderOobleck)
                                                           #   + diffusion_pytorch_model.safetensors
    load_codec("path/to/pipeline:vae")                     # the VAE in a subfolder of a local pipeline folder
    load_codec("stabilityai/stable-audio-open-1.0:vae")    # hub id ':' subfolder (the VAE of a pipeline repo)
    load_codec("owner/name@revision:vae")                  # ... at a revision; 'owner/name:.' = the repo's root
    load_codec("runs/x/codec")                             # a genflow VAE codec folder (with latent statistics)

Only safetensors weights are read (no pickles), into a model built from ``config.json``, strictly: a missing,
unexpected or mis-shaped tensor is an error naming it.

Channels and rate: the codec reads and writes mono at the VAE's own ``sampling_rate`` (44.1 kHz for Stable
Audio Open); data loading resamples to it as for every codec. A stereo VAE gets the mono clip on both
channels and its decoded channels are averaged. A trailing partial hop is dropped, as in the mel codec.

Latents: the posterior mean by default (``sample_posterior`` in the config, or ``encode(..., sample=True)``,
draws ``mean + std * eps`` instead). The DiT sees ``(z - mean_c) / std_c`` with per-channel statistics of
the training data (``genflow.codecs.latent_stats`` computes them and writes a genflow codec folder that travels
with the run and its release); ``decode`` undoes it. Without statistics the raw latents pass through.

A genflow VAE codec folder:

    config.json                  {"model_type": "genflow-oobleck-vae", "vae": "vae" | hub id, "subfolder",
                                  "revision", "sample_posterior", "stats": {how they were computed}}
    latent_stats.safetensors     {"mean": (C,), "std": (C,)} float32
    vae/                         the diffusers VAE folder (copied in when the source was local)
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genflow import hub
from genflow.codecs.base import Codec
from genflow.config import from_dict

MODEL_TYPE = "genflow-oobleck-vae"
VAE_CLASS = "AutoencoderOobleck"
WEIGHTS = "diffusion_pytorch_model.safetensors"
STATS = "latent_stats.safetensors"


@dataclass
class VAECodecConfig:
    """Where the VAE comes from and how latents are drawn; saved as a genflow codec folder's ``config.json``."""

    vae: str  # diffusers folder (relative to the codec folder when saved) or hub id "owner/name"
    subfolder: str | None = None  # e.g. "vae" inside a pipeline folder/repo
    revision: str | None = None  # hub revision
    sample_posterior: bool = False  # False: posterior mean; True: mean + std * N(0, 1)
    stats: dict = field(default_factory=dict)  # how the latent statistics were computed (clips, frames, source)

    @classmethod
    def from_dict(cls, d: dict) -> VAECodecConfig:
        """Build from ``config.json``; ``model_type`` is checked, unknown keys fail with the nearest name."""
        if d.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"model_type {d.get('model_type')!r}: expected {MODEL_TYPE!r}")
        return from_dict(cls, d, "VAE codec config", ignore=("model_type",))

    def to_dict(self) -> dict:
        """``config.json`` content."""
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}


def vae_ref(source: str, subfolder: str | None = None, revision: str | None = None) -> str:
    """The ``genflow.hub`` reference of a VAE: ``SOURCE[@REVISION][:SUBFOLDER]``."""
    return f"{source}{f'@{revision}' if revision else ''}{f':{subfolder}' if subfolder else ''}"


def load_oobleck(ref: str):
    """An ``AutoencoderOobleck`` from a diffusers folder or hub reference, built from config.json, loaded strictly."""
    from diffusers import AutoencoderOobleck

    folder = hub.resolve(ref, files=("config.json",), patterns=(WEIGHTS,), what="diffusers AutoencoderOobleck folder")
    if not (folder / WEIGHTS).is_file():
        pickled = (folder / "diffusion_pytorch_model.bin").is_file()
        hint = (" (only a pickled .bin is there: genflow reads safetensors only; convert it once with "
                "AutoencoderOobleck.from_pretrained(folder).save_pretrained(out, safe_serialization=True))"
                if pickled else "")
        raise FileNotFoundError(f"{folder / WEIGHTS} not found{hint}: a diffusers AutoencoderOobleck folder needs "
                                f"config.json and {WEIGHTS}; give the folder that holds them (or 'FOLDER:SUBFOLDER')")
    config = hub.read_json(folder / "config.json")
    if config.get("_class_name", VAE_CLASS) != VAE_CLASS:
        raise ValueError(f"{folder / 'config.json'} describes a {config.get('_class_name')!r}, expected "
                         f"{VAE_CLASS!r}; point at the VAE (for a pipeline: 'SOURCE:vae')")
    with warnings.catch_warnings():  # diffusers builds it with the deprecated torch.nn.utils.weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        vae = AutoencoderOobleck.from_config(config)
    return hub.load_weights(vae, folder / WEIGHTS).eval()


class OobleckVAECodec(Codec):
    """Mono waveforms <-> normalised Oobleck VAE latents (posterior mean by default)."""

    def __init__(self, vae, config: VAECodecConfig, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        self.vae, self.config = vae, config
        self.vae_dir: str | None = config.vae if os.path.isdir(config.vae) else None  # copied by save_pretrained
        ratios = [int(r) for r in vae.config.downsampling_ratios]
        self.hop = int(torch.tensor(ratios).prod())
        self.sample_rate = int(vae.config.sampling_rate)
        self.frame_rate = self.sample_rate / self.hop
        self.latent_dim = int(vae.config.decoder_input_channels)
        self.audio_channels = int(vae.config.audio_channels)
        self.has_latent_stats = mean is not None
        c = self.latent_dim
        mean = torch.zeros(c) if mean is None else mean.float()
        std = torch.ones(c) if std is None else std.float()
        if mean.shape != (c,) or std.shape != (c,) or not bool((std > 0).all() and torch.isfinite(mean).all()):
            raise ValueError(f"latent statistics must be mean ({c},) finite and std ({c},) > 0, got "
                             f"{tuple(mean.shape)} / {tuple(std.shape)}; recompute them with "
                             "genflow.codecs.latent_stats")
        self.register_buffer("latent_mean", mean)  # (C,) saved: the cache signature sees them
        self.register_buffer("latent_std", std)

    def encoder_parts(self) -> tuple[nn.Module, ...]:
        """The VAE's encoder (decoding reads the decoder and the latent statistics only)."""
        return (self.vae.encoder,)

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame (exact, even where the frame rate is not a whole number)."""
        return self.hop

    def num_frames(self, num_samples: int) -> int:
        """``num_samples // hop``: one frame per whole hop."""
        return int(num_samples) // self.hop

    def _posterior(self, audio: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        """(b, hop * t) mono at the VAE rate -> (b, C, t) raw latent (mean or a draw)."""
        x = audio.to(self.vae.dtype)[:, None].expand(-1, self.audio_channels, -1)  # mono on every channel
        dist = self.vae.encode(x).latent_dist
        return dist.sample(generator=generator) if sample else dist.mean

    @torch.no_grad()
    def encode_raw(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                   sample: bool | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, N), optional (B, N) prefix mask -> (B, N // hop, C) unnormalised latent; padding frames are 0.

        Rows of equal valid length are encoded together, each cut to its own whole hops, so a padded batch
        gives every clip exactly the latent it gets alone (a conv encoder's bias would leak into zero padding).
        """
        if audio.dim() != 2:
            raise ValueError(f"OobleckVAECodec.encode expects audio (B, N), got shape {tuple(audio.shape)}; "
                             f"use genflow.codecs.encode_audio for files or other shapes")
        b, n = audio.shape
        lengths = torch.full((b,), n) if attention_mask is None else attention_mask.bool().sum(-1).cpu()
        if attention_mask is not None:
            prefix = torch.arange(n)[None] < lengths[:, None]
            if attention_mask.shape != audio.shape or not torch.equal(attention_mask.bool().cpu(), prefix):
                raise ValueError(f"attention_mask must be a (B, N) = {tuple(audio.shape)} prefix mask (valid samples "
                                 f"first, then padding), got shape {tuple(attention_mask.shape)}")
        sample = self.config.sample_posterior if sample is None else sample
        out = torch.zeros(b, self.num_frames(n), self.latent_dim, device=audio.device)
        for length in sorted(set(lengths.tolist())):
            t = self.num_frames(length)
            if t == 0:
                continue
            rows = (lengths == length).nonzero()[:, 0].to(audio.device)
            z = self._posterior(audio[rows, : t * self.hop], sample, generator)  # (b', C, t)
            out[rows, :t] = z.float().transpose(1, 2)
        return out

    def encode(self, audio: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               sample: bool | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, N) waveform at ``sample_rate`` -> (B, N // hop, C) normalised latent ``(z - mean) / std``."""
        z = self.encode_raw(audio, attention_mask, sample=sample, generator=generator)
        return (z - self.latent_mean) / self.latent_std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, C) normalised latent -> (B, hop * T) mono waveform at ``sample_rate`` (float32)."""
        if latent.dim() != 3 or latent.shape[-1] != self.latent_dim:
            raise ValueError(f"OobleckVAECodec.decode expects latent (B, T, {self.latent_dim}), "
                             f"got {tuple(latent.shape)}")
        b, t, _ = latent.shape
        if t == 0:
            return latent.new_zeros(b, 0, dtype=torch.float32)
        z = latent.float() * self.latent_std + self.latent_mean  # denormalise
        wav = self.vae.decode(z.transpose(1, 2).to(self.vae.dtype)).sample.float().mean(1)  # (B, ~hop * T)
        n = t * self.hop  # odd strides make the transposed convs one sample short: pad/trim to whole hops
        return wav[:, :n] if wav.shape[-1] >= n else torch.nn.functional.pad(wav, (0, n - wav.shape[-1]))

    def with_latent_stats(self, mean: torch.Tensor, std: torch.Tensor, stats: dict) -> OobleckVAECodec:
        """The same VAE with per-channel statistics (C,) set; ``stats`` says how they were computed."""
        config = dataclasses.replace(self.config, stats=dict(stats))
        codec = type(self)(self.vae, config, mean, std).to(self.latent_mean.device)
        codec.vae_dir = self.vae_dir
        return codec.freeze()

    @classmethod
    def from_vae(cls, source: str, subfolder: str | None = None, revision: str | None = None,
                 sample_posterior: bool = False) -> OobleckVAECodec:
        """A codec without statistics from a diffusers VAE folder or hub id (raw latents pass through)."""
        vae = load_oobleck(vae_ref(source, subfolder, revision))
        return cls(vae, VAECodecConfig(source, subfolder, revision, sample_posterior)).freeze()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> OobleckVAECodec:
        """Load a genflow VAE codec folder written by ``save_pretrained`` (statistics loaded strictly)."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} not found: a genflow VAE codec folder needs the config.json "
                                    f"written by OobleckVAECodec.save_pretrained")
        config = VAECodecConfig.from_dict(hub.read_json(cfg_file))
        local = path / config.vae
        vae = load_oobleck(vae_ref(str(local) if local.is_dir() else config.vae, config.subfolder, config.revision))
        mean = std = None
        if (path / STATS).is_file():
            stats = hub.read_weights(path / STATS)
            if set(stats) != {"mean", "std"}:
                raise ValueError(f"{path / STATS} holds {sorted(stats)}, expected exactly ['mean', 'std']")
            mean, std = stats["mean"], stats["std"]
        codec = cls(vae, config, mean, std)
        codec.vae_dir = str(local) if local.is_dir() else None
        return codec.freeze()

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write a genflow VAE codec folder (atomically): config, statistics, and a local VAE copied in."""
        config = self.config
        with hub.atomic_folder(path) as tmp:
            if self.vae_dir is not None:  # a local VAE travels inside, so the folder is self-contained
                self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
                config = dataclasses.replace(config, vae="vae", subfolder=None, revision=None)
            if self.has_latent_stats:
                hub.write_weights(tmp / STATS, {"mean": self.latent_mean, "std": self.latent_std})
            hub.write_json(tmp / "config.json", config.to_dict())
        return Path(path)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, hop={self.hop}, frame_rate={self.frame_rate:.4g}, "
                f"latent_dim={self.latent_dim}, audio_channels={self.audio_channels}, "
                f"latent_stats={self.has_latent_stats}, sample_posterior={self.config.sample_posterior}")
