"""The seeded rule that turns a list of (name, shape, kind) into random weights, identically on every machine.

Real-size VGGish and CNN14 are hundreds of MB in fp32, too big to commit; a parity fixture stores this
rule's inputs instead (``weights.json``: seed + every tensor's name, shape and kind) and both sides, the
reference toolkit when the fixture is made and genflow in the test, regenerate the same tensors:

    values = PCG64(SeedSequence([seed, crc32(name)])).random(n, float32)   # uniform [0, 1)
    v = 2 * values - 1                                                        # uniform [-1, 1), float32
    weight (ndim >= 2): v * sqrt(6 / fan_in)   (He-uniform, fan_in = prod(shape[1:]))
    bias: 0.1 v;  bn_weight: 1 + 0.2 v;  bn_bias: 0.2 v;  running_mean: 0.2 v;  running_var: 1 + 0.5 v
    count: int64 zeros;  stored: the tensor of the same name in the fixture's ``stored.safetensors``
    an entry [name, shape, kind, offset, scale] overrides the kind's offset/scale: offset + scale * v
    (used for CNN14's input BatchNorm, whose running statistics must match log-mel dB values ~ -50 +- 35)

all in float32 (the scale and offset rounded to float32 first). NumPy's PCG64 ``random()`` stream is fixed
by NEP 19 and does not depend on torch.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

_SCALES = {"bias": (0.0, 0.1), "bn_weight": (1.0, 0.2), "bn_bias": (0.0, 0.2), "running_mean": (0.0, 0.2),
           "running_var": (1.0, 0.5)}


def seeded_tensor(seed: int, name: str, shape: list[int], kind: str, affine: list[float] | None = None
                  ) -> torch.Tensor:
    """One tensor of the rule above (kinds ``weight``, ``bias``, ``bn_*``, ``running_*``, ``count``)."""
    if kind == "count":
        return torch.zeros(shape, dtype=torch.int64)
    n = math.prod(shape)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))
    v = rng.random(n, dtype=np.float32)
    v *= np.float32(2.0)  # in place, float32: real-size networks hold ~10^8 values
    v -= np.float32(1.0)
    offset, scale = affine or ((0.0, math.sqrt(6.0 / math.prod(shape[1:]))) if kind == "weight" else _SCALES[kind])
    v *= np.float32(scale)
    if offset:
        v += np.float32(offset)
    return torch.from_numpy(v.reshape(shape))


def seeded_state_dict(spec: dict, stored: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``{"seed": s, "tensors": [[name, shape, kind], ...]}`` -> the state_dict the rule gives."""
    out = {}
    for name, shape, kind, *affine in spec["tensors"]:
        out[name] = stored[name] if kind == "stored" else seeded_tensor(spec["seed"], name, shape, kind, affine)
    return out


def kind_of(name: str, tensor: torch.Tensor, bn_prefixes: tuple[str, ...]) -> str:
    """The rule's kind for a reference state_dict entry (BatchNorm modules named by ``bn_prefixes``)."""
    leaf = name.rsplit(".", 1)[-1]
    is_bn = name.rsplit(".", 1)[0].endswith(bn_prefixes)
    if leaf == "num_batches_tracked":
        return "count"
    if leaf in ("running_mean", "running_var"):
        return leaf
    if is_bn:
        return "bn_weight" if leaf == "weight" else "bn_bias"
    return "weight" if tensor.ndim >= 2 else "bias"
