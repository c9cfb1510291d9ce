"""The three evaluate.py recipes end to end on tiny temporary folders with the offline backend."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genflow.metrics.frechet import load_stats

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "audio"


def _main(task: str):
    return runpy.run_path(str(ROOT / "recipes" / task / "evaluate.py"), run_name="evaluate")["main"]


def _tone(freq: float, seconds: float = 1.2, sr: int = 16000, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.normal(size=t.size)).astype(np.float32)


@pytest.mark.parametrize("task", ["tta", "ttm"])
def test_generation_evaluate_end_to_end(tmp_path, task, capsys):
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    (ref / "sub").mkdir(parents=True)
    (gen / "sub").mkdir(parents=True)
    for i, f in enumerate([220, 330, 440, 550]):
        sf.write(ref / "sub" / f"clip{i}.wav", _tone(f, seed=i), 16000)
    for i, f in enumerate([230, 340, 450]):  # clip3 is missing from the generated set
        sf.write(gen / "sub" / f"clip{i}.flac", _tone(f, seconds=1.0 + 0.5 * i, seed=10 + i), 22050 if i else 16000)
    (gen / "sub" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")  # unreadable: reported, not fatal
    out = tmp_path / "report" / "eval.json"
    stats = tmp_path / "ref_stats.npz"
    main = _main(task)
    main(["--allow-small-fd",
          "--generated", str(gen), "--reference", str(ref), "--out", str(out), "--save-reference-stats", str(stats)])
    result = json.loads(out.read_text())
    assert result["backend"] == "mel-stats" and result["metrics"]["fd"] > 0
    assert list(result["failures"]["generated"]) == ["sub/broken"]
    assert result["missing"] == ["sub/clip3"] and result["n_generated"] == 3
    assert (tmp_path / "report" / "eval_metrics.png").stat().st_size > 1000
    assert (tmp_path / "report" / "eval_best_worst.png").stat().st_size > 1000
    assert "| fd |" in capsys.readouterr().out.replace(" fd ", " fd ")
    # The cached reference statistics give the same FD and are refused by another backend.
    main(["--allow-small-fd",
          "--generated", str(gen), "--reference", str(stats), "--out", str(tmp_path / "again.json")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["metrics"]["fd"] == pytest.approx(result["metrics"]["fd"], rel=1e-9)
    assert load_stats(stats, "mel-stats").n == result["n_embeddings"]["reference"]
    with pytest.raises(FileNotFoundError, match="vggish-10086976.pth"):
        main(["--allow-small-fd",
          "--generated", str(gen), "--reference", str(stats), "--backend", "vggish"])


def test_generation_identical_sets_score_zero(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(3):
        sf.write(ref / f"{i}.wav", _tone(200 + 100 * i, seconds=3.0, seed=i), 16000)
    result = _main("tta")(["--allow-small-fd",
                            "--generated", str(ref), "--reference", str(ref), "--out", str(tmp_path / "e.json")])
    assert result["metrics"]["fd"] == pytest.approx(0.0, abs=1e-6)


def test_se_evaluate_end_to_end(tmp_path, capsys):
    speech, sr = sf.read(FIXTURES / "speech.wav", dtype="float32")
    noise, _ = sf.read(FIXTURES / "noise.wav", dtype="float32")
    n = min(len(speech), len(noise))
    speech, noise = speech[:n], noise[:n] * (np.linalg.norm(speech[:n]) / np.linalg.norm(noise[:n]))
    dirs = {k: tmp_path / k for k in ("clean", "noisy", "enhanced")}
    for d in dirs.values():
        d.mkdir()
    for name, gain in (("a", 1.0), ("b", 0.5)):
        sf.write(dirs["clean"] / f"{name}.wav", gain * speech, sr)
        sf.write(dirs["noisy"] / f"{name}.wav", gain * (speech + 0.5 * noise), sr)
    sf.write(dirs["enhanced"] / "a.wav", speech + 0.05 * noise, sr)
    sf.write(dirs["clean"] / "c.wav", speech, sr)
    (dirs["enhanced"] / "c.wav").write_bytes(b"not audio at all")  # b is missing, c is unreadable
    out = tmp_path / "se.json"
    _main("se")(["--enhanced", str(dirs["enhanced"]), "--clean", str(dirs["clean"]), "--noisy", str(dirs["noisy"]),
                 "--out", str(out), "--no-dnsmos"])
    result = json.loads(out.read_text())
    assert result["missing"] == ["b"] and list(result["failures"]) == ["c"] and result["n_scored"] == 1
    enh, noisy = result["metrics"]["enhanced"], result["metrics"]["noisy"]
    assert enh["pesq_wb"] > noisy["pesq_wb"] and enh["si_sdr"] > noisy["si_sdr"] + 10 and enh["stoi"] > noisy["stoi"]
    assert (tmp_path / "se_metrics.png").is_file() and (tmp_path / "se_best_worst.png").is_file()
    assert "| enhanced |" in capsys.readouterr().out
