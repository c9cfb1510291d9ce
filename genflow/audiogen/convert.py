"""Official Dasheng-AudioGen weights -> genflow ``AudioGen``: the key mapping and ``load_official``.

Every official tensor is used exactly once, checked and dropped, or ignored for a stated reason
(``IGNORED``); anything else missing or unexpected is an error that names it. Backbone mapping:

    patch_embed.proj (Conv1d k=1)          -> x_embedder (Linear)
    attn.to_q/to_k/to_v                    -> attn.qkv (concatenated); cross_attn.to_k/to_v -> cross_attn.kv
    norm1, norm3 (affine) + adaln.time_ada -> adaLN.linear (the affine folded in, see ``_fold``)
    final_block.norm + time_ada_final      -> final_layer.adaLN (folded)
    norm2 / norm_context / ta_context_*    -> norm_cross / norm_ctx / aligned_norm, aligned_proj
    in_blocks.i, mid_block, out_blocks.j   -> blocks.i, blocks.n, blocks.n+1+j (n = depth // 2)
    attn.rotary.inv_freq                   -> checked equal to genflow's RoPE frequencies, then dropped
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from genflow.audiogen.config import AudioGenConfig, from_official
from genflow.audiogen.model import AudioGen, build
from genflow.audiogen.weights import SafetensorsReader
from genflow.model import rope_frequencies

# official tensors genflow does not hold, and why
IGNORED = {
    "content_adapter.duration_predictor.": "per-token durations, only for time-aligned tasks; text-to-audio "
                                           "discards them (the official generate computes and drops them)",
    "dummy_nta_embed": "the context of time-aligned rows only; text-to-audio has none",
    "dummy_param": "an empty tensor the official code uses to find its device",
}


def _fold(ada_w: Tensor, ada_b: Tensor, norms: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Fold affine LayerNorms (w, b) into the adaLN Linear (k*d, d) that modulates them, in fp32.

    (w*n + b) * (1 + scale) + shift == n * (1 + scale') + shift' with scale' = w*(1 + scale) - 1 and
    shift' = b*(1 + scale) + shift: both stay affine in the time embedding, so they fold into the Linear.
    Chunks: block (shift, scale, gate) x 2 with norms [norm1, norm3]; final layer (shift, scale), [norm].
    """
    k = ada_w.shape[0] // ada_w.shape[1]  # 6 (block) or 2 (final layer)
    ws, bs = list(ada_w.float().chunk(k)), list(ada_b.float().chunk(k))
    for i, (nw, nb) in enumerate(norms):
        sh, sc = 3 * i, 3 * i + 1  # (0, 1) and (3, 4)
        nw, nb = nw.float(), nb.float()
        ws[sh], bs[sh] = ws[sh] + nb[:, None] * ws[sc], bs[sh] + nb * (1 + bs[sc])
        ws[sc], bs[sc] = nw[:, None] * ws[sc], nw * (1 + bs[sc]) - 1
    return torch.cat(ws), torch.cat(bs)


def _block_rules(o: str, g: str, skip: bool) -> dict[str, tuple[list[str], Callable]]:
    """genflow key -> (official keys, combine) for one block (official prefix o, genflow prefix g)."""
    same = {"attn.q_norm": "attn.norm_q", "attn.k_norm": "attn.norm_k", "attn.proj": "attn.proj",
            "cross_attn.q_norm": "cross_attn.norm_q", "cross_attn.k_norm": "cross_attn.norm_k",
            "cross_attn.proj": "cross_attn.proj", "norm_cross": "norm2", "norm_ctx": "norm_context",
            "mlp.fc1": "mlp.net.0.proj", "mlp.fc2": "mlp.net.2", "aligned_norm": "ta_context_norm"}
    if skip:
        same.update({"skip_norm": "skip_norm", "skip_proj": "skip_linear"})
    rules = {f"{g}.{a}.{p}": ([f"{o}.{b}.{p}"], _one) for a, b in same.items() for p in ("weight", "bias")}
    rules[f"{g}.aligned_proj.weight"] = ([f"{o}.ta_context_projection.weight"], _one)
    rules[f"{g}.attn.qkv.weight"] = ([f"{o}.attn.to_{n}.weight" for n in "qkv"], _cat)
    rules[f"{g}.cross_attn.q.weight"] = ([f"{o}.cross_attn.to_q.weight"], _one)
    rules[f"{g}.cross_attn.kv.weight"] = ([f"{o}.cross_attn.to_{n}.weight" for n in "kv"], _cat)
    ada = [f"{o}.adaln.time_ada.weight", f"{o}.adaln.time_ada.bias"] + [
        f"{o}.{n}.{p}" for n in ("norm1", "norm3") for p in ("weight", "bias")]
    rules[f"{g}.adaLN.linear.weight"] = (ada, lambda t: _fold(t[0], t[1], [t[2:4], t[4:6]])[0])
    rules[f"{g}.adaLN.linear.bias"] = (ada, lambda t: _fold(t[0], t[1], [t[2:4], t[4:6]])[1])
    return rules


def _one(t):
    return t[0]


def _cat(t):
    return torch.cat(t, dim=0)


def _squeeze(t):
    return t[0][..., 0]  # Conv1d(k=1) weight (out, in, 1) -> Linear weight (out, in)


def mapping(config: AudioGenConfig) -> dict[str, tuple[list[str], Callable]]:
    """genflow state-dict key -> (official keys it is made of, how) for the whole model."""
    n = config.backbone.depth // 2
    rules: dict[str, tuple[list[str], Callable]] = {}
    for i in range(2 * n + 1):
        o = (f"backbone.in_blocks.{i}" if i < n else "backbone.mid_block" if i == n
             else f"backbone.out_blocks.{i - n - 1}")
        rules.update(_block_rules(o, f"backbone.blocks.{i}", skip=i > n))
    same = {"backbone.t_embedder.0": "backbone.time_embed.mlp.0",
            "backbone.t_embedder.2": "backbone.time_embed.mlp.2",
            "backbone.text_embedder.0": "backbone.context_embed.0",
            "backbone.text_embedder.2": "backbone.context_embed.2",
            "backbone.final_layer.linear": "backbone.final_block.linear",
            "backbone.final_layer.conv": "backbone.final_block.final_layer",
            "frontend.proj": "content_encoder.text_encoder.proj",
            "frontend.attn.out_proj": "content_adapter.attn.out_proj",
            "frontend.norm": "content_adapter.norm",
            "frontend.duration_mlp.0": "content_adapter.global_duration_mlp.0",
            "frontend.duration_mlp.3": "content_adapter.global_duration_mlp.3"}
    rules.update({f"{g}.{p}": ([f"{o}.{p}"], _one) for g, o in same.items() for p in ("weight", "bias")})
    for g, o in (("backbone.x_embedder", "backbone.patch_embed.proj"),
                 ("frontend.content_proj", "content_adapter.content_proj")):
        rules[f"{g}.weight"], rules[f"{g}.bias"] = ([f"{o}.weight"], _squeeze), ([f"{o}.bias"], _one)
    fin = ["backbone.time_ada_final.weight", "backbone.time_ada_final.bias", "backbone.final_block.norm.weight",
           "backbone.final_block.norm.bias"]
    rules["backbone.final_layer.adaLN.weight"] = (fin, lambda t: _fold(t[0], t[1], [t[2:4]])[0])
    rules["backbone.final_layer.adaLN.bias"] = (fin, lambda t: _fold(t[0], t[1], [t[2:4]])[1])
    # torch's MultiheadAttention names: packed in_proj when kdim == embed dim, else q/k/v_proj_weight
    attn = (["in_proj_weight", "in_proj_bias"] if config.instruction_dim == config.text_dim
            else ["q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"])
    rules.update({f"frontend.attn.{p}": ([f"content_adapter.attn.{p}"], _one) for p in attn})
    rules["dummy_ta_embed"] = (["dummy_ta_embed"], _one)
    if config.zero_instruction:  # the stored embedding is unused: one zero token, as the official code
        rules["frontend.instruction"] = (["instruction_embedding"], lambda t: torch.zeros_like(t[0][:, :1]))
    else:
        rules["frontend.instruction"] = (["instruction_embedding"], _one)
    return rules


def _checks(config: AudioGenConfig) -> dict[str, Callable[[Tensor], str | None]]:
    """Official tensors genflow computes itself: key prefix/name -> check (None when equal, else why)."""
    hd = config.backbone.width // config.backbone.heads

    def rope(t: Tensor) -> str | None:
        ours = rope_frequencies(hd, config.backbone.rope_base)
        if t.shape != ours.shape or not torch.allclose(t.float(), ours, rtol=1e-6, atol=0):
            return f"RoPE inv_freq {t.flatten()[:3].tolist()}... differs from base {config.backbone.rope_base}"
        return None

    def lengths(t: Tensor) -> str | None:
        if config.zero_instruction or int(t.reshape(-1)[0]) == config.instruction_len:
            return None
        return (f"instruction_lengths {t.tolist()} is not instruction_seq_len {config.instruction_len}; genflow "
                "attends to every stored instruction token")

    return {".attn.rotary.inv_freq": rope, "instruction_lengths": lengths}


def official_state(config: AudioGenConfig, keys: list[str], get: Callable[[str], Tensor],
                   source: str) -> tuple[list[str], Callable[[str], Tensor]]:
    """Check the official key set against the mapping; -> (genflow keys, lazy getter of each mapped tensor).

    Raises naming every official tensor that is missing, and every one neither mapped, checked nor ignored.
    """
    rules, checks = mapping(config), _checks(config)
    needed = {k for src, _ in rules.values() for k in src}
    missing = sorted(needed - set(keys))
    problems, unexpected = [], []
    for key in keys:
        check = next((fn for name, fn in checks.items() if key.endswith(name)), None)
        if check is not None:
            if (why := check(get(key))) is not None:
                problems.append(f"{key}: {why}")
        elif key not in needed and not any(key.startswith(p) for p in IGNORED):
            unexpected.append(key)
    if missing or unexpected or problems:
        raise ValueError(f"{source} is not the official Dasheng-AudioGen layout for its config.json: missing "
                         f"{missing}, unexpected {unexpected}, failed checks {problems}. Use the config.json "
                         "released with these weights (or convert a matching folder)")

    last: dict = {}  # the sources of the previous rule: a fold's weight and bias read them once

    def mapped(key: str) -> Tensor:
        src, combine = rules[key]
        if last.get("src") != src:
            last.update(src=src, tensors=[get(k) for k in src])
        return combine(last["tensors"])

    return list(rules), mapped


def load_official(folder: str | os.PathLike, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> AudioGen:
    """The official folder (``config.json`` + ``model.safetensors``) -> ``AudioGen`` in ``dtype`` on ``device``.

    Built on the meta device and filled one tensor at a time (plain reads, no memory map), so host memory
    holds the weights once plus one tensor. Eval mode; fp32 when ``dtype`` is None.
    """
    folder = Path(folder)
    files = [folder / "config.json", folder / "model.safetensors"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; the official Dasheng-AudioGen folder holds config.json + "
                                    "model.safetensors (e.g. huggingface-cli download mispeech/Dasheng-AudioGen)")
    config = from_official(json.loads(files[0].read_text()), str(files[0]))
    with SafetensorsReader(files[1]) as f:
        keys, get = official_state(config, f.keys(), f.get, str(files[1]))
        return build(config, keys, get, str(files[1]), dtype=dtype, device=device)
