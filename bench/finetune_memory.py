"""Memory of fine-tuning the official Dasheng-AudioGen generator: full vs LoRA, bf16, batch x seconds per GPU.

    python bench/finetune_memory.py                              # batch 8 x 10 s, LoRA rank 16 (the README table)
    python bench/finetune_memory.py --batch 4 --seconds 30 --lora-rank 64

Parameters are counted on the meta device (nothing allocated). Activations are measured, not guessed, by
``bench/memory.py``'s ``activation_bytes``: one block of the released width runs forward under bf16
autocast with ``torch.autograd.graph.saved_tensors_hooks`` summing the distinct storages autograd keeps
for backward, at 1 and 2 clips, so the per-clip activations and autocast's per-block bf16 weight copies
are told apart (with activation checkpointing each block's input is kept, plus one block's activations
while it is recomputed in backward). The frozen T5
encoder and DashengTokenizer are counted in bf16 (only needed when text states and latents are not cached).
State per trainable parameter: fp32 weight + fp32 gradient + AdamW's two fp32 moments + the fp32 EMA.
Not included: the CUDA context, allocator fragmentation and DDP's gradient buckets (one more gradient
copy under DDP unless ``gradient_as_bucket_view``); not yet checked against a GPU's measured peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from audiogen_speed import RELEASED  # noqa: E402
from memory import activation_bytes  # noqa: E402

from genflow.audiogen import AudioGen  # noqa: E402
from genflow.audiogen.config import from_official  # noqa: E402
from genflow.lora import LoraSettings, add_lora  # noqa: E402

GB = 2**30
T5_LARGE_ENCODER = 341_231_104  # parameters of flan-t5-large's encoder
DASHENG_TOKENIZER = 804_920_450  # parameters of the DashengTokenizer (encoder + decoder)


def table(args) -> list[tuple[str, float, float]]:
    """[(row, full GiB, LoRA GiB)] of per-GPU memory."""
    with torch.device("meta"):
        model = AudioGen(from_official(RELEASED))
    total = sum(p.numel() for p in model.parameters())
    full_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.device("meta"):
        adapted = add_lora(AudioGen(from_official(RELEASED)), LoraSettings(rank=args.lora_rank))
    lora_trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    frames = round(args.seconds * model.config.frame_rate)
    # measured per block with saved-tensor hooks (bench/memory.py): activations per clip + autocast's weight copies
    act = {c: activation_bytes(model.config.backbone, frames, args.tokens, args.batch, c) for c in (False, True)}
    frozen = (T5_LARGE_ENCODER + DASHENG_TOKENIZER) * 2
    rows = [
        ("parameters (B)", total / 1e9, total / 1e9),
        ("trainable parameters (M)", full_trainable / 1e6, lora_trainable / 1e6),
        ("weights (fp32 full; LoRA: bf16 frozen base + fp32 adapters)", total * 4 / GB,
         ((total - lora_trainable) * 2 + lora_trainable * 4) / GB),
        ("gradients (fp32)", full_trainable * 4 / GB, lora_trainable * 4 / GB),
        ("AdamW moments (fp32)", full_trainable * 8 / GB, lora_trainable * 8 / GB),
        ("EMA (fp32)", full_trainable * 4 / GB, lora_trainable * 4 / GB),
        (f"activations, batch {args.batch} x {args.seconds:g} s, no checkpointing", act[False] / GB, act[False] / GB),
        ("activations, with activation checkpointing", act[True] / GB, act[True] / GB),
        ("frozen T5-large encoder + DashengTokenizer (bf16)", frozen / GB, frozen / GB),
    ]
    state = [sum(r[i] for r in rows[2:6]) for i in (1, 2)]
    rows.append(("total, no checkpointing", state[0] + act[False] / GB + frozen / GB,
                 state[1] + act[False] / GB + frozen / GB))
    rows.append(("total, activation checkpointing", state[0] + act[True] / GB + frozen / GB,
                 state[1] + act[True] / GB + frozen / GB))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=64, help="T5 tokens per caption")
    p.add_argument("--lora-rank", type=int, default=16)
    args = p.parse_args()
    print(f"Dasheng-AudioGen fine-tuning memory per GPU, bf16 autocast, batch {args.batch} x {args.seconds:g} s "
          f"({round(args.seconds * 25)} frames), {args.tokens} text tokens, LoRA rank {args.lora_rank} "
          f"(targets {LoraSettings().targets})\n")
    print(f"| {'':60} | full | LoRA |\n|---|---:|---:|")
    for name, full, lora in table(args):
        unit = "" if "parameters" in name else " GiB"
        print(f"| {name:60} | {full:.2f}{unit} | {lora:.2f}{unit} |")


if __name__ == "__main__":
    main()
