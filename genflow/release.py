"""Release folders: what training leaves behind and what inference loads, through one dispatching loader.

    release/
      config.json        the model's config (``model_type`` says which class loads it)
      model.safetensors  EMA weights, unwrapped, fp32
      pipeline.json      {"format", "codec", "text_encoder", "prompt_template", "sampling", "trained_seconds",
                         "prediction", "source"}: how to sample with it ("prediction": "velocity" |
                         "average_velocity", absent = "velocity"; "source": where the flow starts,
                         {"kind": "noise" | "aligned", "std"}, absent = N(0, I))

Training state (Accelerate folders, optimizer etc.) never goes here: a release is only for inference.
``load_release`` resolves a folder or hub id once and dispatches on ``config.json``'s ``model_type``;
another model family (the official generator, say) registers its loader in ``MODEL_LOADERS``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genflow import hub
from genflow.config import check_known, from_dict
from genflow.flow import Source
from genflow.model import MODEL_TYPE, DiT
from genflow.sampling import SamplingSettings

FORMAT = "genflow-release-1"
#: trained_seconds (optional): [shortest, longest] training clip in seconds, for warnings beyond them
PIPELINE_KEYS = ("format", "codec", "text_encoder", "prompt_template", "sampling", "trained_seconds",
                 "prediction", "source")
#: what a release's model predicts: the flow velocity, or the average velocity of a few-step model (absent: velocity)
PREDICTIONS = ("velocity", "average_velocity")
#: what a release download fetches besides config.json
RELEASE_PATTERNS = ("model.safetensors", "pipeline.json", "codec/*", "text_encoder/*")


def save_release(folder: str | os.PathLike, model: DiT, state_dict: dict[str, torch.Tensor], pipeline: dict) -> Path:
    """Write a release folder atomically (temp folder, then rename over any previous one)."""
    meta = {"format": FORMAT, **pipeline}
    read_pipeline_dict(meta, "the pipeline to save")
    with hub.atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        # A codec or text encoder given as a local folder travels inside the release, so the release loads
        # from any working directory or from the hub; ids (hub names, "mel", "minilm") are kept as they are.
        for key in ("codec", "text_encoder"):
            if meta.get(key) and Path(meta[key]).is_dir():
                shutil.copytree(meta[key], tmp / key)
                meta[key] = key
        hub.write_json(tmp / "pipeline.json", meta)
    return Path(folder)


def read_pipeline_dict(meta: dict, where: str) -> dict:
    """Check a pipeline dict: the format, no unknown keys, valid sampling settings."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}")
    check_known(sorted(meta), PIPELINE_KEYS, f"{where} (fix the file or re-run the release step)")
    if not meta.get("codec"):
        raise ValueError(f"{where}: no codec; expected a codec name, hub id or folder under 'codec'")
    if meta.get("prediction", "velocity") not in PREDICTIONS:
        raise ValueError(f"{where}: prediction {meta['prediction']!r}, expected one of {list(PREDICTIONS)} "
                         "(or no key: velocity)")
    SamplingSettings.from_dict(meta.get("sampling") or {}, where=f"{where} 'sampling'")
    from_dict(Source, meta.get("source") or {}, f"{where} 'source'")
    trained = meta.get("trained_seconds")
    if trained is not None and not (isinstance(trained, list) and len(trained) == 2
                                    and all(isinstance(t, (int, float)) and t > 0 for t in trained)):
        raise ValueError(f"{where}: trained_seconds {trained!r}; expected [shortest, longest] clip in seconds")
    return meta


def read_pipeline(folder: Path) -> dict:
    """The checked ``pipeline.json`` of a release folder."""
    meta_path = folder / "pipeline.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {folder} is not a genflow release folder "
                                "(config.json + model.safetensors + pipeline.json, written at the end of training)")
    return read_pipeline_dict(hub.read_json(meta_path), str(meta_path))


def _genflow_dit(folder: Path, device, dtype) -> tuple[nn.Module, dict]:
    # small enough to stay fp32 whatever the autocast dtype
    return DiT.from_pretrained(folder).to(device), read_pipeline(folder)


def _official_audiogen(folder: Path, device, dtype) -> tuple[nn.Module, dict]:
    from genflow.audiogen import load_official
    from genflow.audiogen.sampling import official_pipeline

    model = load_official(folder, dtype=dtype, device=device)  # ~2 B parameters: straight into dtype/device
    return model, official_pipeline(model.config)


def _converted_audiogen(folder: Path, device, dtype) -> tuple[nn.Module, dict]:
    from genflow.audiogen import AudioGen

    return AudioGen.from_pretrained(folder, dtype=dtype, device=device), read_pipeline(folder)


#: config.json model_type -> (folder, device, weight dtype or None) -> (model, pipeline dict)
MODEL_LOADERS: dict[str, Callable[[Path, torch.device, torch.dtype | None], tuple[nn.Module, dict]]] = {
    MODEL_TYPE: _genflow_dit, "dasheng_audiogen": _official_audiogen, "genflow-audiogen": _converted_audiogen}


def load_release(path_or_hub_id: str | os.PathLike, revision: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> tuple[nn.Module, dict, Path]:
    """Release folder or hub id -> (model with its weights on ``device``, pipeline dict, local folder).

    ``dtype``: the weight dtype for model families large enough to want it (genflow DiTs stay fp32).
    """
    folder = hub.resolve(path_or_hub_id, files=(), patterns=("config.json", *RELEASE_PATTERNS),
                         revision=revision, what="release folder")
    if not (folder / "config.json").is_file() and not (folder / "pipeline.json").is_file():
        raise FileNotFoundError(f"{folder / 'pipeline.json'} not found: {folder} is not a release folder "
                                "(config.json + model.safetensors + pipeline.json, written at the end of training)")
    kind = hub.model_type(folder) or MODEL_TYPE
    if kind not in MODEL_LOADERS:
        raise ValueError(f"{folder / 'config.json'} has model_type {kind!r}; genflow loads "
                         f"{', '.join(sorted(MODEL_LOADERS))}")
    model, meta = MODEL_LOADERS[kind](folder, torch.device(device), dtype)
    return model, meta, folder
