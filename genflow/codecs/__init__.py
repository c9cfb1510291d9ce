"""Waveform <-> latent codecs behind one contract (``Codec``), and ``load_codec`` to get one by name or path.

    load_codec("mel")                            # weight-free log-mel codec, defaults (64 mels, 25 Hz)
    load_codec("mel:n_mels=80,frame_rate=50")     # with overrides of MelCodecConfig fields
    load_codec("dasheng")                         # = "mispeech/dashengtokenizer" from the Hugging Face hub
    load_codec("owner/name") / "owner/name@rev"   # a DashengTokenizer checkpoint on the hub
    load_codec("path/to/folder")                  # dispatch on config.json's model_type (or diffusers _class_name)
    load_codec("stabilityai/stable-audio-open-1.0:vae")  # an Oobleck VAE: SOURCE[@rev]:SUBFOLDER (genflow.codecs.vae)
"""

from __future__ import annotations

import json
import os

import torch

from genflow.codecs.base import Codec
from genflow.codecs.mel import MODEL_TYPE as MEL_MODEL_TYPE
from genflow.codecs.mel import MelCodec, MelCodecConfig
from genflow.codecs.waveform import decode_latent, encode_audio, encode_batch

__all__ = ["Codec", "MelCodec", "MelCodecConfig", "load_codec", "encode_audio", "decode_latent", "encode_batch"]

DASHENG_HUB_ID = "mispeech/dashengtokenizer"
DASHENG_MODEL_TYPE = "dashengtokenizer"
VALID_FORMS = (
    "'mel' or 'mel:key=value,...' (MelCodecConfig fields, e.g. 'mel:n_mels=80,frame_rate=50'); "
    f"'dasheng' (= {DASHENG_HUB_ID!r}); a hub id 'owner/name' or 'owner/name@revision' of a DashengTokenizer "
    f"checkpoint; a local folder whose config.json has model_type {MEL_MODEL_TYPE!r} or {DASHENG_MODEL_TYPE!r}; "
    "an Oobleck VAE: a diffusers AutoencoderOobleck folder, 'FOLDER_OR_HUB_ID[@revision]:SUBFOLDER' "
    "(e.g. 'stabilityai/stable-audio-open-1.0:vae'), or a genflow VAE codec folder with latent statistics"
)
VAE_MODEL_TYPE = "genflow-oobleck-vae"  # = genflow.codecs.vae.MODEL_TYPE (kept here: vae.py imports diffusers lazily)


def _load_dasheng(path_or_hub_id: str, revision: str | None = None) -> Codec:
    from genflow.codecs.dasheng import DashengTokenizer  # lazy: the mel codec needs none of it

    return DashengTokenizer.from_pretrained(path_or_hub_id, revision=revision)


def _load_folder(path: str) -> Codec:
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ValueError(f"codec folder {path!r} has no config.json; expected a folder written by a codec's "
                         f"save_pretrained. Valid forms: {VALID_FORMS}")
    with open(cfg_file) as f:
        cfg = json.load(f)
    model_type = cfg.get("model_type")
    if model_type == VAE_MODEL_TYPE or cfg.get("_class_name") == "AutoencoderOobleck":
        from genflow.codecs.vae import OobleckVAECodec

        return (OobleckVAECodec.from_pretrained(path) if model_type == VAE_MODEL_TYPE
                else OobleckVAECodec.from_vae(path))
    if model_type == MEL_MODEL_TYPE:
        return MelCodec.from_pretrained(path)
    if model_type == DASHENG_MODEL_TYPE:
        return _load_dasheng(path)
    raise ValueError(f"{cfg_file} has model_type {model_type!r}; expected {MEL_MODEL_TYPE!r} or "
                     f"{DASHENG_MODEL_TYPE!r}. Valid forms: {VALID_FORMS}")


def load_codec(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> Codec:
    """A frozen codec in eval mode from a name, a ``mel:`` spec, a hub id or a local folder (see module doc)."""
    name = os.fspath(name_or_path).strip()
    if name == "mel" or name.startswith("mel:"):
        codec = MelCodec(MelCodecConfig.from_string(name[4:]))
    elif os.path.isdir(name):
        codec = _load_folder(name)
    elif ":" in name:  # SOURCE[@revision]:SUBFOLDER of a diffusers AutoencoderOobleck
        from genflow.codecs.vae import OobleckVAECodec, parse_vae_spec

        codec = OobleckVAECodec.from_vae(*parse_vae_spec(name))
    elif name.lower() in ("dasheng", DASHENG_MODEL_TYPE, DASHENG_HUB_ID):
        codec = _load_dasheng(DASHENG_HUB_ID)
    elif name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("@")[0].split("/")):
        hub_id, _, revision = name.partition("@")
        codec = _load_dasheng(hub_id, revision or None)
    else:
        raise ValueError(f"unknown codec {name!r} (not a known name, hub id or existing folder). "
                         f"Valid forms: {VALID_FORMS}")
    codec = codec.freeze()
    return codec.to(device) if device is not None else codec
