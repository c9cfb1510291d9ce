"""Weights on disk and on the hub: one resolver, one strict loader, one atomic writer.

    folder = resolve("mispeech/dashengtokenizer")        # hub id -> local snapshot folder
    folder = resolve("owner/name@v1.0:vae")               # a revision and a subfolder (":." = the root)
    folder = resolve("runs/tta-demo/release")             # a local folder is used as it is
    load_weights(model, folder / "model.safetensors")     # strict; the error names file and keys
    with atomic_write(path) as tmp: ...                    # write tmp, then rename over path

A reference is a local folder when one exists at that path (``DIR[:SUBFOLDER]``); otherwise it must read
``owner/name[@revision][:subfolder]`` and is fetched with ``huggingface_hub.snapshot_download``.
Loading goes through safetensors and JSON only: nothing on a load path is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_ref(ref: str | os.PathLike) -> tuple[str, str | None, str | None]:
    """``owner/name[@revision][:subfolder]`` -> (repo id, revision or None, subfolder or None)."""
    text = os.fspath(ref).strip()
    if text.endswith(":"):
        raise ValueError(f"reference {text!r} ends with ':'; expected 'SOURCE:SUBFOLDER' (e.g. "
                         "'stabilityai/stable-audio-open-1.0:vae') or 'SOURCE:.' for the root")
    text, _, subfolder = text.partition(":")
    repo, _, revision = text.partition("@")
    subfolder = subfolder.strip("/")
    return repo, revision or None, None if subfolder in ("", ".") else subfolder  # ':.' names the root


def _local(ref: str) -> Path | None:
    """The folder a local reference names (``DIR`` or ``DIR:SUBFOLDER``), or None when it is not local."""
    if os.path.isdir(ref):
        return Path(ref)
    base, sep, sub = ref.rpartition(":")
    if sep and os.path.isdir(base):
        return Path(base) / sub if sub.strip("/.") else Path(base)
    return None


def is_local(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names an existing local folder (``DIR`` or ``DIR:SUBFOLDER``)."""
    return _local(os.fspath(ref).strip()) is not None


def is_hub_id(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a hub repository (and not an existing local path)."""
    text = os.fspath(ref).strip()
    if os.path.exists(text) or text.startswith((".", "/", "~")):
        return False
    return bool(_HUB_ID.match(parse_ref(text)[0]))


def resolve(ref: str | os.PathLike, *, files: Sequence[str] = ("config.json",), patterns: Sequence[str] = (),
            revision: str | None = None, what: str = "model folder") -> Path:
    """A local folder or hub reference -> local folder holding ``files`` (downloaded with ``patterns``).

    Raises ``FileNotFoundError`` naming the reference and the fix when neither lookup works or a
    required file is missing.
    """
    text = os.fspath(ref).strip()
    if (local := _local(text)) is not None:
        if not local.is_dir():
            raise FileNotFoundError(f"{local} not found: {text!r} names a subfolder that is not there")
        folder = local
    elif is_hub_id(text):
        repo, rev, sub = parse_ref(text)
        prefix = f"{sub}/" if sub else ""
        from huggingface_hub import snapshot_download

        try:
            root = snapshot_download(repo, revision=revision or rev,
                                     allow_patterns=[prefix + p for p in (*files, *patterns)])
        except Exception as e:  # offline, unknown repo, no access: say both lookups failed
            raise FileNotFoundError(f"{text!r} is not a local folder, and fetching it as a hub id failed "
                                    f"({type(e).__name__}: {e}); check the path or the repo name") from e
        folder = Path(root) / sub if sub else Path(root)
    else:
        raise FileNotFoundError(f"{text!r} is neither a {what} nor a hub id "
                                "(owner/name[@revision][:subfolder]); check the path")
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: a {what} holds {', '.join(files)}; "
                                    "re-download it or re-run the step that wrote it")
    return folder


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``, with a one-line error naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-download it or re-run the step that wrote it") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value


def model_type(folder: str | os.PathLike) -> str | None:
    """``model_type`` of ``folder/config.json`` (None when the file or the field is absent)."""
    path = Path(folder) / "config.json"
    return read_json(path).get("model_type") if path.is_file() else None


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a damaged file gives one line naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is damaged or not a safetensors file ({e}); re-download it or re-run the "
                         "step that wrote it") from None


def check_keys(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor] | Iterable[str],
               what: str) -> None:
    """Raise one ``ValueError`` naming missing, unexpected and mis-shaped keys of ``got`` vs ``expected``.

    ``got`` may be names only (shapes then checked by the caller as it reads each tensor).
    """
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    tensors = got.items() if isinstance(got, Mapping) else ()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in tensors
           if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"{what} does not match the model built from its config: missing keys {missing}, "
                         f"unexpected keys {unexpected}, wrong shapes (file vs model) {bad}; use the "
                         "config.json written with these weights")


def load_weights(module: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` (safetensors) into ``module`` strictly: every key present, none extra, same shapes."""
    state = read_weights(path)
    check_keys(module.state_dict(), state, str(path))
    module.load_state_dict(state, strict=True)
    return module


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path`` (a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_weights(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (moved to the CPU, contiguous) as safetensors atomically."""
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def save_model(folder: str | os.PathLike, model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None,
               config: dict) -> Path:
    """``model.safetensors`` (``state_dict`` or the model's own, wrapper prefixes removed, keys checked strictly)
    then ``config.json``, both atomically: a folder with a config.json is complete."""
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    check_keys(model.state_dict(), state, "the state_dict to save")
    write_weights(Path(folder) / "model.safetensors", state)
    write_json(Path(folder) / "config.json", config)
    return Path(folder)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield ``folder.tmp`` to fill; on success it replaces ``folder`` (the old one is kept until then)."""
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    yield tmp
    if folder.exists():
        os.replace(folder, old)  # never a moment with no folder on disk but the .old one
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
