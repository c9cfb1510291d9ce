"""The codec that codec training updates: a frozen encoder and a trainable Vocos decoder, built from one spec.

    codec = build_trainable_codec("mel", DecoderSettings(dim=384, depth=8))                 # mel + new decoder
    codec = build_trainable_codec("mispeech/dashengtokenizer", DecoderSettings())           # official, all weights
    codec = build_trainable_codec("mispeech/dashengtokenizer", DecoderSettings(output_sample_rate=24000,
                                                                               init="backbone"))

Either way the result has ``reconstruct(audio)`` (the differentiable path: frozen encoder, trainable
injection/decoder), ``frozen_prefixes(train_injection)`` (state-dict keys training never changes, left out
of checkpoints) and ``save_pretrained(folder)`` (a folder ``load_codec`` reads). The ISTFT head follows
the output rate: one latent frame is ``output_sample_rate / frame_rate`` samples, split over ``upsample``
decoder frames, each an ISTFT hop, with ``n_fft = 4 * hop`` (the official 16 kHz decoder: 2 x 320, 1280).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from genflow import hub
from genflow.codecs.base import Codec

logger = logging.getLogger("genflow.codecs.trainable")

INIT_CHOICES = ("all", "backbone", "none")


@dataclass
class DecoderSettings:
    """The decoder codec training builds (0 = the size of the checkpoint's decoder, or the mel default)."""

    output_sample_rate: int = 16000  # 24000 / 44100: the same 16 kHz latents decoded to a wider band
    upsample: int = 2  # decoder frames per latent frame
    dim: int = 0
    intermediate_dim: int = 0
    depth: int = 0
    init: str = "all"  # DashengTokenizer: decoder weights from the checkpoint: all | backbone (new head) | none
    train_injection: bool = False  # DashengTokenizer: also train the acoustic injection (changes the latents!)

    def __post_init__(self):
        if self.init not in INIT_CHOICES:
            raise ValueError(f"decoder.init={self.init!r}: expected one of {', '.join(INIT_CHOICES)}")
        if self.output_sample_rate < 1 or self.upsample < 1 or min(self.dim, self.intermediate_dim, self.depth) < 0:
            raise ValueError(f"decoder settings {self}: need output_sample_rate >= 1, upsample >= 1, sizes >= 0")


def build_trainable_codec(spec: str, settings: DecoderSettings) -> Codec:
    """``mel[:...]`` or a mel-vocos folder -> ``MelVocosCodec``; a DashengTokenizer folder or hub id -> one of those.

    Parameters that training updates have ``requires_grad``; everything else is frozen.
    """
    if spec == "mel" or spec.startswith("mel:"):
        codec = _new_mel_vocos(spec, settings)
    else:
        folder = hub.resolve(spec, files=("config.json",), patterns=("model.safetensors",), what="codec folder")
        kind = hub.model_type(folder)
        if kind == "genflow-mel-vocos":
            from genflow.codecs.mel_vocos import MelVocosCodec

            codec = MelVocosCodec.from_pretrained(folder)  # go on training a decoder trained before
        elif kind == "dashengtokenizer":
            codec = _dasheng(folder, settings)
        else:
            raise ValueError(f"{folder / 'config.json'} has model_type {kind!r}: codec training takes 'mel[:...]', "
                             "a DashengTokenizer folder/hub id (e.g. mispeech/dashengtokenizer) or a mel-vocos "
                             "folder it wrote before")
    frozen = codec.frozen_prefixes(settings.train_injection)
    for name, p in codec.named_parameters():
        p.requires_grad_(not name.startswith(frozen) if frozen else True)
    return codec.train()


def _new_mel_vocos(spec: str, s: DecoderSettings) -> Codec:
    from genflow.codecs.mel import MelCodecConfig
    from genflow.codecs.mel_vocos import MelVocosCodec, MelVocosConfig

    sizes = {k: v for k, v in (("dim", s.dim), ("intermediate_dim", s.intermediate_dim), ("depth", s.depth)) if v}
    cfg = MelVocosConfig(mel=MelCodecConfig.from_string(spec[4:]), output_sample_rate=s.output_sample_rate,
                         upsample=s.upsample, **sizes)
    return MelVocosCodec(cfg)


def _dasheng(folder, s: DecoderSettings) -> Codec:
    """The checkpoint's encoder (and decoder weights per ``s.init``) in a tokenizer with the asked-for decoder."""
    from genflow.codecs.dasheng import PATCH_T, SAMPLE_RATE, DashengTokenizer, DashengTokenizerConfig

    official = DashengTokenizerConfig.from_dict(hub.read_json(folder / "config.json"))
    token_seconds = official.hop_length * PATCH_T / SAMPLE_RATE
    hop = round(s.output_sample_rate * token_seconds / s.upsample)
    if abs(hop * s.upsample - s.output_sample_rate * token_seconds) > 1e-6:
        raise ValueError(f"output_sample_rate={s.output_sample_rate}: one token ({token_seconds * 1000:g} ms) is not "
                         f"a whole number of samples split into upsample={s.upsample} hops; pick another upsample")
    cfg = dataclasses.replace(
        official, output_sample_rate=None if s.output_sample_rate == SAMPLE_RATE else s.output_sample_rate,
        upsample_tokens=s.upsample, istft_hop=hop, istft_n_fft=4 * hop,  # the official decoder: 320, 1280
        decoder_embed_dim=s.dim or official.decoder_embed_dim, decoder_depth=s.depth or official.decoder_depth,
        decoder_intermediate_size=s.intermediate_dim or official.decoder_intermediate_size)
    head = ("output_sample_rate", "upsample_tokens", "istft_hop", "istft_n_fft")
    body = ("upsample_tokens", "decoder_embed_dim", "decoder_depth", "decoder_intermediate_size")
    for init, fields, fix in (("all", head + body, "--decoder.init backbone (new head) or none"),
                              ("backbone", body, "--decoder.init none, or the checkpoint's sizes")):
        changed = [f for f in fields if getattr(cfg, f) != getattr(official, f)]
        if s.init == init and changed:
            raise ValueError(f"decoder.init={init} loads the checkpoint's decoder weights, but {changed} differ from "
                             f"{folder / 'config.json'}: use {fix}")
    model = DashengTokenizer(cfg)
    state = hub.read_weights(folder / "model.safetensors")
    keep = {"all": ("encoder.", "upsampler.", "decoder."), "backbone": ("encoder.", "upsampler.", "decoder.backbone."),
            "none": ("encoder.",)}[s.init]
    own = {k: v for k, v in model.state_dict().items() if k.startswith(keep)}
    # Strict on what is taken: every key of those modules present, none extra, same shapes.
    hub.check_keys(own, {k: v for k, v in state.items() if k.startswith(keep)},
                   f"{folder / 'model.safetensors'} (decoder.init={s.init})")
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in own}}, strict=True)
    logger.info("DashengTokenizer from %s: loaded %d tensors (%s), decoder at %d Hz, ISTFT %d/%d", folder, len(own),
                ", ".join(keep), model.output_sample_rate, cfg.istft_n_fft, cfg.istft_hop)
    return model
