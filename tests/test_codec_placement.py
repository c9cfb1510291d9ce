"""Training from cached latents keeps the codec's encoder off the accelerator; decoding stays there.

No GPU here: the "meta" device stands in for the accelerator where weights move to it, and a spy checks
that the training loop asks for the split exactly when every batch holds cached latents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import genflow.training as training
from genflow.codecs import load_codec
from genflow.codecs.base import Codec
from genflow.conditioning import BatchKeys, Conditioner
from genflow.model import DiT

DASHENG = Path(__file__).resolve().parent / "fixtures" / "dasheng-tiny-a"


def test_encoder_to_moves_the_dasheng_encoder_alone():
    codec = load_codec(str(DASHENG))
    latent = torch.randn(1, 6, codec.latent_dim)
    before = codec.decode(latent)
    codec.encoder_to("meta")  # the accelerator's stand-in
    on = {name: p.device.type for name, p in codec.named_parameters()}
    assert {d for n, d in on.items() if n.startswith("encoder.")} == {"meta"}
    assert {d for n, d in on.items() if not n.startswith("encoder.")} == {"cpu"}  # decoder (and upsampler)
    assert codec.encoder_device.type == "meta" and codec.device.type == "cpu"
    assert torch.equal(codec.decode(latent), before)  # decoding never touches the encoder


def test_mel_codec_has_no_encoder_weights_to_move():
    codec = load_codec("mel")
    assert codec.encoder_parts() == ()
    codec.encoder_to("meta")
    assert all(t.device.type == "cpu" for t in codec.buffers())
    assert codec.encoder_device == codec.device == torch.device("cpu")


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "encoded"])
def test_the_training_loop_keeps_the_encoder_off_the_device_only_with_cached_latents(tmp_path, monkeypatch, cached):
    codec = load_codec(str(DASHENG))
    moves = []
    real = Codec.encoder_to
    monkeypatch.setattr(Codec, "encoder_to", lambda self, device: moves.append(str(device)) or real(self, device))
    cond = Conditioner(codec, keys=BatchKeys(target="clean", aligned="noisy", cached=cached))
    cfg = training.TrainConfig(out=str(tmp_path / "run"), log_with="none", warmup_steps=0)
    model = DiT.from_preset("tiny", latent_dim=codec.latent_dim, text_dim=0, aligned_dim=codec.latent_dim)
    run = training.build(cfg, model, cond)
    assert moves == (["cpu"] if cached else [])
    assert run.conditioner.codec.encoder_device.type == "cpu"


def test_previews_encode_where_the_encoder_is():
    """Speech-enhancement previews encode noisy audio: on the encoder's device, the latents back on the audio's."""
    codec = load_codec(str(DASHENG))
    cond = Conditioner(codec, keys=BatchKeys(target="clean", aligned="noisy", cached=True)).place("cpu")
    audio = torch.randn(2, 16000) * 0.1
    latent, mask = cond.encode_audio(audio, [16000, 12000])
    assert latent.device == audio.device and mask.device == audio.device
    assert latent.shape == (2, codec.num_frames(16000), codec.latent_dim)
    assert int(mask[1].sum()) == codec.num_frames(12000)
