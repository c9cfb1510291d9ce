"""Speech-enhancement pairs streamed from tar shards: the manifest path's pairs and loss, the recipe, resume."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch

from genflow.codecs import load_codec
from genflow.conditioning import BatchKeys, Conditioner
from genflow.data import SpeechPairDataset, collate, read_manifest, write_manifest
from genflow.data.stream import expand_shards, read_samples, write_shards
from genflow.data.stream_pairs import SpeechPairStream
from genflow.flow import flow_loss
from genflow.model import DiT

ROOT = Path(__file__).resolve().parents[1]
SE = ROOT / "data" / "demo" / "se"


def _shards(tmp_path: Path, keys: tuple[str, ...]) -> tuple[str, list[dict]]:
    """6 demo pairs (or their clean side) written as 3 tar shards, and the manifest rows they came from."""
    rows = read_manifest(SE / "test.jsonl", ("clean", "noisy"))[:6]
    if keys == ("clean",):
        rows = [{k: v for k, v in r.items() if k != "noisy"} for r in rows]
    manifest = tmp_path / "rows.jsonl"
    write_manifest(rows, manifest, keys)
    paths = write_shards(manifest, str(tmp_path / "shards" / "se-%03d.tar"), per_shard=2)
    assert len(paths) == 3
    return str(tmp_path / "shards" / "se-{000..002}.tar"), read_manifest(manifest, keys)


def _stream(spec: str, **kw) -> SpeechPairStream:
    return SpeechPairStream(expand_shards(spec), sample_rate=16000, hop_length=256, max_frames=40, batch_size=2,
                            shuffle=False, **kw)


def _same_as_manifest(first: dict, dataset: SpeechPairDataset) -> None:
    """The stream's first batch equals items 0 and 1 of the manifest dataset, and so does the loss."""
    items = sorted([dataset[0], dataset[1]], key=lambda it: -it["clean"].shape[0])
    manifest = collate(items)
    assert first["id"] == manifest["id"]
    assert torch.equal(first["clean"], manifest["clean"]) and torch.equal(first["noisy"], manifest["noisy"])
    assert torch.equal(first["lengths"], manifest["lengths"])
    assert not torch.equal(first["clean"], first["noisy"])  # a real noisy side, not a copy
    cond = Conditioner(load_codec("mel"), keys=BatchKeys(target="clean", aligned="noisy"))
    dim = cond.codec.latent_dim
    model = DiT.from_preset("tiny", latent_dim=dim, text_dim=0, aligned_dim=dim)
    losses = []
    for batch in (first, manifest):
        torch.manual_seed(0)
        losses.append(flow_loss(model, **cond(batch, torch.device("cpu"))))
    assert torch.equal(losses[0], losses[1])


def test_pair_shards_hold_both_files(tmp_path):
    spec, _ = _shards(tmp_path, ("clean", "noisy"))
    with tarfile.open(expand_shards(spec)[0]) as tar:
        names = tar.getnames()
    assert names == ["000000000.clean.flac", "000000000.noisy.flac", "000000000.json",
                     "000000001.clean.flac", "000000001.noisy.flac", "000000001.json"]


def test_streamed_pairs_give_the_manifest_pairs_and_loss(tmp_path):
    spec, rows = _shards(tmp_path, ("clean", "noisy"))
    dataset = SpeechPairDataset(rows, codec_sample_rate=16000, hop_length=256, max_frames=40)
    _same_as_manifest(next(iter(_stream(spec))), dataset)


def test_streamed_clean_speech_is_mixed_as_the_manifest_path_mixes_it(tmp_path):
    spec, rows = _shards(tmp_path, ("clean",))
    noise = read_manifest(SE / "noise_train.jsonl", ("audio",))[:3]
    dataset = SpeechPairDataset(rows, noise_rows=noise, snr_range=(0.0, 5.0), codec_sample_rate=16000,
                                hop_length=256, max_frames=40)
    _same_as_manifest(next(iter(_stream(spec, noise_rows=noise, snr_range=(0.0, 5.0)))), dataset)


def test_a_pair_sample_without_its_noisy_file_is_refused(tmp_path):
    """(The stream counts such a sample in the batch's num_skipped and reads on.)"""
    spec, _ = _shards(tmp_path, ("clean",))
    sample = next(read_samples(expand_shards(spec)[0]))[1]
    with pytest.raises(ValueError, match=r"has no \['noisy'\] audio"):
        _stream(spec)._item(sample, 0)


def _recipe():
    spec = importlib.util.spec_from_file_location("se_train", ROOT / "recipes" / "se" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("keys", [("clean", "noisy"), ("clean",)], ids=["pairs", "mixed"])
def test_se_recipe_trains_on_shards_and_resumes(tmp_path, keys):
    spec, _ = _shards(tmp_path, keys)
    module = _recipe()
    noise = "" if len(keys) == 2 else str(SE / "noise_train.jsonl")  # the tiny preset mixes the demo noise
    fast = ["--preset", "tiny", "--train.log_with", "none", "--train.sample_every", "0", "--data.noise", noise,
            "--out", str(tmp_path / "run"), "--data", spec]
    module.main(fast + ["--max-steps", "2"])
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "genflow_state.json").read_text())
    # [epoch, shard, next sample]: 2 batches of 2 read, the stream's 2nd shard read to its end
    assert state["stream"]["streams"]["0"] == [0, 1, 2]
    module.main(fast + ["--max-steps", "3", "--resume", "latest"])
    assert (tmp_path / "run" / "release" / "model.safetensors").exists()
