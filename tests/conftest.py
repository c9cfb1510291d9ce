"""Fixtures shared by the inference and fault tests: tiny releases trained once per session."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--preset", "tiny", "--max-steps", "1", "--train.log_with", "none", "--train.sample_every", "0"]


def script(path: str):
    """Import a recipe script as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_" + Path(path).parent.name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def releases(tmp_path_factory) -> dict[str, Path]:
    """Tiny text-to-audio and enhancement releases, trained for one step (a few seconds each)."""
    root = tmp_path_factory.mktemp("releases")
    out = {}
    for name in ("tta", "se"):
        script(f"recipes/{name}/train.py").main(QUIET + ["--out", str(root / name)])
        out[name] = root / name / "release"
        # Same latents, faster decoder: 32 Griffin-Lim iterations take ~2.5 s per second of audio on CPU.
        meta_path = out[name] / "pipeline.json"
        meta = json.loads(meta_path.read_text())
        assert meta["codec"] == "mel"
        meta_path.write_text(json.dumps({**meta, "codec": "mel:griffin_lim_iters=4"}))
    return out
