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
from genflow.cli.common import add_release_flags, load_release
from genflow.plots import save_spectrogram_grid
from genflow.sampling import overrides_from_args

PROMPT_KEYS = ("caption", "prompt", "text")


def read_prompts_file(path: str | Path) -> list[tuple[str | None, str]]:
    """A text file (one prompt a line) or JSONL (``{"id", "caption"|"prompt"|"text"}``) -> [(id or None, prompt)]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {str(path)!r} not found; expected a text file with one prompt "
                                "per line or a JSONL file with {\"id\", \"caption\"} rows")
    rows: list[tuple[str | None, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
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
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeatable)")
    p.add_argument("--prompts-file", help="text file (one prompt a line) or JSONL with id + caption/prompt")
    p.add_argument("--seed", type=int, action="append", help="a seed (repeatable); default 0")
    p.add_argument("--num-seeds", type=int, help="seeds 0..N-1 (or SEED..SEED+N-1 with one --seed)")
    p.add_argument("--out", default="samples", help="output folder (created)")
    p.add_argument("--no-grid", action="store_true", help="skip the spectrogram grid PNG")
    add_release_flags(p, batch_size=8, exclude=("chunk_s", "overlap_s"))
    return p


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.num_seeds is not None:
        if args.num_seeds < 1:
            raise ValueError(f"--num-seeds {args.num_seeds}: expected a positive count")
        if args.seed and len(args.seed) > 1:
            raise ValueError("give either several --seed values or --num-seeds (with at most one --seed as start)")
        start = args.seed[0] if args.seed else 0
        return list(range(start, start + args.num_seeds))
    return list(dict.fromkeys(args.seed or [0]))


def main(argv: list[str] | None = None, description: str | None = None) -> list[Path]:
    """Run the sampling CLI; returns the written WAV paths."""
    args = build_parser(description).parse_args(argv)
    prompts: list[tuple[str | None, str]] = [(None, p.strip()) for p in args.prompt if p.strip()]
    if args.prompts_file:
        prompts += read_prompts_file(args.prompts_file)
    if not prompts:
        raise SystemExit("error: no prompts; give --prompt TEXT (repeatable) and/or --prompts-file FILE")
    seeds = _seeds(args)
    gen = load_release(args)
    if gen.text_encoder is None:
        raise SystemExit(f"error: --checkpoint {args.checkpoint} has no text encoder (an enhancement model?); "
                         "use recipes/se/enhance.py for it")
    settings = gen.settings.replace(**overrides_from_args(args)).to_dict()
    for name in ("chunk_s", "overlap_s"):  # enhancement-only settings
        settings.pop(name)
    jobs = plan_outputs(prompts, seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(jobs)} clips ({len(prompts)} prompts x {len(seeds)} seeds) -> {out}", file=sys.stderr)
    t0 = time.perf_counter()
    wavs = gen.generate([j["prompt"] for j in jobs], seed=[j["seed"] for j in jobs], batch_size=args.batch_size,
                        progress=True, **settings)
    elapsed = time.perf_counter() - t0
    paths = []
    for job, wav in zip(jobs, wavs):
        path = out / f"{job['name']}.wav"
        save_audio(path, wav, gen.sample_rate)
        sidecar = {
            "file": path.name, "id": job["id"], "prompt": job["prompt"], "seed": job["seed"], **settings,
            "prediction": gen.prediction,  # "average_velocity": few-step jumps, one forward per step
            "checkpoint": args.checkpoint, "sample_rate": gen.sample_rate, "num_samples": int(wav.numel()),
            "codec": gen.codec_id, "text_encoder": gen.text_encoder_id, "device": str(gen.device),
            "dtype": "bf16" if args.bf16 else "fp32", "genflow_version": genflow.__version__,
            "elapsed_s": round(elapsed / len(jobs), 4),  # the batch's wall time shared evenly between its clips
        }
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        paths.append(path)
    if not args.no_grid:
        save_spectrogram_grid(wavs, [f"{j['prompt']} (seed {j['seed']})" for j in jobs], gen.sample_rate,
                              out / "spectrograms.png")
    audio_s = sum(w.numel() for w in wavs) / gen.sample_rate
    print(f"wrote {len(paths)} WAVs to {out} in {elapsed:.1f} s (real-time factor {elapsed / max(audio_s, 1e-9):.3f})",
          file=sys.stderr)
    return paths
