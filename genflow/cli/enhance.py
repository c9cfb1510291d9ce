"""Speech enhancement of files and folders with a genflow release; the output folder mirrors the input tree.

    python recipes/se/enhance.py --checkpoint runs/se-demo/release noisy/ extra.flac --out enhanced/
    python recipes/se/enhance.py --checkpoint user/genflow-se noisy/ --out enhanced/ --steps 16 --chunk-s 10

- Inputs: files and/or folders (searched recursively for files soundfile reads: WAV, FLAC, OGG, MP3, AIFF, ...).
  A folder INPUT maps to OUT/ (its tree mirrored below OUT); a file maps to OUT/NAME.
- Output: mono, at the input file's sample rate (``--sample-rate`` to force one). FLAC inputs give FLAC,
  every other format gives WAV (16-bit PCM), named like the input with that extension.
- Long files run in ``--chunk-s`` second windows overlapping by ``--overlap-s`` seconds with a crossfade, so the
  model's memory is bounded whatever the length (the waveform itself is held in memory).
- Existing outputs are skipped unless ``--overwrite``; files are written atomically (temp name, then rename),
  so an interrupted run resumes where it stopped. ``--out`` may not be, or lie inside, an input folder.
- Every flag is checked before the model loads. A file that cannot be read or written is reported and skipped;
  the run ends with written/skipped/failed counts and exits with status 1 if any file failed. The real-time
  factor (processing time / audio duration) is printed per file and in total.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from genflow.audio import load_audio, resample, save_audio
from genflow.cli.common import add_release_flags, check_out_folder, int_arg, load_release
from genflow.cli.config import Parser
from genflow.dsp import find_audio_files
from genflow.sampling import SamplingSettings, overrides_from_args


def output_name(rel: Path) -> Path:
    """Input path relative to its root -> output path: FLAC stays FLAC, everything else becomes WAV."""
    return rel.with_suffix(".flac" if rel.suffix.lower() == ".flac" else ".wav")


def collect(inputs: list[str], out: Path) -> list[tuple[Path, Path]]:
    """Input files/folders -> [(input file, output file)], refusing layouts that would touch an input."""
    out_abs = out.resolve()
    jobs: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            root = path.resolve()
            if out_abs == root or root in out_abs.parents:
                raise SystemExit(f"error: --out {out} is (inside) the input folder {item}; it would write next "
                                 "to or over the inputs. Choose an output folder outside every input folder")
            files = find_audio_files(path)
            if not files:
                print(f"warning: no audio files found under {item}", file=sys.stderr)
            jobs += [(f, out / output_name(f.relative_to(path))) for f in files]
        elif path.is_file():
            jobs.append((path, out / output_name(Path(path.name))))
        else:
            raise SystemExit(f"error: input {item!r} not found; expected audio files and/or folders")
    seen: dict[Path, Path] = {}
    inputs_abs = {src.resolve() for src, _ in jobs}
    for src, dst in jobs:
        if dst.resolve() in inputs_abs:
            raise SystemExit(f"error: the output for {src} would be {dst}, an input file; choose another --out")
        if dst in seen:
            raise SystemExit(f"error: {seen[dst]} and {src} would both be written to {dst}; enhance them in "
                             "separate runs or rename one")
        seen[dst] = src
    return jobs


def build_parser() -> argparse.ArgumentParser:
    """The enhance.py command line."""
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files and/or folders (recursive)")
    p.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed -> same output)")
    p.add_argument("--sample-rate", type=int_arg(1000, 768000), help="output sample rate (default: each input's own)")
    p.add_argument("--overwrite", action="store_true", help="redo files whose output already exists")
    add_release_flags(p, batch_size=4, exclude=("duration_s",))
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check every flag before anything loads; a bad one ends the program with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_out_folder(parser, args.out)
    if args.chunk_s is not None and args.overlap_s is not None:
        try:
            SamplingSettings(chunk_s=args.chunk_s, overlap_s=args.overlap_s)
        except ValueError as e:
            parser.error(str(e))
    return args


def enhance_file(gen, src: Path, dst: Path, args: argparse.Namespace, settings: dict) -> tuple[float, float]:
    """Enhance ``src`` into ``dst``; returns (seconds of audio, seconds of processing)."""
    wav, sr = load_audio(src)  # (N,) mono float32 at the file's rate
    t0 = time.perf_counter()
    clean = gen.enhance(wav, sr, seed=args.seed, batch_size=args.batch_size, **settings)
    target_sr = args.sample_rate or sr
    if target_sr != sr:
        clean = resample(clean, sr, target_sr)
    elapsed = time.perf_counter() - t0
    save_audio(dst, clean, target_sr)
    return wav.numel() / sr, elapsed


def main(argv: list[str] | None = None) -> int:
    """Enhance every input; returns the exit status (0 all done, 1 some failed)."""
    args = parse_args(argv)
    jobs = collect(args.inputs, Path(args.out))
    settings = overrides_from_args(args)
    gen = load_release(args)
    try:
        gen.settings.replace(**settings)  # e.g. --overlap-s against the release's chunk_s: once, not per file
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    written = skipped = 0
    failed: list[tuple[Path, str]] = []
    total_audio = total_time = 0.0
    for i, (src, dst) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {src}"
        if dst.exists() and not args.overwrite:
            skipped += 1
            print(f"{tag}: skipped ({dst} exists; --overwrite to redo)", file=sys.stderr)
            continue
        try:
            seconds, elapsed = enhance_file(gen, src, dst, args, settings)
        except (ValueError, OSError, torch.OutOfMemoryError) as e:  # unreadable input, unwritable output, a file
            # too long for memory: the other files go on
            failed.append((src, str(e)))
            print(f"{tag}: FAILED: {e}", file=sys.stderr)
            continue
        total_audio, total_time = total_audio + seconds, total_time + elapsed
        written += 1
        print(f"{tag} -> {dst} ({seconds:.1f} s audio, {elapsed:.2f} s, RTF {elapsed / seconds:.3f})",
              file=sys.stderr)
    rtf = f", total RTF {total_time / total_audio:.3f}" if total_audio else ""
    print(f"done: {written} written, {skipped} skipped, {len(failed)} failed{rtf}", file=sys.stderr)
    for src, err in failed:
        print(f"  failed: {src}: {err}", file=sys.stderr)
    return 1 if failed else 0
