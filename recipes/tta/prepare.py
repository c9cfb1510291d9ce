"""Turn an AudioCaps-style CSV + audio folder into train/valid/test JSONL manifests (text-to-audio).

The CSVs have columns audiocap_id,youtube_id,start_time,caption (AudioCaps' train.csv, val.csv,
test.csv). Audio files may sit anywhere under --audio-dir with any audio extension, named by
youtube_id, audiocap_id, AudioSet style ("Y<youtube_id>..."), or "<youtube_id>_<start>...". Every
file is decoded once: missing, corrupt, silent or too short files are counted and left out.
Rows of one clip share an id, so a clip with several captions is encoded once in the latent cache.

Usage:
    python recipes/tta/prepare.py --train-csv audiocaps/train.csv --valid-csv audiocaps/val.csv \
        --test-csv audiocaps/test.csv --audio-dir audiocaps/audio --out-dir data/audiocaps
    # one CSV only: hold out 2 % + 2 % of the videos for valid / test
    python recipes/tta/prepare.py --train-csv clips.csv --audio-dir clips --out-dir data/clips \
        --valid-fraction 0.02 --test-fraction 0.02
    # also encode latent caches (data/audiocaps/cache/<split>/); several GPUs: accelerate launch ...
    python recipes/tta/prepare.py ... --cache --codec mispeech/dashengtokenizer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genflow.data import index_audio_files
from genflow.data.prepare import (
    add_prepare_args,
    hold_out,
    index_youtube_clips,
    read_clip_csv,
    run_prepare,
)

COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


def read_csv(csv_path: Path, files: dict[str, str]) -> tuple[list[dict], int]:
    """Manifest rows of one AudioCaps-style CSV, and how many of its rows have no audio file."""
    found, missing = read_clip_csv(csv_path, files, "youtube_id", "start_time", ",".join(COLUMNS),
                                   lambda rec: (rec.get("audiocap_id") or "",))
    keep = ("audiocap_id", "youtube_id", "start_time")
    return [row | {k: rec[k] for k in keep if k in rec} for row, rec in found], missing


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows per split from the CSVs (valid/test held out of train by video when their CSV is absent)."""
    files = index_audio_files(args.audio_dir)
    print(f"{len(files)} audio files under {args.audio_dir}")
    files = index_youtube_clips(files)
    splits = {}
    for name, csv_path in (("train", args.train_csv), ("valid", args.valid_csv), ("test", args.test_csv)):
        if csv_path is not None:
            splits[name], missing = read_csv(csv_path, files)
            print(f"{name}: {len(splits[name])} rows from {csv_path}, {missing} without an audio file")
    fractions = {
        s: f for s, f in (("valid", args.valid_fraction), ("test", args.test_fraction)) if s not in splits
    }
    if any(fractions.values()):
        splits.update(hold_out(splits.pop("train"), fractions, "youtube_id"))
    return splits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-csv", "--csv", type=Path, required=True, help="AudioCaps-style CSV")
    p.add_argument("--valid-csv", type=Path, default=None)
    p.add_argument("--test-csv", type=Path, default=None)
    p.add_argument("--audio-dir", type=Path, required=True, help="folder of the clips (searched recursively)")
    p.add_argument("--valid-fraction", type=float, default=0.0, help="of the videos, when no --valid-csv")
    p.add_argument("--test-fraction", type=float, default=0.0, help="of the videos, when no --test-csv")
    add_prepare_args(p)
    run_prepare(p.parse_args(argv), collect, ("audio",))


if __name__ == "__main__":
    main()
