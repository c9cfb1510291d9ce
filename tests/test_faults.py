"""Faults injected through the real scripts and command lines: each ends in a clear message and exit status,
nothing else is lost or written, and nothing found in a checkpoint is executed.

Areas: resuming (planted pickles, damaged checkpoints, rotation), data validation, output writes, damaged
releases and codecs, arguments checked before anything loads, and warnings given once.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, script

import genflow
from genflow.checkpoint import find_checkpoint, write_manifest
from genflow.cli.common import run_main
from genflow.cli.enhance import main as enhance_main
from genflow.cli.sample import main as sample_main

FAST = ["--preset", "tiny", "--train.lr_schedule", "constant", "--train.log_with", "none", "--train.sample_every", "0"]
SPEECH = ROOT / "tests" / "fixtures" / "audio" / "speech.wav"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error:" in line]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -------------------------------------------------------------------------------------------- resuming


class Planted:
    """Unpickling this creates ``marker``: what a malicious file in a checkpoint would do, made harmless."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_resume_runs_no_planted_pickle_and_falls_back_past_a_damaged_checkpoint(tmp_path, caplog, capsys):
    train = script("recipes/tta/train.py").main
    run, marker = tmp_path / "run", tmp_path / "code-was-executed"
    ckpts = run / "checkpoints"
    args = FAST + ["--out", str(run), "--train.save_every", "2"]
    payload = pickle.dumps(Planted(marker))
    pickle.loads(payload)  # the payload is live: unpickling it does create the marker
    assert marker.exists()
    marker.unlink()

    train(args + ["--max-steps", "4"])
    assert not list(ckpts.rglob("*.pkl")) and not list(ckpts.rglob("*.bin"))  # nothing pickled is written
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin",
                 "scheduler.bin", "pytorch_model.bin", "scaler.pt"):  # what Accelerate's load_state would unpickle
        (ckpts / "checkpoint-4" / name).write_bytes(payload)
    write_manifest(ckpts / "checkpoint-4")  # even listed in the manifest, they are never opened
    caplog.set_level("INFO")
    train(args + ["--max-steps", "6", "--resume", "latest"])
    assert not marker.exists()
    assert f"resumed from {ckpts / 'checkpoint-4'} at step 4" in caplog.text
    assert json.loads((ckpts / "checkpoint-6" / "genflow_state.json").read_text())["step"] == 6

    # A truncated newest checkpoint: skipped with its reason; rotation keeps the newest one that verifies.
    weights = ckpts / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    caplog.clear()
    train(args + ["--max-steps", "5", "--train.save_total_limit", "1", "--resume", "latest"])
    assert f"skipping {ckpts / 'checkpoint-6'}: model.safetensors has" in caplog.text
    assert f"resumed from {ckpts / 'checkpoint-4'} at step 4" in caplog.text
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-5", "checkpoint-6"]
    assert find_checkpoint(run, "latest") == ckpts / "checkpoint-5"

    # Naming the damaged one explicitly: one line through the script's entry point, nothing written.
    before = tree(run)
    capsys.readouterr()
    assert run_main(train, args + ["--max-steps", "7", "--resume", str(ckpts / "checkpoint-6")]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert "checkpoint-6" in err and "model.safetensors has" in err and "'latest'" in err
    assert tree(run) == before


def test_resume_latest_with_no_usable_checkpoint_says_so(tmp_path):
    folder = tmp_path / "checkpoints" / "checkpoint-2"
    folder.mkdir(parents=True)
    (folder / "random_states_0.pkl").write_bytes(b"\x80")  # an older genflow's checkpoint: no manifest
    with pytest.raises(ValueError, match="none of the 1 checkpoints .* verifies .*checkpoint-2: no manifest.json"):
        find_checkpoint(tmp_path, "latest")


@pytest.mark.parametrize("limit, left", [(1, [5, 6]), (2, [4, 5, 6]), (5, [2, 4, 5, 6])])
def test_rotation_keeps_the_checkpoint_just_written_and_never_newer_ones(tmp_path, limit, left):
    from genflow.checkpoint import rotate, verify

    root = tmp_path / "checkpoints"
    for step in (2, 3, 4, 5, 6):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        (root / f"checkpoint-{step}" / "genflow_state.json").write_text(json.dumps({"step": step}))
        if step != 3:  # checkpoint-3 never got its manifest (killed mid-write)
            write_manifest(root / f"checkpoint-{step}")
    state = root / "checkpoint-6" / "genflow_state.json"
    state.write_text(state.read_text().replace("6", "7"))  # damaged in place, same size
    assert "does not match its sha256" in verify(root / "checkpoint-6")
    rotate(root, limit, root / "checkpoint-5")
    assert sorted(int(p.name.split("-")[1]) for p in root.iterdir()) == left
    assert find_checkpoint(tmp_path, "latest") == root / "checkpoint-5"


# ----------------------------------------------------------------------------------------------- data


def _manifest_with_bad_rows(tmp_path: Path) -> Path:
    src = ROOT / "data" / "demo" / "tta"
    rows = [json.loads(line) for line in (src / "train.jsonl").read_text().splitlines()[:4]]
    for row in rows:
        row["audio"] = str(src / row["audio"])
    (tmp_path / "empty.wav").write_bytes(b"")
    lines = [json.dumps(r) for r in rows] + [
        "this line is not JSON",
        json.dumps({"audio": rows[0]["audio"]}),  # no caption
        json.dumps({"audio": rows[1]["audio"], "caption": "   "}),  # blank caption
        json.dumps({"audio": str(tmp_path / "empty.wav"), "caption": "an empty file"}),
    ]
    manifest = tmp_path / "train.jsonl"
    latin1 = b'{"audio": "caf\xe9.wav", "caption": "not UTF-8"}'
    manifest.write_bytes(("\n".join(lines) + "\n").encode() + latin1 + b"\n")
    return manifest


def test_bad_rows_are_counted_on_the_console_in_the_run_folder_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest, run = _manifest_with_bad_rows(tmp_path), tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "recipes" / "tta" / "train.py"), "--preset", "tiny", "--data", str(manifest),
           "--out", str(run), "--max-steps", "1", "--train.sample_every", "0", "--train.log_with", "tensorboard"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # The console (a fresh process: logging is set up before the report is logged).
    assert "kept 4/9 rows; dropped 5 (empty: 1, no_caption: 2, not_json: 2)" in done.stderr
    assert f"not_json: {manifest}:5" in done.stderr
    report = json.loads((run / "data_report.json").read_text())[str(manifest)]
    assert report["counts"] == {"empty": 1, "no_caption": 2, "not_json": 2}
    assert (report["total"], report["kept"], len(report["bad"])) == (9, 4, 5)
    assert any("not UTF-8" in row["detail"] for row in report["bad"])
    scalars = set()
    for path in (run / "logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
    assert {"data/train/not_json", "data/train/no_caption", "data/train/empty", "data/train/kept"} <= scalars


def test_strict_data_stops_at_the_first_bad_row_in_one_line(tmp_path, capsys):
    manifest, run = _manifest_with_bad_rows(tmp_path), tmp_path / "run"
    train = script("recipes/tta/train.py").main
    assert run_main(train, FAST + ["--data", str(manifest), "--out", str(run), "--data.strict", "true"]) == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert f"{manifest}:5: not valid JSON" in err
    assert not (run / "config.json").exists() and not (run / "checkpoints").exists()
    # Without the non-JSON line, strict still stops at the uncaptioned row, naming the reason and the fix.
    lines = manifest.read_bytes().splitlines()
    manifest.write_bytes(b"\n".join(lines[:4] + lines[5:8]) + b"\n")
    assert run_main(train, FAST + ["--data", str(manifest), "--out", str(run), "--data.strict", "true"]) == 1
    err = capsys.readouterr().err
    assert "first: no_caption" in err and "drop --data.strict" in err and len(error_lines(err)) == 1


# ---------------------------------------------------------------------------------------- output writes


def _noisy_inputs(root: Path) -> Path:
    speech, sr = sf.read(SPEECH, dtype="float32")
    for rel in ("a/x.wav", "b/y.wav", "c/z.wav"):
        (root / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "in" / rel, speech[: sr // 2], sr)
    return root / "in"


def test_enhance_unwritable_outputs_are_per_file_errors(releases, tmp_path, capsys, monkeypatch):
    src, out = _noisy_inputs(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("a file where the output subfolder should be")
    import genflow.audio

    real_write = genflow.audio.sf.write

    def disk_full_for_z(path, *args, **kwargs):
        if "z.wav" in os.fspath(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(genflow.audio.sf, "write", disk_full_for_z)
    inputs = tree(src)
    status = run_main(enhance_main, ["--checkpoint", str(releases["se"]), str(src), "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert "a/x.wav: FAILED: cannot write" in err and "z.wav: FAILED: cannot write" in err
    assert "No space left on device" in err and "1 written, 0 skipped, 2 failed" in err
    assert sorted(tree(out)) == ["a", "b/y.wav"]  # the file that blocked a/ is untouched, no temp files left
    assert tree(src) == inputs


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_enhance_read_only_output_folder(releases, tmp_path, capsys):
    src, out = _noisy_inputs(tmp_path), tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b").chmod(0o555)
    try:
        status = run_main(enhance_main, ["--checkpoint", str(releases["se"]), str(src), "--out", str(out),
                                         "--steps", "1"])
    finally:
        (out / "b").chmod(0o755)
    err = capsys.readouterr().err
    assert status == 1 and "y.wav: FAILED: cannot write" in err and "2 written, 0 skipped, 1 failed" in err


def test_enhance_out_of_memory_is_a_per_file_error_and_ctrl_c_ends_quietly(releases, tmp_path, capsys, monkeypatch):
    import torch

    from genflow.pipeline import Generator

    src, real = _noisy_inputs(tmp_path), Generator.enhance
    calls = []

    def oom_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Generator, "enhance", oom_on_second)
    argv = ["--checkpoint", str(releases["se"]), str(src), "--out", str(tmp_path / "out"), "--steps", "1"]
    assert run_main(enhance_main, argv) == 1
    err = capsys.readouterr().err
    assert "y.wav: FAILED: CUDA out of memory" in err and "2 written, 0 skipped, 1 failed" in err

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_main(interrupted, []) == 130 and capsys.readouterr().err == "interrupted\n"


def test_sample_unwritable_output_is_a_per_clip_error(releases, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "a-dog_s0.wav").mkdir(parents=True)  # a folder where the first clip should go
    with pytest.raises(SystemExit) as e:
        sample_main(["--checkpoint", str(releases["tta"]), "--prompt", "a dog", "--num-seeds", "2", "--steps", "1",
                     "--duration-s", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "a-dog_s0.wav: FAILED: cannot write" in err and "1 failed" in err
    assert sorted(tree(out)) == ["a-dog_s1.json", "a-dog_s1.wav", "spectrograms.png"]


def test_out_pointing_at_a_file_is_refused_before_loading(releases, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(genflow, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    blocker = tmp_path / "out.wav"
    blocker.write_bytes(b"keep me")
    for main, extra in ((enhance_main, [str(SPEECH)]), (sample_main, ["--prompt", "a dog"])):
        for out, says in ((blocker, "is an existing file"), (blocker / "sub" / "dir", f"{blocker} is a file")):
            with pytest.raises(SystemExit) as e:
                main(["--checkpoint", str(releases["se"]), "--out", str(out), *extra])
            err = capsys.readouterr().err
            assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err
    assert blocker.read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------- damaged releases


def _damage(folder: Path, how: str) -> str:
    """Damage a copy of a release; returns the file the message must name."""
    if how == "truncated weights":
        path = folder / "model.safetensors"
        path.write_bytes(path.read_bytes()[:1000])
    elif how in ("config.json not JSON", "pipeline.json not JSON"):
        path = folder / how.split()[0]
        path.write_text(path.read_text()[:-20])
    else:  # an unknown key in pipeline.json
        path = folder / "pipeline.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "text_encodr": "t5"}))
    return path.name


@pytest.mark.parametrize("how", ["truncated weights", "config.json not JSON", "pipeline.json not JSON",
                                 "unknown pipeline key"])
def test_damaged_release_ends_in_one_line_naming_the_file(releases, tmp_path, capsys, how):
    release = tmp_path / "release"
    shutil.copytree(releases["tta"], release)
    name = _damage(release, how)
    with pytest.raises(SystemExit) as e:
        sample_main(["--checkpoint", str(release), "--prompt", "a dog", "--out", str(tmp_path / "out")])
    message = str(e.value.code)
    assert message.startswith("error: --checkpoint") and "\n" not in message and name in message
    assert any(fix in message for fix in ("re-download", "re-run")), message
    if how == "unknown pipeline key":
        assert "did you mean 'text_encoder'" in message
    assert not (tmp_path / "out").exists()


def test_damaged_dasheng_codec_ends_in_one_line(tmp_path, capsys):
    from genflow.cli.codec import main as codec_main

    folder = tmp_path / "codec"
    shutil.copytree(ROOT / "tests" / "fixtures" / "dasheng-tiny-a", folder)
    weights = folder / "model.safetensors"
    assert weights.is_file()
    weights.write_bytes(weights.read_bytes()[:5000])
    out = tmp_path / "out.wav"
    assert codec_main(["reconstruct", str(SPEECH), str(out), "--codec", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "model.safetensors is damaged" in err and "re-download" in err
    (folder / "config.json").write_text("{not json")
    assert codec_main(["reconstruct", str(SPEECH), str(out), "--codec", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "config.json is not valid JSON" in err and not out.exists()


def test_damaged_t5_text_encoder_ends_in_one_line(tmp_path):
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from genflow.text import load_text_encoder

    folder = tmp_path / "t5"
    T5EncoderModel(T5Config(vocab_size=384, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        folder, safe_serialization=True)
    ByT5Tokenizer().save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises((ValueError, OSError)) as e:
        load_text_encoder(str(folder))
    assert "\n" not in str(e.value) and "re-download" in str(e.value) and str(folder) in str(e.value)


# --------------------------------------------------------------------------- arguments, before any loading


@pytest.mark.parametrize("flags, says", [
    (["--steps", "0"], "steps=0"),
    (["--duration-s", "0"], "duration_s=0.0"),
    (["--guidance-scale", "-1"], "guidance_scale=-1.0"),
    (["--device", "gpu"], "not a device"),
    (["--device", "cuda:7"], "CUDA device"),
    (["--batch-size", "0"], "expected an integer >= 1"),
    (["--num-seeds", "0"], "expected an integer >= 1"),
    (["--solver", "rk9"], "invalid choice"),
])
def test_sample_arguments_are_checked_before_loading(tmp_path, capsys, monkeypatch, flags, says):
    monkeypatch.setattr(genflow, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        sample_main(["--checkpoint", "unused", "--prompt", "a dog", "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not out.exists()


@pytest.mark.parametrize("flags, says", [
    (["--train.batch_size", "0"], "train.batch_size=0: expected an integer >= 1"),
    (["--train.mixed_precision", "fp8"], "expected one of no, bf16, fp16"),
    (["--data.max_seconds", "0"], "expected 0 <= min_seconds < max_seconds"),
    (["--resume", "runs/nowhere/checkpoint-9"], "neither 'latest' nor a checkpoint folder"),
    (["--train.fewstep.derivative_step", "-0.02"], "train.fewstep.derivative_step=-0.02: expected 0 (the exact JVP)"),
    (["--train.fewstep.ratio", "1.5"], "train.fewstep.ratio=1.5: expected a value in [0, 1]"),
    (["--train.fewstep.shift", "0"], "train.fewstep.shift=0.0: expected a positive number"),
])
def test_train_arguments_are_checked_before_loading(tmp_path, capsys, monkeypatch, flags, says):
    import genflow.recipe

    monkeypatch.setattr(genflow.recipe, "build_conditioner", lambda *a, **k: pytest.fail("the codec was loaded"))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        script("recipes/tta/train.py").main(["--preset", "tiny", "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not out.exists()


@pytest.mark.parametrize("flags, says", [
    (["--chunk-s", "0"], "chunk_s=0.0"),
    (["--chunk-s", "1", "--overlap-s", "0.8"], "more than half of chunk_s"),
    (["--sample-rate", "0"], "expected an integer >= 1000"),
    (["--device", "tpu"], "not a device"),
])
def test_enhance_arguments_are_checked_before_loading(tmp_path, capsys, monkeypatch, flags, says):
    monkeypatch.setattr(genflow, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        enhance_main(["--checkpoint", "unused", str(SPEECH), "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------- warnings


def test_warnings_are_given_once(releases, tmp_path, caplog):
    caplog.set_level("WARNING")
    long = "a dog barks in the distance while rain falls " * 12  # > 512 ByT5 tokens
    sample_main(["--checkpoint", str(releases["tta"]), "--prompt", long, "--prompt", long + "again",
                 "--duration-s", "1.5", "--steps", "1", "--no-grid", "--out", str(tmp_path / "out")])
    assert caplog.text.count("tokens long") == 1 and "reads the first 512" in caplog.text
    assert caplog.text.count("longer than any clip this model was trained on (1 s)") == 1

    caplog.clear()
    (tmp_path / "in").mkdir()
    for name in ("a.wav", "b.wav"):  # 10 ms each
        sf.write(tmp_path / "in" / name, 0.1 * np.random.default_rng(0).standard_normal(160), 16000)
    assert enhance_main(["--checkpoint", str(releases["se"]), str(tmp_path / "in"), "--out", str(tmp_path / "se"),
                         "--steps", "1"]) == 0
    assert caplog.text.count("an input of 0.010 s is shorter than any clip") == 1
    assert sorted(tree(tmp_path / "se")) == ["a.wav", "b.wav"]


# ----------------------------------------------------------------------------------------- evaluation inputs


@pytest.mark.parametrize("recipe, flags, says", [
    ("tta", ["--generated", "{missing}", "--reference", "{empty}"], "--generated {missing}: no such folder"),
    ("tta", ["--generated", "{empty}", "--reference", "{clips}"], "--generated {empty}: the folder holds no audio"),
    ("ttm", ["--generated", "{clips}", "--reference", "{missing}"], "--reference {missing}: no such folder"),
    ("se", ["--enhanced", "{clips}", "--clean", "{empty}"], "--clean {empty}: the folder holds no audio"),
    ("se", ["--enhanced", "{clips}", "--clean", "{clips}", "--noisy", "{missing}"], "--noisy {missing}: no such"),
])
def test_evaluation_folders_missing_or_empty_end_in_one_line(tmp_path, capsys, recipe, flags, says):
    folders = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "clips": tmp_path / "clips"}
    folders["empty"].mkdir()
    folders["clips"].mkdir()
    shutil.copy(SPEECH, folders["clips"] / "a.wav")
    argv = [f.format(**folders) for f in flags] + ["--out", str(tmp_path / "report.json")]
    assert run_main(script(f"recipes/{recipe}/evaluate.py").main, argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {says.format(**folders)}"), lines
    assert not (tmp_path / "report.json").exists()  # nothing written


def test_fd_from_too_few_clips_is_refused_unless_asked_and_then_marked(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(SPEECH, clips / "a.wav")
    evaluate = script("recipes/tta/evaluate.py").main
    argv = ["--generated", str(clips), "--reference", str(clips), "--out", str(tmp_path / "r.json")]
    assert run_main(evaluate, argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--allow-small-fd" in lines[0] and "10" in lines[0], lines
    assert not (tmp_path / "r.json").exists()
    assert run_main(evaluate, argv + ["--allow-small-fd"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report.get("small_sample"), report.keys()
