"""Evaluate enhanced speech against clean references (and the noisy inputs as a baseline).

    python recipes/se/evaluate.py --enhanced out/enhanced --clean data/eval/clean --noisy data/eval/noisy \
        --out eval_se.json

Files are matched by relative path without extension. All metrics at 16 kHz: SI-SDR, wide-band PESQ,
STOI, ESTOI and DNSMOS (SIG/BAK/OVRL, offline ONNX models of `speechmos`). Writes the JSON (--out),
prints a markdown table, and saves <out>_metrics.png and <out>_best_worst.png.
"""

import argparse

from genflow.metrics.folders import evaluate_enhancement
from genflow.metrics.report import report_enhancement


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--enhanced", required=True, help="folder of enhanced files")
    p.add_argument("--clean", required=True, help="folder of clean references")
    p.add_argument("--noisy", default=None, help="folder of noisy inputs (scored as a baseline)")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (the slowest metric)")
    p.add_argument("--out", default="eval_se.json", help="JSON report path (PNGs are written beside it)")
    args = p.parse_args(argv)
    result = evaluate_enhancement(args.enhanced, args.clean, args.noisy, with_dnsmos=not args.no_dnsmos)
    report_enhancement(result, args.out)
    return result


if __name__ == "__main__":
    main()
