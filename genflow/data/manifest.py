"""JSONL manifests and the validation pass that keeps bad audio out of training.

One JSON object per line; audio paths are relative to the manifest file:

    {"audio": "clips/abc.wav", "caption": "a dog barks", "duration": 10.0}   # text-to-audio / music
    {"clean": "clean/p226_001.wav", "noisy": "noisy/p226_001.wav"}           # speech enhancement pairs
    {"clean": "clean/p226_001.wav"}  + a noise manifest of {"audio": ...}      # mixed on the fly

``read_manifest`` makes the paths absolute and gives every row an ``"id"`` (its own, or the first
audio path as written), extra keys are kept. ``validate_manifest`` decodes every file once and
drops rows that are missing, corrupt, non-finite, silent, too short or too long, with a report.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from genflow.hub import write_text

log = logging.getLogger(__name__)

AUDIO_KEYS = ("audio", "clean", "noisy")


def read_manifest(
    path: str | os.PathLike, audio_keys: tuple[str, ...] | None = None, *, bad: list[dict] | None = None
) -> list[dict]:
    """Rows of a JSONL manifest with audio paths made absolute and an ``"id"`` on every row.

    A line that is not a JSON object with the audio key(s) raises a ``ValueError`` naming it, or, when a
    ``bad`` list is given, is appended to it (reason ``not_json`` or ``no_audio_key``) and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest {str(path)!r} does not exist; expected a JSONL file (one object a line)"
        )
    root = path.resolve().parent
    rows = []
    for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        row, problem = _parse_row(raw, audio_keys)
        if problem is not None:
            reason, detail = problem
            if bad is None:
                raise ValueError(f"{path}:{line_no}: {detail}")
            bad.append({"id": None, "key": None, "path": f"{path}:{line_no}", "reason": reason, "detail": detail})
            continue
        keys = audio_keys or tuple(k for k in AUDIO_KEYS if k in row)
        row.setdefault("id", str(row[keys[0]]))
        for k in keys:
            row[k] = os.path.normpath(root / row[k])  # absolute paths stay absolute
        rows.append(row)
    return rows


def _parse_row(raw: bytes, audio_keys: tuple[str, ...] | None) -> tuple[dict | None, tuple[str, str] | None]:
    """One manifest line -> (row, None) or (None, (reason, detail))."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, ("not_json", f"not UTF-8 text ({e}); save the manifest as UTF-8")
    except json.JSONDecodeError as e:
        return None, ("not_json", f"not valid JSON ({e}); expected one JSON object a line")
    if not isinstance(row, dict):
        return None, ("not_json", f"got a JSON {type(row).__name__}, expected a JSON object")
    keys = audio_keys or tuple(k for k in AUDIO_KEYS if k in row)
    if not keys or any(not isinstance(row.get(k), str) or not row[k] for k in keys):
        return None, ("no_audio_key", f"row has keys {sorted(row)}, expected audio path key(s) "
                      f'{list(audio_keys or AUDIO_KEYS)} (e.g. {{"audio": "clip.wav", "caption": "..."}})')
    return row, None


def drop_uncaptioned(rows: list[dict], key: str, bad: list[dict]) -> list[dict]:
    """Rows whose ``key`` is a non-empty string; the others are appended to ``bad`` (reason ``no_caption``)."""
    good = []
    for row in rows:
        text = row.get(key)
        if isinstance(text, str) and text.strip():
            good.append(row)
        else:
            got = f"no {key!r}" if key not in row else f"{key!r} is {text!r}"
            bad.append({"id": row.get("id"), "key": key, "path": row.get("id"), "reason": "no_caption",
                        "detail": f"{got}; expected a non-empty string"})
    return good


def write_manifest(
    rows: list[dict], path: str | os.PathLike, audio_keys: tuple[str, ...] = AUDIO_KEYS
) -> None:
    """Write rows as JSONL with audio paths relative to the manifest's folder (atomic write)."""
    path = Path(path)
    root = path.resolve().parent
    lines = []
    for row in rows:
        row = dict(row)
        for k in audio_keys:
            if k in row:
                row[k] = Path(os.path.relpath(Path(row[k]).resolve(), root)).as_posix()
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))


@dataclass
class ValidationReport:
    """What ``validate_manifest`` found: totals, counts per reason, and each bad row."""

    total: int = 0
    kept: int = 0
    counts: Counter = field(default_factory=Counter)  # reason -> rows
    bad: list[dict] = field(default_factory=list)  # {"id", "key", "path", "reason", "detail"}

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items())) or "none"
        return f"kept {self.kept}/{self.total} rows; dropped {self.total - self.kept} ({reasons})"

    def add_bad(self, bad: list[dict]) -> None:
        """Count rows dropped before validation (unparseable lines, no caption) into this report."""
        self.total += len(bad)
        self.bad = bad + self.bad
        self.counts.update(b["reason"] for b in bad)

    def to_dict(self, max_rows: int = 1000) -> dict:
        """JSON-able: totals, counts per reason and the first ``max_rows`` bad rows."""
        return {"total": self.total, "kept": self.kept, "dropped": self.total - self.kept,
                "counts": dict(sorted(self.counts.items())), "bad": self.bad[:max_rows]}


def _check_file(path: str, min_duration: float, max_duration: float | None, silence_db: float):
    """(duration s, None) for a good file, else (None, (reason, detail))."""
    from genflow.audio import AudioError, audio_info, load_audio

    if not os.path.isfile(path):
        return None, ("missing", "no such file")
    if os.path.getsize(path) == 0:
        return None, ("empty", "0 bytes")
    try:
        duration = audio_info(path).duration  # header only: long files are refused before decoding
        if duration < min_duration:
            return None, ("too_short", f"{duration:.3f} s < {min_duration} s")
        if max_duration is not None and duration > max_duration:
            return None, ("too_long", f"{duration:.3f} s > {max_duration} s")
        wav, _ = load_audio(path)
    except AudioError as e:
        return None, ("nonfinite" if "NaN" in str(e) else "corrupt", str(e)[:300])
    except (RuntimeError, OSError) as e:
        return None, ("corrupt", str(e)[:300])
    rms_db = 10 * math.log10(float(wav.double().pow(2).mean()) + 1e-20)
    if rms_db < silence_db:
        return None, ("silent", f"RMS {rms_db:.1f} dBFS < {silence_db} dBFS")
    return duration, None


def validate_manifest(
    rows: list[dict],
    audio_keys: tuple[str, ...] = ("audio",),
    *,
    min_duration: float = 0.1,
    max_duration: float | None = None,
    silence_db: float = -60.0,
    num_workers: int = 4,
) -> tuple[list[dict], ValidationReport]:
    """Decode every audio file once; return the good rows (with ``"duration"`` in s) and a report.

    Reasons: missing, empty, corrupt, nonfinite, silent (RMS below ``silence_db``), too_short, too_long,
    length_mismatch (paired files differing by more than 10 ms).
    """
    paths = sorted({row[k] for row in rows for k in audio_keys})
    with ThreadPoolExecutor(max(1, num_workers)) as pool:  # libsndfile decodes outside the GIL
        results = dict(
            zip(paths, pool.map(lambda p: _check_file(p, min_duration, max_duration, silence_db), paths))
        )
    report = ValidationReport(total=len(rows))
    good = []
    for row in rows:
        problem = None
        for k in audio_keys:
            duration, issue = results[row[k]]
            if issue is not None:
                problem = (k, *issue)
                break
        if problem is None and len(audio_keys) > 1:
            durations = [results[row[k]][0] for k in audio_keys]
            if max(durations) - min(durations) > 0.01:
                problem = (audio_keys[1], "length_mismatch", f"durations {durations} s")
        if problem is None:
            good.append({**row, "duration": round(results[row[audio_keys[0]]][0], 4)})
        else:
            key, reason, detail = problem
            report.counts[reason] += 1
            report.bad.append(
                {"id": row.get("id"), "key": key, "path": row[key], "reason": reason, "detail": detail}
            )
    report.kept = len(good)
    if report.bad:
        log.debug("manifest validation: %s", report.summary())  # callers report it (with their own counts)
    return good, report


def validate_spread(
    rows: list[dict], audio_keys: tuple[str, ...] = ("audio",), state=None, **validate_kwargs
) -> tuple[list[dict], ValidationReport]:
    """``validate_manifest`` with the rows split into one contiguous part per process; every process gets all.

    ``state``: an Accelerate ``PartialState`` (None: this process does it all). No process waits on another
    decoding the whole manifest (the cause of collective timeouts at start); the result is in row order.
    """
    from genflow.distributed import gather_json

    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    per = -(-len(rows) // world)
    good, report = validate_manifest(rows[rank * per : (rank + 1) * per], audio_keys, **validate_kwargs)
    merged_rows, merged = [], ValidationReport()
    for part_rows, part in gather_json([good, report.to_dict(max_rows=len(report.bad))], state):
        merged_rows += part_rows
        merged.total, merged.kept = merged.total + part["total"], merged.kept + part["kept"]
        merged.counts.update(part["counts"])
        merged.bad += part["bad"]
    return merged_rows, merged


def index_audio_files(folder: str | os.PathLike) -> dict[str, str]:
    """{file stem: path} of every audio file under ``folder`` (recursive; the first of equal stems wins)."""
    from genflow.dsp import find_audio_files

    found: dict[str, str] = {}
    for p in find_audio_files(folder):
        found.setdefault(p.stem, str(p))
    return found


def write_splits(
    splits: dict[str, list[dict]],
    out_dir: str | os.PathLike,
    audio_keys: tuple[str, ...] = ("audio",),
    **validate_kwargs,
) -> dict[str, ValidationReport]:
    """Validate each split's rows, write ``<out_dir>/<split>.jsonl`` of the good ones, print a report.

    ``state=`` (an Accelerate ``PartialState``): every process validates a part, the main process writes.
    """
    state = validate_kwargs.pop("state", None)  # an Accelerate PartialState: decoding spread over processes
    reports = {}
    for name, rows in splits.items():
        good, report = validate_spread(rows, audio_keys, state, **validate_kwargs)
        if state is not None and not state.is_main_process:
            reports[name] = report
            continue
        write_manifest(good, Path(out_dir) / f"{name}.jsonl", audio_keys)
        print(f"{name}: {report.summary()}")
        for bad in report.bad[:5]:
            print(f"  {bad['reason']}: {bad['path']} ({bad['detail']})")
        if len(report.bad) > 5:
            print(f"  ... and {len(report.bad) - 5} more")
        reports[name] = report
    return reports
