"""Each recipe's real train.py: 2 steps, resume to 4 (bit-identical to 4 straight), release loads and samples.

The diffusers-examples pattern: run the real script, then check what is on disk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import genflow

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--train.lr_schedule", "constant", "--train.log_with", "none"]


def recipe(name: str):
    """Import recipes/NAME/train.py as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "release" / "model.safetensors"))


@pytest.mark.parametrize("name", ["tta", "ttm", "se"])
def test_recipe_trains_resumes_exactly_and_releases(name, tmp_path):
    main = recipe(name).main
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(FAST + ["--out", str(straight), "--train.save_every", "100", "--train.sample_every", "0"])
    main(FAST + ["--out", str(resumed), "--max-steps", "2", "--train.sample_every", "0"])
    assert (resumed / "checkpoints" / "checkpoint-2" / "genflow_state.json").exists()
    main(FAST + ["--out", str(resumed), "--resume", "latest"])  # to 4 steps, writes previews at step 4

    state = json.loads((resumed / "checkpoints" / "checkpoint-4" / "genflow_state.json").read_text())
    assert state["step"] == 4 and state["epoch"] * 1000 + state["batch_in_epoch"] > 0
    # Optimizer, EMA, LR schedule, RNG and data order restored: the same weights as 4 steps in one go.
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    ckpt_a = load_file(str(straight / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    assert any((ckpt_a[k] - a[k]).abs().max() > 0 for k in a), "release must hold the EMA, not the raw weights"

    run_cfg = json.loads((resumed / "config.json").read_text())
    assert run_cfg["train"]["max_steps"] == 4 and run_cfg["model"]["latent_dim"] == 64
    samples = sorted((resumed / "samples").glob("step-*"))
    assert samples and (samples[-1] / "spectrograms.png").stat().st_size > 1000
    assert len(list(samples[-1].glob("*.wav"))) == len(run_cfg["preview"])

    gen = genflow.load(resumed / "release", device="cpu")
    if name == "se":
        noisy, sr = sf.read(run_cfg["preview"][0], dtype="float32")
        out = gen.enhance(torch.from_numpy(noisy), sr, steps=2)
        assert out.shape == (len(noisy),) and torch.isfinite(out).all()
    else:
        clips = gen.generate(["a test prompt"], duration_s=1.0, steps=2, seed=3)
        again = gen.generate(["a test prompt"], duration_s=1.0, steps=2, seed=3)
        assert clips[0].shape == (gen.sample_rate,) and torch.equal(clips[0], again[0])


def test_init_fine_tunes_a_release(tmp_path):
    """--init starts from a release's weights, codec and text encoder (lr 1e-12: the release comes back as it was)."""
    base = recipe("tta").main(FAST + ["--out", str(tmp_path / "base"), "--max-steps", "2",
                                      "--train.sample_every", "0"])
    recipe("tta").main(FAST + ["--out", str(tmp_path / "tuned"), "--max-steps", "2", "--train.lr", "1e-12",
                       "--train.sample_every", "0", "--init", str(base), "--codec", "mel:n_mels=8",
                       "--model.width", "16"])
    a, b = weights(tmp_path / "base"), weights(tmp_path / "tuned")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-8
    run_cfg = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert run_cfg["init"] == str(base) and run_cfg["codec"] == "mel" and run_cfg["model"]["width"] != 16
    # and with a learning rate, it trains on from there
    recipe("tta").main(FAST + ["--out", str(tmp_path / "on"), "--max-steps", "2", "--init", str(base),
                               "--train.sample_every", "0"])
    c = weights(tmp_path / "on")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_bad_rows_are_skipped_and_counted(tmp_path, caplog):
    src = ROOT / "data" / "demo" / "tta"
    rows = [json.loads(line) for line in (src / "train.jsonl").read_text().splitlines()[:6]]
    for row in rows:
        row["audio"] = str(src / row["audio"])
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(tmp_path / "silent.wav", torch.zeros(16000).numpy(), 16000)
    sf.write(tmp_path / "nan.wav", torch.full((16000,), float("nan")).numpy(), 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", (0.1 * torch.randn(400)).numpy(), 16000)
    bad = ["missing.wav", "corrupt.wav", "silent.wav", "nan.wav", "short.wav"]
    rows += [{"audio": str(tmp_path / f), "caption": "bad"} for f in bad]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    caplog.set_level("INFO")
    recipe("tta").main(FAST + ["--out", str(tmp_path / "run"), "--data", str(manifest), "--max-steps", "2",
                               "--train.sample_every", "0"])
    assert (tmp_path / "run" / "release" / "model.safetensors").exists()
    text = caplog.text
    assert "kept 6/11 rows" in text, text[-2000:]
    for reason in ("missing", "corrupt", "silent", "nonfinite", "too_short"):
        assert reason in text


def test_unknown_option_names_the_nearest(capsys):
    with pytest.raises(SystemExit):
        recipe("tta").main(["--preset", "tiny", "--train.lerning_rate", "1"])
    err = capsys.readouterr().err
    assert "--train.lr" in err or "train.lr" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "recipes" / "tta" / "train.py"), *FAST, "--out", str(out),
           "--max-steps", "100000", "--train.save_every", "100000", "--train.sample_every", "0",
           "--train.log_every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until training really runs
        if "step 3 " in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    ckpts = [p for p in (out / "checkpoints").glob("checkpoint-*") if not p.name.endswith(".tmp")]
    assert len(ckpts) == 1
    step = json.loads((ckpts[0] / "genflow_state.json").read_text())["step"]
    assert step >= 3
    assert not (out / "release").exists()  # interrupted: no release yet
    recipe("tta").main(FAST + ["--out", str(out), "--resume", "latest", "--max-steps", str(step + 1),
                               "--train.sample_every", "0"])
    assert (out / "release" / "model.safetensors").exists()
    shutil.rmtree(out)


def test_two_processes_train_and_resume(tmp_path):
    """DDP on CPU (gloo): sharded batches, one checkpoint written by the main process, then a resume."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            str(ROOT / "recipes" / "tta" / "train.py"), *FAST, "--out", str(out), "--train.sample_every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for extra in (["--max-steps", "2"], ["--resume", "latest"]):
        done = subprocess.run(base + extra, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "genflow_state.json").read_text())
    assert state["step"] == 4
    log = json.loads((out / "config.json").read_text())
    assert log["train"]["batch_size"] == 2
    assert "samples_per_s" in done.stderr and (out / "release" / "model.safetensors").exists()


def test_tensorboard_gets_scalars_audio_and_spectrograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    recipe("tta").main(["--preset", "tiny", "--out", str(out), "--max-steps", "2", "--train.sample_every", "2",
                        "--train.log_with", "tensorboard"])
    events = [p for p in (out / "logs").rglob("events.out.tfevents.*") if p.stat().st_size > 1000]
    tags = {}
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"audio": 0, "images": 0, "scalars": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
    assert {"loss", "lr", "grad_norm", "steps_per_s", "samples_per_s", "memory_gb"} <= tags["scalars"]
    assert {"sample/00", "sample/01"} <= tags["audio"]
    assert {"spectrogram/00", "spectrogram/01"} <= tags["images"]


def test_non_finite_steps_are_skipped_then_abort(tmp_path, monkeypatch, caplog):
    import genflow.training as training

    real = training.objective_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # the 2nd micro-step's loss is NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(training, "objective_loss", flaky)
    caplog.set_level("WARNING")
    out = tmp_path / "run"
    recipe("tta").main(FAST + ["--out", str(out), "--max-steps", "3", "--train.sample_every", "0"])
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "genflow_state.json").read_text())
    assert state["bad_steps_total"] == 1 and "update skipped" in caplog.text
    weights_ok = load_file(str(out / "release" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights_ok.values())

    monkeypatch.setattr(training, "objective_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(RuntimeError, match="non-finite steps in a row"):
        recipe("tta").main(FAST + ["--out", str(tmp_path / "nan"), "--max-steps", "10", "--train.max_bad_steps", "3",
                                   "--train.sample_every", "0"])
