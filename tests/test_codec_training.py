"""Codec training (recipes/codec): the real script for 2 steps, resume (bit-identical), releases that load_codec
reads, official decoder keys loading strictly into the trainable decoder, and the GAN losses against closed forms.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genflow.codecs import decode_latent, load_codec
from genflow.codecs.dasheng import DashengTokenizer
from genflow.codecs.discriminators import DiscriminatorConfig, Discriminators
from genflow.codecs.losses import MultiResolutionMelLoss, discriminator_loss, feature_matching, generator_loss
from genflow.codecs.mel_vocos import MelVocosCodec
from genflow.codecs.trainable import DecoderSettings, build_trainable_codec

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "dasheng-tiny-a"
FAST = ["--preset", "tiny", "--train.lr_schedule", "constant", "--train.log_with", "none", "--train.sample_every", "0"]


def script():
    spec = importlib.util.spec_from_file_location("recipe_codec", ROOT / "recipes" / "codec" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the script defines dataclasses, which look their module up
    spec.loader.exec_module(module)
    return module


def recipe():
    return script().main


def test_mel_decoder_trains_resumes_exactly_and_releases_a_codec(tmp_path):
    main = recipe()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ema = ["--gan.ema", "true"]  # steps 0 (mel loss only) and 1-3 (GAN): the resume crosses into the GAN phase
    main(FAST + ema + ["--out", str(straight), "--train.save_every", "4"])
    main(FAST + ema + ["--out", str(resumed), "--max-steps", "2"])
    main(FAST + ema + ["--out", str(resumed), "--resume", "latest", "--train.sample_every", "4"])  # previews at 4
    a, b = (load_file(str(r / "release" / "model.safetensors")) for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    da, db = (load_file(str(r / "checkpoints" / "checkpoint-4" / "discriminator.safetensors"))
              for r in (straight, resumed))
    assert all(torch.equal(da[k], db[k]) for k in da)
    state = json.loads((resumed / "checkpoints" / "checkpoint-4" / "genflow_state.json").read_text())
    assert state["step"] == 4 and "disc_scheduler" in state
    first = load_file(str(resumed / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    raw = load_file(str(straight / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    assert any(not torch.equal(first[k], raw[k]) for k in raw), "two more steps must change the decoder"
    assert any(not torch.equal(raw[k], a[k]) for k in a), "the release must hold the EMA, not the raw weights"
    assert (resumed / "samples" / "step-0000004" / "spectrograms.png").stat().st_size > 1000

    codec = load_codec(resumed / "release")
    assert isinstance(codec, MelVocosCodec) and not any(p.requires_grad for p in codec.parameters())
    x = 0.1 * torch.randn(1, 16000)
    latent = codec.encode(x)
    assert torch.equal(latent, load_codec("mel").encode(x))  # the latents of "mel", unchanged
    wav = codec.decode(latent)
    assert wav.shape == (1, 16000) and torch.isfinite(wav).all()


def test_codec_batches_keep_to_the_frame_budget(tmp_path, monkeypatch):
    """--train.max_batch_frames reaches the codec's batch sampler, as it does the DiT's."""
    from genflow.data import LengthBucketSampler

    budgets = []

    class Spy(LengthBucketSampler):
        def __init__(self, *args, max_frames=None, **kwargs):
            budgets.append(max_frames)
            super().__init__(*args, max_frames=max_frames, **kwargs)

    module = script()
    monkeypatch.setattr(module, "LengthBucketSampler", Spy)
    module.main(FAST + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--train.max_batch_frames", "60"])
    assert budgets == [60]


def test_official_decoder_keys_load_strictly_into_the_trainable_decoder(tmp_path):
    codec = build_trainable_codec(str(FIXTURE), DecoderSettings())
    official = load_file(str(FIXTURE / "model.safetensors"))
    own = codec.state_dict()
    assert own.keys() == official.keys() and all(torch.equal(own[k], official[k]) for k in own)
    assert "output_sample_rate" not in codec.config.to_dict()  # a 16 kHz decoder keeps the official config layout
    trainable = {n for n, p in codec.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "upsampler.")) for n in trainable)
    # the training path is the inference path: reconstruct == decode(encode) == the official code's output
    vectors = load_file(str(FIXTURE / "vectors.safetensors"))
    out = codec.reconstruct(vectors["audio_0"][None])
    assert (out[0] - vectors["decoded_0"]).abs().max() < 1e-4
    out.pow(2).mean().backward()
    assert all(p.grad is not None for n, p in codec.named_parameters() if n in trainable)
    assert codec.encoder.model.init_bn[1].training is False  # frozen BatchNorm keeps its statistics

    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE, broken)
    save_file({k: v for k, v in official.items() if k != "decoder.head.out.bias"}, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="decoder.head.out.bias"):
        build_trainable_codec(str(broken), DecoderSettings())
    with pytest.raises(ValueError, match="decoder.init backbone"):
        build_trainable_codec(str(FIXTURE), DecoderSettings(output_sample_rate=24000))


def test_dasheng_decoder_to_24k_trains_and_releases(tmp_path):
    out = tmp_path / "run"
    recipe()(FAST + ["--out", str(out), "--codec", str(FIXTURE), "--decoder.output_sample_rate", "24000",
                     "--decoder.init", "backbone", "--decoder.dim", "0", "--decoder.intermediate_dim", "0",
                     "--decoder.depth", "0", "--max-steps", "2"])  # 0: the checkpoint's decoder sizes
    ckpt = load_file(str(out / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert ckpt and not any(k.startswith("encoder.") for k in ckpt)  # the frozen encoder is not checkpointed
    codec = load_codec(out / "release")
    assert isinstance(codec, DashengTokenizer) and codec.output_sample_rate == 24000
    official = load_file(str(FIXTURE / "model.safetensors"))
    released = load_file(str(out / "release" / "model.safetensors"))
    assert all(torch.equal(released[k], official[k]) for k in official if k.startswith("encoder."))
    latent = codec.encode(0.1 * torch.randn(1, 16000))  # 25 frames
    assert codec.decode(latent).shape == (1, 25 * 960)
    assert decode_latent(codec, latent[0], sample_rate=16000).shape == (16000,)  # resampled from 24 kHz
    config = json.loads((out / "release" / "config.json").read_text())
    assert config["output_sample_rate"] == 24000 and config["istft_hop"] == 480


def test_hinge_and_feature_matching_losses_match_closed_forms():
    real, fake = [torch.tensor([2.0, 0.5])], [torch.tensor([-3.0, 0.0])]
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert discriminator_loss(real, fake)[0].item() == pytest.approx(0.75)
    assert generator_loss(fake)[0].item() == pytest.approx((4.0 + 1.0) / 2)
    fm = feature_matching([[torch.ones(3), torch.zeros(2)]], [[torch.zeros(3), torch.full((2,), 2.0)]])
    assert fm[0].item() == pytest.approx(1.0 + 2.0)
    mel = MultiResolutionMelLoss(16000, (256, 512), (20, 40))
    x = 0.1 * torch.randn(2, 4000)
    assert mel(x, x).item() == 0.0 and mel(x, 2 * x).item() == pytest.approx(torch.log(torch.tensor(2.0)).item(),
                                                                               abs=0.05)


def test_every_discriminator_parameter_gets_a_gradient():
    disc = Discriminators(DiscriminatorConfig(periods=(2, 3), period_channels=2, resolutions=(256,),
                                              resolution_channels=2))
    logits, feats = disc(0.1 * torch.randn(2, 3001))
    assert len(logits) == len(feats) == 3 and disc.kinds() == ["period", "period", "resolution"]
    sum(x.mean() for x in logits).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_a_wider_decoder_generates_and_enhances_at_its_rate():
    """A 24 kHz decoder of the same latents: generate returns 24 kHz clips, enhance the caller's rate and length."""
    from genflow.codecs.mel_vocos import MelVocosConfig
    from genflow.conditioning import Conditioner
    from genflow.model import DiT
    from genflow.pipeline import Generator
    from genflow.sampling import SamplingSettings

    class Text(torch.nn.Module):  # a constant 3-token caption embedding (T5 would take seconds to load)
        dim = 8

        def forward(self, prompts: list[str]):
            return torch.ones(len(prompts), 3, self.dim), torch.ones(len(prompts), 3, dtype=torch.bool)

    codec = MelVocosCodec(MelVocosConfig(output_sample_rate=24000, dim=16, intermediate_dim=32, depth=1)).freeze()
    text = Text()
    tta = Generator(DiT.from_preset("tiny", latent_dim=64, text_dim=text.dim).eval(), Conditioner(codec, text),
                    SamplingSettings(steps=2, duration_s=1.0))
    assert tta.sample_rate == 24000 and tta.generate(["a test"])[0].shape == (24000,)
    se = Generator(DiT.from_preset("tiny", latent_dim=64, aligned_dim=64).eval(), Conditioner(codec),
                   SamplingSettings(steps=2))
    out = se.enhance(0.1 * torch.randn(8000), 8000)
    assert out.shape == (8000,) and torch.isfinite(out).all()
