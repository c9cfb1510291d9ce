"""Training checkpoints: genflow's own state as safetensors + JSON, verified by a manifest; nothing is unpickled.

    checkpoint-STEP/
      model.safetensors      the unwrapped model's weights
      optimizer.safetensors  the optimizer's state tensors; its param groups (JSON) in the file's metadata
      ema.safetensors        the EMA shadows (ema-rankR.safetensors, one per shard, under FSDP)
      rng-rankR.safetensors  process R's torch (+ CUDA) RNG states; its Python/NumPy states in the metadata
      genflow_state.json     run counters, LR schedule, grad scaler, Accelerate's micro-step counter
      manifest.json          every file above with its size and sha256, written last

Accelerate's ``save_state``/``load_state`` are not used: they pickle RNG states (``random_states_*.pkl``),
registered objects (``custom_checkpoint_*.pkl``) and the optimizer, and unpickle them on resume, so a file
planted in a checkpoint folder would run code. Here every load reads safetensors or JSON, and a file the
manifest does not list is never opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from genflow import hub

logger = logging.getLogger("genflow.checkpoint")

FORMAT = "genflow-checkpoint-1"
MANIFEST = "manifest.json"
STATE = "genflow_state.json"


# ------------------------------------------------------------------------------------ tensors <-> files


def save_optimizer(path: Path, state: dict) -> None:
    """An optimizer ``state_dict`` -> safetensors: ``state`` tensors as ``KEY/NAME``, the rest as JSON metadata."""
    tensors, scalars = {}, {}
    for key, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}/{name}"] = value
            else:
                scalars[f"{key}/{name}"] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars,
            "int_keys": all(isinstance(k, int) for k in state["state"])}
    hub.write_weights(path, tensors, metadata={"genflow": json.dumps(meta)})


def load_optimizer(path: Path) -> dict:
    """The ``state_dict`` written by ``save_optimizer``."""
    tensors, meta = _read(path)
    state: dict = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        key, name = flat.rsplit("/", 1)
        state.setdefault(int(key) if meta["int_keys"] else key, {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_rng(path: Path) -> None:
    """This process's torch, CUDA, NumPy and Python RNG states (tensors + JSON metadata, no pickle)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    hub.write_weights(path, tensors, metadata={"genflow": json.dumps(meta)})


def load_rng(path: Path) -> None:
    """Restore the states written by ``save_rng``."""
    tensors, meta = _read(path)
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    tensors = hub.read_weights(path)
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("genflow", "{}"))
    return tensors, meta


# -------------------------------------------------------------------------------- manifest and checks


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` with its size and sha256 in ``manifest.json`` (write it last)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    hub.write_json(folder / MANIFEST, {"format": FORMAT, "files": files})


def verify(folder: Path, *, hashes: bool = True) -> str | None:
    """None when ``folder`` is a complete checkpoint whose files match its manifest, else what is wrong.

    ``hashes=False`` checks presence and sizes only (cheap; used by rotation).
    """
    try:
        manifest = hub.read_json(folder / MANIFEST)
    except FileNotFoundError:
        return f"no {MANIFEST} (the write was interrupted, or an older genflow wrote it)"
    except ValueError as e:
        return str(e)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict) or STATE not in files:
        return f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r} listing {STATE}"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{name} has {size} bytes, the manifest says {want.get('size')} (truncated or replaced)"
        if hashes and _sha256(path) != want.get("sha256"):
            return f"{name} does not match its sha256 in the manifest (damaged or replaced)"
    return None


def listed(folder: Path) -> set[str]:
    """The file names ``folder``'s manifest lists (the only files a resume reads)."""
    return set(hub.read_json(folder / MANIFEST)["files"])


@contextmanager
def staged(accelerator, root: Path, step: int, keep: int, tag: str | None = None) -> Iterator[Path]:
    """Write ``root/checkpoint-STEP`` under a temp name: every process enters, fills the yielded folder, exits.

    On exit each process adds its RNG states, then the main process writes the manifest (last), renames the
    folder into place and deletes checkpoints beyond the newest ``keep``. A crash leaves only a ``.tmp``
    folder, which no resume reads. Shared by the DiT loop and codec training (``genflow.codec_training``).
    """
    final = root / f"checkpoint-{step}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    yield tmp
    save_rng(tmp / f"rng-rank{accelerator.process_index}.safetensors")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in rotate(root, keep, final):
            logger.info("deleted %s (train.save_total_limit=%d)", old, keep)
        logger.info("saved %s%s", final, f" ({tag})" if tag else "")
    accelerator.wait_for_everyone()


def restore_rng(ckpt: Path, process_index: int) -> None:
    """This process's RNG states from ``ckpt`` when it saved them (a warning, not an error, when it did not)."""
    name = f"rng-rank{process_index}.safetensors"
    if name in listed(ckpt):
        load_rng(ckpt / name)
    else:  # more processes than when it was saved: the run goes on, but not bit-identically
        logger.warning("%s has no %s: this process's random state starts fresh", ckpt, name)


# ------------------------------------------------------------------------------ finding and rotating


def step_of(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def checkpoints(root: Path) -> list[Path]:
    """``root/checkpoint-N`` folders, oldest first (``.tmp`` leftovers of an interrupted write excluded)."""
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=step_of)


def find_checkpoint(out: Path, resume: str) -> Path | None:
    """``latest`` -> the newest checkpoint of the run that verifies (None if the run has none); else the path.

    Checkpoints that fail verification are skipped with a warning naming them and why; when every one
    fails, or an explicit path fails, a ``ValueError`` says what is wrong.
    """
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such folder; pass a folder under RUN/checkpoints/ "
                                    "or 'latest'")
        problem = verify(path)
        if problem:
            raise ValueError(f"--resume {resume}: not a usable genflow training checkpoint: {problem}; pass "
                             "another folder under RUN/checkpoints/ or 'latest' (which falls back to older ones)")
        return path
    found = checkpoints(out / "checkpoints")
    skipped = []
    for path in reversed(found):
        problem = verify(path)
        if problem is None:
            return path
        skipped.append(f"{path.name}: {problem}")
        logger.warning("--resume latest: skipping %s: %s", path, problem)
    if skipped:
        raise ValueError(f"--resume latest: none of the {len(found)} checkpoints in {out / 'checkpoints'} verifies "
                         f"({'; '.join(skipped)}); remove them to start over, or restore one from a backup")
    return None


def rotate(root: Path, limit: int, current: Path) -> list[Path]:
    """After writing ``current``: keep the newest ``limit`` (at least 1) verified checkpoints up to it, delete
    the older ones; returns the deleted folders.

    ``current`` (just written, so verified) is never deleted, and neither is anything newer than it: a damaged
    checkpoint a resume skipped stays until the run overwrites it at that step.
    """
    older = [p for p in checkpoints(root) if step_of(p) < step_of(current)]
    good = [p for p in older if verify(p, hashes=False) is None]  # sizes only: cheap, and current is kept anyway
    keep = set(good[-(limit - 1):]) if limit > 1 else set()
    deleted = [p for p in older if p not in keep]
    for path in deleted:
        shutil.rmtree(path)
    return deleted
