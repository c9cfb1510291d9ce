"""The paper's comparison: the same DiT, budget and data trained on each codec; a table and its Figure 3.

    # plumbing on this CPU: the mel codec and a tiny random-weight VAE stand-in, the bundled TTA data (~3 min)
    python bench/codec_comparison.py --codecs mel,tests/fixtures/oobleck-tiny --preset tiny --steps 60 \
        --eval-every 20 --out runs/codec-comparison

    # the real comparison (GPU; AudioCaps prepared by recipes/tta/prepare.py, CLAP from the hub)
    python bench/codec_comparison.py \
        --codecs mispeech/dashengtokenizer,stabilityai/stable-audio-open-1.0:vae \
        --preset base --steps 200000 --eval-every 20000 --limit 1000 --backend clap \
        --data data/audiocaps/train.jsonl --test data/audiocaps/test.jsonl --out runs/codec-comparison-audiocaps \
        --launcher "accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16"

For every codec the recipe's real ``train.py`` runs with the same preset, seed, data, steps and every other
setting, only ``--codec`` changes (the DiT's input/output widths follow the codec's latent width; a VAE gets
its per-channel latent statistics from the training data, see ``genflow.codecs.latent_stats``). Checkpoints
are kept every ``--eval-every`` steps; then each checkpoint's EMA weights are scored on the test manifest:

- validation loss: the flow-matching loss on the test clips' latents (the first ``--max-seconds`` of each),
  sigma and noise drawn from a fixed seed, no condition dropout. It is measured in each codec's own
  (normalised) latent space, so it shows each run's progress, not which codec is better;
- the metric: one clip per test caption (seed 0, the release's sampling defaults, the test clips' median
  length) scored by the project's evaluation code (``genflow.metrics.folders.evaluate_generation``, what
  ``recipes/tta/evaluate.py`` runs): Fréchet distance in ``--backend`` embeddings against the real test clips.
  ``mel-stats`` (the offline default) is weight-free and NOT comparable to published FAD; use ``clap``,
  ``vggish`` or ``panns`` for the paper's numbers.

Writes ``--out``/results.json, results.md (one row per codec: rate, latent size, bytes of latent per second,
the codec's own round trip, final loss and metric, training time) and figure3.png (loss and metric against
training step, one line per codec). An interrupted comparison resumes: finished runs are reused. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import genflow
from genflow.audio import audio_info, load_audio, save_audio
from genflow.codecs import Codec
from genflow.flow import flow_loss
from genflow.metrics.report import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "demo"


def slug(codec: str) -> str:
    """A folder name for a codec id or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", codec).strip("_.")[-60:] or "codec"


def read_rows(manifest: Path, limit: int) -> list[dict]:
    """Test rows ({"audio", "caption", "id"}) with absolute audio paths, the first ``limit`` (0 = all)."""
    from genflow.data import read_manifest

    rows = read_manifest(manifest, ("audio",))
    return rows[:limit] if limit else rows


def train_run(codec: str, run: Path, args: argparse.Namespace) -> float:
    """Train (or continue, or reuse) ``run`` on ``codec`` to ``--steps``; returns the training seconds."""
    if (run / "checkpoints" / f"checkpoint-{args.steps}" / "genflow_state.json").is_file() and \
            (run / "release" / "pipeline.json").is_file():
        print(f"[{codec}] reusing {run} (already trained to {args.steps} steps)", flush=True)
        return float(json.loads((run / "train_seconds.json").read_text())["seconds"]) \
            if (run / "train_seconds.json").is_file() else float("nan")
    keep = args.steps // args.eval_every + 2
    launcher = shlex.split(args.launcher) if args.launcher else [sys.executable]
    cmd = [*launcher, str(ROOT / "recipes" / args.recipe / "train.py"), "--preset", args.preset,
           "--codec", codec, "--data", str(args.data), "--out", str(run), "--max-steps", str(args.steps),
           "--train.save_every", str(args.eval_every), "--train.save_total_limit", str(keep),
           "--train.sample_every", "0", "--train.log_with", "none", "--resume", "latest", *args.train_args]
    print(f"[{codec}] training: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)  # this checkout's genflow, whatever is installed
    seconds = time.perf_counter() - start
    (run / "train_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, EMA weights file) of every finished checkpoint, in step order."""
    found = []
    for folder in (run / "checkpoints").glob("checkpoint-*"):
        if folder.name.split("-")[-1].isdigit() and (folder / "ema.safetensors").is_file():
            found.append((int(folder.name.split("-")[-1]), folder / "ema.safetensors"))
    return sorted(found)


def load_ema(model: torch.nn.Module, path: Path) -> None:
    """Copy a checkpoint's EMA shadow ("shadow.i", in ``model.parameters()`` order) into ``model``."""
    from safetensors.torch import load_file

    shadow = load_file(str(path))
    params = list(model.parameters())
    if len(shadow) != len(params):
        raise ValueError(f"{path} holds {len(shadow)} EMA tensors, the model has {len(params)} parameters; "
                         f"was the checkpoint written by another model config?")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(shadow[f"shadow.{i}"].to(p.device, p.dtype))


@torch.no_grad()
def test_batch(gen, rows: list[dict], max_seconds: float) -> dict:
    """The test clips' latents (B, T, C) + mask and text embeddings, ready for ``flow_loss``."""
    codec: Codec = gen.codec
    n_max = round(max_seconds * codec.sample_rate)
    waves = [load_audio(r["audio"], codec.sample_rate)[0][:n_max] for r in rows]
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(gen.device)
    x, mask = gen.conditioner.encode_audio(audio, [w.numel() for w in waves])
    text, text_mask = gen.conditioner.encode_text([r["caption"] for r in rows], gen.device)
    return {"x": x, "mask": mask, "text": text, "text_mask": text_mask}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batch: dict, repeats: int = 4, batch_size: int = 16) -> float:
    """Mean flow loss over ``repeats`` fixed draws of sigma and noise per clip (seeded: same draws every call)."""
    model.eval()
    gen = torch.Generator(device=batch["x"].device).manual_seed(1234)
    total, n = 0.0, 0
    for _ in range(repeats):
        for s in range(0, batch["x"].shape[0], batch_size):
            part = {k: v[s : s + batch_size] for k, v in batch.items()}
            total += float(flow_loss(model, **part, generator=gen)) * part["x"].shape[0]
            n += part["x"].shape[0]
    return total / n


def score(gen, rows: list[dict], folder: Path, args: argparse.Namespace) -> dict:
    """Generate one clip per test caption into ``folder`` and run the evaluation on it -> metrics dict."""
    from genflow.metrics.folders import evaluate_generation

    durations = sorted(audio_info(r["audio"]).duration for r in rows)
    clips = gen.generate([r["caption"] for r in rows], duration_s=durations[len(durations) // 2], seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for row, clip in zip(rows, clips):
        save_audio(folder / f"{row['id']}.wav", clip, gen.sample_rate)
    res = evaluate_generation(folder, args.reference_stats, backend=args.backend, batch_size=8,
                              device=args.device, progress=False)
    return res["metrics"]


def reference_stats(rows: list[dict], out: Path, args: argparse.Namespace) -> Path:
    """The real test clips' embedding statistics for ``--backend`` (computed once into ``out``)."""
    from genflow.metrics.folders import evaluate_generation

    path = out / f"reference-{slug(args.backend)}.npz"
    if not path.is_file():
        folder = out / "reference"
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            wav, sr = load_audio(row["audio"])
            save_audio(folder / f"{row['id']}.wav", wav, sr)
        evaluate_generation(folder, folder, backend=args.backend, save_reference_stats=path, device=args.device,
                            progress=False)
    return path


def codec_floor(codec: Codec, rows: list[dict], folder: Path, args: argparse.Namespace) -> dict:
    """The codec's own round trip of the test clips, scored like the generated clips (the floor of the metric)."""
    from genflow.codecs import decode_latent, encode_audio
    from genflow.metrics.folders import evaluate_generation

    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        wav = decode_latent(codec, encode_audio(codec, row["audio"]))
        save_audio(folder / f"{row['id']}.wav", wav.cpu(), codec.sample_rate)
    return evaluate_generation(folder, args.reference_stats, backend=args.backend, device=args.device,
                               progress=False)["metrics"]


def evaluate_run(codec_id: str, run: Path, rows: list[dict], out: Path, args: argparse.Namespace) -> dict:
    """Score every checkpoint of ``run`` -> {"curve": [{step, val_loss, metrics}], codec facts, round trip}."""
    gen = genflow.load(run / "release", device=args.device)
    codec = gen.codec
    batch = test_batch(gen, rows, args.max_seconds)
    curve = []
    for step, ema in checkpoints(run):
        load_ema(gen.model, ema)
        point = {"step": step, "val_loss": validation_loss(gen.model, batch)}
        point.update(score(gen, rows, out / "audio" / slug(codec_id) / f"step-{step}", args))
        curve.append(point)
        print(f"[{codec_id}] step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in point.items() if k != "step"),
              flush=True)
    frame_rate = codec.sample_rate / codec.hop_length
    return {"codec": codec_id, "class": type(codec).__name__, "sample_rate": codec.sample_rate,
            "hop": codec.hop_length, "frame_rate": frame_rate, "latent_dim": codec.latent_dim,
            "latent_bytes_per_s_fp16": frame_rate * codec.latent_dim * 2,
            "round_trip": codec_floor(codec, rows, out / "audio" / slug(codec_id) / "round-trip", args),
            "curve": curve}


def table(results: dict) -> dict[str, dict[str, float]]:
    """One row per codec for the markdown table."""
    rows = {}
    for name, r in results["codecs"].items():
        last = r["curve"][-1] if r["curve"] else {}
        rows[name] = {"rate kHz": r["sample_rate"] / 1000, "frames/s": r["frame_rate"], "latent C": r["latent_dim"],
                      "latent KB/s (fp16)": r["latent_bytes_per_s_fp16"] / 1000,
                      "round-trip FD": r["round_trip"].get("fd", float("nan")),
                      f"val loss @{last.get('step', 0)}": last.get("val_loss", float("nan")),
                      f"FD @{last.get('step', 0)}": last.get("fd", float("nan")),
                      "train s": r["train_s"]}
    return rows


def figure3(results: dict, path: Path) -> Path:
    """Validation loss and FD against training step, one line per codec (the paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, r in results["codecs"].items():
        steps = [p["step"] for p in r["curve"]]
        axes[0].plot(steps, [p["val_loss"] for p in r["curve"]], marker="o", label=name)
        line, = axes[1].plot(steps, [p.get("fd", float("nan")) for p in r["curve"]], marker="o", label=name)
        floor = r["round_trip"].get("fd")
        if floor is not None:  # the codec's own round trip: what a perfect generator on this codec would reach
            axes[1].axhline(floor, color=line.get_color(), linestyle="--", linewidth=1, label=f"{name} round trip")
    axes[0].set(xlabel="training step", ylabel="validation flow loss (own latent space)", title="validation loss")
    axes[1].set(xlabel="training step", ylabel=f"FD ({results['backend']})", title="Fréchet distance to test clips")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['recipe']} preset {results['preset']}, same DiT/data/budget per codec", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codecs", required=True, help="comma-separated codec ids/paths, as load_codec takes them")
    p.add_argument("--recipe", default="tta", choices=("tta", "ttm"), help="captioned recipe to train")
    p.add_argument("--preset", default="tiny", help="the recipe's preset: the same DiT config for every codec")
    p.add_argument("--steps", type=int, default=60, help="training steps per codec (the budget)")
    p.add_argument("--eval-every", type=int, default=20, help="score a checkpoint every this many steps")
    p.add_argument("--data", type=Path, default=None, help="train manifest (default: the bundled demo's)")
    p.add_argument("--test", type=Path, default=None, help="test manifest (default: the bundled demo's)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test rows (0 = all)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="test clip length for the validation loss")
    p.add_argument("--backend", default="mel-stats", help="embedding for FD: mel-stats|vggish|panns|clap[:path]")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--launcher", default="", help="command before train.py, e.g. 'accelerate launch --multi_gpu'")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the evaluation (1 on a shared CPU)")
    p.add_argument("--out", type=Path, default=Path("runs/codec-comparison"))
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="everything after this flag goes to every train.py (e.g. --train-args --train.lr 1e-3)")
    args = p.parse_args(argv)
    args.codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if not args.codecs or args.steps < 1 or not 1 <= args.eval_every <= args.steps:
        p.error(f"need codecs and 1 <= --eval-every <= --steps; got {args.codecs}, {args.eval_every}, {args.steps}")
    args.data = (args.data or DATA / args.recipe / "train.jsonl").resolve()
    args.test = (args.test or DATA / args.recipe / "test.jsonl").resolve()
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train every codec's run, score its checkpoints, write results.json/results.md/figure3.png."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(args.test, args.limit)
    args.reference_stats = reference_stats(rows, out, args)
    results = {"recipe": args.recipe, "preset": args.preset, "steps": args.steps, "backend": args.backend,
               "data": str(args.data), "test": str(args.test), "n_test": len(rows), "codecs": {}}
    for codec in args.codecs:
        run = out / "runs" / slug(codec)
        train_s = train_run(codec, run, args)
        start = time.perf_counter()
        res = evaluate_run(codec, run, rows, out, args)
        res.update(train_s=train_s, eval_s=time.perf_counter() - start, run=str(run))
        results["codecs"][codec] = res
        write_json(out / "results.json", results)  # after every codec: a long comparison leaves partial results
    report = markdown_table(table(results), digits=4)
    (out / "results.md").write_text(f"{args.recipe}, preset {args.preset}, {args.steps} steps per codec, "
                                    f"{len(rows)} test clips, FD backend {args.backend}\n\n{report}\n")
    figure3(results, out / "figure3.png")
    print(f"\n{report}\n\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'figure3.png'}")
    return results


if __name__ == "__main__":
    main()
