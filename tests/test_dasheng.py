"""Native DashengTokenizer: parity with the official code (fixture), loading, shapes, windows, chunking."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genflow.codecs.dasheng import DashengTokenizer, DashengTokenizerConfig

FIXTURE = Path(__file__).parent / "fixtures" / "dasheng-tiny-a"
TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> DashengTokenizer:
    return DashengTokenizer.from_pretrained(str(FIXTURE))


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "vectors.safetensors")


def fixture_config() -> DashengTokenizerConfig:
    return DashengTokenizerConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# -- parity with the official implementation -------------------------------------------------------


@pytest.mark.parametrize("i", [0, 1, 2])  # 1.0 s, 3.7 s, 10.625 s (crosses the 10.08 s window boundary)
def test_single_clip_parity(model, vectors, i):
    audio = vectors[f"audio_{i}"][None]
    latent = model.encode(audio)
    decoded = model.decode(vectors[f"latent_{i}"][None])
    e_lat, e_dec = max_err(latent[0], vectors[f"latent_{i}"]), max_err(decoded[0], vectors[f"decoded_{i}"])
    print(f"clip {i}: latent max abs err {e_lat:.3g}, decoded max abs err {e_dec:.3g}")
    assert e_lat <= TOL and e_dec <= TOL
    # round trip through our own latent too
    assert max_err(model.decode(latent)[0], vectors[f"decoded_{i}"]) <= TOL


def test_batch_with_mask_parity(model, vectors):
    lengths = vectors["batch_lengths"].tolist()
    audio = torch.zeros(3, max(lengths))
    mask = torch.zeros(3, max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        audio[i, :n], mask[i, :n] = vectors[f"audio_{i}"], 1
    latent = model.encode(audio, mask)
    e_lat = max_err(latent, vectors["batch_latent"])
    e_dec = max_err(model.decode(vectors["batch_latent"]), vectors["batch_decoded"])
    print(f"batch: latent max abs err {e_lat:.3g}, decoded max abs err {e_dec:.3g}")
    assert e_lat <= TOL and e_dec <= TOL
    # the mask matters (key masking, zeroed later windows): without it the numbers differ
    assert max_err(model.encode(audio), vectors["batch_latent"]) > 1e-2
    # and batching differs from single clips by design (batch-global top_db, padding): both are reproduced
    assert max_err(latent[0, :25], vectors["latent_0"]) > 1e-3


# -- loading ------------------------------------------------------------------------------------------


def copy_fixture(tmp_path: Path, state_dict: dict | None = None, config: dict | None = None) -> Path:
    out = tmp_path / "ckpt"
    out.mkdir(parents=True)
    shutil.copy(FIXTURE / "config.json", out / "config.json")
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))
    if state_dict is None:
        shutil.copy(FIXTURE / "model.safetensors", out / "model.safetensors")
    else:
        save_file(state_dict, out / "model.safetensors")
    return out


def test_strict_load_errors_name_keys(tmp_path):
    sd = load_file(FIXTURE / "model.safetensors")
    assert len(sd) == 72
    missing = dict(sd)
    del missing["decoder.head.istft.window"]
    with pytest.raises(ValueError, match=r"missing keys \['decoder\.head\.istft\.window'\]"):
        DashengTokenizer.from_pretrained(str(copy_fixture(tmp_path / "a", missing)))
    extra = dict(sd, **{"encoder.model.cls_token": torch.zeros(1, 1, 64)})
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder\.model\.cls_token'\]"):
        DashengTokenizer.from_pretrained(str(copy_fixture(tmp_path / "b", extra)))
    wrong = dict(sd, **{"encoder.norm.weight": torch.ones(65)})
    with pytest.raises(ValueError, match=r"encoder\.norm\.weight: checkpoint \(65,\) vs model \(64,\)"):
        DashengTokenizer.from_pretrained(str(copy_fixture(tmp_path / "c", wrong)))


def test_config_keys(tmp_path):
    cfg = json.loads((FIXTURE / "config.json").read_text())
    assert fixture_config().embed_dim == 64  # HF bookkeeping keys (auto_map, dtype, ...) are ignored
    with pytest.raises(ValueError, match=r"'embed_dims'.*did you mean 'embed_dim'"):
        DashengTokenizerConfig.from_dict({**cfg, "embed_dims": 64})
    with pytest.raises(ValueError, match="rope_theta"):
        DashengTokenizer.from_pretrained(str(copy_fixture(tmp_path, config={**cfg, "rope_theta": 1e4})))


def test_missing_files_and_save_round_trip(tmp_path, model, vectors):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text("{}")
        DashengTokenizer.from_pretrained(str(tmp_path / "empty"))
    model.save_pretrained(str(tmp_path / "saved"))
    again = DashengTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "dashengtokenizer"
    latent = vectors["latent_0"][None]
    assert torch.equal(again.decode(latent), model.decode(latent))


def test_real_config_sizes():
    with torch.device("meta"):
        real = DashengTokenizer(DashengTokenizerConfig())
    assert sum(p.numel() for p in real.parameters()) == 804_920_450
    assert len(real.state_dict()) == 522
    assert real.frame_rate == 25.0 and real.hop_length == 640 and real.latent_dim == 1280


# -- shapes, windows, chunked decode, validation ---------------------------------------------------


@pytest.fixture(scope="module")
def random_model() -> DashengTokenizer:
    torch.manual_seed(0)
    return DashengTokenizer(fixture_config())


LENGTHS = [513, 639, 640, 1279, 16000, 16001, 161119, 161120, 161279, 161280, 161920, 170000]


@pytest.mark.parametrize("n", LENGTHS)
def test_lengths(random_model, n):
    T = (1 + n // 160) // 4
    assert random_model.num_frames(n) == T
    latent = random_model.encode(torch.randn(2, n) * 0.1)
    assert latent.shape == (2, T, 64) and torch.isfinite(latent).all()
    wav = random_model.decode(latent)
    assert wav.shape == (2, 640 * T) and torch.isfinite(wav).all()


def test_semantic_windows_restart(model):
    vit = model.encoder.model
    x = torch.randn(2, 1, 64, 1500)
    out = vit.forward_chunks(x)  # windows of 1008 + 492 frames -> 252 + 123 tokens
    assert out.shape == (2, 375, 64)
    assert max_err(out[:, :252], vit.forward_features(x[..., :1008])) <= 1e-5
    assert max_err(out[:, 252:], vit.forward_features(x[..., 1008:])) <= 1e-5
    # two identical windows give identical tokens: positions restart and nothing crosses the boundary
    twice = vit.forward_chunks(torch.cat([x[..., :1008], x[..., :1008]], dim=-1))
    assert max_err(twice[:, :252], twice[:, 252:]) <= 1e-5
    # which is not trivially so: the same frames at other positions / with other context give other tokens
    shifted = vit.forward_features(x[..., 800:1008])
    assert max_err(vit.forward_features(x[..., :1008])[:, 200:], shifted) > 1e-2


def test_chunked_decode_matches_one_shot(model):
    torch.manual_seed(1)
    latent = torch.randn(2, 130, 64)
    full = model.decode(latent)
    for chunk in (7, 17, 50, 129):
        err = max_err(model.decode(latent, chunk_frames=chunk), full)
        assert err <= TOL, (chunk, err)
    # too little context is visibly wrong, so the check above has teeth
    assert max_err(model.decode(latent, chunk_frames=17, context_frames=2), full) > 1e-3


def test_encode_is_no_grad_and_front_ends_stay_fp32(model, vectors):
    audio = vectors["audio_0"][None]
    assert not model.encode(audio).requires_grad
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.dtype))
        for name, m in [("sem", model.encoder.model.front_end), ("ac", model.encoder.front_end)]
    ]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            latent = model.encode(audio)
            wav = model.decode(latent)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"sem": torch.float32, "ac": torch.float32}
    assert wav.dtype == torch.float32
    assert max_err(latent.float()[0], vectors["latent_0"]) < 0.5  # bf16 trunk, still the same latent


def test_bf16_weights(model, vectors):
    half = DashengTokenizer(model.config).to(torch.bfloat16)
    half.load_state_dict(model.state_dict())  # buffers (windows, filterbanks) are bf16 too now
    latent = half.encode(vectors["audio_1"][None])
    assert latent.dtype == torch.bfloat16 and max_err(latent.float()[0], vectors["latent_1"]) < 0.5
    wav = half.decode(vectors["latent_1"][None])  # fp32 latents into a bf16 model; the head runs in fp32
    assert wav.dtype == torch.float32 and max_err(wav[0], vectors["decoded_1"]) < 0.05


def test_bad_inputs(model):
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        model.encode(torch.zeros(16000))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        model.encode(torch.zeros(1, 1, 16000))
    with pytest.raises(ValueError, match="at least 513 samples"):
        model.encode(torch.zeros(1, 512))
    with pytest.raises(ValueError, match="attention_mask"):
        model.encode(torch.zeros(2, 16000), torch.ones(2, 15999))
    with pytest.raises(ValueError, match="latent of shape"):
        model.decode(torch.zeros(1, 10, 63))
    with pytest.raises(ValueError, match="latent of shape"):
        model.decode(torch.zeros(10, 64))
