"""What the sampling and enhancement command lines share: the release, the device, the precision, the settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

from genflow.sampling import add_setting_flags


def add_release_flags(p: argparse.ArgumentParser, *, batch_size: int, exclude: tuple[str, ...]) -> None:
    """--checkpoint, --device, --bf16, --batch-size and one flag per sampling setting (minus ``exclude``)."""
    p.add_argument("--checkpoint", required=True, help="release folder (RUN/release) or hub id owner/name")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="clips (or windows) per forward pass")
    add_setting_flags(p, exclude=exclude)


def load_release(args: argparse.Namespace):
    """The ``Generator`` of ``--checkpoint``; a bad reference ends the program with one line."""
    import genflow

    try:
        return genflow.load(args.checkpoint, device=args.device, dtype=torch.bfloat16 if args.bf16 else None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: --checkpoint: {e}") from e



def run_main(main: Callable, argv: list[str]) -> int:
    """Run a command line's ``main``: errors the user can fix end in one ``error:`` line and exit status 1.

    ``ValueError``/``OSError`` (bad files, folders, configs, checkpoints) carry messages written for the user,
    so their tracebacks are noise; ``GENFLOW_TRACEBACK=1`` shows them anyway. ``main`` returning an int
    is its exit status; anything else means success.
    """
    try:
        result = main(argv)
    except (ValueError, OSError) as e:
        if os.environ.get("GENFLOW_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
