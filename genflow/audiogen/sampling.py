"""How the official generator samples, and an opt-in exact copy of its batched padding behaviour.

Official defaults: Euler, 25 steps, the F5-TTS sway schedule with coefficient -1, guidance scale 5, the
unconditional half with zero text and time-aligned contexts and the real masks, both halves in one
forward. ``genflow.flow.sample`` does all of this with an ``AudioGen`` model:

    x = sample(model, noise, official_sigmas(), guidance_scale=5.0, mask=mask, text=t5, text_mask=t5_mask)

The official loop evaluates 26 times, the last at sigma = 0, where the Euler step is zero: skipping it is
exact. Padding: genflow zeroes padded frames, so a prompt's result never depends on its batch (equal to the
official result for one prompt, or a batch of equal lengths). The official batched loop leaves noise in
padded frames and its final 3-tap conv reads it into the last valid frame; ``sample_official_batch``
reproduces that (for reproducing published numbers), with a model loaded with ``official_padding``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from genflow.sampling import SamplingSettings

#: the official sampling settings; no duration: the model's duration predictor sets each clip's length
DEFAULTS = SamplingSettings(duration_s=None, steps=25, guidance_scale=5.0, solver="euler", schedule="sway",
                            sway_coef=-1.0)
#: how captions reach T5 (a plain caption gets the tag; a prompt already composed with tags is kept)
PROMPT_TEMPLATE = "<|caption|> {}"


def official_pipeline(config) -> dict:
    """How genflow samples the official generator: codec, text encoder, prompt template, settings (pipeline.json)."""
    from genflow.release import FORMAT

    return {"format": FORMAT, "codec": config.codec, "text_encoder": config.text_encoder,
            "prompt_template": PROMPT_TEMPLATE, "sampling": DEFAULTS.to_dict()}


def official_sigmas(steps: int = 25, sway_coef: float = -1.0, device=None) -> Tensor:
    """The official sway sigmas (steps + 1,) from 1 to 0, computed in float32 as the official scheduler.

    Computed as released (float32 linspace, cos), so ``1000 * sigma`` truncates to the same integer
    timesteps; ``genflow.flow.sigma_schedule("sway")`` agrees to float32 rounding.
    """
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float32)
    t = t + sway_coef * (torch.cos(math.pi / 2.0 * t) - 1.0 + t)
    return (1.0 - t).to(device)


def official_padding(model: torch.nn.Module, on: bool = True) -> torch.nn.Module:
    """Switch an ``AudioGen`` (in place) to the official padding behaviour (``on``) or back to genflow's."""
    model.backbone.config = dataclasses.replace(model.backbone.config, zero_padding=not on)
    model.config = dataclasses.replace(model.config, backbone=model.backbone.config)
    return model


@torch.no_grad()
def sample_official_batch(model: torch.nn.Module, noise: Tensor, sigmas: Tensor, *, guidance_scale: float = 5.0,
                          mask: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
    """The official batched Euler loop: padded frames keep noise, are updated, and leak through the conv.

    noise (B, T, C), sigmas (S+1,) from 1 to 0; returns (B, T, C) with padded frames as the official code
    leaves them. Needs ``official_padding(model)``; use ``genflow.flow.sample`` for batch-independent results.
    """
    if model.backbone.config.zero_padding:
        raise ValueError("sample_official_batch needs the official padding behaviour: call "
                         "genflow.audiogen.official_padding(model) first (genflow.flow.sample otherwise)")
    B = noise.shape[0]
    two = torch.arange(2 * B, device=noise.device) >= B  # conditional half first, unconditional second
    kwargs = dict(mask=torch.cat([mask, mask]), text=torch.cat([text, text]),
                  text_mask=torch.cat([text_mask, text_mask]), drop_text=two)
    x = noise.float()
    levels = sigmas.float().tolist()
    for s, s_next in zip(levels[:-1], levels[1:]):  # the official extra step at sigma = 0 is zero: skipped
        v_c, v_u = model(torch.cat([x, x]), torch.full((2 * B,), s, device=x.device), **kwargs).float().chunk(2)
        x = x + (s_next - s) * (v_u + guidance_scale * (v_c - v_u))
    return x
