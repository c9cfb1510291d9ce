"""Evaluate enhanced speech against clean references (and the noisy inputs as a baseline).

    python recipes/se/evaluate.py --enhanced out/enhanced --clean data/eval/clean --noisy data/eval/noisy \
        --out eval_se.json

Files are matched by relative path without extension. All metrics at 16 kHz: SI-SDR, wide-band PESQ,
STOI, ESTOI and DNSMOS (SIG/BAK/OVRL, offline ONNX models of `speechmos`). Writes the JSON (--out),
prints a markdown table, and saves <out>_metrics.png and <out>_best_worst.png.
"""

import sys

from genflow.cli.common import run_main
from genflow.cli.evaluate import enhancement


def main(argv=None):
    """Score, write the JSON and PNGs, print the markdown table; returns the result dict."""
    return enhancement(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
