"""Data pipeline: manifests, validation, datasets, SNR mixing, latent cache, collate, bucket sampler."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from genflow.codecs.base import Codec
from genflow.data import (
    LatentCache,
    LengthBucketSampler,
    SkipBatches,
    SpeechPairDataset,
    TextAudioDataset,
    active_power,
    build_latent_cache,
    collate,
    mix_at_snr,
    read_manifest,
    validate_manifest,
    write_manifest,
)

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, SR, subtype=subtype)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def mel():
    from genflow.codecs import load_codec

    return load_codec("mel").freeze()


# ---------------------------------------------------------------- manifests and validation


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    write_wav(tmp_path / "data" / "clips" / "a.wav", tone(0.5))
    manifest = write_jsonl(
        tmp_path / "data" / "train.jsonl", [{"audio": "clips/a.wav", "caption": "a tone", "source": "x"}]
    )
    (row,) = read_manifest(manifest)
    assert Path(row["audio"]) == (tmp_path / "data" / "clips" / "a.wav").resolve()
    assert row["id"] == "clips/a.wav" and row["source"] == "x"  # extra keys kept
    # Written elsewhere, paths are rewritten relative to the new manifest and read back the same.
    out = tmp_path / "other" / "m.jsonl"
    write_manifest([row], out)
    assert json.loads(out.read_text())["audio"] == "../data/clips/a.wav"
    assert read_manifest(out)[0]["audio"] == row["audio"]


def test_manifest_errors_name_the_line(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio": "a.wav"}\n{"caption": "no audio"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_manifest(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")


def test_validation_catches_each_bad_kind(tmp_path):
    write_wav(tmp_path / "good.wav", tone(0.5))
    write_wav(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    write_wav(tmp_path / "short.wav", tone(0.05))
    nan = tone(0.5)
    nan[100] = np.nan
    write_wav(tmp_path / "nan.wav", nan, subtype="FLOAT")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    names = ["good", "missing", "corrupt", "silent", "short", "nan"]
    rows = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"audio": f"{n}.wav", "caption": n} for n in names]))
    good, report = validate_manifest(rows, ("audio",), min_duration=0.1)
    assert [r["caption"] for r in good] == ["good"]
    assert good[0]["duration"] == pytest.approx(0.5)
    assert report.counts == {"missing": 1, "corrupt": 1, "silent": 1, "too_short": 1, "nonfinite": 1}
    assert {b["reason"] for b in report.bad if b["id"] == "nan.wav"} == {"nonfinite"}
    assert "kept 1/6" in report.summary()


def test_validation_of_pairs_checks_both_files(tmp_path):
    write_wav(tmp_path / "c.wav", tone(0.5))
    write_wav(tmp_path / "n.wav", tone(0.5, seed=1))
    write_wav(tmp_path / "n_long.wav", tone(0.7))
    rows = read_manifest(
        write_jsonl(
            tmp_path / "m.jsonl",
            [
                {"clean": "c.wav", "noisy": "n.wav"},
                {"clean": "c.wav", "noisy": "gone.wav", "id": "b"},
                {"clean": "c.wav", "noisy": "n_long.wav", "id": "c"},
            ],
        )
    )
    good, report = validate_manifest(rows, ("clean", "noisy"))
    assert len(good) == 1 and report.counts == {"missing": 1, "length_mismatch": 1}


# ---------------------------------------------------------------- datasets


def test_dataset_skips_a_file_that_went_bad_after_validation(tmp_path):
    rows = [
        {
            "audio": str(write_wav(tmp_path / f"{i}.wav", tone(0.3 + 0.1 * i))),
            "id": str(i),
            "caption": f"c{i}",
        }
        for i in range(4)
    ]
    good, _ = validate_manifest(rows)
    (tmp_path / "2.wav").write_bytes(b"garbage")  # breaks after validation
    ds = TextAudioDataset(good, codec_sample_rate=SR, hop_length=320, max_frames=1000)
    items = [ds[i] for i in range(len(ds))]
    assert ds.num_bad == 1
    assert "2" not in {it["id"] for it in items} and len(items) == 4
    batch = collate(items)
    assert batch["audio"].shape[0] == 4 and torch.isfinite(batch["audio"]).all()


def test_audio_crops_are_hop_aligned_and_reproducible(tmp_path):
    rows = [{"audio": str(write_wav(tmp_path / "a.wav", tone(2.0))), "id": "a", "caption": "x", "duration": 2.0}]
    ds = TextAudioDataset(rows, codec_sample_rate=SR, hop_length=320, max_frames=10, seed=3)
    full = torch.from_numpy(sf.read(tmp_path / "a.wav", dtype="float32")[0])
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        a, b = ds[0]["audio"], ds[0]["audio"]
        assert torch.equal(a, b) and a.shape == (3200,)
        start = next(s for s in range(0, full.shape[0], 320) if torch.equal(full[s : s + 3200], a))
        starts.add(start)
    assert len(starts) > 1  # crops move between epochs
    assert ds.lengths == [10]


def test_snr_mixing_hits_the_requested_snr():
    clean = torch.from_numpy(sf.read(FIXTURES / "speech.wav", dtype="float32")[0])
    noise = torch.from_numpy(sf.read(FIXTURES / "noise.wav", dtype="float32")[0])
    noise = noise.repeat(2)[: clean.shape[0]]
    for snr in (-5.0, 0.0, 7.5, 20.0):
        noisy = mix_at_snr(clean, noise, snr)
        measured = 10 * math.log10(float(active_power(clean) / (noisy - clean).pow(2).mean()))
        assert abs(measured - snr) < 0.1
    # Speech with long pauses: the active power ignores the pauses, the plain mean would not.
    paused = torch.cat([clean, torch.zeros(3 * clean.shape[0])])
    assert active_power(paused) > 2 * paused.pow(2).mean()
    silent = mix_at_snr(clean, torch.zeros_like(clean), 5.0)
    assert torch.isfinite(silent).all() and torch.equal(silent, clean)
    both = mix_at_snr(torch.zeros(1000), torch.zeros(1000), 0.0)
    assert torch.isfinite(both).all()


def test_speech_mixing_dataset_matches_clean_and_survives_silent_noise(tmp_path):
    speech = sf.read(FIXTURES / "speech.wav", dtype="float32")[0]
    rows = [{"clean": str(write_wav(tmp_path / "s.wav", speech)), "id": "s"}]
    noise_rows = [{"audio": str(write_wav(tmp_path / "silence.wav", np.zeros(4000, np.float32)))}]
    ds = SpeechPairDataset(
        rows, noise_rows=noise_rows, snr_range=(0, 5), codec_sample_rate=SR, hop_length=320, max_frames=50
    )
    item = ds[0]
    assert item["clean"].shape == item["noisy"].shape == (16000,)
    assert torch.isfinite(item["noisy"]).all() and torch.equal(item["clean"], item["noisy"])

    noise_rows = [{"audio": str(write_wav(tmp_path / "noise.wav", tone(0.3, freq=3000)))}]  # shorter: looped
    ds = SpeechPairDataset(
        rows, noise_rows=noise_rows, snr_range=(10, 10), codec_sample_rate=SR, hop_length=320, max_frames=50
    )
    item = ds[0]
    measured = 10 * math.log10(float(active_power(item["clean"]) / (item["noisy"] - item["clean"]).pow(2).mean()))
    assert abs(measured - 10) < 0.1


def test_speech_pairs_are_cropped_to_the_same_region(tmp_path):
    clean = tone(1.0, seed=1)
    rows = [
        {
            "clean": str(write_wav(tmp_path / "c.wav", clean)),
            "noisy": str(write_wav(tmp_path / "n.wav", clean * 0.5)),
            "id": "p",
        }
    ]
    ds = SpeechPairDataset(rows, codec_sample_rate=SR, hop_length=320, max_frames=5, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        torch.testing.assert_close(item["noisy"], item["clean"] * 0.5, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- latent cache


def _clip_rows(tmp_path, n=5):
    return [
        {
            "audio": str(write_wav(tmp_path / "clips" / f"{i}.wav", tone(0.25 + 0.1 * i, 200 + 50 * i))),
            "id": f"c{i}",
        }
        for i in range(n)
    ]


def test_cache_equals_direct_encode(tmp_path, mel):
    rows = _clip_rows(tmp_path)
    stats = build_latent_cache(rows, mel, tmp_path / "cache", fp16=False, shard_size=2, batch_size=3)
    assert stats == {"shards": 3, "written": 3, "skipped": 0, "failed": []}
    cache = LatentCache(tmp_path / "cache", codec=mel)
    assert len(cache) == 5 and "c3" in cache
    for row in rows:
        wav = torch.from_numpy(sf.read(row["audio"], dtype="float32")[0])
        with torch.no_grad():
            direct = mel.encode(wav[None])[0]  # (T, C), encoded alone: no padding
        got = cache[row["id"]]
        assert got.dtype == torch.float32 and cache.num_frames(row["id"]) == got.shape[0]
        torch.testing.assert_close(got, direct, atol=1e-4, rtol=1e-4)
    frames = torch.cat([cache[i] for i in cache.ids]).double()  # (sum T, C)
    mean, std = frames.mean(0), frames.std(0)
    assert mean.shape == std.shape == (mel.latent_dim,) and (std > 0).all()


def test_cache_fp16_option(tmp_path, mel):
    rows = _clip_rows(tmp_path, 2)
    build_latent_cache(rows, mel, tmp_path / "c16", fp16=True)
    build_latent_cache(rows, mel, tmp_path / "c32", fp16=False)
    with safe_open(tmp_path / "c16" / "shard-00000.safetensors", framework="pt") as f:
        assert f.get_tensor("audio:c0").dtype == torch.float16
    a, b = LatentCache(tmp_path / "c16")["c1"], LatentCache(tmp_path / "c32")["c1"]
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
    assert (tmp_path / "c16" / "shard-00000.safetensors").stat().st_size < (
        tmp_path / "c32" / "shard-00000.safetensors"
    ).stat().st_size * 0.6


class _CrashAfter(Codec):
    """A codec that dies after ``n`` encode calls (an interrupted build)."""

    def __init__(self, codec, n):
        super().__init__()
        self.codec, self.n = codec, n
        for k in ("sample_rate", "frame_rate", "latent_dim"):
            setattr(self, k, getattr(codec, k))

    def num_frames(self, n):
        return self.codec.num_frames(n)

    def encode(self, audio, attention_mask=None):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return self.codec.encode(audio, attention_mask)


def test_cache_resumes_after_interruption(tmp_path, mel, monkeypatch):
    import genflow.data.cache as cache_mod

    rows = _clip_rows(tmp_path)
    crashing = _CrashAfter(mel, n=2)
    # The crashing wrapper must look like the real codec so the resumed build accepts the folder.
    real = cache_mod.codec_signature
    monkeypatch.setattr(cache_mod, "codec_signature", lambda c: real(getattr(c, "codec", c)))
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(rows, crashing, tmp_path / "cache", shard_size=2, batch_size=2)
    shards = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("shard-"))
    assert shards == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (tmp_path / "cache" / "index.json").exists()
    stats = build_latent_cache(rows, mel, tmp_path / "cache", shard_size=2, batch_size=2)
    assert stats["skipped"] == 2 and stats["written"] == 1
    # A shard removed later is rebuilt, the others are skipped.
    (tmp_path / "cache" / "shard-00001.safetensors").unlink()
    stats = build_latent_cache(rows, mel, tmp_path / "cache", shard_size=2, batch_size=2)
    assert (stats["skipped"], stats["written"]) == (2, 1)
    assert len(LatentCache(tmp_path / "cache")) == 5


def test_cache_refuses_another_codec(tmp_path, mel):
    from genflow.codecs import load_codec

    rows = _clip_rows(tmp_path, 2)
    build_latent_cache(rows, mel, tmp_path / "cache")
    other = load_codec("mel")
    other.sample_rate = 22050  # same class, different settings: latents are not interchangeable
    with pytest.raises(ValueError, match="was built with codec"):
        build_latent_cache(rows, other, tmp_path / "cache")
    with pytest.raises(ValueError, match="rebuild the cache"):
        LatentCache(tmp_path / "cache", codec=other)
    with pytest.raises(ValueError, match="was built with dtype"):
        build_latent_cache(rows, mel, tmp_path / "cache", fp16=False)


def test_codec_signature_ignores_weight_dtype_but_not_other_weights():
    from genflow.data.cache import codec_signature, same_codec

    class LinearCodec(torch.nn.Module):
        sample_rate, frame_rate, latent_dim = 16000, 50.0, 8

        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.proj = torch.nn.Linear(320, 8)

    a, b = LinearCodec(0), LinearCodec(1)
    sig = codec_signature(a)
    assert same_codec(sig, codec_signature(LinearCodec(0).to(torch.bfloat16)))  # bf16 on GPU, fp32 on CPU
    assert not same_codec(sig, codec_signature(b))  # another checkpoint of the same architecture
    assert json.loads(json.dumps(sig)) == sig  # stored in index.json as is


def test_cache_skips_unreadable_clips_and_dataset_reads_latents(tmp_path, mel):
    rows = _clip_rows(tmp_path, 3)
    rows.append({"audio": str(tmp_path / "missing.wav"), "id": "gone"})
    for r in rows:
        r["caption"] = f"caption {r['id']}"
    stats = build_latent_cache(rows, mel, tmp_path / "cache")
    assert stats["failed"] == ["gone"]
    cache = LatentCache(tmp_path / "cache")
    assert "gone" not in cache and cache.index["failed"] == ["gone"]
    ds = TextAudioDataset(
        rows, cache=cache, codec_sample_rate=mel.sample_rate, hop_length=mel.hop_length, max_frames=8, seed=0
    )
    assert len(ds) == 3  # the failed clip's row is dropped
    batch = collate([ds[i] for i in range(3)])
    assert batch["audio"].shape[0] == 3 and batch["audio"].shape[2] == mel.latent_dim
    assert batch["lengths"].tolist() == [min(8, cache.num_frames(f"c{i}")) for i in range(3)]
    assert batch["caption"] == ["caption c0", "caption c1", "caption c2"]


# ---------------------------------------------------------------- collate and sampler


def test_collate_pads_and_counts_lengths():
    items = [{"id": "a", "latent": torch.ones(3, 4)}, None, {"id": "b", "latent": torch.ones(5, 4)}]
    batch = collate(items)
    assert batch["lengths"].tolist() == [3, 5]
    assert batch["latent"][0, 3:].abs().sum() == 0 and batch["num_skipped"] == 1 and batch["id"] == ["a", "b"]
    audio = collate(
        [
            {"clean": torch.ones(640), "noisy": torch.ones(640)},
            {"clean": torch.ones(700), "noisy": torch.ones(700)},
        ],
    )
    assert audio["lengths"].tolist() == [640, 700]
    assert audio["noisy"].shape == (2, 700) and audio["noisy"][0, 640:].abs().sum() == 0


def _epoch(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_bucket_sampler_covers_every_index_once_and_is_deterministic():
    lengths = np.random.default_rng(0).integers(10, 500, size=103).tolist()
    s = LengthBucketSampler(lengths, 8, seed=1, bucket_batches=4)
    e0, e1 = _epoch(s, 0), _epoch(s, 1)
    for e in (e0, e1):
        assert sorted(i for b in e for i in b) == list(range(103))
    assert e0 != e1 and len(e0) == len(s) == 13
    assert _epoch(LengthBucketSampler(lengths, 8, seed=1, bucket_batches=4)) == e0
    assert _epoch(LengthBucketSampler(lengths, 8, seed=2, bucket_batches=4)) != e0
    # Bucketing: padding inside batches is far below that of random batches.
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in e0])
    assert spread < 0.5 * np.mean([np.ptp(lengths[i : i + 8]) for i in range(0, 96, 8)])


def test_skip_batches_continues_the_same_order():
    lengths = list(range(50))
    ref = LengthBucketSampler(lengths, 4, seed=7)
    full = _epoch(ref, 0) + _epoch(ref, 1)
    s = LengthBucketSampler(lengths, 4, seed=7)
    s.set_epoch(0)
    seen = list(SkipBatches(s, 0))[:5]
    resumed = LengthBucketSampler(lengths, 4, seed=7)
    resumed.set_epoch(0)
    rest = [list(b) for b in SkipBatches(resumed, 5)]
    assert len(SkipBatches(resumed, 5)) == 8
    assert seen + rest == full[:13] and _epoch(resumed, 1) == full[13:]
    assert _epoch(LengthBucketSampler(lengths, 4, seed=8), 0) != full[:13]  # another seed, another order


def test_bucket_sampler_ddp_shards_are_disjoint_and_equal():
    lengths = list(range(50))  # 13 batches of <= 4: 4 per rank, one batch left out this epoch
    shards = [_epoch(LengthBucketSampler(lengths, 4, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat)) >= 50 - 4


def test_bucket_sampler_under_accelerate_prepare():
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    lengths = list(range(40))

    def loader(process_index, num_processes):
        sampler = LengthBucketSampler(lengths, 4, seed=0)
        dl = DataLoader(list(range(40)), batch_sampler=sampler)
        return sampler, prepare_data_loader(
            dl, num_processes=num_processes, process_index=process_index, put_on_device=False
        )

    # Two processes: the same global order dealt round-robin, every index exactly once.
    parts = [[b.tolist() for b in loader(r, 2)[1]] for r in range(2)]
    flat = sorted(i for p in parts for b in p for i in b)
    assert flat == list(range(40))
    # One process: resume mid-epoch through SkipBatches, as the loop does; then the next epoch.
    ref = [b.tolist() for b in loader(0, 1)[1]]
    sampler = LengthBucketSampler(lengths, 4, seed=0)
    dl = prepare_data_loader(DataLoader(list(range(40)), batch_sampler=SkipBatches(sampler, 6)), num_processes=1,
                             process_index=0, put_on_device=False)
    assert [b.tolist() for b in dl] == ref[6:]
    sampler.set_epoch(1)
    assert [b.tolist() for b in dl] != ref[6:]  # the next pass is the next epoch
