"""Turn the VoiceBank-DEMAND folder layout into train/valid/test JSONL manifests (speech enhancement).

Expected under --root (the layout of the Edinburgh DataShare release, unzipped):

    clean_trainset_28spk_wav/  noisy_trainset_28spk_wav/     (or the *_56spk_wav pair, or both)
    clean_testset_wav/         noisy_testset_wav/

Clean and noisy files are matched by file name (p226_001.wav). The speakers in --valid-speakers
(default p226,p287) are held out of the training set for validation. Rows are {"clean", "noisy",
"id", "speaker"}; every file is decoded once and unmatched, missing, corrupt, silent, too short or
length-mismatched pairs are counted and left out.

Alternatively, --clean-dir (clean speech only, no --root) writes {"clean"} rows for on-the-fly
mixing, split by --valid-fraction/--test-fraction of the files; --noise-dir writes noise.jsonl
({"audio"} rows) for SpeechPairDataset(noise_rows=...).

Usage:
    python recipes/se/prepare.py --root VCTK-DEMAND --out-dir data/voicebank
    python recipes/se/prepare.py --clean-dir speech/ --noise-dir noises/ --out-dir data/mix \
        --valid-fraction 0.1
    # also encode latent caches of both sides of the pairs (data/voicebank/cache/<split>/)
    python recipes/se/prepare.py --root VCTK-DEMAND --out-dir data/voicebank --cache --codec mel
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genflow.data import index_audio_files, write_splits
from genflow.data.prepare import add_prepare_args, hold_out, run_prepare


def pair_rows(clean_dirs: list[Path], noisy_dirs: list[Path]) -> tuple[list[dict], int, int]:
    """Rows of clean/noisy files matched by name: (rows, clean files without noisy, noisy without clean)."""
    clean, noisy = {}, {}
    for d in clean_dirs:
        clean.update(index_audio_files(d))
    for d in noisy_dirs:
        noisy.update(index_audio_files(d))
    rows = [
        {"clean": clean[name], "noisy": noisy[name], "id": name, "speaker": name.split("_")[0]}
        for name in sorted(clean.keys() & noisy.keys())
    ]
    return rows, len(clean.keys() - noisy.keys()), len(noisy.keys() - clean.keys())


def voicebank_splits(root: Path, valid_speakers: set[str]) -> dict[str, list[dict]]:
    """train/valid/test rows of a VoiceBank-DEMAND folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"--root {str(root)!r} does not exist; expected the VoiceBank-DEMAND folder")
    splits = {}
    for split, pattern in (("train", "trainset_*wav"), ("test", "testset*wav")):
        clean_dirs = sorted(p for p in root.glob(f"clean_{pattern}") if p.is_dir())
        noisy_dirs = sorted(p for p in root.glob(f"noisy_{pattern}") if p.is_dir())
        if not clean_dirs or not noisy_dirs:
            raise FileNotFoundError(
                f"{root} has no clean_{pattern}/ + noisy_{pattern}/ folders (found "
                f"{sorted(p.name for p in root.iterdir())}); expected the VoiceBank-DEMAND layout, e.g. "
                "clean_trainset_28spk_wav/, noisy_trainset_28spk_wav/, clean_testset_wav/, noisy_testset_wav/"
            )
        rows, clean_only, noisy_only = pair_rows(clean_dirs, noisy_dirs)
        print(
            f"{split}: {len(rows)} pairs from {[d.name for d in clean_dirs + noisy_dirs]}; "
            f"{clean_only} clean files without a noisy one, {noisy_only} noisy without a clean one"
        )
        splits[split] = rows
    train = splits.pop("train")
    splits["train"] = [r for r in train if r["speaker"] not in valid_speakers]
    splits["valid"] = [r for r in train if r["speaker"] in valid_speakers]
    return splits


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows per split from --root (pairs) or --clean-dir (clean only); writes noise.jsonl for --noise-dir."""
    if args.noise_dir is not None:
        noise = [{"audio": p, "id": s} for s, p in index_audio_files(args.noise_dir).items()]
        print(f"noise: {len(noise)} files under {args.noise_dir}")
        write_splits(
            {"noise": noise},
            args.out_dir,
            ("audio",),
            min_duration=args.min_duration,
            num_workers=args.num_workers,
        )
    if args.root is not None:
        return voicebank_splits(args.root, set(args.valid_speakers.split(",")))
    clean = [{"clean": p, "id": s} for s, p in index_audio_files(args.clean_dir).items()]
    print(f"clean: {len(clean)} files under {args.clean_dir}")
    return hold_out(clean, {"valid": args.valid_fraction, "test": args.test_fraction}, "id")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", type=Path, help="VoiceBank-DEMAND folder")
    src.add_argument("--clean-dir", type=Path, help="clean speech only (noise is mixed in on the fly)")
    p.add_argument("--noise-dir", type=Path, default=None, help="noise files -> <out-dir>/noise.jsonl")
    p.add_argument("--valid-speakers", default="p226,p287", help="VoiceBank speakers held out for validation")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="with --clean-dir: files held out")
    p.add_argument("--test-fraction", type=float, default=0.05, help="with --clean-dir: files held out")
    add_prepare_args(p)
    args = p.parse_args(argv)
    if args.cache and args.root is None:
        p.error("--cache needs --root (clean/noisy pairs): noise mixed on the fly is encoded during training")
    run_prepare(args, collect, ("clean", "noisy") if args.root is not None else ("clean",))


if __name__ == "__main__":
    main()
