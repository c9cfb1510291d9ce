"""Which schedule a few-step release should sample on: its scores at each (shift, steps) of the "shifted" schedule.

    python bench/fewstep_schedule.py --recipe tta --release RUNS/tta-ctm/release --split train \
        --shifts 1,0.5,0.4,0.33,0.25,0.15 --steps 2,4 --seeds 0,1,2 --probe RUNS/final-tta/probe-tta

A few-step student jumps between the levels of its schedule (``sigma_schedule(steps, "shifted", shift)``;
shift 1 is linear, shift < 1 puts the intermediate levels nearer the data). Every (shift, steps) pair is scored
with ``bench/fewstep.py``'s metrics on ``data/demo/RECIPE/SPLIT.jsonl`` at each seed (mean and standard
deviation). Choose the shift on the train split, then report the test split: choosing on the test clips would
flatter the choice. ``--probe`` reuses a probe folder (TTA/TTM), so FDs compare with another report's; the SE
train split has no fixed noisy inputs, so SE runs on its test split only. Asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_quality as dq  # noqa: E402  (bench/ is a folder of scripts, not a package)
from fewstep import over_seeds, references, score  # noqa: E402

import genflow  # noqa: E402
from genflow.metrics.report import markdown_table, write_json  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=("tta", "ttm", "se"), required=True)
    p.add_argument("--release", required=True, help="a few-step (average-velocity) release, or any release")
    p.add_argument("--split", default="train", help="data/demo/RECIPE/SPLIT.jsonl to score on")
    p.add_argument("--shifts", type=floats, default=[1.0, 0.5, 0.4, 0.33, 0.25])
    p.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[2, 4])
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2])
    p.add_argument("--probe", default="", help="an existing probe-RECIPE folder to score with (TTA/TTM)")
    p.add_argument("--out", default="runs/fewstep/schedule")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dnsmos", action="store_true", help="SE: DNSMOS OVRL too (slower)")
    args = p.parse_args(argv)
    args.no_dnsmos = not args.dnsmos
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.probe and not (out / f"probe-{args.recipe}").exists():
        shutil.copytree(args.probe, out / f"probe-{args.recipe}")
    rows = dq.read_rows(dq.DATA / args.recipe / f"{args.split}.jsonl")
    if args.recipe == "se" and "noisy" not in rows[0]:
        raise SystemExit(f"{args.split}.jsonl of se has no fixed noisy inputs; use --split test")
    ref = references(args.recipe, rows, out)
    gen = genflow.load(args.release, device="cpu")
    table = {}
    for steps in args.steps:
        for shift in args.shifts:
            gen.settings = gen.settings.replace(schedule="shifted", shift=shift, steps=steps)
            start = time.perf_counter()
            folder = out / "audio" / f"shift{shift}-{steps}"
            row = over_seeds([score(args.recipe, gen, rows, ref, args, folder / f"seed-{s}", s) for s in args.seeds])
            levels = ", ".join(f"{v:.3f}" for v in gen.settings.sigmas().tolist())
            table[f"shift {shift} @ {steps} ({levels})"] = row
            print(f"shift {shift} @ {steps} steps [{levels}]: {row} ({time.perf_counter() - start:.0f} s)", flush=True)
    write_json(out / "results.json", {"args": vars(args), "table": table})
    text = (f"Schedule sweep: {args.release}, {args.recipe} {args.split} split ({len(rows)} rows), "
            f"seeds {args.seeds}\n\n{markdown_table(table, digits=3)}\n")
    (out / "results.md").write_text(text)
    print(text)
    return table


if __name__ == "__main__":
    main()
