"""The text-to-audio / text-to-music sampling command line: prompts in, WAVs + JSON sidecars + a PNG grid out.

    python recipes/tta/sample.py --checkpoint runs/tta-demo/release --prompt "a dog barking" --num-seeds 2
    python recipes/ttm/sample.py --checkpoint user/genflow-ttm --prompts-file prompts.jsonl --out samples/

Prompts come from ``--prompt`` (repeatable) and/or ``--prompts-file`` (plain text, one per line, or JSONL rows
``{"id": ..., "caption" | "prompt" | "text": ...}``). One WAV per (prompt, seed) named ``{id or slug}_s{seed}.wav``
(a ``-2``, ``-3`` ... suffix when two prompts give the same name), each with a ``.json`` sidecar holding every
setting needed to reproduce it. The same checkpoint, prompt, seed and settings give byte-identical WAVs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import genflow
from genflow.audio import save_audio
from genflow.cli.common import add_release_flags, check_out_folder, int_arg, load_release
from genflow.cli.config import Parser
from genflow.hub import write_json
from genflow.plots import save_spectrogram_grid
from genflow.sampling import ENHANCEMENT_ONLY, overrides_from_args

PROMPT_KEYS = ("caption", "prompt", "text")


def read_prompts_file(path: str | Path) -> list[tuple[str | None, str]]:
    """A text file (one prompt a line) or JSONL (``{"id", "caption"|"prompt"|"text"}``) -> [(id or None, prompt)]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {str(path)!r} not found; expected a text file with one prompt "
                                "per line or a JSONL file with {\"id\", \"caption\"} rows")
    rows: list[tuple[str | None, str]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompts-file {path} is not UTF-8 text ({e}); save it as UTF-8") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e}); expected {{\"id\": ..., \"caption\": ...}}") from e
            text = next((row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
            if text is None:
                raise ValueError(f"{path}:{n}: no prompt; expected one of the keys {PROMPT_KEYS} with a non-empty "
                                 f"string, got keys {sorted(row)}")
            rows.append((str(row["id"]) if row.get("id") is not None else None, text.strip()))
        else:
            rows.append((None, line))
    if not rows:
        raise ValueError(f"--prompts-file {path} holds no prompts; expected one prompt per line or JSONL rows")
    return rows


def slug(text: str, max_len: int = 48) -> str:
    """A file-name-safe slug of a prompt or id: lowercase ASCII words joined by '-'."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return s or "clip"


def plan_outputs(prompts: list[tuple[str | None, str]], seeds: list[int]) -> list[dict]:
    """[(id, prompt)] x seeds -> [{"name", "id", "prompt", "seed"}] with unique file stems."""
    jobs, used = [], set()
    for pid, prompt in prompts:
        for seed in seeds:
            base = f"{slug(pid) if pid else slug(prompt)}_s{seed}"
            name, k = base, 1
            while name in used:
                k += 1
                name = f"{base}-{k}"
            used.add(name)
            jobs.append({"name": name, "id": pid, "prompt": prompt, "seed": seed})
    return jobs


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The shared argparse parser of recipes/{tta,ttm}/sample.py."""
    p = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeatable)")
    p.add_argument("--prompts-file", help="text file (one prompt a line) or JSONL with id + caption/prompt")
    p.add_argument("--seed", type=int, action="append", help="a seed (repeatable); default 0")
    p.add_argument("--num-seeds", type=int_arg(1), help="seeds 0..N-1 (or SEED..SEED+N-1 with one --seed)")
    p.add_argument("--out", default="samples", help="output folder (created)")
    p.add_argument("--no-grid", action="store_true", help="skip the spectrogram grid PNG")
    add_release_flags(p, batch_size=8, exclude=ENHANCEMENT_ONLY)
    return p


def parse_args(argv: list[str] | None, description: str | None) -> tuple[argparse.Namespace, list, list[int]]:
    """Flags, prompts and seeds, all checked before anything loads; a bad one ends the program with one line."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    check_out_folder(parser, args.out)
    if args.num_seeds is not None and args.seed and len(args.seed) > 1:
        parser.error("give either several --seed values or --num-seeds (with at most one --seed as start)")
    prompts: list[tuple[str | None, str]] = [(None, p.strip()) for p in args.prompt if p.strip()]
    if args.prompts_file:
        try:
            prompts += read_prompts_file(args.prompts_file)
        except (ValueError, OSError) as e:
            parser.error(str(e))
    if not prompts:
        parser.error("no prompts; give --prompt TEXT (repeatable) and/or --prompts-file FILE")
    if args.num_seeds is not None:
        start = args.seed[0] if args.seed else 0
        seeds = list(range(start, start + args.num_seeds))
    else:
        seeds = list(dict.fromkeys(args.seed or [0]))
    return args, prompts, seeds


def write_clip(path: Path, wav, sample_rate: int, sidecar: dict) -> None:
    """One WAV and its JSON sidecar (both atomic)."""
    save_audio(path, wav, sample_rate)
    try:
        write_json(path.with_suffix(".json"), sidecar)
    except OSError as e:
        raise OSError(f"cannot write {path.with_suffix('.json')} ({e}); check that the folder can be written to "
                      "and that the disk has space") from None


def main(argv: list[str] | None = None, description: str | None = None) -> list[Path]:
    """Run the sampling CLI; returns the written WAV paths (exit status 1 after the summary if any failed)."""
    args, prompts, seeds = parse_args(argv, description)
    gen = load_release(args)
    if gen.text_encoder is None:
        raise SystemExit(f"error: --checkpoint {args.checkpoint} has no text encoder (an enhancement model?); "
                         "use recipes/se/enhance.py for it")
    settings = gen.settings.replace(**overrides_from_args(args)).to_dict()
    for name in ENHANCEMENT_ONLY:
        settings.pop(name)
    jobs = plan_outputs(prompts, seeds)
    out = Path(args.out)
    print(f"{len(jobs)} clips ({len(prompts)} prompts x {len(seeds)} seeds) -> {out}", file=sys.stderr)
    t0 = time.perf_counter()
    wavs = gen.generate([j["prompt"] for j in jobs], seed=[j["seed"] for j in jobs], batch_size=args.batch_size,
                        progress=True, **settings)
    elapsed = time.perf_counter() - t0
    paths, failed = [], []
    for job, wav in zip(jobs, wavs):
        path = out / f"{job['name']}.wav"
        sidecar = {
            "file": path.name, "id": job["id"], "prompt": job["prompt"], "seed": job["seed"], **settings,
            "prediction": gen.prediction,  # "average_velocity": few-step jumps, one forward per step
            "checkpoint": args.checkpoint, "sample_rate": gen.sample_rate, "num_samples": int(wav.numel()),
            "codec": gen.codec_id, "text_encoder": gen.text_encoder_id, "device": str(gen.device),
            "dtype": "bf16" if args.bf16 else "fp32", "genflow_version": genflow.__version__,
            "elapsed_s": round(elapsed / len(jobs), 4),  # the batch's wall time shared evenly between its clips
        }
        try:
            write_clip(path, wav, gen.sample_rate, sidecar)
            paths.append(path)
        except OSError as e:  # unwritable output: the other clips are still written
            failed.append((path, str(e)))
            print(f"{path}: FAILED: {e}", file=sys.stderr)
    if not args.no_grid:
        grid = out / "spectrograms.png"
        try:
            save_spectrogram_grid(wavs, [f"{j['prompt']} (seed {j['seed']})" for j in jobs], gen.sample_rate, grid)
        except OSError as e:
            failed.append((grid, str(e)))
            print(f"{grid}: FAILED: cannot write it ({e})", file=sys.stderr)
    audio_s = sum(w.numel() for w in wavs) / gen.sample_rate
    print(f"wrote {len(paths)} WAVs to {out} in {elapsed:.1f} s (real-time factor {elapsed / max(audio_s, 1e-9):.3f})"
          f"; {len(failed)} failed", file=sys.stderr)
    if failed:
        for path, err in failed:
            print(f"  failed: {path}: {err}", file=sys.stderr)
        raise SystemExit(1)
    return paths
