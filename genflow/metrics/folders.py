"""Folder-level evaluation: list and pair audio files by relative path, then score whole sets.

Clips are identified by their path relative to the folder, without extension (``dog/001.wav`` ->
``dog/001``); a generated clip pairs with the reference clip of the same id. Missing or unreadable
files are counted in the result (``failures``, ``missing``), never fatal, unless nothing is left.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genflow.dsp import find_audio_files

log = logging.getLogger(__name__)

def list_audio(folder: str | os.PathLike) -> dict[str, Path]:
    """``{id: path}`` of every audio file under ``folder`` (id = relative path without extension)."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in find_audio_files(folder)}


def required_audio(folder: str | os.PathLike, flag: str) -> dict[str, Path]:
    """``list_audio`` of a folder the user gave as ``flag``: a missing or empty folder fails in one line naming it."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{flag} {folder}: no such folder; expected a folder of audio files")
    files = list_audio(folder)
    if not files:
        raise ValueError(f"{flag} {folder}: the folder holds no audio files (searched recursively for WAV, FLAC, "
                         "OGG, MP3, ...); point it at the folder the clips were written to")
    return files


def read_captions(manifest: str | os.PathLike) -> dict[str, str]:
    """``{id: caption}`` from a JSONL manifest, keyed by the audio file's stem and by the row id."""
    import json

    out: dict[str, str] = {}
    for line_no, line in enumerate(Path(manifest).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "caption" not in row:
            raise ValueError(f"{manifest}:{line_no}: no 'caption' key (keys {sorted(row)}); expected "
                             '{"audio": "clip.wav", "caption": "..."}')
        for key in (row.get("id"), row.get("audio")):
            if key:
                out[Path(str(key)).with_suffix("").as_posix()] = row["caption"]
                out[Path(str(key)).stem] = row["caption"]
    return out


def _caption_for(clip_id: str, captions: dict[str, str]) -> str | None:
    return captions.get(clip_id) or captions.get(Path(clip_id).stem)


MIN_FD_CLIPS = 10  # fewer clips on either side: FD/KAD are refused unless allow_small_fd (and then marked)


def check_sample_size(n_gen: int, n_ref: int, allow_small_fd: bool, result: dict[str, Any]) -> None:
    """Refuse (or, when allowed, mark) distances between sets too small for a stable estimate."""
    small = min(n_gen, n_ref) < MIN_FD_CLIPS
    result["small_sample"] = small
    if small and not allow_small_fd:
        raise ValueError(
            f"{n_gen} generated and {n_ref} reference clips: a Fréchet distance needs at least {MIN_FD_CLIPS} "
            "clips on each side to mean anything (and is comparable only between sets of equal size; "
            "published FADs use hundreds to thousands). Evaluate more clips, or pass --allow-small-fd "
            "(allow_small_fd=True) to compute it anyway; the report then marks it small_sample"
        )
    if small:
        warnings.warn(f"FD/KAD from {min(n_gen, n_ref)} clips (< {MIN_FD_CLIPS}): unstable, marked small_sample",
                      stacklevel=3)


def _classifier_scores(gen, ref, result: dict[str, Any]) -> None:
    """IS of the generated logits and paired KL(ref || gen) by clip id, into ``result``."""
    from genflow.metrics.classifier_scores import inception_score, inception_splits, paired_kl

    metrics = result["metrics"]
    result["is_splits"] = inception_splits(len(gen.ids), 10)  # audioldm_eval: always 10 (NaN below 10 clips)
    metrics.update(inception_score(gen.logits, splits=10))
    if ref is None or ref.logits is None:
        return
    ref_index = {i: n for n, i in enumerate(ref.ids)}
    pairs = [(n, ref_index[i]) for n, i in enumerate(gen.ids) if i in ref_index]
    if not pairs:
        warnings.warn("KL skipped: no generated clip id matches a reference clip id", stacklevel=3)
        return
    g, r = zip(*pairs)
    for k, v in paired_kl(gen.logits[list(g)], ref.logits[list(r)]).items():
        metrics[k] = float(v.mean())
        for n, val in zip(g, v.tolist()):
            result["per_clip"][gen.ids[n]][k] = val
    result["n_kl_pairs"] = len(pairs)


def score_embeddings(
    be, gen, ref=None, ref_stats=None, protocol: str = "genflow", allow_small_fd: bool = False,
) -> dict[str, Any]:
    """FD, KAD (with reference embeddings), KL/IS (with logits) of embedded sets; what ``evaluate_generation``
    reports, from ``EmbeddedSet``s (``ref_stats``: cached reference statistics instead of ``ref``)."""
    from genflow.metrics.embeddings import stats_of
    from genflow.metrics.frechet import frechet_distance_stats
    from genflow.metrics.kad import kernel_audio_distance

    gen_stats = stats_of(be, gen, protocol)
    ref_stats = stats_of(be, ref, protocol) if ref is not None else ref_stats
    result: dict[str, Any] = {"metrics": {}, "per_clip": {i: {} for i in gen.ids}, "ref_stats": ref_stats}
    result["n_generated"], result["n_reference"] = len(gen.ids), ref_stats.n if ref is None else len(ref.ids)
    result["n_embeddings"] = {"generated": gen_stats.n, "reference": ref_stats.n}
    check_sample_size(result["n_generated"], result["n_reference"], allow_small_fd, result)
    result["metrics"]["fd"] = frechet_distance_stats(gen_stats, ref_stats)
    if ref is not None:  # KAD needs the reference embeddings themselves, not only their mean and covariance
        result["metrics"]["kad"] = kernel_audio_distance(gen.stacked(), ref.stacked())
    # Per-clip proxy for the plots: distance of each clip's mean embedding to the reference mean.
    mu = torch.as_tensor(ref_stats.mu, dtype=torch.float32)
    for clip_id, d in zip(gen.ids, (gen.clip_means() - mu).norm(dim=-1).tolist()):
        result["per_clip"][clip_id]["dist_to_ref_mean"] = d
    if be.has_logits and gen.logits is not None:
        _classifier_scores(gen, ref, result)
    return result


def evaluate_generation(
    generated: str | os.PathLike, reference: str | os.PathLike, backend: str = "mel-stats",
    captions: str | os.PathLike | None = None, clap: str | None = None,
    save_reference_stats: str | os.PathLike | None = None, batch_size: int = 8, device: str | None = None,
    progress: bool = True, protocol: str = "genflow", allow_small_fd: bool = False,
) -> dict[str, Any]:
    """FD and KAD (+ KL/IS for classifier backends, + CLAP score with captions) of a generated folder.

    Clips are loaded as ``protocol`` says (``genflow.metrics.protocols``); the report names it.
    """
    from genflow.metrics.embeddings import embed_files, load_backend, reference_stats
    from genflow.metrics.frechet import save_stats
    from genflow.metrics.protocols import get_protocol

    proto = get_protocol(protocol)
    be = load_backend(backend, device)
    gen_files = required_audio(generated, "--generated")
    gen = embed_files(be, gen_files, batch_size, progress, desc="generated", protocol=proto)
    result: dict[str, Any] = {
        "backend": be.name, "settings": be.settings, "protocol": proto.to_dict(), "generated": str(generated),
        "reference": str(reference), "failures": {"generated": gen.failures}, "missing": [],
    }
    ref, ref_stats = None, None
    if Path(reference).suffix == ".npz":
        ref_stats = reference_stats(be, reference, proto)
    else:
        ref_files = required_audio(reference, "--reference")
        ref = embed_files(be, ref_files, batch_size, progress, desc="reference", protocol=proto)
        result["failures"]["reference"] = ref.failures
        result["missing"] = sorted(set(ref_files) - set(gen_files))
    result.update(score_embeddings(be, gen, ref, ref_stats, proto, allow_small_fd))
    ref_stats = result.pop("ref_stats")
    if save_reference_stats and ref is not None:
        save_stats(save_reference_stats, ref_stats)
    if captions is not None:
        result["metrics"]["clap_score"] = _clap_score(gen_files, gen.ids, read_captions(captions), be, clap, device,
                                                      result)
    return result


def _clap_score(gen_files, ids, captions, be, clap, device, result) -> float:
    from genflow.audio import load_audio
    from genflow.metrics.clap import CLAP_GENERAL, load_clap
    from genflow.metrics.embeddings import ClapBackend

    model = be.clap if isinstance(be, ClapBackend) and clap is None else load_clap(clap or CLAP_GENERAL, device)
    have = [i for i in ids if _caption_for(i, captions) is not None]
    result["n_uncaptioned"] = len(ids) - len(have)
    scores = []
    for start in range(0, len(have), 8):
        chunk = have[start : start + 8]
        wavs = [load_audio(gen_files[i], model.sample_rate)[0] for i in chunk]
        s = model.clap_scores(wavs, [_caption_for(i, captions) for i in chunk]).tolist()
        for i, v in zip(chunk, s):
            result["per_clip"][i]["clap_score"] = v
        scores += s
    return float(np.mean(scores)) if scores else math.nan


def evaluate_enhancement(
    enhanced: str | os.PathLike, clean: str | os.PathLike, noisy: str | os.PathLike | None = None,
    with_dnsmos: bool = True, progress: bool = True,
) -> dict[str, Any]:
    """SI-SDR, PESQ, STOI, ESTOI (+ DNSMOS) of enhanced vs clean files, and of noisy vs clean if given."""
    from tqdm import tqdm

    from genflow.audio import load_audio
    from genflow.metrics.speech import SE_SAMPLE_RATE, speech_metrics

    enh_files, clean_files = required_audio(enhanced, "--enhanced"), required_audio(clean, "--clean")
    noisy_files = required_audio(noisy, "--noisy") if noisy is not None else {}
    ids = sorted(set(enh_files) & set(clean_files))
    result: dict[str, Any] = {
        "enhanced": str(enhanced), "clean": str(clean), "noisy": None if noisy is None else str(noisy),
        "sample_rate": SE_SAMPLE_RATE, "per_clip": {}, "per_clip_noisy": {}, "failures": {},
        "missing": sorted(set(clean_files) - set(enh_files)), "unmatched": sorted(set(enh_files) - set(clean_files)),
    }
    for clip_id in tqdm(ids, desc="enhanced", disable=not progress or len(ids) < 2, leave=False):
        try:
            ref = load_audio(clean_files[clip_id], SE_SAMPLE_RATE)[0]
            est = load_audio(enh_files[clip_id], SE_SAMPLE_RATE)[0]
            result["per_clip"][clip_id] = speech_metrics(est, ref, with_dnsmos=with_dnsmos, name=clip_id)
            if clip_id in noisy_files:
                nz = load_audio(noisy_files[clip_id], SE_SAMPLE_RATE)[0]
                result["per_clip_noisy"][clip_id] = speech_metrics(nz, ref, with_dnsmos=with_dnsmos, name=clip_id)
        except (OSError, ValueError, RuntimeError) as e:
            result["failures"][clip_id] = str(e)
            log.warning("skipping %s: %s", clip_id, e)
    if not result["per_clip"]:
        raise ValueError(
            f"no enhanced/clean pair could be scored ({len(ids)} matched ids, {len(result['failures'])} failures); "
            "files are paired by relative path without extension"
        )
    result["metrics"] = {"enhanced": mean_metrics(result["per_clip"])}
    if result["per_clip_noisy"]:
        result["metrics"]["noisy"] = mean_metrics(result["per_clip_noisy"])
    result["n_scored"] = len(result["per_clip"])
    return result


def mean_metrics(per_clip: dict[str, dict[str, float]]) -> dict[str, float]:
    """NaN-aware mean of every metric over clips."""
    keys = sorted({k for row in per_clip.values() for k in row})
    out = {}
    for k in keys:
        vals = np.array([row.get(k, math.nan) for row in per_clip.values()], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return out
