"""The DiT that predicts the flow velocity ``v = noise - x`` on codec latents.

Read top to bottom: embedders -> attention/MLP -> block -> final layer -> model -> presets. One block is
the "layer-fusion" block of the official Dasheng-AudioGen / UniFlow-Audio U-DiT: adaLN-modulated
self-attention (RoPE, qk-norm), a time-aligned condition added to the residual, cross-attention to text
tokens, adaLN-modulated GEGLU MLP; optional U-ViT long skips and a final Conv1d. Condition dropout for
classifier-free guidance swaps in model-owned null conditions, so every parameter is used every step.

    model = DiT.from_preset("small", latent_dim=64, text_dim=384)
    v = model(x, sigma, mask=mask, text=emb, text_mask=emb_mask, drop_text=drop)  # x: (B, T, C)
    model.save_pretrained("release/")  # config.json + model.safetensors
    model = DiT.from_pretrained("release/")  # strict; a hub id works too

Mapping the released weights (``genflow.audiogen.convert``): their q/k/v linears concatenate into ``qkv`` /
``kv``; their affine LayerNorms before modulation fold into the adaLN linear (scale' = w*(1+scale) - 1,
shift' = b*(1+scale) + shift, both still affine in t); their Conv1d(k=1) input is our Linear; their
gates enter as ``tanh(1 - g)`` (attention) and ``1 - g`` (MLP), which ``gate="uniflow"`` reproduces
(``gate="zero"`` is DiT's adaLN-zero ``x + g * f(x)``, g zero at init).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genflow import hub
from genflow.config import from_dict

MODEL_TYPE = "genflow-dit"


@dataclass
class DiTConfig:
    """Architecture of a DiT; ``text_dim``/``aligned_dim`` 0 means that condition branch does not exist."""

    latent_dim: int = 1280  # C of the codec latents (1280 DashengTokenizer, 64 mel demo codec)
    width: int = 1024  # d
    depth: int = 12  # with long_skip: depth//2 in + 1 mid + depth//2 out blocks (official U-DiT counting)
    heads: int = 16
    mlp_ratio: float = 4.0
    mlp: str = "geglu"  # "geglu" (Linear d->2h, gelu-gated) | "gelu"
    qk_norm: str = "layernorm"  # "layernorm" | "rmsnorm" | "none", over the head dim
    adaln_rank: int = 0  # 0: Linear(d->6d) per block; r>0: shared Linear(d->6d) + per-block rank-6r update
    gate: str = "zero"  # "zero" (adaLN-zero) | "uniflow" (released weights: tanh(1-g) attn, 1-g MLP)
    text_dim: int = 1024  # D_text of the text encoder (1024 flan-t5-large); 0 = no text branch
    text_null_tokens: int = 1  # length of the null text used for dropped rows
    aligned_dim: int = 0  # D_aligned of a time-aligned condition (B, T, D_a); 0 = none
    null_cond: str = "learned"  # "learned" | "zero" (official CFG zeroes the contexts)
    long_skip: bool = True
    final_conv: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-6  # eps of the modulated LayerNorms (before self-attn, MLP, output); official: 1e-5
    timestep_int: bool = False  # truncate 1000*sigma to an integer before the embedding (official sampler)
    # False: padded frames are never zeroed and the final conv reads them, as in the official batched sampler
    # (a row's output then depends on its batch); True: padding never reaches a valid frame
    zero_padding: bool = True
    # A second time input, the interval sigma - r an average velocity spans (MeanFlow / few-step students);
    # its embedding is zero-initialised, so a flow checkpoint given this input starts out as itself.
    interval_input: bool = False
    gradient_checkpointing: bool = False

    def __post_init__(self):
        choices = {"mlp": ("geglu", "gelu"), "qk_norm": ("layernorm", "rmsnorm", "none"),
                   "gate": ("zero", "uniflow"), "null_cond": ("learned", "zero")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"DiTConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.heads} heads of even size (RoPE)")

    @classmethod
    def from_dict(cls, d: dict) -> DiTConfig:
        """Build from a dict, failing on unknown keys with the nearest valid name."""
        return from_dict(cls, d, "DiTConfig")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, d) * (1 + scale) + shift, shift/scale (B, 1, d)."""
    return x * (1 + scale) + shift


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (cos half first, as DiT and the official code) of t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_frequencies(dim: int, base: float, device=None) -> torch.Tensor:
    """RoPE inverse frequencies (dim/2,) float32: ``base^(-2i/dim)``."""
    return 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def rope_tables(length: int, dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, dim) in float32 for positions 0..T-1, rotate-half layout."""
    # positions are frame indices: right padding never moves a valid frame, so padding stays invisible
    inv = rope_frequencies(dim, base, device)
    f = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)  # (T, dim/2)
    f = torch.cat([f, f], dim=-1)
    return f.cos(), f.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate q or k (B, H, T, hd) by position; computed in float32 so bf16 keeps exact positions."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


def _qk_norm(kind: str, dim: int) -> nn.Module:
    return {"layernorm": lambda: nn.LayerNorm(dim), "rmsnorm": lambda: nn.RMSNorm(dim),
            "none": nn.Identity}[kind]()


class Attention(nn.Module):
    """Multi-head SDPA attention with qk-norm: self-attention (fused qkv, RoPE) or cross-attention."""

    def __init__(self, dim: int, heads: int, qk_norm: str, cross: bool = False):
        super().__init__()
        self.heads, self.cross = heads, cross
        # official layout: q/k/v without bias, output projection with bias; fused for one GEMM
        if cross:
            self.q, self.kv = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm, self.k_norm = _qk_norm(qk_norm, dim // heads), _qk_norm(qk_norm, dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ctx=None, attn_mask=None, rope=None):
        B, T, D = x.shape
        if self.cross:
            q = self.q(x).view(B, T, self.heads, -1).transpose(1, 2)  # (B, H, T, hd)
            kv = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1)  # (B, L, 2, H, hd)
            k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, H, L, hd)
        else:
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        # qk-norm before RoPE (as released): bounded logits, so bf16 training of wide models stays stable
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # attn_mask: bool (B, 1, 1, S), True = attend; every row keeps >= 1 True key so no NaN
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    """GEGLU (Linear d->2h, value * gelu(gate), Linear h->d; diffusers' chunk order) or GELU MLP."""

    def __init__(self, dim: int, hidden: int, kind: str):
        super().__init__()
        self.geglu = kind == "geglu"
        self.fc1 = nn.Linear(dim, 2 * hidden if self.geglu else hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.fc1(x)
        if self.geglu:
            h, gate = h.chunk(2, dim=-1)
            return self.fc2(h * F.gelu(gate))
        return self.fc2(F.gelu(h))


class AdaLN(nn.Module):
    """SiLU(t) (B, d) -> 6 modulation vectors (B, 6d): own Linear, or a low-rank update of a shared one."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        if rank:  # EzAudio/UniFlow "ada_sola": shared + lora_b(lora_a(t)), lora alpha/r folded into up
            self.down = nn.Linear(dim, 6 * rank, bias=False)
            self.up = nn.Linear(6 * rank, 6 * dim, bias=False)
        else:
            self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t, shared=None):
        # low rank costs 42*d*rank parameters per block instead of 6*d^2 (2 M vs 14 M at d=1536, rank 32)
        return shared + self.up(self.down(t)) if shared is not None else self.linear(t)


class DiTBlock(nn.Module):
    """[long-skip merge] -> adaLN self-attn -> + aligned -> cross-attn to text -> adaLN MLP."""

    def __init__(self, cfg: DiTConfig, skip: bool):
        super().__init__()
        d = cfg.width
        self.has_skip = skip
        if skip:
            self.skip_norm, self.skip_proj = nn.LayerNorm(2 * d), nn.Linear(2 * d, d)
        # no affine: the modulation supplies scale and shift (official affine LNs fold into adaLN)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = Attention(d, cfg.heads, cfg.qk_norm)
        if cfg.aligned_dim:
            self.aligned_norm = nn.LayerNorm(cfg.aligned_dim)
            self.aligned_proj = nn.Linear(cfg.aligned_dim, d, bias=False)
        if cfg.text_dim:
            self.norm_cross, self.norm_ctx = nn.LayerNorm(d), nn.LayerNorm(d)
            self.cross_attn = Attention(d, cfg.heads, cfg.qk_norm, cross=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio), cfg.mlp)
        self.adaLN = AdaLN(d, cfg.adaln_rank)
        self.uniflow_gate = cfg.gate == "uniflow"

    def forward(self, x, t, shared, self_mask, rope, ctx, ctx_mask, aligned, skip):
        if skip is not None:
            x = self.skip_proj(self.skip_norm(torch.cat([x, skip], dim=-1)))  # (B, T, 2d) -> (B, T, d)
        mod = self.adaLN(t, shared).unsqueeze(1)  # (B, 1, 6d)
        shift1, scale1, g1, shift2, scale2, g2 = mod.chunk(6, dim=-1)  # (B, 1, d) each
        if self.uniflow_gate:  # zero-init adaLN then leaves every branch open, as in the release
            g1, g2 = torch.tanh(1 - g1), 1 - g2
        x = x + g1 * self.attn(modulate(self.norm1(x), shift1, scale1), attn_mask=self_mask, rope=rope)
        if aligned is not None:  # frame-level condition (e.g. noisy speech) re-injected in every block
            x = x + self.aligned_proj(self.aligned_norm(aligned))
        if ctx is not None:  # no adaLN or gate here: the released text path does not depend on time
            x = x + self.cross_attn(self.norm_cross(x), self.norm_ctx(ctx), attn_mask=ctx_mask)
        return x + g2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """LN -> modulate (own Linear d->2d on SiLU(t)) -> Linear(d->C) [-> Conv1d(C, C, 3)]."""

    def __init__(self, dim: int, out_dim: int, conv: bool, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.adaLN = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out_dim)
        self.conv = nn.Conv1d(out_dim, out_dim, 3, padding=1) if conv else None

    def forward(self, x, t, valid):
        shift, scale = self.adaLN(t).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, d) each
        x = self.linear(modulate(self.norm(x), shift, scale))  # (B, T, C)
        if valid is not None:  # zero padding so the k=3 conv cannot carry it into valid frames
            x = x.masked_fill(~valid[..., None], 0.0)
        if self.conv is not None:
            x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) conv over time
            if valid is not None:
                x = x.masked_fill(~valid[..., None], 0.0)
        return x


class DiT(nn.Module):
    """Velocity network on codec latents: ``model(x (B,T,C), sigma (B,), ...) -> v (B,T,C)``."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.width
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.x_embedder = nn.Linear(cfg.latent_dim, d)
        self.t_embedder = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        if cfg.interval_input:
            self.interval_embedder = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        if cfg.text_dim:
            self.text_embedder = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.SiLU(), nn.Linear(d, d))
            null = torch.zeros(cfg.text_null_tokens, cfg.text_dim)
            self._null("null_text", null, cfg.null_cond == "learned")
        if cfg.aligned_dim:
            self._null("null_aligned", torch.zeros(cfg.aligned_dim), cfg.null_cond == "learned")
        if cfg.adaln_rank:
            self.adaLN_shared = nn.Linear(d, 6 * d)
        self.num_in = cfg.depth // 2 if cfg.long_skip else 0
        n_blocks = 2 * self.num_in + 1 if cfg.long_skip else cfg.depth
        self.blocks = nn.ModuleList([DiTBlock(cfg, skip=cfg.long_skip and i > self.num_in)
                                     for i in range(n_blocks)])
        self.final_layer = FinalLayer(d, cfg.latent_dim, cfg.final_conv, cfg.norm_eps)
        self.initialize_weights()

    def _null(self, name, value, learned):
        if learned:
            self.register_parameter(name, nn.Parameter(value))
        else:  # zero null: nothing to learn or save
            self.register_buffer(name, value, persistent=False)

    def initialize_weights(self):
        """Xavier linears; zero adaLN, cross-attn/aligned output projections and the output layer."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.apply(_basic_init)
        for layer in (self.t_embedder[0], self.t_embedder[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.config.interval_input:  # zero output: the model ignores the interval until trained on it
            nn.init.normal_(self.interval_embedder[0].weight, std=0.02)
            nn.init.zeros_(self.interval_embedder[2].weight)
            nn.init.zeros_(self.interval_embedder[2].bias)
        if isinstance(getattr(self, "null_text", None), nn.Parameter):
            nn.init.normal_(self.null_text, std=0.02)
        if isinstance(getattr(self, "null_aligned", None), nn.Parameter):
            # not zero: LayerNorm of a constant (e.g. all-zero) vector has a 1/sqrt(eps) gradient
            nn.init.normal_(self.null_aligned, std=0.02)
        zero = [self.final_layer.adaLN, self.final_layer.linear]
        if self.config.adaln_rank:
            zero.append(self.adaLN_shared)
        for blk in self.blocks:
            # adaLN-zero: every block starts as the identity (gate "zero") and modulation-free
            zero.append(blk.adaLN.up if self.config.adaln_rank else blk.adaLN.linear)
            if self.config.text_dim:
                zero.append(blk.cross_attn.proj)
            if self.config.aligned_dim:
                zero.append(blk.aligned_proj)
        for module in zero:
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.final_layer.conv is not None:
            nn.init.zeros_(self.final_layer.conv.bias)  # with the zero linear before it, v = 0 at init

    # -- conditions ---------------------------------------------------------------------------------------
    def _text(self, text, text_mask, drop, B, dtype):
        """-> context (B, L, d) and its SDPA key mask (B, 1, 1, L); dropped rows get the null text."""
        null = self.null_text.to(dtype)  # (n, D_text)
        n = null.shape[0]
        if text is None:
            text = null.expand(B, n, -1)
            valid = torch.ones(B, n, dtype=torch.bool, device=null.device)
        else:
            if text_mask is None:
                text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
            valid = text_mask.bool()
            text = text.to(dtype).masked_fill(~valid[..., None], 0.0)  # garbage/NaN in padding never enters
            if text.shape[1] < n:  # room for the null tokens
                text, valid = F.pad(text, (0, 0, 0, n - text.shape[1])), F.pad(valid, (0, n - text.shape[1]))
            L = text.shape[1]
            if drop is None:  # still route through the null so DDP sees every parameter used
                drop = torch.zeros(B, dtype=torch.bool, device=text.device)
            first = torch.arange(L, device=text.device) < n  # (L,)
            text = torch.where(drop[:, None, None], F.pad(null, (0, 0, 0, L - n)), text)
            valid = torch.where(drop[:, None], first, valid)
        ctx = self.text_embedder(text)  # (B, L, d)
        valid = valid | ~valid.any(dim=1, keepdim=True)  # a row with no valid token attends to all: no NaN
        return ctx, valid[:, None, None, :]

    def _aligned(self, aligned, drop, valid, B, T, dtype):
        """-> (B, T, D_a); dropped rows get the null vector broadcast over T."""
        null = self.null_aligned.to(dtype)
        if aligned is None:
            return null.expand(B, T, -1)
        if valid is not None:  # like x: padded frames become values of attention, keep them finite
            aligned = aligned.masked_fill(~valid[..., None], 0.0)
        if drop is None:
            drop = torch.zeros(B, dtype=torch.bool, device=aligned.device)
        return torch.where(drop[:, None, None], null, aligned.to(dtype))

    def _check(self, x, sigma, mask, text, text_mask, aligned, drop_text, drop_aligned):
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.latent_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (B, T, {cfg.latent_dim}) latents. Use "
                             f"a codec with latent_dim={cfg.latent_dim} or build the DiT with "
                             f"latent_dim={x.shape[-1]}")
        B, T = x.shape[:2]
        named = {"sigma": (sigma, (B,)), "mask": (mask, (B, T)), "drop_text": (drop_text, (B,)),
                 "drop_aligned": (drop_aligned, (B,))}
        if text is not None:
            if not cfg.text_dim:
                raise ValueError("text was given but this DiT has no text branch (text_dim=0); pass "
                                 "text=None or build it with text_dim=<text encoder dim>")
            if text.ndim != 3 or text.shape[0] != B or text.shape[2] != cfg.text_dim:
                raise ValueError(f"text has shape {tuple(text.shape)}; expected ({B}, L, {cfg.text_dim}). "
                                 f"The text encoder's dim must equal text_dim={cfg.text_dim}")
            named["text_mask"] = (text_mask, tuple(text.shape[:2]))
        if aligned is not None:
            if not cfg.aligned_dim:
                raise ValueError("aligned was given but this DiT has no aligned branch (aligned_dim=0)")
            named["aligned"] = (aligned, (B, T, cfg.aligned_dim))
        for name, (value, shape) in named.items():
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {shape} for x of "
                                 f"shape {tuple(x.shape)} (aligned conditions: one frame per latent frame)")

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *, mask: torch.Tensor | None = None,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                aligned: torch.Tensor | None = None, drop_text: torch.Tensor | None = None,
                drop_aligned: torch.Tensor | None = None, interval: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity v (B, T, C) at noise level sigma (B,) in [0, 1]; padded frames (mask False) give 0.

        With ``interval_input``, ``interval`` (B,) = sigma - r >= 0 makes it the average velocity over
        [r, sigma] (None = 0: the instantaneous velocity).
        """
        if not torch.is_tensor(sigma) or sigma.ndim == 0:
            sigma = torch.as_tensor(sigma, device=x.device).expand(x.shape[0])
        if interval is not None and not self.config.interval_input:
            raise ValueError("interval was given but this DiT has no interval input (interval_input=False); "
                             "pass interval=None or fine-tune it with --objective meanflow")
        self._check(x, sigma, mask, text, text_mask, aligned, drop_text, drop_aligned)
        B, T, _ = x.shape
        cfg, dtype = self.config, self.x_embedder.weight.dtype
        valid = mask.bool() if mask is not None else None
        zeroed = valid if cfg.zero_padding else None  # where padding is zeroed (None: official, never)
        if zeroed is not None:  # padding (even NaN) must not reach valid frames through attention values
            x = x.masked_fill(~zeroed[..., None], 0.0)
        h = self.x_embedder(x.to(dtype))  # (B, T, d)
        # network timestep input 1000 * sigma (fp32, truncated when timestep_int); SiLU once here, shared by
        # every adaLN linear
        timesteps = (1000 * sigma.float()).trunc() if cfg.timestep_int else 1000 * sigma
        t = self.t_embedder(timestep_embedding(timesteps).to(dtype))  # (B, d)
        if cfg.interval_input:  # the interval on the same 0..1000 scale, added before the SiLU
            gap = torch.zeros_like(sigma) if interval is None else interval.expand_as(sigma)
            t = t + self.interval_embedder(timestep_embedding(1000 * gap).to(dtype))
        t = F.silu(t)
        shared = self.adaLN_shared(t) if cfg.adaln_rank else None  # (B, 6d)
        ctx = ctx_mask = al = None
        if cfg.text_dim:
            ctx, ctx_mask = self._text(text, text_mask, drop_text, B, dtype)
        if cfg.aligned_dim:
            al = self._aligned(aligned, drop_aligned, zeroed, B, T, dtype)
        self_mask = None
        if valid is not None:
            self_mask = (valid | ~valid.any(dim=1, keepdim=True))[:, None, None, :]  # (B, 1, 1, T) keys
        rope = rope_tables(T, cfg.width // cfg.heads, cfg.rope_base, x.device)
        skips = []
        for i, blk in enumerate(self.blocks):
            args = (h, t, shared, self_mask, rope, ctx, ctx_mask, al, skips.pop() if blk.has_skip else None)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(blk, *args, use_reentrant=False)  # recompute activations in backward
            else:
                h = blk(*args)
            if i < self.num_in:  # U-ViT: in-block outputs feed the out blocks in reverse order
                skips.append(h)
        return self.final_layer(h, t, zeroed).to(x.dtype)  # (B, T, C)

    # -- presets and release folders ----------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> DiT:
        """A fresh DiT from ``PRESETS[name]`` with field overrides, e.g. ``latent_dim=64``."""
        return cls(preset_config(name, **overrides))

    def save_pretrained(self, save_directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (``state_dict`` e.g. EMA or gathered weights)."""
        return hub.save_model(save_directory, self, state_dict, {"model_type": MODEL_TYPE,
                                                                 **dataclasses.asdict(self.config)})

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, revision: str | None = None) -> DiT:
        """Load a release folder or hub id strictly (every key present, none extra, same shapes)."""
        folder = hub.resolve(path_or_hub_id, files=("config.json", "model.safetensors"), revision=revision,
                             what="DiT folder")
        cfg = hub.read_json(folder / "config.json")
        if cfg.pop("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"{folder / 'config.json'} is not a genflow DiT config (model_type must be "
                             f"{MODEL_TYPE!r})")
        return hub.load_weights(cls(DiTConfig.from_dict(cfg)), folder / "model.safetensors")


def preset_config(name: str, **overrides) -> DiTConfig:
    """``PRESETS[name]`` with field overrides; unknown names fail with the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; expected one of {sorted(PRESETS)}")
    return DiTConfig.from_dict({**dataclasses.asdict(PRESETS[name]), **overrides})


# -- presets ------------------------------------------------------------------------------------------------
_BASE = DiTConfig()
PRESETS: dict[str, DiTConfig] = {
    # unit tests: every branch on (text, aligned, long skips, final conv) at toy size
    "tiny": dataclasses.replace(_BASE, latent_dim=8, width=64, depth=2, heads=4, text_dim=16, aligned_dim=12),
    # CPU demo on the 64-d mel codec with MiniLM (384-d) text: ~9 M parameters
    "small": dataclasses.replace(_BASE, latent_dim=64, width=256, depth=4, heads=4, text_dim=384),
    # ~300 M on DashengTokenizer latents; width 1024 (LoSATok: 1280-d latents need a wide DiT)
    "base": dataclasses.replace(_BASE, depth=10),
    # the paper/released scale: 32 (+1 mid) x 1536, 24 heads, flan-t5-large text, ~2 B; released gate style
    "large": dataclasses.replace(_BASE, width=1536, depth=32, heads=24, gate="uniflow"),
}
