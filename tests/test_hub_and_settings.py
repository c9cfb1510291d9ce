"""The one resolver/strict loader/atomic writer (genflow.hub) and the one table of sampling settings."""

from __future__ import annotations

import argparse

import pytest
import torch

from genflow import hub
from genflow.sampling import SamplingSettings, add_setting_flags, overrides_from_args


def test_references_parse_one_way(tmp_path):
    assert hub.parse_ref("owner/name") == ("owner/name", None, None)
    assert hub.parse_ref("owner/name@v2:vae") == ("owner/name", "v2", "vae")
    assert hub.is_hub_id("mispeech/dashengtokenizer") and hub.is_hub_id("a/b@main:sub/dir")
    for not_hub in ("./a/b", "/abs/path", "~/x/y", "a/b/c", "plain", str(tmp_path)):
        assert not hub.is_hub_id(not_hub), not_hub
    (tmp_path / "owner" / "name").mkdir(parents=True)  # an existing local path wins over the hub
    assert hub.resolve(tmp_path / "owner" / "name", files=()) == tmp_path / "owner" / "name"
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a hub id"):
        hub.resolve(tmp_path / "missing" / "x" / "y")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        hub.resolve(tmp_path / "owner" / "name", files=("config.json",))


def test_damaged_files_give_one_line_naming_them(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": ')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON.*re-download"):
        hub.read_json(tmp_path / "config.json")
    hub.write_weights(tmp_path / "w.safetensors", {"a": torch.ones(1000)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match=r"w.safetensors is damaged"):
        hub.read_weights(tmp_path / "w.safetensors")


def test_strict_load_names_missing_unexpected_and_misshaped_keys(tmp_path):
    model = torch.nn.Linear(3, 2)
    hub.write_weights(tmp_path / "m.safetensors", {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"missing keys \['bias'\], unexpected keys \['extra'\].*weight: \(2, 4\)"):
        hub.load_weights(model, tmp_path / "m.safetensors")
    hub.write_weights(tmp_path / "ok.safetensors", {"weight": torch.ones(2, 3), "bias": torch.ones(2)})
    assert torch.equal(hub.load_weights(model, tmp_path / "ok.safetensors").weight, torch.ones(2, 3))


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    hub.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), hub.atomic_write(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert (tmp_path / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with hub.atomic_folder(tmp_path / "release") as tmp:
        (tmp / "x").write_text("1")
    with hub.atomic_folder(tmp_path / "release") as tmp:  # replaces the previous folder whole
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "release"]


def test_sampling_settings_are_checked_everywhere_by_one_rule():
    s = SamplingSettings()
    assert s.replace(steps=8, guidance_scale=None).steps == 8 and s.replace(guidance_scale=None) == s
    for bad, msg in ((dict(steps=0), "steps=0: expected an integer"), (dict(guidance_scale=-1), "guidance_scale"),
                     (dict(solver="rk4"), "one of euler"), (dict(duration_s=0.0), "duration_s"),
                     (dict(chunk_s=1.0, overlap_s=0.9), "more than half"), (dict(steps="many"), "steps='many'")):
        with pytest.raises(ValueError, match=msg):
            SamplingSettings(**bad)
    with pytest.raises(ValueError, match="unknown key 'sampler'"):
        SamplingSettings.from_dict({"sampler": "euler"})
    assert SamplingSettings.from_dict({"steps": 4, "duration_s": None}).duration_s is None


def test_setting_flags_reject_bad_values_while_parsing(capsys):
    p = argparse.ArgumentParser()
    add_setting_flags(p, exclude=("chunk_s", "overlap_s"))
    args = p.parse_args(["--steps", "4", "--guidance-scale", "2.5", "--solver", "heun"])
    assert overrides_from_args(args) == {"steps": 4, "guidance_scale": 2.5, "solver": "heun"}
    for argv in (["--steps", "0"], ["--guidance-scale", "-1"], ["--duration-s", "abc"], ["--chunk-s", "1"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
    assert "expected an integer >= 1" in capsys.readouterr().err
