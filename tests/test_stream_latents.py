"""A latent cache written as tar shards and streamed: the cache folder's batches and loss, URLs, codec check."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch

from genflow.codecs import load_codec
from genflow.conditioning import BatchKeys, Conditioner
from genflow.data import (
    LatentCache,
    TextAudioDataset,
    build_latent_cache,
    codec_signature,
    collate,
    read_manifest,
    write_manifest,
)
from genflow.data.latent_shards import LatentShardStream, write_latent_shards
from genflow.data.stream import expand_shards
from genflow.flow import flow_loss
from genflow.model import DiT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def latents(tmp_path) -> tuple[Path, Path, list[dict]]:
    """A mel latent cache of 6 demo clips (fp16), its manifest, and the rows."""
    rows = read_manifest(ROOT / "data" / "demo" / "tta" / "train.jsonl", ("audio",))[:6]
    manifest = tmp_path / "rows.jsonl"
    write_manifest(rows, manifest, ("audio",))
    build_latent_cache(rows, load_codec("mel"), tmp_path / "cache", shard_size=4, num_workers=1)
    return tmp_path / "cache", manifest, rows


def _stream(spec: str, codec=None, **kw) -> LatentShardStream:
    codec = codec or load_codec("mel")
    return LatentShardStream(expand_shards(spec), keys=("audio",), codec=codec_signature(codec),
                             caption_key="caption", sample_rate=16000, hop_length=codec.hop_length, max_frames=40,
                             batch_size=2, **kw)


def test_latent_shards_hold_safetensors_and_a_codec_header(latents, tmp_path):
    cache, manifest, _ = latents
    paths = write_latent_shards(cache, manifest, str(tmp_path / "lat" / "l-%02d.tar"), per_shard=2)
    assert [Path(p).name for p in paths] == ["l-00.tar", "l-01.tar", "l-02.tar"]
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
        header = json.loads(tar.extractfile("__cache__.json").read())
    assert names == ["__cache__.json", "000000000.latents.safetensors", "000000000.json",
                     "000000001.latents.safetensors", "000000001.json"]
    assert header["keys"] == ["audio"] and header["dtype"] == "float16"


@pytest.mark.parametrize("url", [False, True], ids=["path", "file-url"])
def test_streamed_latents_give_the_cache_folder_batches_and_loss(latents, tmp_path, url):
    cache, manifest, rows = latents
    write_latent_shards(cache, manifest, str(tmp_path / "lat" / "l-%02d.tar"), per_shard=2)
    spec = ("file://" if url else "") + str(tmp_path / "lat" / "l-{00..02}.tar")
    first = next(iter(_stream(spec, shuffle=False)))
    codec = load_codec("mel")
    dataset = TextAudioDataset(rows, cache=LatentCache(cache, codec=codec), codec_sample_rate=16000,
                               hop_length=codec.hop_length, max_frames=40)
    manifest_batch = collate(sorted([dataset[0], dataset[1]], key=lambda it: -it["audio"].shape[0]))
    assert first["caption"] == manifest_batch["caption"] and first["id"] == manifest_batch["id"]
    assert first["audio"].dtype == torch.float32 and torch.equal(first["audio"], manifest_batch["audio"])
    assert torch.equal(first["lengths"], manifest_batch["lengths"])  # frames
    cond = Conditioner(codec, keys=BatchKeys(target="audio", cached=True))
    model = DiT.from_preset("tiny", latent_dim=codec.latent_dim, text_dim=0, aligned_dim=0)
    losses = []
    for batch in (first, manifest_batch):
        torch.manual_seed(0)
        losses.append(flow_loss(model, **cond(batch, torch.device("cpu"))))
    assert torch.equal(losses[0], losses[1])


def test_latent_shards_of_another_codec_are_refused(latents, tmp_path):
    cache, manifest, _ = latents
    write_latent_shards(cache, manifest, str(tmp_path / "lat" / "l-%02d.tar"), per_shard=2)
    other = load_codec("mel:n_mels=128,frame_rate=50")
    with pytest.raises(RuntimeError, match="not of this run's codec"):
        next(iter(_stream(str(tmp_path / "lat" / "l-{00..02}.tar"), codec=other)))


def test_tta_recipe_trains_on_latent_shards_and_resumes(latents, tmp_path):
    cache, manifest, _ = latents
    spec = importlib.util.spec_from_file_location("tta_train", ROOT / "recipes" / "tta" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_latent_shards(cache, manifest, str(tmp_path / "lat" / "l-%02d.tar"), per_shard=2)
    fast = ["--preset", "tiny", "--train.log_with", "none", "--train.sample_every", "0",
            "--out", str(tmp_path / "run"), "--data.cache", str(tmp_path / "lat" / "l-{00..02}.tar")]
    module.main(fast + ["--max-steps", "2"])
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "genflow_state.json").read_text())
    assert state["stream"]["streams"]["0"] == [0, 1, 3]  # shard 2 of the stream read to its end (header + 2)
    module.main(fast + ["--max-steps", "3", "--resume", "latest"])
    assert (tmp_path / "run" / "release" / "model.safetensors").exists()
    assert not (tmp_path / "run" / "latents").exists()  # nothing encoded: no cache folder built


def test_latent_shards_go_through_pipes(latents, tmp_path):
    """pipe:CMD writes into CMD's stdin and reads its stdout (how shards reach s3 & co. without webdataset)."""
    cache, manifest, _ = latents
    (tmp_path / "lat").mkdir()
    write_latent_shards(cache, manifest, f"pipe:cat > {tmp_path}/lat/l-%02d.tar", per_shard=2)
    by_pipe = next(iter(_stream(f"pipe:cat {tmp_path}/lat/l-{{00..02}}.tar", shuffle=False)))
    write_latent_shards(cache, manifest, str(tmp_path / "direct" / "l-%02d.tar"), per_shard=2)
    direct = next(iter(_stream(str(tmp_path / "direct" / "l-{00..02}.tar"), shuffle=False)))
    assert by_pipe["id"] == direct["id"] and torch.equal(by_pipe["audio"], direct["audio"])
    with pytest.raises(OSError, match="exited with status"):
        write_latent_shards(cache, manifest, f"pipe:cat > {tmp_path}/no/such/dir/l-%02d.tar", per_shard=2)


def test_speech_pair_latents_stream_as_the_pair_cache_reads(tmp_path):
    from genflow.data import SpeechPairDataset

    rows = read_manifest(ROOT / "data" / "demo" / "se" / "test.jsonl", ("clean", "noisy"))[:4]
    manifest = tmp_path / "pairs.jsonl"
    write_manifest(rows, manifest, ("clean", "noisy"))
    codec = load_codec("mel")
    build_latent_cache(rows, codec, tmp_path / "cache", keys=("clean", "noisy"), num_workers=1)
    write_latent_shards(tmp_path / "cache", manifest, str(tmp_path / "lat" / "p-%02d.tar"), per_shard=2)
    stream = LatentShardStream(expand_shards(str(tmp_path / "lat" / "p-{00..01}.tar")), keys=("clean", "noisy"),
                               codec=codec_signature(codec), sample_rate=16000, hop_length=codec.hop_length,
                               max_frames=40, batch_size=2, shuffle=False)
    first = next(iter(stream))
    dataset = SpeechPairDataset(rows, cache=LatentCache(tmp_path / "cache", codec=codec), codec_sample_rate=16000,
                                hop_length=codec.hop_length, max_frames=40)
    expected = collate(sorted([dataset[0], dataset[1]], key=lambda it: -it["clean"].shape[0]))
    assert first["id"] == expected["id"] and "caption" not in first
    assert torch.equal(first["clean"], expected["clean"]) and torch.equal(first["noisy"], expected["noisy"])
