"""Release folders: what training leaves behind and what inference loads.

    release/
      config.json        DiT config (``model_type: genflow-dit``)
      model.safetensors  EMA weights, unwrapped, fp32
      pipeline.json      {"format", "codec", "text_encoder", "defaults"}: how to sample with it

Training state (Accelerate folders, optimizer etc.) never goes here: a release is only for inference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from genflow.model import DiT

FORMAT = "genflow-release-1"


def save_release(folder: str | os.PathLike, model: DiT, state_dict: dict[str, torch.Tensor], pipeline: dict) -> Path:
    """Write a release folder atomically (temp folder, then rename over any previous one)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, state_dict=state_dict)
    meta = {"format": FORMAT, **pipeline}
    # A codec or text encoder given as a local folder travels inside the release, so the release loads
    # from any working directory or from the hub; ids (hub names, "mel", "minilm") are kept as they are.
    for key in ("codec", "text_encoder"):
        if meta.get(key) and Path(meta[key]).is_dir():
            shutil.copytree(meta[key], tmp / key)
            meta[key] = key
    (tmp / "pipeline.json").write_text(json.dumps(meta, indent=2) + "\n")
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)  # never a moment with no release on disk but the .old one
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def load_release(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> tuple[DiT, dict, Path]:
    """Release folder or hub id -> (DiT with the EMA weights, pipeline.json dict, local folder)."""
    folder = Path(path_or_hub_id)
    if not folder.is_dir():
        text = str(path_or_hub_id)
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise FileNotFoundError(f"{text!r} is neither a release folder nor a hub id (owner/name); "
                                    "pass RUN/release from a training run")
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(text, revision=revision,
                                            allow_patterns=["config.json", "model.safetensors", "pipeline.json",
                                                            "codec/*", "text_encoder/*"]))
        except Exception as e:  # offline, unknown repo, no access: say both lookups failed
            raise FileNotFoundError(f"{text!r} is not a local folder, and fetching it as a hub id failed "
                                    f"({type(e).__name__}: {e}); check the path or the repo name") from e
    meta_path = folder / "pipeline.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {folder} is not a genflow release folder "
                                "(config.json + model.safetensors + pipeline.json, written at the end of training)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return DiT.from_pretrained(folder), meta, folder
