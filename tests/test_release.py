"""Release folders are portable; --resume latest never picks an incomplete checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

import genflow
from genflow.checkpoint import find_checkpoint, write_manifest
from genflow.codecs import MelCodec
from genflow.model import DiT
from genflow.release import load_release, save_release


def test_local_codec_folder_travels_inside_the_release(tmp_path, monkeypatch):
    codec_dir = tmp_path / "my-codec"
    MelCodec(n_mels=16, frame_rate=25).save_pretrained(codec_dir)
    model = DiT.from_preset("tiny", latent_dim=16, text_dim=0, aligned_dim=0)
    release = save_release(tmp_path / "release", model, model.state_dict(),
                           {"codec": str(codec_dir), "text_encoder": None, "sampling": {"steps": 2}})
    meta = json.loads((release / "pipeline.json").read_text())
    assert meta["codec"] == "codec" and (release / "codec" / "config.json").is_file()
    # a second save replaces the first atomically (no .tmp/.old left behind)
    save_release(release, model, model.state_dict(), {"codec": "mel:n_mels=16", "text_encoder": None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-codec", "release"]
    save_release(release, model, model.state_dict(), {"codec": str(codec_dir), "text_encoder": None})
    monkeypatch.chdir(tmp_path / "my-codec")  # load from elsewhere, with the original folder gone
    import shutil

    shutil.rmtree(codec_dir)
    gen = genflow.load(str(release), device="cpu")
    assert gen.codec.latent_dim == 16
    with pytest.raises(ValueError, match="no text encoder"):
        gen.generate(["x"])
    with pytest.raises(ValueError, match="no aligned branch"):  # not an enhancement model either
        gen.enhance(torch.zeros(16000), 16000, steps=1)


def test_load_release_says_what_failed(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a release folder nor a hub id"):
        load_release(str(tmp_path / "nope" / "deeper" / "release"))
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        load_release(tmp_path / "run")


def test_resume_latest_skips_incomplete_checkpoints(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-6.tmp", "checkpoint-8"):
        (ckpts / name).mkdir(parents=True)
        (ckpts / name / "genflow_state.json").write_text("{}")
        if name != "checkpoint-8":  # checkpoint-8 has no manifest: never finished
            write_manifest(ckpts / name)
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-4"
    assert find_checkpoint(tmp_path / "empty", "latest") is None
    with pytest.raises(ValueError, match="not a usable genflow training checkpoint: no manifest.json"):
        find_checkpoint(tmp_path, str(ckpts / "checkpoint-8"))
