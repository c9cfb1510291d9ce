"""LoRA fine-tuning: adapters only in checkpoints, exact resume, releases merged into a plain model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genflow
from genflow.lora import LoraSettings, add_lora, is_lora, merged_release
from genflow.model import DiT

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--train.lr_schedule", "constant", "--train.log_with", "none",
        "--train.sample_every", "0"]


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"lora_{name}", ROOT / "recipes" / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merged_release_equals_the_adapted_model():
    torch.manual_seed(0)
    model = DiT.from_preset("tiny", latent_dim=8, text_dim=6, aligned_dim=0)
    with torch.no_grad():  # a trained-looking base (adaLN-zero would make every output 0)
        for p in model.parameters():
            p.normal_(std=0.1)
    unadapted = DiT(model.config)
    unadapted.load_state_dict(model.state_dict())
    model = add_lora(model, LoraSettings(rank=2, alpha=4.0))
    assert is_lora(model) and all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    with torch.no_grad():  # peft starts B at zero (no change); give the adapters something to say
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    base, weights = merged_release(model, model.state_dict())
    plain = DiT(base.config)
    plain.load_state_dict(weights, strict=True)
    x, sigma, text = torch.randn(2, 5, 8), torch.rand(2), torch.randn(2, 3, 6)
    with torch.no_grad():
        want = model.eval()(x, sigma, text=text)
        assert (plain.eval()(x, sigma, text=text) - want).abs().max() < 1e-5
        assert (unadapted.eval()(x, sigma, text=text) - want).abs().max() > 1e-3  # the adapters mattered
    with pytest.raises(ValueError, match="no linear layer"):
        add_lora(DiT.from_preset("tiny", latent_dim=8, text_dim=0, aligned_dim=0), LoraSettings(rank=2, targets="w"))


def test_lora_trains_adapters_only_resumes_exactly_and_releases_merged(tmp_path):
    main = recipe("tta").main
    base = main(FAST + ["--out", str(tmp_path / "base"), "--max-steps", "2"])
    lora = ["--init", str(base), "--lora.rank", "4", "--lora.alpha", "8", "--train.save_every", "2"]
    main(FAST + lora + ["--out", str(tmp_path / "straight"), "--max-steps", "4"])
    main(FAST + lora + ["--out", str(tmp_path / "resumed"), "--max-steps", "2"])
    ckpt = load_file(str(tmp_path / "resumed" / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert ckpt and all("lora_" in k for k in ckpt)  # only the adapters are checkpointed
    main(FAST + lora + ["--out", str(tmp_path / "resumed"), "--max-steps", "4", "--resume", "latest"])
    a = load_file(str(tmp_path / "straight" / "release" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "release" / "model.safetensors"))
    base_w = load_file(str(base / "model.safetensors"))
    assert a.keys() == b.keys() == base_w.keys()  # merged: the base model's own keys, no adapter left
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0  # resume is exact
    assert any(not torch.equal(a[k], base_w[k]) for k in a)  # and the adapters changed the model
    clip = genflow.load(tmp_path / "straight" / "release", device="cpu").generate(["x"], duration_s=0.5, steps=1)
    assert torch.isfinite(clip[0]).all()
    with pytest.raises(ValueError, match="needs a model to adapt"):
        main(FAST + ["--out", str(tmp_path / "bad"), "--lora.rank", "4", "--max-steps", "1"])


def test_lora_few_step_student_trains_checkpoints_and_releases_its_new_interval_input(tmp_path):
    """LoRA + --objective ctm: the interval embedder the base lacks trains whole beside the adapters."""
    main = recipe("tta").main
    base = main(FAST + ["--out", str(tmp_path / "base"), "--max-steps", "2"])
    args = FAST + ["--init", str(base), "--lora.rank", "2", "--objective", "ctm", "--train.save_every", "1"]
    main(args + ["--out", str(tmp_path / "straight"), "--max-steps", "2"])
    main(args + ["--out", str(tmp_path / "resumed"), "--max-steps", "1"])
    ckpt = load_file(str(tmp_path / "resumed" / "checkpoints" / "checkpoint-1" / "model.safetensors"))
    new = {k for k in ckpt if k.startswith("interval_embedder.")}
    assert new and all("lora_" in k for k in set(ckpt) - new)  # adapters + the new input, no frozen base
    main(args + ["--out", str(tmp_path / "resumed"), "--max-steps", "2", "--resume", "latest"])
    a = load_file(str(tmp_path / "straight" / "release" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "release" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0  # resume is exact
    assert a["interval_embedder.2.weight"].abs().max() > 0  # zero-initialised, then trained
