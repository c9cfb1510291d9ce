"""Per-channel latent statistics of a VAE codec, computed once from the training data, stored as a codec folder.

    folder = prepare_vae_codec("stabilityai/stable-audio-open-1.0:vae", "data/audiocaps/train.jsonl",
                               "runs/tta-vae/codec")        # encode up to max_clips clips, write the folder
    codec = load_codec(folder)                              # encode -> (z - mean) / std, decode undoes it

A VAE's raw latents are not unit-scale (Stable Audio Open's channels have stds from ~0.4 to ~2), and flow
matching assumes data of the noise's scale, so the DiT sees per-channel standardised latents. The statistics
are those of the posterior means over every valid frame of the first ``max_clips`` training clips (manifest
order), summed in float64. ``prepare.py --codec ...`` and ``train.py --codec ...`` call ``prepare_vae_codec``
when the codec is a VAE without statistics: the folder lands in ``--out-dir``/codec or RUN/codec, the run
trains with it and the release ships it, so sampling decodes with the same statistics.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from genflow import hub
from genflow.codecs.base import Codec

log = logging.getLogger(__name__)


def needs_latent_stats(codec: Codec) -> bool:
    """Whether ``codec`` is a VAE codec still without latent statistics."""
    from genflow.codecs.vae import OobleckVAECodec

    return isinstance(codec, OobleckVAECodec) and not codec.has_latent_stats


def manifest_audio_paths(manifest: str | os.PathLike, max_clips: int) -> list[str]:
    """Absolute paths of the first ``max_clips`` distinct clean-audio files ("audio" or "clean") of a manifest."""
    from genflow.data import read_manifest

    paths: list[str] = []
    for row in read_manifest(manifest):
        path = row.get("audio", row.get("clean"))
        if path is not None and path not in paths:
            paths.append(path)
        if len(paths) >= max_clips:
            break
    if not paths:
        raise ValueError(f"manifest {os.fspath(manifest)!r} has no 'audio' or 'clean' paths to compute latent "
                         f"statistics from; give the training manifest")
    return paths


@torch.no_grad()
def fit_channel_stats(codec, paths: list[str], batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel (mean, std) of the raw posterior-mean latents of ``paths``, and the frame count used."""
    from genflow.audio import load_audio

    device = codec.latent_mean.device
    total = sq = torch.zeros(codec.latent_dim, dtype=torch.float64)
    frames = 0
    for i in range(0, len(paths), batch_size):
        waves = [load_audio(p, codec.sample_rate)[0] for p in paths[i : i + batch_size]]
        lengths = torch.tensor([w.shape[-1] for w in waves])
        audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(device)  # (B, N_max)
        mask = (torch.arange(audio.shape[1])[None] < lengths[:, None]).to(device)
        z = codec.encode_raw(audio, mask, sample=False).double().cpu()  # (B, T, C), padding frames 0
        for row, n in zip(z, lengths.tolist()):
            valid = row[: codec.num_frames(n)]
            total, sq, frames = total + valid.sum(0), sq + valid.pow(2).sum(0), frames + valid.shape[0]
    if frames < 2:
        raise ValueError(f"{len(paths)} clips gave {frames} latent frame(s); latent statistics need at least 2 "
                         f"(clips of >= {2 * codec.hop_length} samples at {codec.sample_rate} Hz)")
    mean = total / frames
    std = (sq / frames - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-5)  # a dead channel must not divide by 0
    return mean.float(), std.float(), frames


def prepare_vae_codec(spec: str, manifest: str | os.PathLike, out: str | os.PathLike, *, max_clips: int = 1000,
                      batch_size: int = 8, device: str | torch.device | None = None) -> Path:
    """Write (or reuse) a genflow VAE codec folder with the latent statistics of ``manifest`` -> its path.

    An existing folder made from the same ``spec`` is reused as it is (so a resumed run keeps its statistics);
    one made from another spec is an error rather than silently replaced.
    """
    from genflow.codecs import load_codec

    out = Path(out)
    if (out / "config.json").is_file():
        made_from = hub.read_json(out / "config.json").get("stats", {}).get("codec")
        if made_from != spec:
            raise ValueError(f"{out} holds a VAE codec made from {made_from!r}, not {spec!r}; remove it or pass "
                             f"--codec {out} to reuse it")
        return out
    codec = load_codec(spec, device=device)
    if not needs_latent_stats(codec):
        raise ValueError(f"codec {spec!r} is a {type(codec).__name__} that needs no latent statistics; "
                         f"only an Oobleck VAE without statistics does (e.g. 'stabilityai/stable-audio-open-1.0:vae')")
    paths = manifest_audio_paths(manifest, max_clips)
    mean, std, frames = fit_channel_stats(codec, paths, batch_size)
    stats = {"codec": spec, "manifest": os.path.abspath(manifest), "clips": len(paths), "frames": frames}
    codec.with_latent_stats(mean, std, stats).save_pretrained(out)
    log.info("latent statistics of %s over %d clips -> %s (std %.3g..%.3g)", spec, len(paths), out,
             float(std.min()), float(std.max()))
    return out


def codec_with_latent_stats(spec: str, codec: Codec, manifest: str | os.PathLike, out: str | os.PathLike,
                            state=None) -> tuple[str, Codec]:
    """The run's codec: ``(spec, codec)`` as given, or for a VAE without statistics ``(folder, codec from it)``.

    ``state`` (an Accelerate ``PartialState``) makes the main process compute and the others wait.
    """
    if not needs_latent_stats(codec):
        return spec, codec
    from genflow.codecs import load_codec

    device = codec.latent_mean.device
    if state is None or state.is_main_process:
        prepare_vae_codec(spec, manifest, out, device=device)
    if state is not None:
        state.wait_for_everyone()
    return str(out), load_codec(out, device=device)
