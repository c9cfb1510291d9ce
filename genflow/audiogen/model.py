"""``AudioGen``: the official generator as one genflow model (DiT backbone + trainable text front-end).

Its forward has the signature of ``genflow.model.DiT.forward``, so ``genflow.flow.sample`` (guidance with
both halves in one forward) and ``genflow.flow.flow_loss`` (fine-tuning) use it unchanged:

    model = AudioGen.from_pretrained("converted/")                      # or load_official("official/")
    v = model(x, sigma, mask=mask, text=t5_states, text_mask=t5_mask)   # x (B, T, 1280), sigma (B,)
    frames = model.predict_frames(t5_states, t5_mask)                   # (B,) latent frames, >= 1

``text`` is the T5 last hidden state, before ``content_encoder.text_encoder.proj``. ``aligned`` None means
the stored ``dummy_ta_embed`` on every frame (text-to-audio). A ``drop_text`` row is the official
unconditional input: zero content and zero time-aligned context, with the real masks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from genflow import hub
from genflow.audiogen.config import MODEL_TYPE, AudioGenConfig
from genflow.audiogen.frontend import TextFrontEnd
from genflow.audiogen.weights import SafetensorsReader
from genflow.model import DiT


class AudioGen(nn.Module):
    """Velocity network ``model(x (B,T,C), sigma (B,), *, mask, text, text_mask, ...) -> v (B,T,C)``."""

    def __init__(self, config: AudioGenConfig):
        super().__init__()
        self.config = config
        self.backbone = DiT(config.backbone)
        self.frontend = TextFrontEnd(config)
        # the time-aligned input of every frame when there is no time-aligned condition (trainable, as released)
        self.dummy_ta_embed = nn.Parameter(torch.zeros(config.backbone.aligned_dim))
        # The flow loss never reaches the clip-length predictor: fine-tuning keeps it as released (frozen), so
        # every trainable parameter is used on every step (DDP needs no find_unused_parameters).
        self.frontend.duration_mlp.requires_grad_(False)

    def forward(self, x: Tensor, sigma: Tensor, *, mask: Tensor | None = None, text: Tensor | None = None,
                text_mask: Tensor | None = None, aligned: Tensor | None = None, drop_text: Tensor | None = None,
                drop_aligned: Tensor | None = None, interval: Tensor | None = None) -> Tensor:
        """Velocity v (B, T, C); dropped rows get zero text and time-aligned contexts (official CFG).

        ``interval`` (B,): a few-step student's (``backbone.interval_input``) average velocity over
        [sigma - interval, sigma], as ``DiT.forward``."""
        B, T = x.shape[:2]
        dtype = self.dummy_ta_embed.dtype
        if text is None:  # unconditional: one zero content token for every row
            text = torch.zeros(B, 1, self.config.text_dim, device=x.device, dtype=dtype)
            text_mask, drop_text = None, torch.ones(B, dtype=torch.bool, device=x.device)
        elif text.ndim != 3 or text.shape[0] != B or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text has shape {tuple(text.shape)}; expected ({B}, L, {self.config.text_dim}): the "
                             f"last hidden state of {self.config.text_encoder} for the prompts of x")
        content = self.frontend(text, text_mask)  # (B, L, D)
        if aligned is None:  # the dummy is part of the text condition: dropped together with it
            aligned, drop_aligned = self.dummy_ta_embed.expand(B, T, -1), drop_text
        if drop_text is not None:
            content = content.masked_fill(drop_text.bool()[:, None, None], 0.0)
        if drop_aligned is not None:
            aligned = aligned.masked_fill(drop_aligned.bool()[:, None, None], 0.0)
        # zero contexts go through the backbone with the real masks: the released unconditional branch
        return self.backbone(x, sigma, mask=mask, text=content, text_mask=text_mask, aligned=aligned,
                             interval=interval)

    @torch.no_grad()
    def predict_frames(self, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        """Latent frames per prompt (B,) long: ``round(frame_rate * (exp(pred) - 1))``, at least 1."""
        pred = self.frontend.duration(text, text_mask).float()
        frames = torch.round((torch.exp(pred) - self.config.duration_offset) * self.config.frame_rate).long()
        if (frames <= 0).any():  # the official code would build an empty or negative-length latent here
            warnings.warn(f"predicted durations {pred.tolist()} (log(1 + s)) give {frames.tolist()} frames; "
                          "using at least 1 frame. Pass a duration for these prompts", stacklevel=2)
        return frames.clamp(min=1)

    # -- release folders ----------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        """Write ``model.safetensors`` then ``config.json`` (``model_type: genflow-audiogen``), atomically."""
        return hub.save_model(save_directory, self, state_dict, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> AudioGen:
        """Load a folder (or hub id) written by ``save_pretrained`` strictly, straight into ``dtype``/``device``."""
        folder = hub.resolve(path_or_hub_id, files=("config.json", "model.safetensors"), what="AudioGen folder")
        if hub.model_type(folder) != MODEL_TYPE:
            raise ValueError(f"{folder / 'config.json'}: model_type {hub.model_type(folder)!r}, expected "
                             f"{MODEL_TYPE!r}; an official folder loads with genflow.audiogen.load_official")
        config = AudioGenConfig.from_dict(hub.read_json(folder / "config.json"))
        with SafetensorsReader(folder / "model.safetensors") as f:
            return build(config, f.keys(), f.get, str(folder / "model.safetensors"), dtype=dtype, device=device)


def build(config: AudioGenConfig, keys: list[str], get: Callable[[str], Tensor], source: str,
          dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> AudioGen:
    """An ``AudioGen`` built on the meta device and filled strictly with ``get(key)`` for every key.

    Tensors are read one at a time and cast to ``device``/``dtype`` (floating tensors only) as they are
    read, then assigned: host memory never holds the weights twice (only one source tensor at a time).
    """
    with torch.device("meta"):
        model = AudioGen(config)
    expected = model.state_dict()
    hub.check_keys(expected, keys, source)
    state, bad = {}, []
    for key in keys:
        v = get(key)
        if tuple(v.shape) != tuple(expected[key].shape):
            bad.append(f"{key}: {tuple(v.shape)} vs {tuple(expected[key].shape)}")
            continue
        target = (dtype or torch.float32) if expected[key].is_floating_point() else expected[key].dtype
        state[key] = v.to(device=device or "cpu", dtype=target)
        del v
    if bad:
        raise ValueError(f"{source} has tensors of the wrong shape (file vs config): {bad}")
    model.load_state_dict(state, strict=True, assign=True)
    for mod_name, module in model.named_modules():  # non-persistent buffers (the zero null conditions)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                assert name.startswith("null_"), f"unexpected meta buffer {mod_name}.{name}"
                setattr(module, name, torch.zeros(buf.shape, dtype=dtype or torch.float32, device=device or "cpu"))
    return model.eval()
