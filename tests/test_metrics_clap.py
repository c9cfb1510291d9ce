"""CLAP score through the real loading code, on a tiny random ClapModel saved to a folder."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from genflow.metrics.clap import load_clap
from genflow.metrics.embeddings import ClapBackend, load_backend


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    """A random ClapModel + RoBERTa BPE tokenizer + 48 kHz feature extractor, saved like a hub checkpoint."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    d = tmp_path_factory.mktemp("tiny-clap")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks", "rain on a roof", "piano music"], vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(d))
    tok = RobertaTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    torch.manual_seed(0)
    audio = dict(window_size=4, num_mel_bins=16, spec_size=64, patch_size=2, patch_stride=2, hidden_size=32,
                 patch_embeds_hidden_size=16, projection_dim=16, depths=[1, 1], num_attention_heads=[2, 2],
                 num_hidden_layers=2)
    text = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=40, projection_dim=16)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(d)
    fe = ClapFeatureExtractor(feature_size=16, max_length_s=1, truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(d)
    return d


def test_clap_score_matches_manual_cosine(tiny_clap):
    clap = load_clap(str(tiny_clap))
    assert clap.sample_rate == 48000
    g = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(72000, generator=g), 0.1 * torch.randn(30000, generator=g)]  # 1.5 s (cropped), 0.6 s
    texts = ["a dog barks", "rain on a roof"]
    scores = clap.clap_scores(wavs, texts)
    assert scores.shape == (2,) and ((scores >= -1) & (scores <= 1)).all()
    # Manual: processor -> projections -> normalise -> dot product.
    np.random.seed(0)  # the extractor's random crop of the 1.5 s clip, as clap_scores fixes it
    a_in = clap.processor(audio=[w.numpy() for w in wavs], sampling_rate=48000, return_tensors="pt")
    t_in = clap.processor(text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        a = clap.model.audio_projection(clap.model.audio_model(**a_in).pooler_output)
        t = clap.model.text_projection(clap.model.text_model(**t_in).pooler_output)
    manual = (F.normalize(a, dim=-1) * F.normalize(t, dim=-1)).sum(-1)
    assert torch.allclose(scores, manual, atol=1e-5)
    assert clap.clap_scores(wavs, texts).tolist() == scores.tolist()  # reproducible crops
    assert not torch.allclose(clap.embed_text(["a dog barks"]), clap.embed_text(["piano music"]))


def test_clap_folder_backend_and_evaluate_with_captions(tiny_clap, tmp_path):
    backend = load_backend(str(tiny_clap))
    assert isinstance(backend, ClapBackend) and backend.sample_rate == 48000
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, cap in enumerate(["a dog barks", "rain on a roof", "piano music"]):
        sf.write(gen / f"c{i}.wav", (0.1 * rng.normal(size=16000)).astype(np.float32), 16000)  # resampled to 48k
        sf.write(ref / f"c{i}.wav", (0.1 * rng.normal(size=24000)).astype(np.float32), 24000)
        rows.append(json.dumps({"audio": f"audio/c{i}.wav", "caption": cap}))
    (tmp_path / "captions.jsonl").write_text("\n".join(rows) + "\n")
    main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "recipes/tta/evaluate.py"), run_name="x")["main"]
    out = tmp_path / "eval.json"
    main(["--allow-small-fd",
          "--generated", str(gen), "--reference", str(ref), "--backend", str(tiny_clap), "--clap", str(tiny_clap),
          "--captions", str(tmp_path / "captions.jsonl"), "--out", str(out)])
    result = json.loads(out.read_text())
    per_clip = [r["clap_score"] for r in result["per_clip"].values()]
    assert len(per_clip) == 3 and all(-1 <= s <= 1 for s in per_clip)
    assert result["metrics"]["clap_score"] == pytest.approx(float(np.mean(per_clip)))
    assert math.isfinite(result["metrics"]["fd"]) and result["settings"]["sample_rate"] == 48000
    assert result["best_worst"]["key"] == "clap_score"


def test_clap_unavailable_gives_clear_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        load_clap(str(tmp_path / "no-such-clap"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub id, not cached, hub unreachable: fail fast, name the fix
    with pytest.raises(FileNotFoundError, match="laion/clap-htsat-unfused.*--backend ./clap"):
        load_backend("clap")


def test_check_clap_reports_tone_ordering_and_flags_a_collapsed_checkpoint(tiny_clap, capsys):
    from genflow.metrics.check import clap_checks, main

    clap = load_clap(str(tiny_clap))
    checks = {c.name: c for c in clap_checks(clap)}
    t = torch.arange(96000) / 48000
    sine = 0.3 * torch.sin(2 * math.pi * 440.0 * t)
    tone, dog = clap.clap_scores([sine, sine], ["a pure tone", "a dog barking"]).tolist()
    assert checks["clap_tone"].passed == (tone > dog)  # a random tiny model may rank either way
    assert checks["clap_not_collapsed"].passed  # random weights still tell a sine from noise
    # A checkpoint whose audio projection ignores its input maps every clip to one embedding.
    with torch.no_grad():
        clap.model.audio_projection.linear2.weight.zero_()
        clap.model.audio_projection.linear2.bias.normal_()
    assert not {c.name: c for c in clap_checks(clap)}["clap_not_collapsed"].passed
    with torch.no_grad():
        clap.model.audio_projection.linear2.bias.zero_()  # all-zero embeddings: collapsed as well
    assert not {c.name: c for c in clap_checks(clap)}["clap_not_collapsed"].passed
    main(["--clap", str(tiny_clap)])
    assert "clap_not_collapsed" in capsys.readouterr().out
