"""The committed demo dataset (data/demo) and audio fixtures are well-formed, real and leak-free."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
FIXTURES = ROOT / "tests" / "fixtures" / "audio"

# manifest -> (required keys, keys that hold audio paths relative to the manifest)
TTA_KEYS = {"id", "audio", "caption", "label", "duration"}
TTM_KEYS = {"id", "audio", "caption", "instrument", "tempo", "key", "meter", "title"}
MANIFESTS = {
    "tta/train.jsonl": (TTA_KEYS, ("audio",)),
    "tta/test.jsonl": (TTA_KEYS, ("audio",)),
    "ttm/train.jsonl": (TTM_KEYS, ("audio",)),
    "ttm/test.jsonl": (TTM_KEYS, ("audio",)),
    "se/train.jsonl": ({"id", "clean", "transcript", "speaker", "source"}, ("clean",)),
    "se/noise_train.jsonl": ({"audio", "source"}, ("audio",)),
    "se/test.jsonl": ({"id", "clean", "noisy", "snr_db", "transcript", "noise_source", "speaker"},
                      ("clean", "noisy")),
}


def rows(manifest: str) -> list[dict]:
    with open(DEMO / manifest) as f:
        return [json.loads(line) for line in f]


def check_audio(path: Path) -> np.ndarray:
    """Assert a real-looking 16 kHz mono 16-bit clip and return its samples."""
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), (path, info)
    x, _ = sf.read(path, dtype="float32")
    assert len(x) >= 0.2 * 16000, path
    assert np.isfinite(x).all(), path
    assert np.abs(x).max() > 1e-2 and np.sqrt(np.mean(x**2)) > 1e-4, f"{path} is (near) silent"
    return x


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_manifest_rows_point_to_valid_audio(manifest):
    keys, audio_keys = MANIFESTS[manifest]
    data = rows(manifest)
    assert len(data) >= 5
    for row in data:
        assert keys <= row.keys(), (manifest, row)
        for k in audio_keys:
            assert not Path(row[k]).is_absolute()
            check_audio((DEMO / manifest).parent / row[k])
        for k in ("caption", "transcript"):
            if k in row:
                assert isinstance(row[k], str) and row[k].strip(), (manifest, row)
    ids = [r["id"] if "id" in r else r["audio"] for r in data]
    assert len(ids) == len(set(ids)), f"duplicate ids in {manifest}"


@pytest.mark.parametrize("task", ["tta", "ttm", "se"])
def test_train_and_test_ids_are_disjoint(task):
    train, test = rows(f"{task}/train.jsonl"), rows(f"{task}/test.jsonl")
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in test)
    audio = "clean" if task == "se" else "audio"
    assert {r[audio] for r in train}.isdisjoint(r[audio] for r in test)


def test_tta_test_labels_are_seen_in_training():
    train_labels = {r["label"] for r in rows("tta/train.jsonl")}
    assert {r["label"] for r in rows("tta/test.jsonl")} <= train_labels
    assert len(train_labels) >= 10


def test_ttm_captions_state_the_row_attributes():
    for r in rows("ttm/train.jsonl") + rows("ttm/test.jsonl"):
        for value in (r["instrument"], r["key"], r["meter"], f"{r['tempo']} bpm"):
            assert value in r["caption"], (value, r["caption"])
        assert 40 <= r["tempo"] <= 200


def test_se_test_uses_unseen_prompts_and_noises():
    train, test = rows("se/train.jsonl"), rows("se/test.jsonl")
    allison = "asterisk/allison"
    assert {r["transcript"] for r in train if r["speaker"] == allison}.isdisjoint(
        r["transcript"] for r in test if r["speaker"] == allison)
    train_noises = {r["source"] for r in rows("se/noise_train.jsonl")}
    assert train_noises.isdisjoint(r["noise_source"] for r in test)


def test_se_has_many_voices_and_holds_out_speakers():
    train, test = rows("se/train.jsonl"), rows("se/test.jsonl")
    train_speakers = {r["speaker"] for r in train}
    held_out = {r["speaker"] for r in test} - {"asterisk/allison"}
    assert len(train_speakers) >= 20, sorted(train_speakers)
    assert len(held_out) >= 3 and held_out.isdisjoint(train_speakers), held_out
    assert sum(r["speaker"] in held_out for r in test) >= 20
    noise_sources = {r["source"] for r in rows("se/noise_train.jsonl")}
    assert {"synthetic:hum50", "synthetic:pink"} <= noise_sources


def test_se_never_uses_the_sources_kept_for_an_outside_check():
    # pocketsphinx-testdata and alsa-utils' sound files are reserved for an outside check.
    for manifest in ("se/train.jsonl", "se/noise_train.jsonl", "se/test.jsonl"):
        for r in rows(manifest):
            text = json.dumps(r).lower()
            assert "pocketsphinx" not in text and "alsa" not in text, (manifest, r)


def test_se_test_mixtures_have_their_stated_snr():
    for r in rows("se/test.jsonl"):
        assert -5.0 <= r["snr_db"] <= 20.0
        clean, _ = sf.read(DEMO / "se" / r["clean"], dtype="float64")
        noisy, _ = sf.read(DEMO / "se" / r["noisy"], dtype="float64")
        assert clean.shape == noisy.shape
        snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert abs(snr - r["snr_db"]) < 0.3, (r["id"], snr, r["snr_db"])  # 16-bit rounding only


def test_demo_dataset_fits_the_size_budget():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= 40_000_000, f"data/demo holds {total:,} bytes (budget 40 MB)"
    licence = (DEMO / "LICENSE.md").read_text()
    assert licence.count("Licence") >= 8
    for source in ("klettres-data", "ktuberling-data", "espeak-ng", "Synthetic noises"):
        assert source in licence, source


@pytest.mark.parametrize("name", ["speech.wav", "noise.wav"])
def test_fixtures_are_three_seconds_of_16k_mono(name):
    x = check_audio(FIXTURES / name)
    assert 2.5 <= len(x) / 16000 <= 4.0
