"""Streaming training data from WebDataset tar shards: corpora that do not fit on one disk.

    python -m genflow.data.stream write data/train.jsonl shards/train-%06d.tar --per-shard 1000
    accelerate launch recipes/tta/train.py --data 'shards/train-{000000..000127}.tar' ...

A shard is a plain tar in the WebDataset layout: the files of one sample share a key (the name up to the
first dot): ``000000042.flac`` (the audio, any soundfile format) + ``000000042.json`` (the manifest row
without its audio path, e.g. the caption, and its row number ``__index__``). ``--data.train`` takes a
brace pattern (``train-{000000..000127}.tar``), a comma-separated list, local paths or any URL that
``webdataset.gopen`` opens (``pip install webdataset``: http(s), ``s3://``...); ``pipe:CMD`` (the shard is
CMD's output, e.g. ``pipe:aws s3 cp s3://bucket/train-000000.tar -``) needs nothing more.
Speech pairs (``{"clean", "noisy"}`` manifests) are written as ``000000042.clean.flac`` +
``000000042.noisy.flac`` + the JSON (``genflow.data.stream_pairs`` reads them); a latent cache as
``000000042.latents.safetensors`` + the JSON (``genflow.data.latent_shards``).

Order: each epoch shuffles the shard list with (seed, epoch); rank r reads shards ``r::world`` of it and
DataLoader worker w of that rank the shards ``w::num_workers`` of those, each worker one endless stream,
epoch after epoch. Every batch carries its stream's position (epoch, shard, next sample), which the
training loop keeps in its checkpoints: a resumed run reopens each stream at that shard, skips the samples
already read (headers only, no decoding) and yields the same batches as an uninterrupted run. Samples are
decoded in the workers and encoded by the codec on the GPU; random crops use the same (seed, epoch, row
number) generator as the manifest datasets, so the same rows give the same crops either way.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from genflow.data.batching import collate
from genflow.data.datasets import crop
from genflow.hub import atomic_write

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "aiff")


def is_stream(spec: str) -> bool:
    """Whether a ``--data.train`` value names tar shards (rather than a JSONL manifest)."""
    return any(part.strip().split("?")[0].endswith(".tar") for part in spec.split(","))


def expand_shards(spec: str) -> list[str]:
    """``a-{000..002}.tar,b.tar`` -> [a-000.tar, a-001.tar, a-002.tar, b.tar] (numeric ranges keep their width)."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        match = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if match is None:
            out.append(part)
            continue
        lo, hi = match.group(1), match.group(2)
        if int(hi) < int(lo):
            raise ValueError(f"shard pattern {part!r}: range {{{lo}..{hi}}} is empty; expected {{LOW..HIGH}}")
        for n in range(int(lo), int(hi) + 1):
            out += expand_shards(part[: match.start()] + str(n).zfill(len(lo)) + part[match.end() :])
    return out


def _open(url: str):
    """A binary stream of a local path (or ``file://``), a ``pipe:CMD`` (CMD's stdout) or, through
    ``webdataset.gopen``, of any other URL."""
    if url.startswith("pipe:"):
        return _Pipe(url[len("pipe:") :], "rb")
    if "://" not in url:
        if not os.path.isfile(url):
            raise FileNotFoundError(f"shard {url!r} does not exist; expected a tar file (write shards with "
                                    "`python -m genflow.data.stream write MANIFEST OUT-%06d.tar`)")
        return open(url, "rb")
    if url.startswith("file://"):
        return open(url[len("file://") :], "rb")
    try:
        from webdataset import gopen
    except ImportError:
        raise ImportError(f"shard {url!r} is a URL: reading it needs webdataset (pip install webdataset), or "
                          "give it as pipe:CMD (e.g. 'pipe:curl -s URL')") from None
    return gopen(url, "rb")


class _Pipe:
    """``pipe:CMD`` as a binary file: CMD's stdout to read ("rb") or its stdin to write ("wb"), as webdataset's.

    Closing waits for CMD: a failed command raises ``OSError`` naming it (a reader that stopped first ends CMD).
    """

    def __init__(self, cmd: str, mode: str):
        reading = mode == "rb"
        self.cmd, self.reading = cmd, reading
        self.proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE if reading else None,
                                     stdin=None if reading else subprocess.PIPE)
        self.stream = self.proc.stdout if reading else self.proc.stdin

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)

    def write(self, data: bytes) -> int:
        return self.stream.write(data)

    def close(self) -> None:
        self.stream.close()
        if self.reading and self.proc.poll() is None:  # the reader stopped before CMD did: end it
            self.proc.terminate()
            self.proc.wait()
            return
        code = self.proc.wait()
        if code:
            raise OSError(f"pipe:{self.cmd} exited with status {code}; run the command by hand to see why")

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_samples(url: str, skip: int = 0) -> Iterator[tuple[int, dict]]:
    """(sample number, {extension: bytes, "__key__": key}) of one shard, in tar order; the first ``skip``
    samples are passed over without reading their contents."""
    with _open(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        key, sample, number = None, {}, -1
        for member in tar:
            if not member.isfile():
                continue
            name = os.path.basename(member.name)
            this, _, ext = name.partition(".")
            if this != key:
                if key is not None and number >= skip:
                    yield number, sample
                key, sample, number = this, {"__key__": this}, number + 1
            if number >= skip:
                sample[ext] = tar.extractfile(member).read()
        if key is not None and number >= skip:
            yield number, sample


def _decode(data: bytes, name: str, sample_rate: int) -> torch.Tensor:
    """Audio bytes -> float32 mono (N,) at ``sample_rate``; ``ValueError`` naming the sample when unusable."""
    from genflow.audio import resample

    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"shard sample {name}: cannot decode its audio ({e})") from e
    if wav.shape[0] == 0 or not np.isfinite(wav).all():
        raise ValueError(f"shard sample {name}: empty or non-finite audio")
    out = torch.from_numpy(np.ascontiguousarray(wav.mean(axis=1)))
    return resample(out, int(sr), sample_rate).contiguous()


class ShardStream(IterableDataset):
    """Collated batches of captioned clips ({"id", "caption", "audio" (B, N), "lengths"}) streamed from shards.

    Subclasses read other samples by overriding ``_item`` (and ``target``): speech pairs, cached latents.
    """

    def __init__(self, shards: list[str], *, sample_rate: int, hop_length: int, max_frames: int, batch_size: int,
                 seed: int = 0, rank: int = 0, world: int = 1, caption_key: str = "caption",
                 random_crop: bool = True, shuffle: bool = True):
        if len(shards) < world:
            raise ValueError(f"{len(shards)} shards for {world} processes: expected at least one shard per process "
                             "(and per DataLoader worker); write smaller shards")
        self.shards, self.sample_rate, self.hop_length = list(shards), sample_rate, hop_length
        self.max_frames, self.batch_size, self.seed = max_frames, batch_size, seed
        self.rank, self.world, self.caption_key = rank, world, caption_key
        self.random_crop, self.shuffle = random_crop, shuffle
        self.target = "audio"  # the item entry batches are sorted by (longest first)
        self.position: dict = {}  # {"streams": {stream: [epoch, shard, sample]}, "next": stream}, from the loop

    def stream_shards(self, epoch: int, stream: int, num_streams: int) -> list[str]:
        """The shards stream ``stream`` of this rank reads in ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)) if self.shuffle \
            else np.arange(len(self.shards))
        mine = [self.shards[i] for i in order[self.rank :: self.world]][stream::num_streams]
        if not mine:
            raise ValueError(f"{len(self.shards)} shards for {self.world} processes x {num_streams} DataLoader "
                             "workers: some worker gets none; use fewer --train.num_workers or more shards")
        return mine

    def _item(self, sample: dict, epoch: int) -> dict | None:
        """One sample -> {"id", "caption", "audio": (N,) cropped to max_frames}, as ``TextAudioDataset`` does."""
        meta = json.loads(sample["json"]) if "json" in sample else {}
        ext = next((e for e in sample if e.rpartition(".")[2] in AUDIO_EXTENSIONS), None)
        if ext is None:
            raise ValueError(f"shard sample {sample['__key__']} has no audio ({sorted(sample)})")
        wav = _decode(sample[ext], sample["__key__"], self.sample_rate)
        index = int(meta.get("__index__", 0))
        rng = np.random.default_rng([self.seed, epoch, index])
        clip = crop({"audio": wav}, self.max_frames * self.hop_length, self.hop_length, rng, self.random_crop)
        return {"id": str(meta.get("id", sample["__key__"])), "caption": meta.get(self.caption_key, ""), **clip}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        stream = (worker + int(self.position.get("next", 0))) % workers  # the loop's round-robin continues
        epoch, shard, skip = self.position.get("streams", {}).get(str(stream), [0, 0, 0])
        items, bad = [], 0
        while True:
            shards = self.stream_shards(epoch, stream, workers)
            while shard < len(shards):
                for number, sample in read_samples(shards[shard], skip):
                    try:
                        item = self._item(sample, epoch)
                    except ValueError:
                        item, bad = None, bad + 1
                    if item is not None:  # None: a sample that holds no clip (a shard's header)
                        items.append(item)
                    if len(items) == self.batch_size:
                        # longest first, as a length-bucketed batch of the manifest path is ordered
                        items.sort(key=lambda it: -it[self.target].shape[0])
                        batch = collate(items)
                        batch["num_skipped"], batch["_stream"] = bad, [stream, epoch, shard, number + 1]
                        yield batch
                        items, bad = [], 0
                shard, skip = shard + 1, 0
            epoch, shard = epoch + 1, 0


def write_shards(manifest: str | os.PathLike, pattern: str, per_shard: int = 1000,
                 audio_keys: tuple[str, ...] | None = None) -> list[str]:
    """A JSONL manifest -> tar shards ``pattern % n`` of ``per_shard`` samples (audio bytes as they are + JSON).

    ``audio_keys`` None: ("clean", "noisy") for speech pairs, ("clean",) for clean speech, else ("audio",).
    One "audio" file is written as ``KEY.EXT``; the files of other keys as ``KEY.NAME.EXT`` (``KEY.clean.flac``).
    ``pattern`` is a local path or a URL ``open_write`` takes (``pipe:CMD``).
    """
    from genflow.data.manifest import read_manifest

    rows = read_manifest(manifest, audio_keys)
    if audio_keys is None:
        audio_keys = tuple(k for k in ("clean", "noisy") if k in rows[0]) if rows and "clean" in rows[0] else ("audio",)
        rows = read_manifest(manifest, audio_keys)  # every row checked for those keys

    def sample(index: int) -> list[tuple[str, bytes]]:
        row, key = rows[index], f"{index:09d}"
        files = []
        for name in audio_keys:
            ext = Path(row[name]).suffix.lstrip(".").lower() or "wav"
            files.append((f"{key}.{ext}" if audio_keys == ("audio",) else f"{key}.{name}.{ext}",
                          Path(row[name]).read_bytes()))
        meta = {k: v for k, v in row.items() if k not in audio_keys} | {"__index__": index}
        return files + [(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())]

    return write_tars(pattern, len(rows), per_shard, sample)


def write_tars(pattern: str, count: int, per_shard: int, sample, header: list[tuple[str, bytes]] = ()) -> list[str]:
    """Samples ``sample(i) -> [(name, bytes)]`` for i < ``count`` -> tars ``pattern % n`` (``header`` first in each)."""
    if "%" not in pattern:
        raise ValueError(f"shard pattern {pattern!r} has no %d field; expected e.g. shards/train-%06d.tar")
    written = []
    for first in range(0, count, per_shard):
        url = pattern % (first // per_shard)
        with open_write(url) as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            for name, data in [*header, *(f for i in range(first, min(first + per_shard, count)) for f in sample(i))]:
                _add(tar, name, data)
        written.append(url)
    return written


@contextmanager
def open_write(url: str) -> Iterator:
    """A binary stream writing ``url``: a local path (or ``file://``) atomically (temp name, then rename), the stdin
    of a ``pipe:CMD`` (``pipe:aws s3 cp - s3://bucket/x.tar``), any other URL through ``webdataset.gopen``."""
    if url.startswith("pipe:"):
        with _Pipe(url[len("pipe:") :], "wb") as stream:
            yield stream
        return
    if "://" in url and not url.startswith("file://"):
        try:
            from webdataset import gopen
        except ImportError:
            raise ImportError(f"shard {url!r} is a URL: writing it needs webdataset (pip install webdataset)") from None
        with gopen(url, "wb") as stream:
            yield stream
        return
    with atomic_write(url[len("file://") :] if url.startswith("file://") else url) as tmp, open(tmp, "wb") as stream:
        yield stream


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> None:
    """``python -m genflow.data.stream write MANIFEST PATTERN`` / ``write-latents CACHE MANIFEST PATTERN``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m genflow.data.stream", description="write WebDataset tar shards")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="a JSONL manifest -> tar shards")
    w.add_argument("manifest")
    w.add_argument("pattern", help="output path with a %%d field, e.g. shards/train-%%06d.tar")
    w.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    c = sub.add_parser("write-latents", help="a latent cache folder + the manifest it was built from -> tar shards")
    c.add_argument("cache")
    c.add_argument("manifest")
    c.add_argument("pattern", help="output path or URL with a %%d field, e.g. latents/train-%%06d.tar")
    c.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    args = p.parse_args(argv)
    if args.command == "write":
        paths = write_shards(args.manifest, args.pattern, args.per_shard)
    else:
        from genflow.data.latent_shards import write_latent_shards

        paths = write_latent_shards(args.cache, args.manifest, args.pattern, args.per_shard)
    print(f"wrote {len(paths)} shards: {paths[0]} ... {paths[-1]}")


if __name__ == "__main__":
    main()
