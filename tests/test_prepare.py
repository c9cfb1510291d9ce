"""Each recipe's prepare.py on a tiny fake public layout made in tmp_path."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from genflow.data import LatentCache, SpeechPairDataset, read_manifest

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def load_script(recipe: str):
    spec = importlib.util.spec_from_file_location(
        f"prepare_{recipe}", ROOT / "recipes" / recipe / "prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wav(path: Path, seconds: float = 0.6, freq: float = 300.0, silent: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, x.astype(np.float32), SR, format="FLAC" if path.suffix == ".flac" else "WAV")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def manifest_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tta_prepare_audiocaps_layout(tmp_path, capsys):
    audio = tmp_path / "audio"
    wav(audio / "YaaaaaaaaaaA_30.000_40.000.wav")  # AudioSet style name
    wav(audio / "sub" / "91.flac")  # named by audiocap_id, in a subfolder
    wav(audio / "cccccccccc_.wav")  # named by youtube_id (ids may end in "_" or hold "-")
    wav(audio / "dddddddddd-.wav", silent=True)
    (audio / "eeeeeeeeeee.wav").write_bytes(b"RIFF0000WAVEnot really audio")
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    train = write_csv(
        tmp_path / "train.csv",
        header,
        [
            [90, "aaaaaaaaaaA", 30, "a dog barks"],
            [91, "bbbbbbbbbbb", 0, "rain falls"],
            [92, "dddddddddd-", 0, "silence"],
            [93, "eeeeeeeeeee", 0, "broken file"],
            [94, "fffffffffff", 0, "never downloaded"],
        ],
    )
    test = write_csv(
        tmp_path / "test.csv",
        header,
        [
            [95, "cccccccccc_", 10, "a car passes"],
            [96, "cccccccccc_", 10, "a vehicle drives by"],
        ],
    )
    out = tmp_path / "out"
    load_script("tta").main(
        ["--train-csv", str(train), "--test-csv", str(test), "--audio-dir", str(audio), "--out-dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert "1 without an audio file" in printed and "corrupt: 1" in printed and "silent: 1" in printed
    rows = read_manifest(out / "train.jsonl")
    assert [r["caption"] for r in rows] == ["a dog barks", "rain falls"]
    assert all(Path(r["audio"]).is_file() for r in rows)
    assert not Path(manifest_rows(out / "train.jsonl")[0]["audio"]).is_absolute()
    test_rows = read_manifest(out / "test.jsonl")
    assert len(test_rows) == 2 and len({r["id"] for r in test_rows}) == 1  # two captions, one clip id
    assert not (out / "valid.jsonl").exists()


def test_tta_prepare_holds_out_by_video(tmp_path):
    audio = tmp_path / "audio"
    ids = [f"vid{i:08d}" for i in range(30)]
    for i, v in enumerate(ids):
        wav(audio / f"{v}.wav", freq=200 + 10 * i)
    train = write_csv(
        tmp_path / "all.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [[i, v, 0, f"clip {i}"] for i, v in enumerate(ids)],
    )
    out = tmp_path / "out"
    load_script("tta").main(
        [
            "--csv",
            str(train),
            "--audio-dir",
            str(audio),
            "--out-dir",
            str(out),
            "--valid-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
        ]
    )
    splits = {
        s: {r["youtube_id"] for r in manifest_rows(out / f"{s}.jsonl")} for s in ("train", "valid", "test")
    }
    assert sum(map(len, splits.values())) == 30 and all(splits.values())
    assert not (splits["train"] & splits["valid"]) and not (splits["train"] & splits["test"])


def test_ttm_prepare_musiccaps_layout(tmp_path, capsys):
    audio = tmp_path / "music"
    wav(audio / "[m0000000001] Some Title.wav")
    wav(audio / "m0000000002.flac")
    wav(audio / "m0000000003_30.wav")
    header = [
        "ytid",
        "start_s",
        "end_s",
        "audioset_positive_labels",
        "aspect_list",
        "caption",
        "author_id",
        "is_balanced_subset",
        "is_audioset_eval",
    ]
    csv_path = write_csv(
        tmp_path / "musiccaps-public.csv",
        header,
        [
            ["m0000000001", 0, 10, "/m/x", "['piano']", "solo piano, calm", 1, "False", "False"],
            ["m0000000002", 0, 10, "/m/x", "['rock']", "loud rock band", 2, "False", "True"],
            ["m0000000003", 30, 40, "/m/x", "['jazz']", "a jazz trio", 3, "True", "False"],
            ["m0000000004", 0, 10, "/m/x", "['folk']", "missing", 4, "True", "False"],
        ],
    )
    out = tmp_path / "out"
    load_script("ttm").main(
        ["--csv", str(csv_path), "--audio-dir", str(audio), "--out-dir", str(out), "--valid-fraction", "0"]
    )
    assert "1 without an audio file" in capsys.readouterr().out
    train, test = manifest_rows(out / "train.jsonl"), manifest_rows(out / "test.jsonl")
    assert sorted(r["caption"] for r in train) == ["a jazz trio", "solo piano, calm"]
    assert [r["caption"] for r in test] == ["loud rock band"]
    assert train[0]["aspect_list"].startswith("[")


def test_se_prepare_voicebank_layout_with_cache(tmp_path, capsys):
    root = tmp_path / "vb"
    for name in ("p226_001", "p226_002", "p230_001"):
        wav(root / "clean_trainset_28spk_wav" / f"{name}.wav", freq=250)
        wav(root / "noisy_trainset_28spk_wav" / f"{name}.wav", freq=260)
    wav(root / "clean_trainset_28spk_wav" / "p230_002.wav")  # no noisy partner
    wav(root / "clean_testset_wav" / "p232_001.wav")
    wav(root / "noisy_testset_wav" / "p232_001.wav", seconds=0.9)  # length mismatch
    wav(root / "clean_testset_wav" / "p232_002.wav")
    wav(root / "noisy_testset_wav" / "p232_002.wav")
    out = tmp_path / "out"
    load_script("se").main(
        [
            "--root",
            str(root),
            "--out-dir",
            str(out),
            "--valid-speakers",
            "p226",
            "--cache",
            "--codec",
            "mel",
            "--shard-size",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert "1 clean files without a noisy one" in printed and "length_mismatch: 1" in printed
    assert {r["id"] for r in manifest_rows(out / "train.jsonl")} == {"p230_001"}
    assert {r["id"] for r in manifest_rows(out / "valid.jsonl")} == {"p226_001", "p226_002"}
    assert {r["id"] for r in manifest_rows(out / "test.jsonl")} == {"p232_002"}
    cache = LatentCache(out / "cache" / "valid")
    assert cache.keys == ("clean", "noisy") and len(cache) == 2
    from genflow.codecs import load_codec

    hop = load_codec("mel").hop_length
    ds = SpeechPairDataset(
        read_manifest(out / "valid.jsonl"), cache=cache, codec_sample_rate=SR, hop_length=hop, max_frames=10
    )
    item = ds[0]
    assert item["clean"].shape == item["noisy"].shape and item["clean"].shape[0] == 10
    assert not np.allclose(item["clean"].numpy(), item["noisy"].numpy())


def test_se_prepare_clean_only_with_noise_manifest(tmp_path):
    for i in range(6):
        wav(tmp_path / "speech" / f"s{i}.wav", freq=200 + 20 * i)
    wav(tmp_path / "noise" / "fire.wav", seconds=1.0, freq=3000)
    wav(tmp_path / "noise" / "quiet.wav", silent=True)
    out = tmp_path / "out"
    load_script("se").main(
        [
            "--clean-dir",
            str(tmp_path / "speech"),
            "--noise-dir",
            str(tmp_path / "noise"),
            "--out-dir",
            str(out),
            "--valid-fraction",
            "0.3",
            "--test-fraction",
            "0",
        ]
    )
    noise = read_manifest(out / "noise.jsonl")
    assert [Path(r["audio"]).name for r in noise] == ["fire.wav"]  # the silent one is dropped
    rows = read_manifest(out / "train.jsonl") + read_manifest(out / "valid.jsonl")
    assert len(rows) == 6 and all("noisy" not in r for r in rows)
    ds = SpeechPairDataset(rows, noise_rows=noise, codec_sample_rate=SR, hop_length=320, max_frames=10)
    assert ds[0]["noisy"].shape == (3200,)
