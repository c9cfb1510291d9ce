"""What every recipe's prepare.py shares: common arguments, validate + write splits, latent caches.

A prepare script only turns a public layout into rows per split ({"train": [...], ...}); ``run_prepare``
validates them (under ``accelerate launch`` each process decodes a part), writes ``<out-dir>/<split>.jsonl``
and, with ``--cache``, encodes each split into ``<out-dir>/cache/<split>/`` (every process encodes its
shards, dealt by seconds of audio).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

from genflow.data.cache import build_latent_cache, resolve_cache_dir
from genflow.data.manifest import write_splits

SPLITS = ("train", "valid", "test")


def stable_fraction(key: str) -> float:
    """A pseudo-random number in [0, 1) fixed by ``key``: the same split on every run and machine."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


def hold_out(rows: list[dict], fractions: dict[str, float], group_key: str) -> dict[str, list[dict]]:
    """Split rows into {"train", <name>...} by ``stable_fraction(row[group_key])``; a group stays whole."""
    out, lo = {}, 0.0
    for name, frac in fractions.items():
        if frac <= 0:
            continue
        out[name] = [r for r in rows if lo <= stable_fraction(str(r[group_key])) < lo + frac]
        lo += frac
    out["train"] = [r for r in rows if stable_fraction(str(r[group_key])) >= lo]
    return out


def index_youtube_clips(files: dict[str, str]) -> dict[str, str]:
    """Also index files by the 11-character YouTube id their name starts with (after an optional "Y")."""
    out = dict(files)
    for stem, path in files.items():
        for ytid in (stem[:11], stem[1:12] if stem.startswith("Y") else ""):
            if len(ytid) == 11:
                out.setdefault(f"\0{ytid}", path)
    return out


def find_youtube_clip(files: dict[str, str], youtube_id: str, start: str = "", *names: str) -> str | None:
    """Path of a clip named <names...>, <id>, Y<id>, <id>_<start>, or starting with the id; else None."""
    start_int = str(int(float(start))) if start else ""
    for name in (*names, youtube_id, f"Y{youtube_id}", f"{youtube_id}_{start}", f"{youtube_id}_{start_int}"):
        if name and name in files:
            return files[name]
    return files.get(f"\0{youtube_id}")  # from index_youtube_clips


def read_clip_csv(
    csv_path: Path, files: dict[str, str], id_column: str, start_column: str, expected: str,
    names: Callable[[dict], tuple[str, ...]] = lambda rec: (),
) -> tuple[list[tuple[dict, dict]], int]:
    """(row, CSV record) of every row of a YouTube-clip CSV with an audio file, and how many have none.

    A row is {"audio", "caption", "id"}; the clip is found by ``find_youtube_clip`` (``names(rec)`` first).
    A CSV without ``id_column`` or ``caption`` raises a ``ValueError`` saying the columns ``expected``.
    """
    found, missing = [], 0
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if not {id_column, "caption"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{csv_path} has columns {reader.fieldnames}; expected {expected}")
        for rec in reader:
            path = find_youtube_clip(files, rec[id_column], rec.get(start_column) or "", *names(rec))
            if path is None:
                missing += 1
                continue
            found.append(({"audio": path, "caption": rec["caption"].strip(), "id": Path(path).stem}, rec))
    return found, missing


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by every prepare script: output, validation limits, latent cache."""
    p.add_argument("--out-dir", type=Path, required=True, help="where <split>.jsonl manifests are written")
    p.add_argument("--min-duration", type=float, default=0.5, help="seconds; shorter clips are dropped")
    p.add_argument("--max-duration", type=float, default=None, help="seconds; longer clips are dropped")
    p.add_argument("--num-workers", type=int, default=4, help="threads decoding audio")
    p.add_argument(
        "--cache",
        nargs="?",
        const="auto",
        default=None,
        metavar="DIR",
        help="also build latent caches in DIR/<split> (default DIR: <out-dir>/cache)",
    )
    p.add_argument("--codec", default="mispeech/dashengtokenizer", help="codec for --cache, e.g. mel")
    p.add_argument("--fp32", action="store_true", help="store cached latents as float32 (default float16)")
    p.add_argument("--shard-size", type=int, default=256, help="clips per cache shard")
    p.add_argument("--batch-size", type=int, default=16, help="clips per codec call")


def run_prepare(
    args: argparse.Namespace,
    collect: Callable[[argparse.Namespace], dict[str, list[dict]]],
    keys: tuple[str, ...],
) -> None:
    """Collect rows per split, validate (spread over the processes), write manifests; then build caches if asked.

    Under ``accelerate launch`` every process collects the same rows and decodes its own part of them; the
    main process writes the manifests. No process waits at a barrier while another decodes everything.
    """
    from genflow.training import process_state

    accelerator = process_state()  # one process, or one per GPU under `accelerate launch` (gloo with --cpu)
    splits = collect(args)
    write_splits(
        splits,
        args.out_dir,
        keys,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        num_workers=args.num_workers,
        state=accelerator,
    )
    if not args.cache:
        return
    accelerator.wait_for_everyone()
    from genflow.codecs import load_codec
    from genflow.codecs.latent_stats import codec_with_latent_stats

    with accelerator.local_main_process_first():  # hub weights downloaded once per node
        codec = load_codec(args.codec, device=accelerator.device)
    # A VAE without latent statistics: compute them on the train split into <out-dir>/codec, cache with that.
    codec_id, codec = codec_with_latent_stats(args.codec, codec, args.out_dir / "train.jsonl",
                                              args.out_dir / "codec", accelerator)
    if codec_id != args.codec and accelerator.is_main_process:
        print(f"latent statistics of {args.codec} -> {codec_id}; train with --codec {codec_id}")
    cache_root = resolve_cache_dir(args.cache, args.out_dir / "cache")
    for split in SPLITS:
        manifest = args.out_dir / f"{split}.jsonl"
        if not manifest.exists():
            continue
        stats = build_latent_cache(
            manifest,
            codec,
            cache_root / split,
            keys=keys,
            fp16=not args.fp32,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            accelerator=accelerator,
            num_workers=args.num_workers,
        )
        if accelerator.is_main_process:
            print(
                f"cache {split}: {stats['written']} shards written, {stats['skipped']} already done, "
                f"{len(stats['failed'])} clips failed to load -> {cache_root / split}"
            )
