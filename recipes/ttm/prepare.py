"""Turn a MusicCaps-style CSV + audio folder into train/valid/test JSONL manifests (text-to-music).

The CSV has columns ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,
is_balanced_subset,is_audioset_eval (MusicCaps' musiccaps-public.csv). Rows with is_audioset_eval
true form the test split (the usual MusicCaps evaluation set); --valid-fraction of the other videos
is held out for validation. Audio files may sit anywhere under --audio-dir with any audio extension,
named <ytid>, Y<ytid>..., <ytid>_<start_s>..., or "[<ytid>]..." as some downloaders do. Every file is
decoded once: missing, corrupt, silent or too short files are counted and left out.

Usage:
    python recipes/ttm/prepare.py --csv musiccaps-public.csv --audio-dir musiccaps/audio \
        --out-dir data/musiccaps --valid-fraction 0.05
    # also encode latent caches (data/musiccaps/cache/<split>/); several GPUs: accelerate launch ...
    python recipes/ttm/prepare.py ... --cache --codec mispeech/dashengtokenizer
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

TRUE = {"true", "1", "yes"}


def read_csv(csv_path: Path, files: dict[str, str]) -> tuple[list[dict], list[dict], int]:
    """(non-eval rows, eval rows, rows without an audio file) of a MusicCaps-style CSV."""
    expected = ("MusicCaps columns including ytid,start_s,end_s,caption (and optionally aspect_list, "
                "is_audioset_eval)")
    found, missing = read_clip_csv(csv_path, files, "ytid", "start_s", expected, lambda rec: (f"[{rec['ytid']}]",))
    train, test = [], []
    for row, rec in found:
        row |= {"ytid": rec["ytid"]} | {k: rec[k] for k in ("start_s", "end_s", "aspect_list") if rec.get(k)}
        (test if (rec.get("is_audioset_eval") or "").strip().lower() in TRUE else train).append(row)
    return train, test, missing


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows per split: eval rows -> test, the rest split into train/valid by video."""
    files = index_audio_files(args.audio_dir)
    print(f"{len(files)} audio files under {args.audio_dir}")
    # "[ytid] title.wav" style names: index them by the bracketed id too.
    files.update({f"[{s[1:12]}]": p for s, p in list(files.items()) if s.startswith("[") and s[12:13] == "]"})
    train, test, missing = read_csv(args.csv, index_youtube_clips(files))
    print(f"{len(train) + len(test)} rows from {args.csv}, {missing} without an audio file")
    splits = hold_out(train, {"valid": args.valid_fraction}, "ytid")
    splits["test"] = test
    return splits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, required=True, help="MusicCaps-style CSV")
    p.add_argument("--audio-dir", type=Path, required=True, help="folder of the clips (searched recursively)")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="of the non-eval videos")
    add_prepare_args(p)
    run_prepare(p.parse_args(argv), collect, ("audio",))


if __name__ == "__main__":
    main()
