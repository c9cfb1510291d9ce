"""What few steps cost: a flow teacher at 25..1 Euler steps vs its MeanFlow / CTM students at 1, 2, 4 steps.

    python bench/fewstep.py --recipes se --teacher-steps 1000 --student-steps 300 --runs-dir runs/fewstep \
        --out runs/fewstep/report                                          # what docs/fewstep.md ran
    python bench/fewstep.py --recipes tta,se --preset tiny --teacher-steps 2 --student-steps 2 --limit 2 \
        --no-dnsmos --runs-dir /tmp/fs/runs --out /tmp/fs/report           # smoke run, a few minutes

For each recipe: the teacher is ``recipes/X/train.py`` (the flow objective) trained into RUNS_DIR/X-teacher;
each student is the same script with ``--init`` the teacher's release and ``--objective meanflow|ctm``,
trained into RUNS_DIR/X-OBJECTIVE. Runs go through ``--resume latest``, so an interrupted benchmark
continues and a finished run is reused; each run's wall time is kept in RUN/bench_budget.json the first
time the benchmark trains it. Then every (model, steps) pair is scored on ``data/demo/X/test.jsonl`` with
the metrics of ``bench/demo_quality.py`` (TTA: probe accuracy and probe FD; TTM: instrument, key,
tempo; SE: PESQ-wb, ESTOI, DNSMOS) at each of ``--seeds`` (the mean, and with several seeds the
standard deviation: a probe FD on a few dozen clips moves by a fifth from one sampling seed to the next),
and timed on one 10 s clip (the minimum of ``--repeats`` runs after a warm-up, on ``--threads`` threads;
``--time-only`` times every configuration back to back and scores nothing, for figures that share one
moment of a busy machine). Writes OUT/results.json and
OUT/results.md; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_quality as dq  # noqa: E402  (bench/ is a folder of scripts, not a package)

import genflow  # noqa: E402
from genflow.metrics.music import music_scores  # noqa: E402
from genflow.metrics.report import markdown_table, write_json  # noqa: E402

ROOT = dq.ROOT
STUDENT_STEPS = (1, 2, 4)


def train_run(recipe: str, name: str, steps: int, extra: list[str], args: argparse.Namespace) -> Path:
    """Train (or continue, or reuse) RUNS_DIR/RECIPE-NAME to ``steps``; its wall time goes to bench_budget.json."""
    run = Path(args.runs_dir) / f"{recipe}-{name}"
    budget = run / "bench_budget.json"
    if (run / "release" / "pipeline.json").is_file() and (run / "checkpoints" / f"checkpoint-{steps}").is_dir():
        print(f"[{recipe}/{name}] reusing {run / 'release'}", flush=True)
        return run / "release"
    cmd = [sys.executable, str(ROOT / "recipes" / recipe / "train.py"), "--preset", args.preset, "--out", str(run),
           "--max-steps", str(steps), "--train.log_with", "none", "--train.sample_every", "0", "--resume", "latest",
           *extra]
    print(f"[{recipe}/{name}] training: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if not budget.is_file():  # the first, uninterrupted measurement is the one kept
        budget.write_text(json.dumps({"steps": steps, "seconds": round(seconds, 1), "command": cmd}, indent=1))
    return run / "release"


def budget_of(release: Path) -> dict:
    """{"steps", "seconds"} of the run that made ``release`` (from bench_budget.json), or {} when unknown."""
    path = release.parent / "bench_budget.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def seconds_per_10s(gen, recipe: str, steps: int, noisy: torch.Tensor | None, repeats: int) -> float:
    """Wall seconds for one 10 s clip (generated, or enhanced from ``noisy``): min over ``repeats`` after a warm-up."""
    def once() -> float:
        start = time.perf_counter()
        if recipe == "se":
            gen.enhance(noisy, dq.SR, steps=steps, seed=0)
        else:
            gen.generate(["a test prompt"], duration_s=10.0, steps=steps, seed=0)
        return time.perf_counter() - start

    once()
    return min(once() for _ in range(repeats))


def score(recipe: str, gen, rows: list[dict], ref: dict, args: argparse.Namespace, folder: Path, seed: int) -> dict:
    """The recipe's metrics of one (model, steps, seed) configuration; ``ref`` holds what every one shares."""
    if recipe == "se":
        from genflow.metrics.speech import speech_metrics

        enhanced = [gen.enhance(x, dq.SR, seed=seed) for x in ref["noisy"]]
        for row, wav in zip(rows, enhanced):
            dq.save_audio(folder / f"{row['id']}.wav", wav, dq.SR)
        per_clip = [speech_metrics(w, c, dq.SR, with_dnsmos=not args.no_dnsmos, name=r["id"])
                    for w, c, r in zip(enhanced, ref["clean"], rows)]
        means = dq.nanmean(per_clip)
        keys = ("pesq_wb", "estoi", "stoi", "dnsmos_ovrl")
        return {k: means[k] for k in keys if k in means}
    generated, _ = dq.generate(gen, rows, folder, seed)
    key = dq.LABEL_KEY[recipe]
    table = dq.probe_rows(ref["probe"], {"real": ref["real"], "gen": generated}, [r[key] for r in rows], "real")
    out = {"probe_acc" if recipe == "tta" else "instrument_acc": table["gen"]["probe_acc"],
           "fd_probe": table["gen"]["fd_probe"]}
    if recipe == "ttm":
        music = music_scores(generated, dq.SR, [r["tempo"] for r in rows], [r["key"] for r in rows])
        out.update({k: music[k] for k in ("key_exact", "key_weighted", "tempo_acc1", "tempo_acc2")})
    return out


def references(recipe: str, rows: list[dict], out: Path) -> dict:
    """What every configuration of ``recipe`` is scored against (real clips, the probe; clean/noisy pairs)."""
    if recipe == "se":
        return {"clean": dq.load_clips([r["clean"] for r in rows]), "noisy": dq.load_clips([r["noisy"] for r in rows])}
    return {"real": dq.load_clips([r["audio"] for r in rows]), "probe": dq.get_probe(recipe, out)}


def ten_second_input(rows: list[dict]) -> torch.Tensor:
    """10 s of noisy test speech (test clips end to end), for the enhancement timing."""
    wav = torch.cat(dq.load_clips([r["noisy"] for r in rows[:8]]))
    return torch.nn.functional.pad(wav, (0, max(0, 10 * dq.SR - wav.numel())))[: 10 * dq.SR]


def over_seeds(scores: list[dict]) -> dict:
    """The mean of each metric over the seeds' scores; with several seeds, also its standard deviation (KEY_sd)."""
    row = {}
    for key in scores[0]:
        values = torch.tensor([s[key] for s in scores], dtype=torch.float64)
        row[key] = values.mean().item()
        if len(scores) > 1:
            row[f"{key}_sd"] = values.std().item()
    return row


def evaluate(recipe: str, models: dict[str, tuple[Path, tuple[int, ...]]], args: argparse.Namespace,
             out: Path) -> dict:
    """Score and time every (model, steps) pair of ``recipe``; rows keyed "model @ N steps"."""
    rows = dq.read_rows(dq.DATA / recipe / "test.jsonl")
    rows = rows[: args.limit] if args.limit else rows
    ref = None if args.time_only else references(recipe, rows, out)
    noisy10 = ten_second_input(rows) if recipe == "se" else None
    table = {}
    for name, (release, step_list) in models.items():
        gen = genflow.load(release, device="cpu")
        budget = budget_of(release)
        for steps in step_list:
            gen.settings = gen.settings.replace(steps=steps)
            start = time.perf_counter()
            folder = out / "audio" / recipe / f"{name}-{steps}"
            row = {} if args.time_only else over_seeds(
                [score(recipe, gen, rows, ref, args, folder / f"seed-{seed}", seed) for seed in args.seeds])
            row["s_per_10s_clip"] = seconds_per_10s(gen, recipe, steps, noisy10, args.repeats)
            row["train_steps"], row["train_min"] = budget.get("steps", float("nan")), budget.get("seconds", 0) / 60
            table[f"{name} ({gen.prediction}) @ {steps}"] = row
            print(f"[{recipe}] {name} @ {steps} steps: {row} ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"table": table, "n_test": len(rows)}


def main(argv: list[str] | None = None) -> dict:
    """Train/reuse the teacher and its students per recipe, score every configuration, write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="se", help="comma-separated subset of tta,ttm,se")
    p.add_argument("--objectives", default="meanflow,ctm", help="few-step objectives to fine-tune")
    p.add_argument("--preset", default="demo")
    p.add_argument("--teacher-steps", type=int, default=1000, help="flow-matching steps of the teacher")
    p.add_argument("--student-steps", type=int, default=300, help="fine-tuning steps of each student")
    p.add_argument("--teacher-eval", default="25,8,4,2,1", help="teacher step counts to score ('' = none)")
    p.add_argument("--student-args", default="--train.lr 2e-4 --train.warmup_steps 20",
                   help="extra train.py flags of every student run (one string)")
    p.add_argument("--runs-dir", default="runs/fewstep")
    p.add_argument("--out", default="runs/fewstep/report")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test rows (0 = all)")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                   help="comma-separated sampling seeds; figures are their mean (and standard deviation)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (after a warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-dnsmos", action="store_true")
    p.add_argument("--time-only", action="store_true",
                   help="only the seconds per 10 s clip, every configuration in one process, back to back")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "recipes": {}}
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        teacher = train_run(recipe, "teacher", args.teacher_steps, [], args)
        teacher_eval = tuple(int(n) for n in args.teacher_eval.split(",") if n.strip())
        models = {"teacher": (teacher, teacher_eval)} if teacher_eval else {}
        for obj in [o.strip() for o in args.objectives.split(",") if o.strip()]:
            extra = ["--init", str(teacher), "--objective", obj, *args.student_args.split()]
            models[obj] = (train_run(recipe, obj, args.student_steps, extra, args), STUDENT_STEPS)
        results["recipes"][recipe] = evaluate(recipe, models, args, out)
        write_json(out / "results.json", results)  # after every recipe: a long run leaves partial results
    lines = [f"Few-step benchmark: preset `{args.preset}`, teacher {args.teacher_steps} steps, students "
             f"{args.student_steps} steps, seeds {args.seeds}, {args.threads} thread(s).", ""]
    for recipe, res in results["recipes"].items():
        lines += [f"### {recipe} ({res['n_test']} test clips)", "", markdown_table(res["table"], digits=3), ""]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
