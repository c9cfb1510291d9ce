"""Codec training: a Vocos decoder (ConvNeXt + ISTFT head) on a frozen encoder, with Vocos' GAN losses.

    accelerate launch recipes/codec/train.py                                   # mel-demo: a neural decoder for "mel"
    accelerate launch recipes/codec/train.py --preset dasheng --data my/train.jsonl        # fine-tune the official one
    accelerate launch recipes/codec/train.py --preset dasheng-24k --data my24k/train.jsonl # same latents -> 24 kHz
    accelerate launch recipes/codec/train.py --out runs/codec-mel --resume latest
    python recipes/codec/train.py --help                                        # every option

Presets: ``mel-demo`` (the weight-free mel codec's latents, a small decoder, the bundled demo speech; CPU),
``tiny`` (tests), ``dasheng`` (DashengTokenizer's official decoder, every key loaded strictly, fine-tuned),
``dasheng-24k`` / ``dasheng-44k`` (the official backbone, a new wider ISTFT head, targets at that rate),
``dasheng-scratch`` (a new decoder, and the acoustic injection trained too: the paper's unreleased training,
on the official frozen ViT). The manifest is JSONL with one audio path a row under ``--audio_key`` (``audio``
by default; ``clean`` for speech-enhancement manifests); clips are read at the decoder's rate and resampled
to the encoder's. ``RUN/release`` is a codec folder: ``load_codec("RUN/release")``, ``--codec RUN/release``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from accelerate.utils import set_seed

from genflow.audio import load_audio
from genflow.cli.common import run_main
from genflow.cli.config import config_to_dict, parse_config
from genflow.codec_training import GanConfig, train
from genflow.codecs.discriminators import DiscriminatorConfig
from genflow.codecs.trainable import DecoderSettings, build_trainable_codec
from genflow.data import LengthBucketSampler, TextAudioDataset, collate
from genflow.recipe import ALIASES, RESUME_FLAG, load_rows
from genflow.training import TrainConfig, configure_logging, process_state

logger = logging.getLogger("genflow.recipes.codec")
DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo" / "se"


@dataclass
class CodecData:
    """The clips: a manifest, which key holds the audio path, crop lengths, validation."""

    train: str = ""
    audio_key: str = "audio"
    max_seconds: float = 1.0  # random crops of this length (Vocos: about 1 s)
    min_seconds: float = 0.2
    validate: bool = True
    strict: bool = False


@dataclass
class CodecRunConfig:
    """One codec training run. ``train``'s flow-matching fields (timesteps, *_dropout) are not used here."""

    codec: str = "mel"  # the frozen encoder: "mel[:...]", a DashengTokenizer folder/hub id, or a mel-vocos folder
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    data: CodecData = field(default_factory=CodecData)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    preview: tuple[str, ...] = ()  # audio files decoded every train.sample_every steps


DEMO = CodecRunConfig(
    codec="mel",
    decoder=DecoderSettings(dim=192, intermediate_dim=576, depth=6),
    data=CodecData(train=str(DEMO_DATA / "train.jsonl"), audio_key="clean", max_seconds=1.0),
    train=TrainConfig(out="runs/codec-mel", max_steps=3000, batch_size=8, lr=5e-4, adam_beta1=0.8, adam_beta2=0.9,
                      weight_decay=0.0, warmup_steps=0, max_grad_norm=1000.0, save_every=500, sample_every=500,
                      log_every=25),
    # On a CPU the discriminators cost ~15x the decoder's own step (measured), so the demo trains on the mel
    # loss alone within its budget; --gan.gan_start_step N turns the GAN terms on from step N.
    gan=GanConfig(disc_lr=5e-4, gan_start_step=3000,
                  discriminator=DiscriminatorConfig(period_channels=8, resolution_channels=8)),
    preview=tuple(str(DEMO_DATA / "test" / "clean" / f) for f in (
        "allison_check-number-dial-again.flac", "allison_conf-extended.flac")),
)
DASHENG = CodecRunConfig(
    codec="mispeech/dashengtokenizer",
    data=CodecData(max_seconds=2.0),
    train=TrainConfig(out="runs/codec-dasheng", max_steps=100_000, batch_size=16, lr=2e-5, adam_beta1=0.8,
                      adam_beta2=0.9, weight_decay=0.0, warmup_steps=500, max_grad_norm=1000.0,
                      mixed_precision="bf16", save_every=5000, sample_every=5000, log_every=50, num_workers=4),
    gan=GanConfig(disc_lr=2e-5),
)
PRESETS = {
    "mel-demo": DEMO,
    "tiny": replace(DEMO, decoder=DecoderSettings(dim=16, intermediate_dim=32, depth=1),
                    data=replace(DEMO.data, max_seconds=0.5), preview=DEMO.preview[:1],
                    train=replace(DEMO.train, out="runs/codec-tiny", max_steps=4, batch_size=2, save_every=2,
                                  sample_every=4, log_every=1),
                    gan=replace(DEMO.gan, mel_n_ffts=(256, 512), mel_n_mels=(20, 40), gan_start_step=1,
                                discriminator=DiscriminatorConfig(periods=(2, 3), period_channels=2,
                                                                  resolutions=(256,), resolution_channels=2))),
    "dasheng": DASHENG,
    "dasheng-24k": replace(DASHENG, decoder=DecoderSettings(output_sample_rate=24000, init="backbone"),
                           train=replace(DASHENG.train, out="runs/codec-dasheng-24k", lr=2e-4),
                           gan=replace(DASHENG.gan, disc_lr=2e-4)),
    "dasheng-44k": replace(DASHENG, decoder=DecoderSettings(output_sample_rate=44100, init="backbone"),
                           train=replace(DASHENG.train, out="runs/codec-dasheng-44k", lr=2e-4),
                           gan=replace(DASHENG.gan, disc_lr=2e-4, mel_n_ffts=(1024, 2048, 4096))),
    "dasheng-scratch": replace(DASHENG, decoder=DecoderSettings(init="none", train_injection=True),
                               train=replace(DASHENG.train, out="runs/codec-dasheng-scratch", lr=5e-4,
                                             max_steps=1_000_000), gan=replace(DASHENG.gan, disc_lr=5e-4)),
}


def main(argv: list[str] | None = None) -> Path:
    """Parse flags, build the trainable codec and the clips, run the GAN loop; returns the release folder."""
    cfg, args = parse_config(PRESETS, "mel-demo", argv, __doc__, extra=[RESUME_FLAG], aliases=ALIASES)
    state = process_state(cfg.train.process_group_timeout_s)  # first: it creates the process group
    configure_logging()
    rows = load_rows(cfg.data.train, (cfg.data.audio_key,), cfg.data, out=cfg.train.out)  # before any weights load
    rows = [{"id": r["id"], "audio": r[cfg.data.audio_key]} for r in rows]
    set_seed(cfg.train.seed)  # the same new decoder weights on every process and in every rerun
    codec = build_trainable_codec(cfg.codec, cfg.decoder)
    frozen = codec.frozen_prefixes(cfg.decoder.train_injection)
    trainable = sum(p.numel() for p in codec.parameters() if p.requires_grad)
    logger.info("codec %s: %.2f M trainable parameters, decoding at %d Hz", cfg.codec, trainable / 1e6,
                codec.output_sample_rate)
    frames = max(1, round(cfg.data.max_seconds * codec.frame_rate))
    dataset = TextAudioDataset(rows, codec_sample_rate=codec.output_sample_rate, hop_length=codec.output_hop_length,
                               max_frames=frames, seed=cfg.train.seed)  # targets at the decoder's rate
    sampler = LengthBucketSampler(dataset.lengths, cfg.train.batch_size, seed=cfg.train.seed,
                                  num_replicas=state.num_processes, rank=state.process_index,
                                  max_frames=cfg.train.max_batch_frames or None)
    preview = {Path(p).stem: load_audio(p, codec.sample_rate)[0] for p in cfg.preview}
    return train(cfg.train, cfg.gan, codec, frozen, dataset, sampler, collate, run_config=config_to_dict(cfg),
                 preview=preview, resume_from=args.resume)


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
