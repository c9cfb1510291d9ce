"""Convert the official Dasheng-AudioGen folder into a genflow folder that loads with no official files.

    python -m genflow.audiogen convert OFFICIAL_FOLDER OUT [--dtype fp32|bf16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genflow.audiogen.convert import load_official
from genflow.audiogen.sampling import official_pipeline
from genflow.release import save_release

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def convert(official: str, out: str, dtype: str = "fp32") -> Path:
    """Official folder -> ``OUT/{config.json, model.safetensors, pipeline.json}`` (weights in ``dtype``)."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    model = load_official(official, dtype=DTYPES[dtype])
    # a release like any other: the codec and text encoder the official code fetches, its sampling settings
    return save_release(out, model, model.state_dict(), official_pipeline(model.config))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genflow.audiogen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="official folder -> genflow folder (config.json + model.safetensors)")
    c.add_argument("official", help="folder with the official config.json + model.safetensors")
    c.add_argument("out", help="output folder")
    c.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="weights dtype (default fp32)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    folder = convert(args.official, args.out, args.dtype)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(f"wrote {folder} ({size:.1f} MiB, {args.dtype}) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
