"""The Oobleck VAE codec on a tiny random AutoencoderOobleck (tests/fixtures/oobleck-tiny, see its make script).

Equal to diffusers' own calls, strict loading, exact padded batches, and the latent statistics round trip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from genflow.codecs import encode_audio, load_codec
from genflow.codecs.latent_stats import prepare_vae_codec
from genflow.codecs.vae import WEIGHTS, OobleckVAECodec
from genflow.hub import parse_ref

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "oobleck-tiny"
HOP = 480  # strides 2 * 4 * 6 * 10 at 24 kHz


@pytest.fixture(scope="module")
def codec() -> OobleckVAECodec:
    return load_codec(FIXTURE)


@pytest.fixture(scope="module")
def reference():
    from diffusers import AutoencoderOobleck

    return AutoencoderOobleck.from_pretrained(FIXTURE).eval()


def test_encode_decode_equal_diffusers_calls(codec, reference):
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.latent_dim) == (24000, HOP, 50.0, 4)
    audio = 0.3 * torch.randn(2, 7 * HOP + 123, generator=torch.Generator().manual_seed(0))
    z = codec.encode(audio)  # no statistics yet: raw posterior mean
    with torch.no_grad():
        stereo = audio[:, : 7 * HOP, None].transpose(1, 2).expand(-1, 2, -1)  # mono on both channels
        dist = reference.encode(stereo).latent_dist
        assert z.shape == (2, 7, 4) and torch.equal(z, dist.mean.transpose(1, 2))
        drawn = codec.encode(audio, sample=True, generator=torch.Generator().manual_seed(5))
        want = dist.sample(generator=torch.Generator().manual_seed(5)).transpose(1, 2)
        assert torch.equal(drawn, want) and not torch.equal(drawn, z)
        wav = codec.decode(z)
        assert wav.shape == (2, 7 * HOP)
        assert torch.equal(wav, reference.decode(z.transpose(1, 2)).sample.mean(1))


def test_padded_batch_with_mask_equals_each_clip_alone(codec):
    gen = torch.Generator().manual_seed(1)
    clips = [0.2 * torch.randn(n, generator=gen) for n in (5 * HOP + 17, 3 * HOP, 5 * HOP + 17, HOP - 1)]
    audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)  # (4, N_max)
    mask = torch.arange(audio.shape[1])[None] < torch.tensor([len(c) for c in clips])[:, None]
    batch = codec.encode(audio, mask)
    assert batch.shape == (4, 5, 4)
    for row, clip in zip(batch, clips):
        t = len(clip) // HOP
        if t:
            assert torch.allclose(row[:t], codec.encode(clip[None])[0], atol=1e-6)
        assert not row[t:].any()  # padding frames are zero
    # Without the mask the short clip's last frames see the other clips' zero padding through the conv bias.
    assert not torch.allclose(codec.encode(audio)[1, :3], batch[1, :3], atol=1e-6)
    with pytest.raises(ValueError, match="prefix mask"):
        codec.encode(audio, mask.flip(1))


def test_strict_loading_names_the_bad_tensor(tmp_path):
    broken = tmp_path / "vae"
    shutil.copytree(FIXTURE, broken)
    state = load_file(broken / WEIGHTS)
    state["encoder.extra"] = torch.zeros(1)
    del state["decoder.conv2.weight_v"]
    save_file(state, str(broken / WEIGHTS))
    with pytest.raises(ValueError, match=r"missing keys \['decoder.conv2.weight_v'\], unexpected keys "
                                         r"\['encoder.extra'\]"):
        load_codec(broken)
    (broken / WEIGHTS).rename(broken / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        load_codec(f"{tmp_path}:vae")


def test_spec_forms():
    assert parse_ref("stabilityai/stable-audio-open-1.0:vae") == ("stabilityai/stable-audio-open-1.0", None, "vae")
    assert parse_ref("owner/name@v2:vae") == ("owner/name", "v2", "vae")
    assert parse_ref("owner/name:.") == ("owner/name", None, None)
    with pytest.raises(ValueError, match="ends with ':'"):
        parse_ref("owner/name:")
    assert isinstance(load_codec(f"{FIXTURE.parent}:{FIXTURE.name}"), OobleckVAECodec)


def test_latent_statistics_round_trip(tmp_path, codec):
    gen = torch.Generator().manual_seed(2)
    rows = []
    for i, seconds in enumerate((0.5, 0.8, 1.1)):  # 16 kHz files: the codec resamples them to 24 kHz
        sf.write(tmp_path / f"c{i}.wav", (0.3 * torch.randn(int(16000 * seconds), generator=gen)).numpy(), 16000)
        rows.append({"audio": f"c{i}.wav", "caption": "x"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = prepare_vae_codec(str(FIXTURE), tmp_path / "train.jsonl", tmp_path / "run" / "codec")

    moved = tmp_path / "release" / "codec"  # what a release does: copy the folder; the VAE is inside it
    shutil.copytree(folder, moved)
    normed = load_codec(moved)
    assert normed.has_latent_stats and json.loads((moved / "config.json").read_text())["stats"]["clips"] == 3
    assert (moved / "vae" / WEIGHTS).is_file()
    # strict save/load round trip: the same VAE weights as the source, the same statistics as the original folder
    saved, original = normed.state_dict(), load_codec(folder).state_dict()
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)
    assert all(torch.equal(saved[f"vae.{k}"], v) for k, v in codec.vae.state_dict().items())
    latents = torch.cat([encode_audio(normed, tmp_path / r["audio"]) for r in rows])  # (frames, C)
    assert latents.shape[0] == sum(int(24000 * s) // HOP for s in (0.5, 0.8, 1.1))
    assert torch.allclose(latents.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(latents.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert (normed.latent_std != 1).all() and (normed.latent_mean != 0).all()
    # decode undoes the normalisation: the same audio as the raw codec on the raw latent
    raw = codec.encode(0.3 * torch.randn(1, 4 * HOP, generator=gen))
    assert torch.allclose(normed.decode((raw - normed.latent_mean) / normed.latent_std), codec.decode(raw), atol=1e-5)
    # reused as it is (a resumed run keeps its statistics); another source is refused
    assert prepare_vae_codec(str(FIXTURE), tmp_path / "train.jsonl", folder) == folder
    with pytest.raises(ValueError, match="made from"):
        prepare_vae_codec("other/vae:vae", tmp_path / "train.jsonl", folder)


def test_training_on_a_vae_computes_statistics_and_ships_them(tmp_path):
    import importlib.util

    import genflow

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("recipe_tta_vae", root / "recipes" / "tta" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = root / "data" / "demo" / "tta"
    rows = [json.loads(line) for line in (src / "train.jsonl").read_text().splitlines()[:4]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({**r, "audio": str(src / r["audio"])}) + "\n"
                                                  for r in rows))
    run = tmp_path / "run"
    module.main(["--preset", "tiny", "--train.log_with", "none", "--train.sample_every", "0", "--codec", str(FIXTURE),
                 "--data", str(tmp_path / "train.jsonl"), "--out", str(run), "--max-steps", "2"])
    assert json.loads((run / "config.json").read_text())["codec"] == str(run / "codec")
    stats = load_file(run / "codec" / "latent_stats.safetensors")
    assert torch.equal(stats["std"], load_file(run / "release" / "codec" / "latent_stats.safetensors")["std"])
    gen = genflow.load(run / "release", device="cpu")
    assert isinstance(gen.codec, OobleckVAECodec) and torch.equal(gen.codec.latent_std, stats["std"])
    clip = gen.generate(["a test prompt"], duration_s=0.5, steps=2, seed=0)[0]
    assert clip.shape == (12000,) and torch.isfinite(clip).all()


def test_prepare_with_a_vae_writes_the_codec_folder_and_caches_with_it(tmp_path, capsys):
    import importlib.util

    from genflow.data import LatentCache

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("prepare_se_vae", root / "recipes" / "se" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gen = torch.Generator().manual_seed(3)
    vb = tmp_path / "vb"
    for split, names in (("trainset_28spk", ("p226_001", "p230_001")), ("testset", ("p232_001",))):
        for kind in ("clean", "noisy"):
            (vb / f"{kind}_{split}_wav").mkdir(parents=True, exist_ok=True)
            for name in names:
                sf.write(vb / f"{kind}_{split}_wav" / f"{name}.wav",
                         (0.3 * torch.randn(12000, generator=gen)).numpy(), 16000)
    out = tmp_path / "out"
    module.main(["--root", str(vb), "--out-dir", str(out), "--cache", "--codec", str(FIXTURE)])
    assert f"train with --codec {out / 'codec'}" in capsys.readouterr().out
    normed = load_codec(out / "codec")
    n_train = len((out / "train.jsonl").read_text().splitlines())  # statistics of the train split's clean clips
    stats = json.loads((out / "codec" / "config.json").read_text())["stats"]
    assert normed.has_latent_stats and stats["clips"] == n_train >= 1
    cache = LatentCache(out / "cache" / "train", codec=normed)  # built with the normalised codec ...
    assert cache.keys == ("clean", "noisy") and len(cache) == n_train
    with pytest.raises(ValueError, match="rebuild the cache"):  # ... so the raw VAE's latents are refused
        LatentCache(out / "cache" / "train", codec=load_codec(FIXTURE))
