"""LoRA fine-tuning through ``peft``: adapters on a released model, only they train and only they are checkpointed.

    model = add_lora(model, LoraSettings(rank=16, alpha=32))   # base frozen, adapters trainable
    state = trained_state(model, model.state_dict())             # what a checkpoint stores
    model, weights = merged_release(model, state_dict)           # the release: adapters merged into the base

The adapters are peft's (``inject_adapter_in_model``), so any module name pattern peft accepts works as a
target. A release merges them (``W + B A * alpha / rank``) into a model of the base's own class: it loads
like any release, without peft.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: the DiT's attention and MLP projections (self- and cross-attention, GEGLU/GELU MLP)
DEFAULT_TARGETS = "qkv,q,kv,proj,fc1,fc2"


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters: rank 0 = off (full fine-tuning); targets = comma-separated module names."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS

    def __post_init__(self):
        if self.rank < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_list:
            raise ValueError(f"lora settings {self}: expected rank >= 0 (0 = off), alpha > 0, dropout in [0, 1) "
                             "and at least one target module name; fix --lora.*")

    @property
    def target_list(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters."""
    return any("lora_" in name for name, _ in model.named_parameters())


def add_lora(model: nn.Module, settings: LoraSettings, full: tuple[str, ...] = ()) -> nn.Module:
    """Inject adapters into ``settings.targets`` and freeze everything else (in place; returns ``model``).

    ``full``: name fragments of parameters that train whole beside the adapters (modules the base release
    lacks, such as a few-step student's new ``interval_embedder.``).
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    unknown = sorted(set(settings.target_list) - names)
    if len(unknown) == len(settings.target_list):
        raise ValueError(f"--lora.targets {settings.targets!r}: no linear layer of the model has these names; "
                         f"its linear layers are named {sorted(names)}")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=[t for t in settings.target_list if t in names])
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or any(f in name for f in full))
    return model


def trained_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained tensors of a LoRA model's state dict: the adapters and any ``full`` parameters (all a
    checkpoint needs: the frozen base comes from --init)."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in trained}


@torch.no_grad()
def merged_release(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[nn.Module, dict]:
    """(a model of the base class on the meta device, its merged weights) from a LoRA model's state dict.

    ``state_dict`` holds the weights to release (e.g. the EMA's); every adapted weight gets ``B A * scale``.
    """
    layers = _lora_layers(model)
    merged = {}
    for key, value in state_dict.items():
        if "lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        owner = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and owner in layers:
            layer = layers[owner]
            a, b = state_dict[f"{owner}.lora_A.default.weight"], state_dict[f"{owner}.lora_B.default.weight"]
            value = value + (b.float() @ a.float() * layer.scaling["default"]).to(value.dtype)
        merged[name] = value
    with torch.device("meta"):
        base = type(model)(model.config)
    return base, merged
