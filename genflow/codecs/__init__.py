"""Waveform <-> latent codecs behind one contract (``Codec``), and ``load_codec`` to get one by name or path.

    load_codec("mel")                            # weight-free log-mel codec, defaults (64 mels, 25 Hz)
    load_codec("mel:n_mels=80,frame_rate=50")     # with overrides of MelCodecConfig fields
    load_codec("dasheng")                         # = "mispeech/dashengtokenizer" from the Hugging Face hub
    load_codec("path/to/folder")                  # dispatch on config.json's model_type (or diffusers _class_name)
    load_codec("owner/name@rev:subfolder")        # a hub id (or FOLDER:SUBFOLDER): fetched, then dispatched alike
    load_codec("stabilityai/stable-audio-open-1.0:vae")  # an Oobleck VAE (genflow.codecs.vae)
    load_codec("runs/codec-mel/release")          # a decoder trained by recipes/codec (mel-vocos or dashengtokenizer)
"""

from __future__ import annotations

import os

import torch

from genflow import hub
from genflow.codecs.base import Codec
from genflow.codecs.mel import MODEL_TYPE as MEL_MODEL_TYPE
from genflow.codecs.mel import MelCodec, MelCodecConfig
from genflow.codecs.waveform import decode_latent, encode_audio, encode_batch

__all__ = ["Codec", "MelCodec", "MelCodecConfig", "load_codec", "encode_audio", "decode_latent", "encode_batch"]

DASHENG_HUB_ID = "mispeech/dashengtokenizer"
DASHENG_MODEL_TYPE = "dashengtokenizer"
MEL_VOCOS_MODEL_TYPE = "genflow-mel-vocos"  # = genflow.codecs.mel_vocos.MODEL_TYPE (a trained decoder, recipes/codec)
VALID_FORMS = (
    "'mel' or 'mel:key=value,...' (MelCodecConfig fields, e.g. 'mel:n_mels=80,frame_rate=50'); "
    f"'dasheng' (= {DASHENG_HUB_ID!r}); a local folder or hub id 'owner/name[@revision][:subfolder]' whose "
    f"config.json has model_type {MEL_MODEL_TYPE!r}, {MEL_VOCOS_MODEL_TYPE!r}, {DASHENG_MODEL_TYPE!r} or "
    "'genflow-oobleck-vae', or is a "
    "diffusers AutoencoderOobleck (e.g. 'stabilityai/stable-audio-open-1.0:vae')"
)
VAE_MODEL_TYPE = "genflow-oobleck-vae"  # = genflow.codecs.vae.MODEL_TYPE (kept here: vae.py imports diffusers lazily)


def _load_dasheng(folder: str) -> Codec:
    from genflow.codecs.dasheng import DashengTokenizer  # lazy: the mel codec needs none of it

    return DashengTokenizer.from_pretrained(folder)


def _load_mel_vocos(folder: str) -> Codec:
    from genflow.codecs.mel_vocos import MelVocosCodec

    return MelVocosCodec.from_pretrained(folder)


def _load_vae(folder: str) -> Codec:
    from genflow.codecs.vae import OobleckVAECodec  # lazy: imports diffusers

    return OobleckVAECodec.from_pretrained(folder) if hub.model_type(folder) == VAE_MODEL_TYPE else \
        OobleckVAECodec.from_vae(folder)


#: config.json model_type (or a diffusers _class_name) -> loader of that folder
CODEC_LOADERS = {MEL_MODEL_TYPE: MelCodec.from_pretrained, DASHENG_MODEL_TYPE: _load_dasheng,
                 MEL_VOCOS_MODEL_TYPE: _load_mel_vocos, VAE_MODEL_TYPE: _load_vae, "AutoencoderOobleck": _load_vae}


def _load_folder(ref: str) -> Codec:
    """A local folder or hub reference -> the codec class its config.json names."""
    folder = hub.resolve(ref, files=("config.json",), patterns=("*.safetensors", "vae/*"), what="codec folder")
    config = hub.read_json(folder / "config.json")
    kind = config.get("model_type") or config.get("_class_name")
    if kind not in CODEC_LOADERS:
        raise ValueError(f"{folder / 'config.json'} has model_type {kind!r}; expected one of "
                         f"{sorted(CODEC_LOADERS)}. Valid forms: {VALID_FORMS}")
    return CODEC_LOADERS[kind](str(folder))


def load_codec(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> Codec:
    """A frozen codec in eval mode from a name, a ``mel:`` spec, a hub id or a local folder (see module doc)."""
    name = os.fspath(name_or_path).strip()
    if name == "mel" or name.startswith("mel:"):
        codec = MelCodec(MelCodecConfig.from_string(name[4:]))
    elif name.lower() in ("dasheng", DASHENG_MODEL_TYPE):
        codec = _load_folder(DASHENG_HUB_ID)
    elif hub.is_local(name) or hub.is_hub_id(name):
        codec = _load_folder(name)
    else:
        raise ValueError(f"unknown codec {name!r} (not a known name, hub id or existing folder). "
                         f"Valid forms: {VALID_FORMS}")
    codec = codec.freeze()
    return codec.to(device) if device is not None else codec
