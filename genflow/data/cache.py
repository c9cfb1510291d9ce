"""A sharded safetensors cache of codec latents: encode every clip once, train from the cache.

Layout of a cache folder:

    cache.json                 codec signature, keys, dtype, shard plan (written first)
    shard-00000.safetensors    latents of up to ``shard_size`` clips, tensors named "<key>:<row id>"
    ...
    index.json                 cache.json + {id: shard} + {id: frames} + ids that failed (written last)

Shards are written atomically (temp file + rename), so an interrupted build resumes by skipping every
shard already on disk. Under Accelerate the shards still to do are dealt to the processes by seconds of
audio (``genflow.distributed.deal``), and the main process writes the index. The folder must be one that
every process sees (a shared filesystem on several nodes). A cache records its codec and refuses another.
Size: 1280-d latents at 25 Hz in fp16 take 64 KB per second of audio (twice 16 kHz 16-bit PCM).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from genflow.codecs.waveform import encode_batch
from genflow.data.manifest import read_manifest
from genflow.distributed import deal
from genflow.hub import read_json, write_json, write_weights

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def _jsonable(obj):
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    elif hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return repr(obj)


def codec_signature(codec) -> dict:
    """What identifies a codec's latents: class, rates, size, config and a fingerprint of its weights.

    The fingerprint is the mean |value| of the first 1024 entries of every tensor (rounded), so the
    same checkpoint matches itself in fp32, bf16 or fp16 (see ``same_codec``) while another does not.
    """
    names, stats = [], []
    for name, t in sorted(codec.state_dict().items()):
        names.append(f"{name}{tuple(t.shape)}")
        stats.append(round(float(t.detach().flatten()[:1024].double().abs().mean()), 6) if t.numel() else 0.0)
    return {
        "class": f"{type(codec).__module__}.{type(codec).__qualname__}",
        "sample_rate": codec.sample_rate,
        "frame_rate": codec.frame_rate,
        "latent_dim": codec.latent_dim,
        "config": _jsonable(getattr(codec, "config", None)),
        "tensors": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
        "weights": stats,
    }


def same_codec(a: dict, b: dict) -> bool:
    """Whether two codec signatures describe the same latents (weights compared to 1 %: dtype-proof)."""
    if {k: v for k, v in a.items() if k != "weights"} != {k: v for k, v in b.items() if k != "weights"}:
        return False
    wa, wb = np.asarray(a["weights"], dtype=float), np.asarray(b["weights"], dtype=float)
    return wa.shape == wb.shape and bool(np.allclose(wa, wb, rtol=1e-2, atol=1e-5))


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def resolve_cache_dir(setting: str, default: str | os.PathLike) -> Path | None:
    """The one reading of a latent-cache setting: "auto" -> ``default``, "" -> None (no cache), else that folder."""
    if not setting:
        return None
    return Path(default) if setting == "auto" else Path(setting)


def _encode_shard(items, keys, codec, batch_size, dtype, pool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Encode one shard's clips: ({"<key>:<id>": (T, C)}, failed ids)."""
    from genflow.audio import AudioError, load_audio

    def load(job):
        try:
            return load_audio(job[2], codec.sample_rate)[0]  # never empty or non-finite
        except (AudioError, RuntimeError, OSError, ValueError):
            return None

    jobs = [(item_id, k, paths[k]) for item_id, paths in items for k in keys]
    wavs = list(pool.map(load, jobs))
    failed = sorted({job[0] for job, w in zip(jobs, wavs) if w is None})
    todo = sorted(
        (i for i, (job, w) in enumerate(zip(jobs, wavs)) if job[0] not in failed),
        key=lambda i: wavs[i].shape[-1],
    )  # sort by length: little padding per batch
    tensors = {}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for i, latent in zip(chunk, encode_batch(codec, [wavs[i] for i in chunk])):
            item_id, k, _ = jobs[i]
            tensors[f"{k}:{item_id}"] = latent.cpu().to(dtype).contiguous()
    return tensors, failed


def _unique_items(rows: list[dict], keys: tuple[str, ...]) -> dict[str, dict]:
    """{id: {key: path}}: rows sharing an id are one clip (encoded once); ids must not disagree on their audio."""
    items: dict[str, dict] = {}
    for n, row in enumerate(rows):
        if any(k not in row for k in keys):
            raise ValueError(
                f"row {n} ({row}) lacks audio key(s) {[k for k in keys if k not in row]}; expected keys {keys} "
                "(pass keys=... matching the manifest, e.g. keys=('clean', 'noisy') for speech pairs)"
            )
        item_id, paths = str(row.get("id", row[keys[0]])), {k: row[k] for k in keys}
        if items.setdefault(item_id, paths) != paths:
            raise ValueError(
                f"id {item_id!r} appears with different audio {items[item_id]} and {paths}; "
                "expected one audio file (set) per id: give rows distinct ids"
            )
    return items


def _claim_folder(out_dir: Path, meta: dict, rank: int, accelerator) -> None:
    """Rank 0 writes cache.json (or checks an existing one); the others check it once it is there."""
    meta_path = out_dir / "cache.json"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if meta_path.exists():
            _check_meta(read_json(meta_path), meta, out_dir)
        else:
            write_json(meta_path, meta)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if rank != 0:
        _check_meta(read_json(meta_path), meta, out_dir)


def build_latent_cache(
    manifest_or_rows: str | os.PathLike | list[dict],
    codec,
    out_dir: str | os.PathLike,
    *,
    keys: tuple[str, ...] = ("audio",),
    fp16: bool = True,
    shard_size: int = 256,
    accelerator=None,
    batch_size: int = 16,
    num_workers: int = 4,
) -> dict:
    """Encode every clip of a manifest once into sharded safetensors; resumable; returns build counts.

    Rows sharing an ``"id"`` are encoded once. Files that fail to load are skipped and listed in the
    index (``"failed"``). Returns {"shards", "written", "skipped", "failed"} for this process.
    """
    rows = manifest_or_rows if isinstance(manifest_or_rows, list) else read_manifest(manifest_or_rows, keys)
    items = _unique_items(rows, keys)
    ids = list(items)
    shards = [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]
    out_dir = Path(out_dir)
    meta = {"format": CACHE_FORMAT, "codec": codec_signature(codec), "keys": list(keys),
            "dtype": "float16" if fp16 else "float32", "shard_size": shard_size}
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    _claim_folder(out_dir, meta, rank, accelerator)
    dtype = torch.float16 if fp16 else torch.float32
    # Every process sees the same finished shards (nothing is written until all have looked), then the
    # shards still to do are dealt by seconds of audio: a resumed or uneven build keeps the ranks even.
    done = [i for i, ids in enumerate(shards) if _shard_done(out_dir / _shard_name(i), ids)]
    if accelerator is not None:
        accelerator.wait_for_everyone()
    todo = [i for i in range(len(shards)) if i not in set(done)]
    seconds = _item_weights(items, rows, keys)
    mine = [todo[j] for j in deal([sum(seconds[k] for k in shards[i]) for i in todo], world)[rank]]
    stats = {"shards": len(shards), "written": 0, "skipped": len(done) if rank == 0 else 0, "failed": []}
    if world > 1:
        log.info("latent cache: process %d encodes %d shards, %.0f s of audio (or bytes when rows carry no "
                 "duration)", rank, len(mine), sum(seconds[k] for i in mine for k in shards[i]))
    bar = tqdm(total=sum(len(shards[i]) for i in mine), desc=f"latent cache {out_dir.name}", unit="clip",
               disable=rank != 0)
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for i in mine:
            path = out_dir / _shard_name(i)
            bar.update(len(shards[i]))
            tensors, failed = _encode_shard([(j, items[j]) for j in shards[i]], keys, codec, batch_size, dtype, pool)
            # atomic: a shard on disk is always complete
            write_weights(path, tensors, metadata={"ids": _ids_digest(shards[i]), "failed": json.dumps(failed)})
            stats["written"] += 1
            stats["failed"] += failed
    bar.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if rank == 0:
        _write_index(out_dir, meta, len(shards))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if stats["failed"]:
        log.warning("latent cache: %d clips failed to load and were skipped", len(stats["failed"]))
    return stats


def describe_codec(sig: dict) -> str:
    """A short human description of a codec signature (for error messages)."""
    config = sig.get("config")
    if isinstance(config, dict):
        config = {k: v for k, v in list(config.items())[:6]}
    weights = "no weights" if not sig["weights"] else f"weights fingerprint {sum(sig['weights']):.4g}"
    return (
        f"{sig['class']} ({sig['latent_dim']}-d latents at {sig['frame_rate']:g} Hz from "
        f"{sig['sample_rate']} Hz audio, config {config}, {weights})"
    )


def _check_meta(found: dict, wanted: dict, out_dir: Path) -> None:
    if not same_codec(found["codec"], wanted["codec"]):
        raise ValueError(
            f"latent cache {str(out_dir)!r} was built with codec {describe_codec(found['codec'])}, but this "
            f"build uses {describe_codec(wanted['codec'])}; use another out_dir or delete this one to rebuild"
        )
    for field in ("keys", "dtype", "shard_size"):
        if found.get(field) != wanted[field]:
            raise ValueError(
                f"latent cache {str(out_dir)!r} was built with {field}={found.get(field)}, "
                f"but this build uses {field}={wanted[field]}; "
                "use another out_dir or delete this one to rebuild"
            )


def _shard_done(path: Path, ids: list[str]) -> bool:
    """Whether ``path`` is a finished shard of exactly these ids."""
    return path.exists() and _read_shard_meta(path).get("ids") == _ids_digest(ids)


def _item_weights(items: dict[str, dict], rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """{id: cost to encode}: seconds of audio (validated rows carry ``"duration"``), else bytes of the files."""
    seconds = {str(row.get("id", row[keys[0]])): row.get("duration") for row in rows}
    if all(isinstance(seconds.get(item_id), (int, float)) for item_id in items):
        return {item_id: float(seconds[item_id]) * len(keys) for item_id in items}
    return {item_id: float(sum(os.path.getsize(p) if os.path.exists(p) else 0 for p in paths.values()))
            for item_id, paths in items.items()}


def _read_shard_meta(path: Path) -> dict:
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # a truncated/foreign file is not a finished shard: rebuild it
        return {}


def _write_index(out_dir: Path, meta: dict, num_shards: int) -> None:
    items, frames, failed = {}, {}, []
    for i in range(num_shards):
        with safe_open(out_dir / _shard_name(i), framework="pt") as f:
            failed += json.loads((f.metadata() or {}).get("failed", "[]"))
            for name in f.keys():
                key, item_id = name.split(":", 1)
                items[item_id] = i
                frames[name] = f.get_slice(name).get_shape()[0]
    write_json(out_dir / "index.json", {**meta, "items": items, "frames": frames, "failed": failed})


class LatentCache:
    """Reader of a latent cache folder: ``cache[id] -> (T, C) float32``, lazily mmapped per shard."""

    def __init__(self, path: str | os.PathLike, codec=None):
        self.path = Path(path)
        index = self.path / "index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{str(index)!r} not found: {str(self.path)!r} is not a finished latent cache; "
                "build it with genflow.data.build_latent_cache (an interrupted build resumes)"
            )
        self.index = read_json(index)
        if codec is not None and not same_codec(codec_signature(codec), self.index["codec"]):
            raise ValueError(
                f"latent cache {str(self.path)!r} holds latents of {describe_codec(self.index['codec'])}, "
                f"not of the codec given, {describe_codec(codec_signature(codec))}; rebuild the cache with it"
            )
        self.keys = tuple(self.index["keys"])
        self.ids = list(self.index["items"])
        self._files: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.index["items"]

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}  # open handles do not cross into DataLoader workers

    def num_frames(self, item_id: str, key: str | None = None) -> int:
        """Latent frames of one clip, from the index (no read)."""
        return self.index["frames"][f"{key or self.keys[0]}:{item_id}"]

    def get(self, item_id: str, key: str | None = None) -> torch.Tensor:
        """(T, C) float32 latent of clip ``item_id`` for audio key ``key`` (default: the first key)."""
        shard = self.index["items"][item_id]
        if shard not in self._files:
            self._files[shard] = safe_open(self.path / _shard_name(shard), framework="pt")
        return self._files[shard].get_tensor(f"{key or self.keys[0]}:{item_id}").float()

    def __getitem__(self, item_id: str) -> torch.Tensor:
        return self.get(item_id)
