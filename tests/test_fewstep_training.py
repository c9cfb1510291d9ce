"""Few-step objectives through the real recipes: exact resume, a release that says what it predicts, 1-step CLI."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from test_training import FAST, recipe, weights

import genflow
from genflow.cli.enhance import main as enhance_main
from genflow.cli.sample import main as sample_main

RUN = FAST + ["--train.sample_every", "0"]


def test_meanflow_resumes_bit_identical_and_releases_an_average_velocity_model(tmp_path):
    main = recipe("tta").main
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    mf = ["--objective", "meanflow", "--train.fewstep.ratio", "1.0", "--train.fewstep.shift", "0.5"]  # JVP every step
    main(RUN + mf + ["--out", str(straight), "--train.save_every", "100"])
    main(RUN + mf + ["--out", str(resumed), "--max-steps", "2"])
    main(RUN + mf + ["--out", str(resumed), "--resume", "latest"])
    a, b = weights(straight), weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert any(k.startswith("interval_embedder.") for k in a)
    meta = json.loads((resumed / "release" / "pipeline.json").read_text())
    assert meta["prediction"] == "average_velocity"
    assert meta["sampling"]["guidance_scale"] == 1.0  # folded into the model while training
    # the few-step schedule it was given
    assert (meta["sampling"]["schedule"], meta["sampling"]["shift"], meta["sampling"]["steps"]) == ("shifted", 0.5, 2)
    cfg = json.loads((resumed / "config.json").read_text())
    assert cfg["model"]["interval_input"] and cfg["train"]["fewstep"]["guidance_scale"] == 3.0


def test_ctm_distils_a_flow_release_and_the_student_samples_in_one_step(tmp_path):
    teacher = recipe("tta").main(RUN + ["--out", str(tmp_path / "teacher"), "--max-steps", "2"])
    # lr ~0: the student is the teacher plus a zero interval input, so its 1-step output is the teacher's Euler step
    student = recipe("tta").main(RUN + ["--out", str(tmp_path / "student"), "--max-steps", "1", "--objective",
                                        "ctm", "--init", str(teacher), "--train.lr", "1e-12"])
    assert json.loads((student / "pipeline.json").read_text())["prediction"] == "average_velocity"
    args = ["--prompt", "a dog barks", "--duration-s", "1", "--steps", "1", "--no-grid"]
    [wav] = sample_main(["--checkpoint", str(student), "--out", str(tmp_path / "s"), *args])
    [ref] = sample_main(["--checkpoint", str(teacher), "--out", str(tmp_path / "t"), *args,
                         "--guidance-scale", "1"])
    side = json.loads(wav.with_suffix(".json").read_text())
    assert side["prediction"] == "average_velocity" and side["steps"] == 1
    assert json.loads(ref.with_suffix(".json").read_text())["prediction"] == "velocity"
    a, b = sf.read(wav)[0], sf.read(ref)[0]
    assert a.shape == b.shape and abs(a - b).max() < 1e-4
    gen = genflow.load(student, device="cpu")
    with pytest.raises(ValueError, match="no ODE solver"):
        gen.generate(["x"], duration_s=1.0, steps=2, solver="heun")


def test_se_meanflow_from_a_release_enhances_in_one_step(tmp_path):
    source = ["--train.source.kind", "aligned", "--train.source.std", "0.1"]  # a data-to-data flow teacher
    base = recipe("se").main(RUN + source + ["--out", str(tmp_path / "base"), "--max-steps", "1"])
    student = recipe("se").main(RUN + ["--out", str(tmp_path / "mf"), "--max-steps", "1", "--objective",
                                       "meanflow", "--init", str(base)])
    # the student starts where its teacher does: --init brings the release's flow source with it
    meta = json.loads((student / "pipeline.json").read_text())
    assert meta["source"] == {"kind": "aligned", "std": 0.1} and meta["prediction"] == "average_velocity"
    assert (meta["sampling"]["schedule"], meta["sampling"]["shift"]) == ("shifted", 1.0)  # MeanFlow's own: linear
    assert genflow.load(student, device="cpu").source.kind == "aligned"
    noisy = tmp_path / "in.wav"
    sf.write(noisy, torch.randn(8000).mul(0.1).numpy(), 16000)
    assert enhance_main(["--checkpoint", str(student), str(noisy), "--out", str(tmp_path / "out"), "--steps", "1"]) == 0
    assert (tmp_path / "out" / "in.wav").is_file()
    with pytest.raises(ValueError, match="--init RELEASE"):
        recipe("se").main(RUN + ["--out", str(tmp_path / "x"), "--objective", "ctm"])  # no teacher: clear error
