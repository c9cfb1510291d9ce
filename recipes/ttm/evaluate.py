"""Evaluate a folder of generated text-to-music clips against reference audio (or cached reference statistics).

    python recipes/ttm/evaluate.py --generated out/samples --reference data/eval/audio --out eval.json \
        --backend vggish:ckpt/vggish-10086976.pth --captions data/eval/manifest.jsonl --clap ./clap
    python recipes/ttm/evaluate.py --generated out/samples --reference data/demo/ttm --backend mel-stats

Writes the JSON (--out), prints a markdown table, and saves <out>_metrics.png and <out>_best_worst.png.
Backends: mel-stats (offline, weight-free, NOT comparable to published FAD), vggish[:weights],
panns[:weights] (adds KL + IS), clap[:id-or-folder], or a local CLAP folder. See docs/evaluation.md.
"""

import sys

from genflow.cli.common import run_main
from genflow.cli.evaluate import generation
from genflow.metrics.clap import CLAP_MUSIC


def main(argv=None):
    """Evaluate, write the JSON and PNGs, print the markdown table; returns the result dict."""
    return generation(argv, description=__doc__, default_clap=CLAP_MUSIC, default_out="eval_ttm.json")


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
