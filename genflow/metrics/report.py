"""Evaluation reports: JSON on disk, a markdown table for the terminal, and PNG plots."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genflow import hub


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tensors/numpy scalars -> floats, paths -> str."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | os.PathLike, result: Mapping[str, Any]) -> Path:
    """Write ``result`` as indented JSON (NaN written as null), atomically."""
    return hub.write_json(path, _clean(result))


def markdown_table(rows: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """``{row name: {metric: value}}`` -> a markdown table with one column per metric."""
    cols = list(dict.fromkeys(k for r in rows.values() for k in r))
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}g}"  # noqa: E731
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def plot_metric_bars(rows: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> Path:
    """One bar chart per metric (bars = rows, e.g. enhanced vs noisy), saved as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: the user's backend is untouched
    from matplotlib.figure import Figure

    cols = [c for c in dict.fromkeys(k for r in rows.values() for k in r)
            if any(isinstance(r.get(c), int | float) and math.isfinite(r.get(c)) for r in rows.values())]
    if not cols:
        raise ValueError("no finite metric to plot")
    fig = Figure(figsize=(2.4 * len(cols) + 0.5, 3.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cols), squeeze=False)
    for ax, c in zip(axes[0], cols):
        names = list(rows)
        vals = [rows[n].get(c, math.nan) for n in names]
        ax.bar(range(len(names)), [v if v is not None else math.nan for v in vals], color="C0")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(c, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def best_and_worst(per_clip: Mapping[str, Mapping[str, float]], key: str, higher_is_better: bool) -> tuple[str, str]:
    """Ids of the best and the worst clip by ``per_clip[id][key]`` (NaN ignored)."""
    vals = {i: r[key] for i, r in per_clip.items() if key in r and r[key] is not None and math.isfinite(r[key])}
    if not vals:
        raise ValueError(f"no clip has a finite {key!r}")
    ranked = sorted(vals, key=vals.get, reverse=higher_is_better)
    return ranked[0], ranked[-1]


def plot_spectrogram_pairs(
    rows: Sequence[tuple[str, Sequence[tuple[str, str | os.PathLike | None]]]], path: str | os.PathLike,
    sample_rate: int = 16000,
) -> Path:
    """Spectrograms side by side: each row is (label, [(title, audio path or None), ...])."""
    from genflow.audio import load_audio
    from genflow.plots import save_spectrogram_grid

    cols = max(len(items) for _, items in rows)
    wavs, titles = [], []
    for label, items in rows:
        for title, p in list(items) + [("", None)] * (cols - len(items)):
            wav = load_audio(p, sample_rate)[0] if p is not None else torch.zeros(sample_rate // 10)
            wavs.append(wav)
            titles.append(f"{label}: {title}" if title else "")
    return save_spectrogram_grid(wavs, titles, sample_rate, path, cols=cols)


def _figure_paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return stem.with_name(stem.name + "_metrics.png"), stem.with_name(stem.name + "_best_worst.png")


def _summary(result: Mapping[str, Any]) -> str:
    fails = result.get("failures", {})
    counts = {k: len(v) for k, v in fails.items() if isinstance(v, Mapping)} or len(fails)
    return f"unreadable files: {counts}; reference clips with no counterpart: {len(result.get('missing', []))}"


def report_generation(result: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write the JSON, print the markdown table, and plot bars + best/worst spectrograms of a generation run."""
    from genflow.metrics.folders import list_audio

    out = Path(out)
    bars, pairs = _figure_paths(out)
    print(markdown_table({f"{Path(result['generated']).name} ({result['backend']})": result["metrics"]}))
    print(_summary(result))
    proto = result.get("protocol", {})
    print(f"protocol: {proto.get('name', 'genflow')} (follows {proto.get('follows', 'genflow')}); "
          f"{result.get('n_generated')} generated vs {result.get('n_reference')} reference clips"
          + ("; SMALL SAMPLE: FD/KAD unstable" if result.get("small_sample") else ""))
    paths = {"json": out}
    if any(isinstance(v, float) and math.isfinite(v) for v in result["metrics"].values()):
        paths["metrics_png"] = plot_metric_bars({"generated": result["metrics"]}, bars)
    key, higher = next(((k, h) for k, h in (("clap_score", True), ("kl_softmax", False), ("dist_to_ref_mean", False))
                        if any(k in r for r in result["per_clip"].values())), (None, False))
    if key is not None:
        best, worst = best_and_worst(result["per_clip"], key, higher)
        gen = list_audio(result["generated"])
        ref = list_audio(result["reference"]) if Path(result["reference"]).is_dir() else {}
        rows = []
        for tag, i in (("best", best), ("worst", worst)):
            items = [(i, gen[i])] + ([("reference", ref[i])] if i in ref else [])
            rows.append((f"{tag} {key}={result['per_clip'][i][key]:.3g}", items))
        paths["best_worst_png"] = plot_spectrogram_pairs(rows, pairs)
        result["best_worst"] = {"key": key, "best": best, "worst": worst}
    write_json(out, result)
    return paths


def report_enhancement(result: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write the JSON, print the markdown table, and plot bars + best/worst spectrograms of an SE run."""
    from genflow.metrics.folders import list_audio

    out = Path(out)
    bars, pairs = _figure_paths(out)
    print(markdown_table(result["metrics"]))
    print(_summary(result))
    paths = {"json": out, "metrics_png": plot_metric_bars(result["metrics"], bars)}
    key = "pesq_wb" if any(math.isfinite(r.get("pesq_wb", math.nan)) for r in result["per_clip"].values()) else "si_sdr"
    best, worst = best_and_worst(result["per_clip"], key, higher_is_better=True)
    files = {k: list_audio(result[k]) for k in ("enhanced", "clean", "noisy") if result.get(k)}
    rows = [(f"{tag} {key}={result['per_clip'][i][key]:.3g}", [(k, f[i]) for k, f in files.items() if i in f])
            for tag, i in (("best", best), ("worst", worst))]
    paths["best_worst_png"] = plot_spectrogram_pairs(rows, pairs, sample_rate=result["sample_rate"])
    result["best_worst"] = {"key": key, "best": best, "worst": worst}
    write_json(out, result)
    return paths
