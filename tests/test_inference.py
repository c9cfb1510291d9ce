"""Inference: genflow.load, recipes/{tta,ttm}/sample.py and recipes/se/enhance.py run on tiny 1-step releases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import genflow
from genflow.cli.sample import main as sample_main
from genflow.cli.sample import plan_outputs, read_prompts_file
from genflow.codecs import load_codec
from genflow.codecs.base import Codec
from genflow.conditioning import Conditioner
from genflow.flow import Source
from genflow.pipeline import Generator
from genflow.plots import log_mel_db
from genflow.sampling import SamplingSettings

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "fixtures" / "audio" / "speech.wav"


def load_audio_fixture() -> torch.Tensor:
    return torch.from_numpy(sf.read(SPEECH, dtype="float32")[0])


def script(path: str):
    """Import a recipe script as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_" + Path(path).parent.name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- sampling


def test_sample_cli_is_deterministic_and_writes_sidecars_and_grid(releases, tmp_path):
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"id": "dog/1", "caption": "a dog barks"}) + "\n"
                     + json.dumps({"id": "rain", "prompt": "rain on a roof"}) + "\n")
    txt = tmp_path / "prompts.txt"
    txt.write_text("# a comment\na dog barks\n\nrain on a roof\n")
    common = ["--checkpoint", str(releases["tta"]), "--duration-s", "0.5", "--steps", "2", "--guidance-scale", "2.0"]
    a = sample_main(common + ["--prompts-file", str(jsonl), "--num-seeds", "2", "--out", str(tmp_path / "a")])
    b = sample_main(common + ["--prompts-file", str(txt), "--seed", "0", "--seed", "1", "--out", str(tmp_path / "b")])
    assert [p.name for p in a] == ["dog-1_s0.wav", "dog-1_s1.wav", "rain_s0.wav", "rain_s1.wav"]
    assert [p.name for p in b] == ["a-dog-barks_s0.wav", "a-dog-barks_s1.wav", "rain-on-a-roof_s0.wav",
                                   "rain-on-a-roof_s1.wav"]
    # Same checkpoint, prompt, seed and settings -> byte-identical WAV; another seed -> another clip.
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()
    assert a[0].read_bytes() != a[1].read_bytes()
    wav, sr = sf.read(a[0])
    assert sr == 16000 and len(wav) == 8000 and np.abs(wav).max() > 0

    meta = json.loads(a[1].with_suffix(".json").read_text())
    assert meta["prompt"] == "a dog barks" and meta["id"] == "dog/1" and meta["seed"] == 1
    assert meta["steps"] == 2 and meta["guidance_scale"] == 2.0 and meta["duration_s"] == 0.5
    assert meta["solver"] == "euler" and meta["schedule"] == "sway"  # the release's settings
    assert meta["checkpoint"] == str(releases["tta"]) and meta["codec"] == "mel:griffin_lim_iters=4"
    assert meta["text_encoder"] == "tiny-t5" and meta["genflow_version"] == genflow.__version__
    assert meta["elapsed_s"] > 0
    assert (tmp_path / "a" / "spectrograms.png").stat().st_size > 1000


def test_output_names_handle_collisions_and_prompt_files_are_checked(tmp_path):
    jobs = plan_outputs([(None, "A dog!"), (None, "a dog"), ("x", "y")], [3])
    assert [j["name"] for j in jobs] == ["a-dog_s3", "a-dog_s3-2", "x_s3"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "audio": "x.wav"}) + "\n")
    with pytest.raises(ValueError, match="caption"):
        read_prompts_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_prompts_file(tmp_path / "missing.txt")


def test_sample_cli_bad_arguments_give_clear_errors(releases, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample_main(["--checkpoint", str(releases["tta"]), "--out", str(tmp_path)])
    assert "no prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="nothere.*neither a release folder"):
        sample_main(["--checkpoint", str(tmp_path / "nothere"), "--prompt", "x", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no text encoder"):
        sample_main(["--checkpoint", str(releases["se"]), "--prompt", "x", "--out", str(tmp_path)])


def test_load_dtypes_on_cpu(releases):
    gen = genflow.load(releases["tta"], device="cpu", dtype=torch.bfloat16)
    clip = gen.generate(["a dog"], duration_s=0.5, steps=2, seed=0)[0]
    ref = genflow.load(releases["tta"], device="cpu").generate(["a dog"], duration_s=0.5, steps=2, seed=0)[0]
    assert torch.isfinite(clip).all() and clip.shape == ref.shape
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        genflow.load(releases["tta"], device="cpu", dtype=torch.float16)


# ---------------------------------------------------------------------------------------------- enhancing


def test_enhance_cli_mirrors_tree_skips_and_reports_failures(releases, tmp_path, capsys):
    enhance = script("recipes/se/enhance.py").main
    speech, sr = sf.read(SPEECH, dtype="float32")
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b" / "c").mkdir(parents=True)
    stereo = np.stack([speech[:sr], 0.5 * speech[:sr]], 1)
    from genflow.audio import resample

    hi = resample(torch.from_numpy(stereo.T.copy()), sr, 44100).numpy().T  # (N, 2) at 44.1 kHz
    sf.write(src / "a" / "x.flac", hi, 44100)
    sf.write(src / "b" / "c" / "y.wav", resample(torch.from_numpy(speech[:sr]), sr, 8000).numpy(), 8000)
    (src / "b" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    (src / "notes.txt").write_text("not audio, ignored")
    out = tmp_path / "out"
    args = ["--checkpoint", str(releases["se"]), str(src), "--out", str(out), "--steps", "2"]

    assert enhance(args) == 1  # the broken file fails, the others are written
    log = capsys.readouterr().err
    assert "broken.wav: FAILED" in log and "2 written, 0 skipped, 1 failed" in log and "RTF" in log
    x, y = out / "a" / "x.flac", out / "b" / "c" / "y.wav"
    assert sf.info(x).samplerate == 44100 and sf.info(x).frames == len(hi)
    assert sf.info(y).samplerate == 8000 and sf.info(y).frames == 8000
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a/x.flac", "b/c/y.wav"]

    stamp = y.stat().st_mtime_ns
    (src / "b" / "broken.wav").unlink()
    assert enhance(args) == 0
    assert "0 written, 2 skipped, 0 failed" in capsys.readouterr().err and y.stat().st_mtime_ns == stamp
    assert enhance(args + ["--overwrite", "--sample-rate", "16000"]) == 0
    assert "2 written" in capsys.readouterr().err and sf.info(y).samplerate == 16000

    with pytest.raises(SystemExit, match="inside"):
        enhance(["--checkpoint", str(releases["se"]), str(src), "--out", str(src / "enhanced")])
    with pytest.raises(SystemExit, match="neither a release folder"):
        enhance(["--checkpoint", str(tmp_path / "nothere"), str(src), "--out", str(out)])


def test_chunked_enhancement_matches_one_shot_without_seams(releases):
    gen = genflow.load(releases["se"], device="cpu")
    speech, sr = sf.read(SPEECH, dtype="float32")
    wav = torch.from_numpy(speech[: 3 * sr])
    whole = gen.enhance(wav, sr, steps=2, chunk_s=10.0).numpy()
    chunked = gen.enhance(wav, sr, steps=2, chunk_s=1.0, overlap_s=0.25, batch_size=2).numpy()
    assert chunked.shape == whole.shape == (3 * sr,)
    # A 1-step model with global attention (and the mel codec's Griffin-Lim phase) differs per window, so the
    # waveforms are not comparable sample by sample; their log-mel spectrograms must match. Measured with the
    # 4-iteration Griffin-Lim of the fixture: corr 0.90, 4.2 dB mean difference (0.95 / 1.9 dB with 32
    # iterations); unrelated spectrograms (this output vs its input) correlate at 0.04.
    a, b = log_mel_db(torch.from_numpy(whole), sr), log_mel_db(torch.from_numpy(chunked), sr)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8 and np.abs(a - b).mean() < 6.0
    # No seam: around the window joins (stride 0.75 s) the sample-to-sample jumps are like those elsewhere.
    jumps = np.abs(np.diff(chunked))
    joins = [int(k * 0.75 * sr) for k in range(1, 4)]
    near = np.concatenate([jumps[j - 256 : j + 256] for j in joins])
    assert near.max() <= 1.5 * np.quantile(jumps, 0.999)


class FrameCodec(Codec):
    """Stand-in codec: latent frames are the raw samples of each hop (frame-local, exact inverse)."""

    sample_rate, frame_rate, latent_dim, hop_length = 16000, 100, 160, 160

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def encode(self, audio, attention_mask=None):
        return audio[:, : self.num_frames(audio.shape[1]) * self.hop_length].reshape(audio.shape[0], -1, 160)

    def decode(self, latent):
        return latent.reshape(latent.shape[0], -1)


class FrameModel(torch.nn.Module):
    """Stand-in DiT whose velocity at a frame depends only on that frame (no attention)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(160, 160)

    def forward(self, x, sigma, *, aligned=None, drop_aligned=None, **_):
        return x - self.proj(aligned) * (1 - sigma[:, None, None] / 1000)


def test_chunked_equals_one_shot_for_a_frame_local_model():
    torch.manual_seed(0)
    settings = SamplingSettings(guidance_scale=1.0, schedule="linear")
    gen = Generator(FrameModel().eval(), Conditioner(FrameCodec()), settings)
    wav = torch.randn(16000 * 3 + 37)
    whole = gen.enhance(wav, 16000, steps=4, chunk_s=10.0)
    chunked = gen.enhance(wav, 16000, steps=4, chunk_s=0.7, overlap_s=0.2, batch_size=3)
    assert whole.shape == chunked.shape == wav.shape
    assert torch.allclose(chunked, whole, atol=1e-5), (chunked - whole).abs().max()
    # The stand-in model maps each frame to itself at sigma=0 plus a frame-local term: output != input.
    assert (whole - wav).abs().max() > 1e-2


class StillModel(torch.nn.Module):
    """A velocity of zero everywhere: sampling returns its starting point."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma, **_):
        return x * self.p


def test_aligned_source_starts_enhancement_from_the_input_and_refuses_text_generation():
    wav = torch.randn(16000 + 320, generator=torch.Generator().manual_seed(7))
    settings = SamplingSettings(guidance_scale=1.0, steps=3, chunk_s=0.5, overlap_s=0.1)
    near = Generator(StillModel(), Conditioner(FrameCodec()), settings, source=Source("aligned", 1e-3))
    out = near.enhance(wav, 16000)
    assert out.shape == wav.shape
    # An untrained (zero) velocity gives the input back, up to the source's own noise (std 1e-3 per sample).
    assert (out - wav).abs().max() < 6e-3 and (out - wav).std() > 5e-4
    far = Generator(StillModel(), Conditioner(FrameCodec()), settings).enhance(wav, 16000)
    assert (far - wav).std() > 1.0  # the default N(0, I) source: noise, nothing of the input
    with pytest.raises(ValueError, match="cannot generate from text alone"):
        near.generate(["a dog"], duration_s=1.0)


def test_enhance_with_the_input_phase():
    """phase="input": the enhanced magnitude with the noisy window's phase (a mel codec release)."""
    wav = load_audio_fixture()[: 16000 * 2]
    codec = load_codec("mel:n_mels=128,frame_rate=50")
    gen = Generator(StillModel(), Conditioner(codec), SamplingSettings(guidance_scale=1.0, steps=2, phase="input"),
                    source=Source("aligned", 1e-4))
    out = gen.enhance(wav, 16000)
    assert out.shape == wav.shape
    # a model that changes nothing gives the input back through its own mel magnitude and phase
    assert float(torch.corrcoef(torch.stack([out, wav]))[0, 1]) > 0.9
    griffin = gen.enhance(wav, 16000, phase="decoder")
    assert float(torch.corrcoef(torch.stack([griffin, wav]))[0, 1]) < 0.5
    with pytest.raises(ValueError, match="phase="):
        SamplingSettings(phase="noisy")
