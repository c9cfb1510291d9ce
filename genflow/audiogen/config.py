"""Configs: the official ``config.json`` of Dasheng-AudioGen, and genflow's own ``AudioGenConfig``.

The official config (``model_type: dasheng_audiogen``) names every mode of its U-DiT; genflow supports the
released modes and refuses any other with the field, its value and the released one. ``AudioGenConfig``
is what a genflow folder stores: the DiT config plus the text front-end sizes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from genflow import hub
from genflow.config import check_known
from genflow.model import DiTConfig

OFFICIAL_MODEL_TYPE = "dasheng_audiogen"
MODEL_TYPE = "genflow-audiogen"

# official field -> the only value genflow maps (the released one); anything else is another architecture
_REQUIRED_MODES = {
    "dit_input_type": "1d", "dit_patch_size": 1, "dit_norm_layer": "layernorm", "dit_act_layer": "geglu",
    "dit_qk_norm": "layernorm", "dit_context_norm": True, "dit_time_fusion": "ada",
    "dit_ta_context_fusion": "add", "dit_ta_context_norm": True, "dit_context_fusion": "cross",
    "dit_context_pe_method": "none", "dit_pe_method": "none", "dit_rope_mode": "shared",
}


@dataclass
class AudioGenConfig:
    """The official generator as genflow holds it: DiT backbone + T5 front-end + duration rule."""

    backbone: DiTConfig = field(default_factory=DiTConfig)
    text_dim: int = 1024  # T5 width = content width (official content_dim)
    instruction_len: int = 14  # tokens of the stored instruction embedding (the adapter's keys/values)
    instruction_dim: int = 1024  # official task_instruction_dim
    zero_instruction: bool = False  # official use_zero_instruction: one zero token instead of the stored ones
    adapter_heads: int = 16
    adapter_dropout: float = 0.2  # only in training mode (fine-tuning), as released
    sample_rate: int = 16000
    frame_rate: int = 25  # latent frames per second (official sample_rate // downsampling_ratio)
    duration_offset: float = 1.0  # seconds = exp(pred) - offset
    text_encoder: str = "google/flan-t5-large"
    codec: str = "mispeech/dashengtokenizer"

    def to_dict(self) -> dict:
        """JSON-ready dict with ``model_type`` first (what ``config.json`` holds)."""
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> AudioGenConfig:
        """Inverse of ``to_dict``; unknown keys fail with the nearest valid name."""
        d = dict(d)
        if d.pop("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r} for an AudioGenConfig")
        check_known(d, [f.name for f in dataclasses.fields(cls)], "AudioGenConfig")
        return cls(**{**d, "backbone": DiTConfig.from_dict(d.get("backbone", {}))})


def is_official(path: str | os.PathLike) -> bool:
    """True when ``path`` (a folder or its ``config.json``) is the official Dasheng-AudioGen generator."""
    path = Path(path)
    return hub.model_type(path if path.is_dir() else path.parent) == OFFICIAL_MODEL_TYPE


def from_official(cfg: dict, source: str = "config.json") -> AudioGenConfig:
    """The official config dict -> ``AudioGenConfig``; unsupported modes fail naming the field."""
    if cfg.get("model_type") != OFFICIAL_MODEL_TYPE:
        raise ValueError(f"{source}: model_type {cfg.get('model_type')!r}, expected {OFFICIAL_MODEL_TYPE!r} "
                         "(the official Dasheng-AudioGen config.json)")
    for key, value in _REQUIRED_MODES.items():
        if cfg.get(key, value) != value:
            raise ValueError(f"{source}: {key}={cfg[key]!r} is not supported; genflow maps the released "
                             f"architecture ({key}={value!r})")
    if cfg.get("special_tokens"):
        raise ValueError(f"{source}: special_tokens {cfg['special_tokens']} replace T5 input embeddings, which "
                         "genflow's front-end (it takes T5 hidden states) does not support; the release has none")
    latent = cfg["latent_dim"]
    if not cfg["dit_in_chans"] == cfg["dit_out_chans"] == latent:
        raise ValueError(f"{source}: dit_in_chans/dit_out_chans/latent_dim must be equal, got "
                         f"{cfg['dit_in_chans']}/{cfg['dit_out_chans']}/{latent}")
    if not cfg["dit_context_dim"] == cfg["dit_ta_context_dim"] == cfg["content_dim"]:
        raise ValueError(f"{source}: dit_context_dim, dit_ta_context_dim and content_dim must be equal (the "
                         f"adapter output feeds both), got {cfg['dit_context_dim']}, {cfg['dit_ta_context_dim']}, "
                         f"{cfg['content_dim']}")
    if cfg["sample_rate"] % cfg["downsampling_ratio"]:
        raise ValueError(f"{source}: sample_rate {cfg['sample_rate']} is not a multiple of downsampling_ratio "
                         f"{cfg['downsampling_ratio']}")
    backbone = DiTConfig(
        latent_dim=latent, width=cfg["dit_embed_dim"], depth=cfg["dit_depth"], heads=cfg["dit_num_heads"],
        mlp_ratio=float(cfg["dit_mlp_ratio"]), mlp="geglu", qk_norm="layernorm", adaln_rank=0, gate="uniflow",
        text_dim=cfg["dit_context_dim"], text_null_tokens=1, aligned_dim=cfg["dit_ta_context_dim"],
        null_cond="zero", long_skip=True, final_conv=True, rope_base=10000.0, norm_eps=1e-5, timestep_int=True)
    return AudioGenConfig(
        backbone=backbone, text_dim=cfg["content_dim"], instruction_len=cfg["instruction_seq_len"],
        instruction_dim=cfg["task_instruction_dim"], zero_instruction=bool(cfg["use_zero_instruction"]),
        adapter_heads=cfg["adapter_num_heads"], adapter_dropout=float(cfg["adapter_dropout"]),
        sample_rate=cfg["sample_rate"], frame_rate=cfg["sample_rate"] // cfg["downsampling_ratio"],
        duration_offset=float(cfg["duration_offset"]), text_encoder=cfg["text_encoder_name"],
        codec=cfg["tokenizer_name"])
