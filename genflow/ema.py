"""Exponential moving average of model weights, the weights genflow samples and releases with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of the trainable parameters, updated with one fused lerp per step.

    Works on whatever tensors ``model.parameters()`` holds after ``accelerator.prepare``, so under FSDP
    each process averages its own shard. ``applied()`` swaps the averaged weights in (for sampling and
    release) and back. ``save``/``load`` write one safetensors file per shard (no pickle).
    """

    def __init__(self, params: Iterable[nn.Parameter], decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.params = [p for p in params if p.requires_grad]
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.decay = decay
        self.warmup = warmup
        # updates so far, fp64 on the shadows' device: a skipped step is decided there, without a host sync
        device = _local(self.shadow[0]).device if self.shadow else torch.device("cpu")
        self._count = torch.zeros((), dtype=torch.float64, device=device)

    @property
    def num_updates(self) -> int:
        """Updates applied so far (reading it is a host sync: at checkpoints)."""
        return int(self._count.item())

    @num_updates.setter
    def num_updates(self, n: int) -> None:
        self._count.fill_(n)

    @torch.no_grad()
    def update(self, apply: torch.Tensor | None = None) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, for all parameters at once.

        With warm-up, (1 + n) / (10 + n) caps the decay early in training (n: updates so far).

        ``apply``: a 0-d bool tensor; False leaves the shadows and the update count as they were (a skipped
        non-finite step), decided on the device.
        """
        n = self._count
        decay = torch.clamp((1 + n) / (10 + n), max=self.decay) if self.warmup else torch.full_like(n, self.decay)
        weight = (1 - decay).float()  # fp64 maths, an fp32 weight: what a Python float weight becomes in the kernel
        if apply is not None:
            weight = weight * apply.to(weight.device)
        n.add_(1 if apply is None else apply.to(n.device, torch.float64))
        # local shards (FSDP2 DTensors): shadows and parameters are sharded alike
        torch._foreach_lerp_([_local(s) for s in self.shadow], [_local(p.detach()).float() for p in self.params],
                             weight)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the model's parameters.

        Swapped, not backed up: while inside, each shadow holds its parameter's raw value (exactly: fp32,
        or a lower precision widened to fp32), so the extra memory is one tensor at a time, not a model copy.
        """
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self) -> None:
        """Exchange the values of every parameter and its shadow (one temporary tensor at a time)."""
        for p, s in zip(self.params, self.shadow):
            raw = p.detach().clone()
            p.copy_(s)
            s.copy_(raw)

    def save(self, path: str | Path) -> None:
        """Write this process's shadows to safetensors (under FSDP each process holds, and saves, its shard)."""
        from genflow.hub import write_weights

        tensors = {f"shadow.{i}": _local(t) for i, t in enumerate(self.shadow)}
        write_weights(path, tensors, metadata={"decay": str(self.decay), "num_updates": str(self.num_updates)})

    def load(self, path: str | Path) -> None:
        """Read shadows written by ``save`` (same model, same sharding)."""
        from safetensors import safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no EMA weights in this checkpoint; resume with the process count "
                                    "and sharding (DDP/FSDP) it was saved with")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            self.load_state_dict({"shadow": [f.get_tensor(f"shadow.{i}") for i in range(len(f.keys()))],
                                  "decay": float(meta["decay"]), "num_updates": int(meta["num_updates"])})

    def state_dict(self) -> dict:
        """Checkpointable state (tensors, ints and floats only: loads with weights_only=True)."""
        return {"shadow": self.shadow, "decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore shadows saved by ``state_dict`` (same parameter order and shapes)."""
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"EMA state has {len(shadow)} tensors, the model has {len(self.shadow)}: "
                             "resume with the same model config")
        for mine, theirs in zip(self.shadow, shadow):
            mine = _local(mine)
            if mine.shape != theirs.shape:
                raise ValueError(f"EMA tensor shape {tuple(theirs.shape)} != model's {tuple(mine.shape)}")
            mine.copy_(theirs)
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: the local shard of an FSDP2 DTensor, else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t
