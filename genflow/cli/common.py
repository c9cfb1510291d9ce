"""What the sampling and enhancement command lines share: the release, the device, the precision, the settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

from genflow.sampling import add_setting_flags


def device_arg(text: str) -> str:
    """An argparse type: a torch device this machine has (cpu, cuda, cuda:N, mps)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device; use cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to "
                                             f"cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda, cuda:N or mps")
    return text


def int_arg(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value}: expected an integer >= {lo}"
                                             + (f" and <= {hi}" if hi is not None else ""))
        return value

    parse.__name__ = "int"
    return parse


def add_release_flags(p: argparse.ArgumentParser, *, batch_size: int, exclude: tuple[str, ...]) -> None:
    """--checkpoint, --device, --bf16, --batch-size and one flag per sampling setting (minus ``exclude``).

    Every flag is checked while parsing, so a bad value ends the program before any model loads.
    """
    p.add_argument("--checkpoint", required=True, help="release folder (RUN/release) or hub id owner/name")
    p.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    p.add_argument("--batch-size", type=int_arg(1), default=batch_size, help="clips (or windows) per forward pass")
    add_setting_flags(p, exclude=exclude)


def check_out_folder(p: argparse.ArgumentParser, out: str) -> None:
    """``--out`` must be a folder or not exist yet (it is created when the first file is written)."""
    if os.path.exists(out) and not os.path.isdir(out):
        p.error(f"--out {out} is an existing file; expected a folder (existing or to be created)")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        p.error(f"--out {out} cannot be created: {parent} is a file; choose a folder elsewhere")


def load_release(args: argparse.Namespace):
    """The ``Generator`` of ``--checkpoint``; a bad reference ends the program with one line."""
    import genflow

    try:
        return genflow.load(args.checkpoint, device=args.device, dtype=torch.bfloat16 if args.bf16 else None)
    except (OSError, ValueError) as e:  # missing, damaged or unknown release: one line, no traceback
        raise SystemExit(f"error: --checkpoint {args.checkpoint}: {e}") from None


def run_main(main: Callable, argv: list[str]) -> int:
    """Run a command line's ``main``: errors the user can fix end in one ``error:`` line and exit status 1.

    ``ValueError``/``OSError`` (bad files, folders, configs, checkpoints) carry messages written for the user,
    so their tracebacks are noise; ``GENFLOW_TRACEBACK=1`` shows them anyway. ``main`` returning an int
    is its exit status; anything else means success.
    """
    try:
        result = main(argv)
    except KeyboardInterrupt:  # outputs are written atomically: nothing half-written is left behind
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, torch.OutOfMemoryError) as e:
        if os.environ.get("GENFLOW_TRACEBACK"):
            raise
        hint = "; lower --batch-size (or --chunk-s)" if isinstance(e, torch.OutOfMemoryError) else ""
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}{hint}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
