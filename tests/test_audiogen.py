"""Parity of genflow.audiogen with the official Dasheng-AudioGen code, on a fixture made by that code.

The fixture folder (official config.json + model.safetensors + vectors.safetensors, see its README) is
``tests/fixtures/audiogen-tiny-a`` or ``$GENFLOW_AUDIOGEN_FIXTURE``; every size and expected value is read
from it. Max-abs errors are printed (``pytest -s``). Latents in the fixture are (B, C, T); genflow's (B, T, C).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genflow.audiogen import (
    AudioGen,
    compose_prompt,
    format_prompt,
    is_official,
    load_official,
    official_padding,
    official_sigmas,
    sample_official_batch,
)
from genflow.audiogen.__main__ import main as cli
from genflow.codecs.base import Codec
from genflow.flow import flow_loss, sample, sigma_schedule
from genflow.model import DiT, DiTConfig

FIXTURE = Path(os.environ.get("GENFLOW_AUDIOGEN_FIXTURE", Path(__file__).parent / "fixtures" / "audiogen-tiny-a"))
ONE_PASS, SAMPLED = 1e-4, 1e-3  # tolerances of the issue (the fixture README suggests the same)


@pytest.fixture(scope="module")
def vec():
    v = load_file(str(FIXTURE / "vectors.safetensors"))
    for k in ("x", "v", "v_uncond", "sample_noise", "sample_step0_v", "sample_out", "sample_out_single",
              "sample_natural_noise", "sample_natural_out"):
        v[k] = v[k].transpose(1, 2).contiguous()  # (B, C, T) -> (B, T, C)
    for k in ("text_mask", "content_mask", "latent_mask", "x_mask", "sample_natural_latent_mask"):
        v[k] = v[k].bool()
    return v


@pytest.fixture(scope="module")
def model():
    return load_official(FIXTURE)


def _err(name: str, got: torch.Tensor, want: torch.Tensor, where: torch.Tensor | None = None) -> float:
    d = (got.float() - want.float()).abs()
    e = (d[where] if where is not None else d).max().item()
    print(f"{FIXTURE.name} {name}: max abs error {e:.3g}")
    return e


def _not_last_valid(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) valid frames minus the last valid frame of padded rows (the official conv reads padding there)."""
    n = mask.sum(1, keepdim=True)
    last = (torch.arange(mask.shape[1]) == n - 1) & (n < mask.shape[1])
    return mask & ~last


def test_official_folder_is_recognised(tmp_path):
    assert is_official(FIXTURE) and is_official(FIXTURE / "config.json")
    assert not is_official(tmp_path)


def test_every_official_tensor_is_accounted_for():
    """Each official tensor is mapped, checked (RoPE tables, instruction length) or ignored for a stated reason."""
    from safetensors import safe_open

    from genflow.audiogen.config import from_official
    from genflow.audiogen.convert import IGNORED, _checks, mapping

    config = from_official(json.loads((FIXTURE / "config.json").read_text()))
    with safe_open(str(FIXTURE / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    used = {k for src, _ in mapping(config).values() for k in src}
    checked = {k for k in keys if any(k.endswith(c) for c in _checks(config))}
    ignored = keys - used - checked
    assert used <= keys and not used & checked
    assert {p for p in IGNORED if any(k.startswith(p) for k in ignored)} == set(IGNORED)  # no stale reason
    assert all(any(k.startswith(p) for p in IGNORED) for k in ignored)
    print(f"{FIXTURE.name}: {len(keys)} official tensors = {len(used)} mapped + {len(checked)} checked + "
          f"{len(ignored)} ignored")


def test_frontend_parity(model, vec):
    text, mask = vec["text_states"], vec["text_mask"]
    proj = model.frontend.proj  # content_encoder.text_encoder.proj alone (B, L, D)
    assert _err("text_proj", proj(text.to(proj.weight.dtype)), vec["text_proj"], mask) <= ONE_PASS
    assert _err("content", model.frontend(text, mask), vec["content"], mask) <= ONE_PASS
    assert _err("duration_pred", model.frontend.duration(text, mask), vec["duration_pred"]) <= ONE_PASS
    assert torch.equal(model.predict_frames(text, mask), vec["num_frames"])


def test_backbone_parity_official_padding(model, vec):
    """v and v_uncond of one backbone call on every frame, padded ones included, with the official padding."""
    x, mask, text, tmask = vec["x"], vec["x_mask"], vec["text_states"], vec["text_mask"]
    sigma = vec["timesteps"] / 1000
    assert torch.equal((1000 * sigma).trunc(), vec["timesteps"])  # integer timesteps survive the round trip
    official_padding(model, True)
    try:
        v = model(x, sigma, mask=mask, text=text, text_mask=tmask)
        v_u = model(x, sigma, mask=mask, text=text, text_mask=tmask, drop_text=torch.ones(len(x), dtype=torch.bool))
    finally:
        official_padding(model, False)
    assert _err("v (official padding, all frames)", v, vec["v"]) <= ONE_PASS
    assert _err("v_uncond (official padding, all frames)", v_u, vec["v_uncond"]) <= ONE_PASS
    # aligned=None is the stored dummy on every frame, as the fixture's time-aligned context
    assert torch.equal(model.dummy_ta_embed.expand_as(vec["time_aligned_context"]), vec["time_aligned_context"])


def test_backbone_parity_masked(model, vec):
    """genflow's padding: equal to the official call except the last valid frame of a padded row."""
    x, mask, text, tmask = vec["x"], vec["x_mask"], vec["text_states"], vec["text_mask"]
    sigma = vec["timesteps"] / 1000
    v = model(x, sigma, mask=mask, text=text, text_mask=tmask)
    v_u = model(x, sigma, mask=mask, text=text, text_mask=tmask, drop_text=torch.ones(len(x), dtype=torch.bool))
    keep = _not_last_valid(mask)
    assert _err("v (masked, valid frames)", v, vec["v"], keep) <= ONE_PASS
    assert _err("v_uncond (masked, valid frames)", v_u, vec["v_uncond"], keep) <= ONE_PASS
    assert v[~mask].abs().max() == 0
    # ... and each row alone, cut to its own lengths, gives the batched row: no dependence on the batch
    i = int(mask.sum(1).argmin())
    n, m = int(mask[i].sum()), int(tmask[i].sum())
    alone = model(x[i:i + 1, :n], sigma[i:i + 1], text=text[i:i + 1, :m])
    assert (alone[0] - v[i, :n]).abs().max() <= 1e-5


def test_schedule_and_integer_timesteps(vec):
    sigmas = official_sigmas(25, -1.0)
    assert torch.equal(sigmas, vec["sigmas"][: len(sigmas)]) and vec["sigmas"][-1] == 0
    assert torch.equal((1000 * sigmas).trunc().long(), vec["sample_timesteps_long"])
    # genflow's own sway schedule differs by float32 rounding only: the same integer timesteps
    assert torch.equal((1000 * sigma_schedule(25, "sway", sway_coef=-1.0)).trunc().long(), vec["sample_timesteps_long"])


def test_timestep_int_field_truncates():
    torch.manual_seed(0)
    cfg = DiTConfig(latent_dim=4, width=16, depth=2, heads=2, text_dim=0)
    x = torch.randn(1, 3, 4)
    for flag in (False, True):
        model = DiT(DiTConfig(**{**cfg.__dict__, "timestep_int": flag}))
        torch.nn.init.normal_(model.final_layer.linear.weight)  # non-zero output
        torch.nn.init.normal_(model.final_layer.adaLN.weight)
        a, b = model(x, torch.tensor([0.5004])), model(x, torch.tensor([0.5]))
        assert torch.equal(a, b) == flag  # 500.4 -> 500 only with the field on


def test_first_step_velocity(model, vec):
    """The guided velocity of the first step: the official batch exactly, genflow's away from padding."""
    noise, lmask, text, tmask = vec["sample_noise"], vec["latent_mask"], vec["text_states"], vec["text_mask"]
    one_step = torch.tensor([1.0, 0.0])  # x1 = noise - v
    v = noise - sample(model, noise, one_step, guidance_scale=5.0, mask=lmask, text=text, text_mask=tmask)
    assert _err("sample_step0_v (masked)", v, vec["sample_step0_v"], _not_last_valid(lmask)) <= SAMPLED
    official_padding(model, True)
    try:
        v = noise - sample_official_batch(model, noise, one_step, mask=lmask, text=text, text_mask=tmask)
    finally:
        official_padding(model, False)
    assert _err("sample_step0_v (official padding, all frames)", v, vec["sample_step0_v"]) <= SAMPLED


def test_sampling_parity_masked(model, vec):
    """25 guided steps with genflow.flow.sample: every row as if alone, the longest as in the batch."""
    noise, lmask = vec["sample_noise"], vec["latent_mask"]
    out = sample(model, noise, official_sigmas(), guidance_scale=5.0, mask=lmask, text=vec["text_states"],
                 text_mask=vec["text_mask"])
    assert _err("sample_out_single (one batch, masked)", out, vec["sample_out_single"]) <= SAMPLED
    full = lmask.all(1)
    assert full.any()
    assert _err("sample_out, unpadded row(s)", out[full], vec["sample_out"][full]) <= SAMPLED


def test_sampling_parity_official_batch(model, vec):
    """The opt-in official batched loop: padded frames and their leak included, forced and predicted lengths."""
    text, tmask = vec["text_states"], vec["text_mask"]
    frames = model.predict_frames(text, tmask)
    assert torch.equal(torch.arange(int(frames.max()))[None] < frames[:, None], vec["sample_natural_latent_mask"])
    official_padding(model, True)
    try:
        out = sample_official_batch(model, vec["sample_noise"], official_sigmas(), mask=vec["latent_mask"],
                                    text=text, text_mask=tmask)
        nat = sample_official_batch(model, vec["sample_natural_noise"], official_sigmas(),
                                    mask=vec["sample_natural_latent_mask"], text=text, text_mask=tmask)
    finally:
        official_padding(model, False)
    assert _err("sample_out (official batch, all frames)", out, vec["sample_out"]) <= SAMPLED
    assert _err("sample_natural_out (official batch, all frames)", nat, vec["sample_natural_out"]) <= SAMPLED


def test_convert_cli_roundtrip(model, vec, tmp_path):
    for dtype in ("fp32", "bf16"):
        cli(["convert", str(FIXTURE), str(tmp_path / dtype), "--dtype", dtype])
        assert {p.name for p in (tmp_path / dtype).iterdir()} == {"config.json", "model.safetensors", "pipeline.json"}
        assert json.loads((tmp_path / dtype / "config.json").read_text())["model_type"] == "genflow-audiogen"
    ours = AudioGen.from_pretrained(tmp_path / "fp32")
    assert not is_official(tmp_path / "fp32")
    args = (vec["x"], vec["timesteps"] / 1000)
    kw = dict(mask=vec["x_mask"], text=vec["text_states"], text_mask=vec["text_mask"])
    assert torch.equal(ours(*args, **kw), model(*args, **kw))
    half = AudioGen.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert half.dummy_ta_embed.dtype == torch.bfloat16
    assert (half(*args, **kw).float() - model(*args, **kw)).abs().max() < 0.5  # bf16: close, not equal
    state = load_file(str(tmp_path / "fp32" / "model.safetensors"))
    state.pop("frontend.norm.bias")
    save_file(state, str(tmp_path / "fp32" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys.*frontend.norm.bias"):
        AudioGen.from_pretrained(tmp_path / "fp32")


def _official_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "official"
    shutil.copytree(FIXTURE, folder)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("backbone.mid_block.norm3.weight"), r"missing \['backbone.mid_block.norm3.weight'\]"),
    (lambda s: s.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
    (lambda s: s["backbone.in_blocks.0.attn.rotary.inv_freq"].mul_(2), "inv_freq.*differs"),
    (lambda s: s.update({"backbone.final_block.linear.bias": torch.zeros(3)}), "wrong shape"),
])
def test_official_load_is_strict(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_official(_official_copy(tmp_path, edit))


def test_truncated_weights_fail_clearly(tmp_path):
    folder = tmp_path / "official"
    shutil.copytree(FIXTURE, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt entry.*re-download"):
        load_official(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_official(folder)


def test_predict_frames_clamps_and_warns(vec):
    model = load_official(FIXTURE)
    with torch.no_grad():
        model.frontend.duration_mlp[3].bias.fill_(-5.0)  # exp(pred) - 1 < 0: the official code goes negative
    with pytest.warns(UserWarning, match="at least 1 frame"):
        frames = model.predict_frames(vec["text_states"], vec["text_mask"])
    assert frames.tolist() == [1] * len(frames)


def test_prompts():
    assert format_prompt("  a dog barks ") == "<|caption|> a dog barks"
    assert format_prompt("<|caption|> rain <|sfx|> thunder") == "<|caption|> rain <|sfx|> thunder"
    assert compose_prompt("piano", music="slow jazz", env="") == "<|caption|> piano <|music|> slow jazz"
    with pytest.raises(ValueError, match="caption is empty"):
        format_prompt(" ")
    with pytest.raises(ValueError, match="unknown prompt tags"):
        compose_prompt("x", vibe="y")


def test_fine_tuning_loss_reaches_the_front_end(vec):
    model = load_official(FIXTURE).train()
    x, mask = vec["sample_out_single"], vec["latent_mask"]
    loss = flow_loss(model, x, mask=mask, text=vec["text_states"], text_mask=vec["text_mask"], text_dropout=0.5,
                     generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("frontend.proj.weight", "frontend.attn.in_proj_weight", "frontend.content_proj.weight",
                 "dummy_ta_embed", "backbone.blocks.0.adaLN.linear.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    # the duration predictor is outside the flow loss: frozen, so DDP sees every trainable parameter used
    assert all(p.grad is None and not p.requires_grad for p in model.frontend.duration_mlp.parameters())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


class _LatentCodec(Codec):
    """Stand-in DashengTokenizer: 25 frames/s, decode writes each latent frame's values as its samples."""

    def __init__(self, dim: int):
        super().__init__()
        self.latent_dim, self.frame_rate, self.sample_rate = dim, 25.0, 25 * dim

    def num_frames(self, n: int) -> int:
        return n // self.hop_length

    def decode(self, latent):
        return latent.reshape(latent.shape[0], -1)


class _FixtureT5(torch.nn.Module):
    """Stand-in T5: the fixture's text states for the fixture's prompts (the official tag already in place)."""

    def __init__(self, vec):
        super().__init__()
        self.vec, self.dim, self.seen = vec, vec["text_states"].shape[-1], []
        self.name, self.max_length, self.device = "fixture-t5", 512, torch.device("cpu")

    def forward(self, prompts):
        self.seen += prompts
        rows = [int(p.split()[-1]) for p in prompts]
        return self.vec["text_states"][rows], self.vec["text_mask"][rows]


def test_genflow_load_samples_the_official_folder_with_its_defaults(vec, monkeypatch):
    """genflow.load(official folder): official settings, predicted durations, the same latents as the official
    sampler for the longest prompt of the fixture's natural-length batch."""
    import genflow
    import genflow.codecs
    import genflow.pipeline
    import genflow.text

    dim = vec["sample_natural_noise"].shape[-1]
    t5 = _FixtureT5(vec)
    monkeypatch.setattr(genflow.codecs, "load_codec", lambda name, device=None: _LatentCodec(dim))
    monkeypatch.setattr(genflow.text, "load_text_encoder", lambda name, device=None: t5)
    noise = iter(vec["sample_natural_noise"][i, :n] for i, n in enumerate(vec["num_frames"].tolist()))
    monkeypatch.setattr(genflow.pipeline, "make_noise", lambda shape, seed=None: next(noise))
    gen = genflow.load(str(FIXTURE), device="cpu")
    assert gen.settings.duration_s is None and gen.settings.steps == 25 and gen.settings.guidance_scale == 5.0
    assert (gen.codec_id, gen.text_encoder_id) == ("mispeech/dashengtokenizer", "google/flan-t5-large")
    clips = gen.generate(["prompt 0", "prompt 1", "prompt 2"])
    assert t5.seen == ["<|caption|> prompt 0", "<|caption|> prompt 1", "<|caption|> prompt 2"]
    frames = [c.numel() // dim for c in clips]
    assert frames == vec["num_frames"].tolist()  # the duration predictor set each clip's length
    longest = clips[0].reshape(frames[0], dim)
    assert _err("genflow.load -> generate, longest row", longest, vec["sample_natural_out"][0, : frames[0]]) <= SAMPLED


class _Encoder(_LatentCodec):
    """The stand-in codec with an encoder: each hop of samples is one latent frame."""

    def encode(self, audio, attention_mask=None):
        n = self.num_frames(audio.shape[1])
        return audio[:, : n * self.hop_length].reshape(audio.shape[0], n, self.latent_dim)


class _HashT5(_FixtureT5):
    """Stand-in T5 for any caption: fixed random states per caption (7 tokens)."""

    def forward(self, prompts):
        self.seen += prompts
        rows = [torch.randn(7, self.dim, generator=torch.Generator().manual_seed(len(p))) for p in prompts]
        return torch.stack(rows), torch.ones(len(prompts), 7, dtype=torch.bool)


def _tta_recipe(vec, monkeypatch) -> tuple:
    """recipes/tta/train.py with the stand-in codec and T5 (the T5 returned to check what it was given)."""
    import importlib.util

    import genflow.codecs
    import genflow.text

    dim = vec["sample_natural_noise"].shape[-1]
    t5 = _HashT5(vec)
    monkeypatch.setattr(genflow.codecs, "load_codec", lambda name, device=None: _Encoder(dim))
    monkeypatch.setattr(genflow.text, "load_text_encoder", lambda name, device=None: t5)
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("tta_train", root / "recipes" / "tta" / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe, t5


TUNE = ["--preset", "tiny", "--init", str(FIXTURE), "--train.log_with", "none", "--train.sample_every", "0",
        "--data.cache", ""]


def test_recipe_fine_tunes_the_official_generator(vec, monkeypatch, tmp_path):
    """recipes/tta/train.py --init OFFICIAL: full fine-tuning of the official model; the release loads and samples."""
    import genflow

    recipe, t5 = _tta_recipe(vec, monkeypatch)
    release = recipe.main(TUNE + ["--out", str(tmp_path / "run"), "--max-steps", "2"])
    assert t5.seen and all(p.startswith("<|caption|> ") for p in t5.seen)  # training captions get the tag too
    tuned, base = load_file(str(release / "model.safetensors")), AudioGen.from_pretrained(release).state_dict()
    assert json.loads((release / "config.json").read_text())["model_type"] == "genflow-audiogen"
    official = load_official(FIXTURE).state_dict()
    assert torch.equal(tuned["frontend.duration_mlp.0.weight"], official["frontend.duration_mlp.0.weight"])
    assert not torch.equal(tuned["frontend.proj.weight"], official["frontend.proj.weight"])  # it trained
    assert tuned.keys() == base.keys()
    gen = genflow.load(str(release), device="cpu")
    assert gen.settings.guidance_scale == 5.0 and gen.settings.duration_s is None
    assert len(gen.generate(["a dog"], steps=2)) == 1


def test_ctm_distils_the_official_generator_into_a_one_step_student(vec, monkeypatch, tmp_path):
    """--objective ctm --init OFFICIAL: the official model gets its zero interval input and becomes a few-step
    release; with lr ~0 its one step is the official model's own Euler step (guidance folded: scale 1)."""
    import genflow

    recipe, _ = _tta_recipe(vec, monkeypatch)
    student = recipe.main(TUNE + ["--out", str(tmp_path / "ctm"), "--max-steps", "1", "--objective", "ctm",
                                  "--train.lr", "1e-12"])
    config, meta = (json.loads((student / f).read_text()) for f in ("config.json", "pipeline.json"))
    assert config["model_type"] == "genflow-audiogen" and config["backbone"]["interval_input"]
    assert meta["prediction"] == "average_velocity" and meta["sampling"]["guidance_scale"] == 1.0
    assert meta["sampling"]["duration_s"] is None  # the official duration predictor still sets the length
    assert (meta["sampling"]["schedule"], meta["sampling"]["shift"], meta["sampling"]["steps"]) == ("shifted", 0.4, 2)
    [a] = genflow.load(str(student), device="cpu").generate(["a dog"], steps=1, duration_s=1.0, seed=0)
    [b] = genflow.load(str(FIXTURE), device="cpu").generate(["a dog"], steps=1, duration_s=1.0, seed=0,
                                                            guidance_scale=1.0)
    assert a.shape == b.shape and _err("CTM student (lr ~0) vs official, 1 step", a, b) < 1e-4
    with pytest.raises(ValueError, match="derivative_step 0.02 or use --objective ctm"):
        recipe.main(TUNE + ["--out", str(tmp_path / "mf"), "--max-steps", "1", "--objective", "meanflow"])
