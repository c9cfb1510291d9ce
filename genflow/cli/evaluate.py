"""The evaluation command lines: generated audio (``recipes/tta|ttm/evaluate.py``) and enhanced speech
(``recipes/se/evaluate.py``). Both write the JSON report, print a markdown table and save PNGs beside it."""

from __future__ import annotations

import argparse

from genflow.metrics.folders import MIN_FD_CLIPS, evaluate_enhancement, evaluate_generation
from genflow.metrics.protocols import PROTOCOLS
from genflow.metrics.report import report_enhancement, report_generation


def generation(argv: list[str] | None, *, description: str, default_clap: str, default_out: str):
    """Parse ``--generated/--reference/...``, evaluate, write JSON + PNGs, print the table; returns the result."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, help="folder of generated clips, named by clip id")
    p.add_argument("--reference", required=True, help="folder of reference clips, or a stats .npz")
    p.add_argument("--captions", default=None, help="JSONL manifest with captions: adds the CLAP score")
    p.add_argument("--backend", default="mel-stats", help="embedding for FD: mel-stats|vggish|panns|clap[:path]")
    p.add_argument("--clap", default=None, help=f"CLAP id/folder for the score (default {default_clap})")
    p.add_argument("--save-reference-stats", default=None, help="write the reference statistics to this .npz")
    p.add_argument("--protocol", default="genflow", choices=sorted(PROTOCOLS),
                   help="how files are loaded: genflow (default), audioldm_eval (first channel, DC removed, "
                   "torchaudio sinc resampling, 2 s padding for every network) or fadtk (channel mean, Kaiser "
                   "resampling, 16-bit round trip, 1 s padding, float16 embeddings); see docs/evaluation.md")
    p.add_argument("--allow-small-fd", action="store_true",
                   help=f"compute FD/KAD with fewer than {MIN_FD_CLIPS} clips per side (marked small_sample)")
    p.add_argument("--out", default=default_out, help="JSON report path (PNGs are written beside it)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    result = evaluate_generation(
        args.generated, args.reference, backend=args.backend, captions=args.captions,
        clap=args.clap or (default_clap if args.captions else None), save_reference_stats=args.save_reference_stats,
        batch_size=args.batch_size, device=args.device,
        protocol=args.protocol, allow_small_fd=args.allow_small_fd,
    )
    report_generation(result, args.out)
    return result


def enhancement(argv: list[str] | None, *, description: str, default_out: str = "eval_se.json"):
    """Parse ``--enhanced/--clean/--noisy``, score SI-SDR/PESQ/STOI/ESTOI/DNSMOS, write the report; returns it."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--enhanced", required=True, help="folder of enhanced files")
    p.add_argument("--clean", required=True, help="folder of clean references")
    p.add_argument("--noisy", default=None, help="folder of noisy inputs (scored as a baseline)")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (the slowest metric)")
    p.add_argument("--out", default=default_out, help="JSON report path (PNGs are written beside it)")
    args = p.parse_args(argv)
    result = evaluate_enhancement(args.enhanced, args.clean, args.noisy, with_dnsmos=not args.no_dnsmos)
    report_enhancement(result, args.out)
    return result
