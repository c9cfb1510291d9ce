"""The official text front-end: T5 states -> the context the DiT cross-attends to, and the clip length.

    T5 last hidden state (B, L, D) -> proj (Linear) -> adapter: attention with the stored instruction
    embedding as key/value, output * text mask, LayerNorm(attention + projected text), 1x1 conv -> content
    (B, L, D); the mean of the normed states over valid tokens -> Linear-ReLU-Linear -> log(1 + seconds).

Prompts carry a ``<|caption|>`` tag (and optional tags) before T5; ``format_prompt`` adds it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genflow.audiogen.config import AudioGenConfig

# tag order of the official prompt composer; <|caption|> is required and first
TAGS = ("caption", "speech", "asr", "sfx", "music", "env")


def compose_prompt(caption: str, **tags: str | None) -> str:
    """``<|caption|> a dog barks <|sfx|> ...``: the caption plus optional tags (speech, asr, sfx, music, env)."""
    unknown = sorted(set(tags) - set(TAGS[1:]))
    if unknown:
        raise ValueError(f"unknown prompt tags {unknown}; expected some of {list(TAGS[1:])}")
    if caption is None or not str(caption).strip():
        raise ValueError("the caption is empty; the official generator needs a caption (e.g. 'a dog barks')")
    values = {"caption": caption, **tags}
    chunks = [f"<|{tag}|> {str(values[tag]).strip()}" for tag in TAGS
              if values.get(tag) is not None and str(values[tag]).strip()]
    return " ".join(chunks)


def format_prompt(prompt: str) -> str:
    """A plain caption gets the ``<|caption|>`` prefix; a prompt that already starts with it is kept."""
    text = str(prompt).strip()
    return text if text.startswith("<|caption|>") else compose_prompt(text)


class TextFrontEnd(nn.Module):
    """``content_encoder.text_encoder.proj`` + the official content adapter + its global duration MLP."""

    def __init__(self, cfg: AudioGenConfig):
        super().__init__()
        d = cfg.text_dim
        self.proj = nn.Linear(d, d)
        # torch's MultiheadAttention keeps the official parameter layout (packed in_proj, out_proj)
        self.attn = nn.MultiheadAttention(d, cfg.adapter_heads, dropout=cfg.adapter_dropout,
                                          kdim=cfg.instruction_dim, vdim=cfg.instruction_dim, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.content_proj = nn.Linear(d, d)  # official Conv1d(k=1)
        # indices 0 and 3 as released: Linear, ReLU, Dropout, Linear
        self.duration_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(cfg.adapter_dropout),
                                          nn.Linear(d, 1))
        n = 1 if cfg.zero_instruction else cfg.instruction_len  # zero instruction: one zero token, all valid
        self.register_buffer("instruction", torch.zeros(1, n, cfg.instruction_dim))

    def _states(self, text: Tensor, text_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> normed adapter states (B, L, D) and the float mask (B, L, 1)."""
        dtype = self.proj.weight.dtype
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        m = text_mask.to(dtype)[..., None]  # (B, L, 1)
        q = self.proj(text.to(dtype))  # (B, L, D)
        kv = self.instruction.to(dtype).expand(q.shape[0], -1, -1)  # (B, N, D_instr): every token valid
        a = self.attn(q, kv, kv, need_weights=False)[0]
        return self.norm(a * m + q), m  # junk at padded tokens stays there, masked downstream

    def forward(self, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        """T5 states (B, L, D) + mask (B, L) -> content (B, L, D) (padded positions: junk, keep the mask)."""
        return self.content_proj(self._states(text, text_mask)[0])

    def duration(self, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        """Raw global duration prediction (B,), ``log(1 + seconds)``: MLP of the mean over valid tokens."""
        h, m = self._states(text, text_mask)
        mean = (h * m).sum(dim=1) / m.sum(dim=1)  # (B, D)
        return self.duration_mlp(mean).squeeze(-1)
