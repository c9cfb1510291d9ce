"""Evaluate a folder of generated text-to-music clips against reference audio (or cached reference statistics).

    python recipes/ttm/evaluate.py --generated out/samples --reference data/eval/audio --out eval.json \
        --backend vggish:ckpt/vggish-10086976.pth --captions data/eval/manifest.jsonl --clap ./clap
    python recipes/ttm/evaluate.py --generated out/samples --reference data/demo/ttm --backend mel-stats

Writes the JSON (--out), prints a markdown table, and saves <out>_metrics.png and <out>_best_worst.png.
Backends: mel-stats (offline, weight-free, NOT comparable to published FAD), vggish[:weights],
panns[:weights] (adds KL + IS), clap[:id-or-folder], or a local CLAP folder. See docs/evaluation.md.
"""

import argparse

from genflow.metrics.clap import CLAP_MUSIC
from genflow.metrics.folders import evaluate_generation
from genflow.metrics.report import report_generation


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generated", required=True, help="folder of generated clips, named by clip id")
    p.add_argument("--reference", required=True, help="folder of reference clips, or a stats .npz")
    p.add_argument("--captions", default=None, help="JSONL manifest with captions: adds the CLAP score")
    p.add_argument("--backend", default="mel-stats", help="embedding for FD: mel-stats|vggish|panns|clap[:path]")
    p.add_argument("--clap", default=None, help=f"CLAP id/folder for the score (default {CLAP_MUSIC})")
    p.add_argument("--save-reference-stats", default=None, help="write the reference statistics to this .npz")
    p.add_argument("--out", default="eval_ttm.json", help="JSON report path (PNGs are written beside it)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    result = evaluate_generation(
        args.generated, args.reference, backend=args.backend, captions=args.captions,
        clap=args.clap or (CLAP_MUSIC if args.captions else None), save_reference_stats=args.save_reference_stats,
        batch_size=args.batch_size, device=args.device,
    )
    report_generation(result, args.out)
    return result


if __name__ == "__main__":
    main()
