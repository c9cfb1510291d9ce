"""A latent cache as tar shards: cached latents where the audio shards live (a folder or any URL), streamed.

    python -m genflow.data.stream write-latents runs/tta/latents data/train.jsonl latents/train-%06d.tar
    python -m genflow.data.stream write-latents runs/tta/latents data/train.jsonl 'pipe:aws s3 cp - s3://b/l-%06d.tar'
    accelerate launch recipes/tta/train.py --data.cache 'latents/train-{000000..000015}.tar'

Each shard starts with ``__cache__.json`` (the cache's codec signature, keys and dtype: a reader with
another codec refuses the shard), then one sample per manifest row found in the cache:
``KEY.latents.safetensors`` (a tensor (T, C) per audio key, as the cache stores it) + ``KEY.json`` (the row
without its audio paths, with its row number ``__index__``). Safetensors bytes only: nothing is unpickled.
Crops use the (seed, epoch, row number) generator of the cached datasets: the same rows give the same
batches and the same loss as training from the cache folder.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from genflow.data.cache import LatentCache, describe_codec, same_codec
from genflow.data.datasets import crop
from genflow.data.stream import ShardStream, write_tars

HEADER = "__cache__"  # the key of each shard's first sample: the cache's codec signature, keys, dtype


def write_latent_shards(cache: str | os.PathLike, manifest: str | os.PathLike, pattern: str,
                        per_shard: int = 1000) -> list[str]:
    """The rows of ``manifest`` found in the latent cache folder ``cache`` -> tar shards ``pattern % n``."""
    from genflow.data.manifest import read_manifest

    reader = LatentCache(cache)
    rows = [r for r in read_manifest(manifest, reader.keys) if str(r["id"]) in reader]
    if not rows:
        raise ValueError(f"no row of {manifest} is in the latent cache {cache}; pass the manifest it was built from")
    meta = {k: reader.index[k] for k in ("format", "codec", "keys", "dtype")}
    dtype = getattr(torch, meta["dtype"])

    def sample(index: int) -> list[tuple[str, bytes]]:
        row, key = rows[index], f"{index:09d}"
        # (T, C) in the cache's dtype: fp16 -> fp32 (what get returns) -> fp16 is exact
        stored = {k: reader.get(str(row["id"]), k).to(dtype).contiguous() for k in reader.keys}
        info = {k: v for k, v in row.items() if k not in reader.keys} | {"__index__": index}
        return [(f"{key}.latents.safetensors", save_tensors(stored)),
                (f"{key}.json", json.dumps(info, ensure_ascii=False).encode())]

    return write_tars(pattern, len(rows), per_shard, sample, header=[(f"{HEADER}.json", json.dumps(meta).encode())])


class LatentShardStream(ShardStream):
    """Collated batches of cached latents ({"id", [caption], KEY (B, T, C) per key, "lengths" in frames}).

    ``keys``: the audio keys the shards must hold (("audio",), or ("clean", "noisy") for speech pairs);
    ``codec``: the run's ``codec_signature``, checked against every shard's header.
    """

    def __init__(self, shards: list[str], *, keys: tuple[str, ...], codec: dict | None,
                 caption_key: str | None = None, **kw):
        super().__init__(shards, caption_key=caption_key or "", **kw)
        self.keys, self.codec, self.target = tuple(keys), codec, keys[0]

    def _item(self, sample: dict, epoch: int) -> dict | None:
        """One sample -> {"id", [caption], KEY: (T, C) float32} cropped to max_frames (frames aligned across keys)."""
        if sample["__key__"] == HEADER:
            self._check(json.loads(sample["json"]))
            return None
        if "latents.safetensors" not in sample:
            raise ValueError(f"shard sample {sample['__key__']} has no latents ({sorted(sample)})")
        meta = json.loads(sample["json"]) if "json" in sample else {}
        latents = load_tensors(sample["latents.safetensors"])
        item = {"id": str(meta.get("id", sample["__key__"]))}
        if self.caption_key:
            item["caption"] = meta.get(self.caption_key, "")
        rng = np.random.default_rng([self.seed, epoch, int(meta.get("__index__", 0))])
        clips = crop({k: latents[k] for k in self.keys}, self.max_frames, 1, rng, self.random_crop)
        return item | {k: v.float() for k, v in clips.items()}

    def _check(self, header: dict) -> None:
        """A shard of another codec or other keys stops the run (``RuntimeError``: not a skippable sample)."""
        if header.get("keys") != list(self.keys):
            raise RuntimeError(f"latent shards hold keys {header.get('keys')}, this run reads {list(self.keys)}; "
                               "write the shards from a cache built with those keys")
        if self.codec is not None and not same_codec(header["codec"], self.codec):
            raise RuntimeError(f"latent shards hold latents of {describe_codec(header['codec'])}, not of this run's "
                               f"codec {describe_codec(self.codec)}; write them from a cache of this codec")
