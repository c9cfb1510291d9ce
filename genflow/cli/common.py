"""What the sampling and enhancement command lines share: the release, the device, the precision, the settings."""

from __future__ import annotations

import argparse

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

