"""Scaling fixes checked on the CPU: fp16 skips with a grad scaler, one persistent loader, EMA swaps,
work dealt by seconds, validation spread and stored, no attention mask without padding, compiled blocks,
previews outside inference mode, and the shared-filesystem check with two gloo processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch import nn

import genflow.training as training
from genflow.conditioning import BatchKeys, Conditioner
from genflow.data import LengthBucketSampler, collate, validate_spread
from genflow.distributed import deal, gather_json
from genflow.ema import EMA
from genflow.model import DiT

ROOT = Path(__file__).resolve().parents[1]


class Latents(nn.Module):
    """A stand-in conditioner: batches already hold (B, T, C) latents."""

    def forward(self, batch: dict, device: torch.device) -> dict:
        return {"x": batch["x"].to(device), "mask": None, "text": None, "text_mask": None, "aligned": None}

    def place(self, device: torch.device) -> Latents:
        return self.to(device)


def tiny_run(tmp_path: Path, model: dict | None = None, **train) -> training.Run:
    cfg = training.TrainConfig(out=str(tmp_path / "run"), log_with="none", warmup_steps=0, **train)
    torch.manual_seed(0)
    return training.build(cfg, DiT.from_preset("tiny", text_dim=0, aligned_dim=0, **(model or {})), Latents())


def test_fp16_skipped_step_still_updates_the_grad_scaler(tmp_path, monkeypatch):
    """A non-finite fp16 step lowers the scale and the next step trains (no "unscale_() already called")."""
    run = tiny_run(tmp_path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    monkeypatch.setattr(run.accelerator, "native_amp", True)
    # what Accelerate builds for fp16 on a GPU, here around the CPU grad scaler
    run.accelerator.scaler = scaler
    run.optimizer = AcceleratedOptimizer(run.optimizer.optimizer, device_placement=False, scaler=scaler)
    run.accelerator._optimizers = [run.optimizer]
    real = training.objective_loss
    monkeypatch.setattr(training, "objective_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    batch = {"x": torch.randn(2, 6, 8)}
    before = [p.detach().clone() for p in run.model.parameters()]
    _, norm = training.train_step(run, batch, 0.0, 0.0)
    training.check_skips(run)  # what the loop does at log steps
    assert not torch.isfinite(norm) and run.state.bad_steps_total == 1
    assert scaler.get_scale() == 2.0**9  # the scaler saw the overflow
    assert all(torch.equal(a, p) for a, p in zip(before, run.model.parameters()))  # and skipped the update
    monkeypatch.setattr(training, "objective_loss", real)
    _, norm = training.train_step(run, batch, 0.0, 0.0)  # raised RuntimeError before the fix
    training.check_skips(run)
    assert torch.isfinite(norm) and run.bad_streak == 0
    assert any(not torch.equal(a, p) for a, p in zip(before, run.model.parameters()))


class NoHostSync:
    """Fails a test on any read of a tensor's value by the host (``item``, ``tolist``, ``bool``, ``int``, ``float``)."""

    def __init__(self, monkeypatch):
        def refuse(*_):
            raise AssertionError("host sync")

        for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
            monkeypatch.setattr(torch.Tensor, name, refuse)


def test_non_finite_step_is_skipped_without_a_host_sync(tmp_path, monkeypatch):
    """No parameter, AdamW-state or EMA change, counted at the next check; no host read of the grad norm."""
    run = tiny_run(tmp_path, max_bad_steps=2)
    batch = {"x": torch.randn(2, 6, 8)}
    training.train_step(run, batch, 0.0, 0.0)  # a good step: AdamW state exists
    params = [p.detach().clone() for p in run.model.parameters()]
    moments = [t.clone() for s in run.optimizer.optimizer.state.values() for t in s.values()]
    shadows, updates = [s.clone() for s in run.ema.shadow], run.ema.num_updates
    real = training.objective_loss
    monkeypatch.setattr(training, "objective_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with monkeypatch.context() as m:
        NoHostSync(m)
        _, norm = training.train_step(run, batch, 0.0, 0.0)
    assert all(torch.equal(a, p) for a, p in zip(params, run.model.parameters()))
    assert all(torch.equal(a, t) for a, t in zip(moments, (t for s in run.optimizer.optimizer.state.values()
                                                             for t in s.values())))
    assert all(torch.equal(a, s) for a, s in zip(shadows, run.ema.shadow)) and run.ema.num_updates == updates
    training.check_skips(run)
    assert run.state.bad_steps_total == 1 and run.bad_streak == 1
    training.train_step(run, batch, 0.0, 0.0)  # a second one in a row: max_bad_steps=2 reached
    with pytest.raises(RuntimeError, match="2 non-finite steps in a row"):
        training.check_skips(run)


def test_a_good_step_reads_nothing_on_the_host(tmp_path, monkeypatch):
    run = tiny_run(tmp_path)
    with monkeypatch.context() as m:
        NoHostSync(m)
        training.train_step(run, {"x": torch.randn(2, 6, 8)}, 0.0, 0.0)
    assert run.ema.num_updates == 1 and run.state.bad_steps_total == 0


def test_compiled_blocks_train_and_keep_their_weight_names(tmp_path):
    one_block = {"depth": 1, "long_skip": False}  # graph capture of one block: fast (inductor: bench/train_gpu.py)
    run = tiny_run(tmp_path, one_block, compile_blocks="eager")
    names = set(run.accelerator.unwrap_model(run.model).state_dict())
    assert names == set(DiT.from_preset("tiny", text_dim=0, aligned_dim=0, **one_block).state_dict())
    blocks = run.accelerator.unwrap_model(run.model).blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)  # Module.compile in place
    loss, norm = training.train_step(run, {"x": torch.randn(2, 5, 8)}, 0.0, 0.0)
    assert torch.isfinite(loss) and torch.isfinite(norm)
    with pytest.raises(ValueError, match="compile_blocks"):
        training.TrainConfig(compile_blocks="no-such-backend")


class EpochItems(torch.utils.data.Dataset):
    """Items that say which epoch they were read in."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.full((1,), float(i)), "epoch": self.epoch}


def test_one_persistent_loader_tracks_epochs_and_resumes(tmp_path):
    """Worker copies of the dataset see each batch's epoch; the position restarts mid-epoch exactly."""
    run = tiny_run(tmp_path, num_workers=1)
    sampler = LengthBucketSampler([1] * 6, 2, seed=0)  # 3 batches an epoch
    data = training.batches(run, EpochItems(), sampler, collate)
    seen = [next(data) for _ in range(7)]
    assert [b["epoch"][0] for b in seen] == [0, 0, 0, 1, 1, 1, 2]
    assert (run.state.epoch, run.state.batch_in_epoch) == (2, 1)
    run.state.epoch, run.state.batch_in_epoch = 1, 1  # resume after the 5th batch
    again = training.batches(run, EpochItems(), sampler, collate)
    rest = [next(again) for _ in range(2)]
    assert [b["x"].tolist() for b in rest] == [b["x"].tolist() for b in seen[4:6]]
    assert [b["epoch"][0] for b in rest] == [1, 1]


def test_ema_applied_swaps_exactly():
    model = nn.Linear(4, 3)
    ema = EMA(model.parameters(), decay=0.5, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    raw = [p.detach().clone() for p in model.parameters()]
    averaged = [s.clone() for s in ema.shadow]
    with ema.applied():
        assert all(torch.equal(p, s) for p, s in zip(model.parameters(), averaged))
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    assert all(torch.equal(s, a) for s, a in zip(ema.shadow, averaged))


def test_deal_balances_seconds_not_counts():
    seconds = [30.0, 1.0, 1.0, 1.0, 1.0, 28.0, 2.0, 2.0]
    plan = deal(seconds, 2)
    assert sorted(i for p in plan for i in p) == list(range(8))
    loads = [sum(seconds[i] for i in p) for p in plan]
    assert max(loads) - min(loads) <= 2.0  # dealt round-robin by count: 34 vs 32, here 33 vs 33
    assert deal(seconds, 2) == plan and gather_json({"a": 1}) == [{"a": 1}]


def test_no_attention_mask_without_padding():
    keys = BatchKeys(target="audio", cached=True)
    cond = Conditioner(codec=None, keys=keys)
    full = cond({"audio": torch.randn(2, 5, 3), "lengths": torch.tensor([5, 5])}, torch.device("cpu"))
    padded = cond({"audio": torch.randn(2, 5, 3), "lengths": torch.tensor([5, 3])}, torch.device("cpu"))
    assert full["mask"] is None
    assert padded["mask"].tolist()[1] == [True, True, True, False, False]


def test_validation_is_spread_and_stored(tmp_path, monkeypatch):
    import genflow.recipe as recipe
    from genflow.recipe import DataConfig

    src = ROOT / "data" / "demo" / "tta"
    rows = [json.loads(line) for line in (src / "train.jsonl").read_text().splitlines()[:4]]
    for row in rows:
        row["audio"] = str(src / row["audio"])
        row["id"] = row["audio"]
    rows.append({"audio": str(tmp_path / "missing.wav"), "id": "missing"})
    good, report = validate_spread(rows, ("audio",))
    assert len(good) == 4 and report.counts == {"missing": 1}
    first, _ = recipe.validated(rows, ("audio",), DataConfig(), tmp_path)
    monkeypatch.setattr(recipe, "validate_spread", lambda *a, **k: pytest.fail("decoded again"))
    again, stored = recipe.validated(rows, ("audio",), DataConfig(), tmp_path)
    assert again == first == good and stored.counts == {"missing": 1}


def test_preview_generator_runs_outside_inference_mode():
    from genflow.pipeline import Generator

    modes = []
    model = DiT.from_preset("tiny", text_dim=0, aligned_dim=0).eval()
    model.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    cond = Conditioner(_Identity())
    for inference in (True, False):
        Generator(model, cond, inference_mode=inference)._sample(torch.randn(1, 4, 8), _settings())
    assert modes[0] and not modes[-1]


class _Identity(nn.Module):
    sample_rate, frame_rate, latent_dim = 16000, 25.0, 8


def _settings():
    from genflow.sampling import SamplingSettings

    return SamplingSettings(steps=2, guidance_scale=1.0)


class Rank:
    """One process of a two-process group, as ``check_shared_filesystem`` sees it; the other is simulated."""

    num_processes, device = 2, torch.device("cpu")

    def __init__(self, index: int, token: float):
        self.process_index, self.is_main_process = index, index == 0
        self.others = [0.0 if index == 0 else token, 1.0]  # the other rank's token, then its "I see it"

    def reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        return t + self.others.pop(0)

    def wait_for_everyone(self) -> None:
        pass


def test_ranks_that_see_different_run_folders_are_refused(tmp_path):
    """(Both ranks on one folder run in every two-process training test, through real gloo collectives.)"""
    training.check_shared_filesystem(Rank(0, token=0.0), tmp_path / "run")  # main: writes its token
    token = float((tmp_path / "run" / ".genflow-shared-fs-check").read_text())
    training.check_shared_filesystem(Rank(1, token=token), tmp_path / "run")  # rank 1 on the same folder: ok
    with pytest.raises(RuntimeError, match="do not share the run folder"):
        training.check_shared_filesystem(Rank(1, token=token), tmp_path / "elsewhere")  # another node's disk


def test_ranks_draw_each_step_from_the_same_length_bucket():
    lengths = np.random.default_rng(0).integers(10, 1000, size=400).tolist()
    ranks = [list(LengthBucketSampler(lengths, 4, seed=0, num_replicas=4, rank=r)) for r in range(4)]
    assert len({len(r) for r in ranks}) == 1
    flat = [i for r in ranks for b in r for i in b]
    assert len(flat) == len(set(flat)) == 400
    longest = np.array([[max(lengths[i] for i in b) for b in r] for r in ranks])  # (rank, step)
    # the slowest rank sets each step's time: its longest clip is close to every other rank's, unlike when
    # one global batch order is dealt round-robin (what the sampler did before)
    aligned = np.mean(longest.max(0) - longest.min(0))
    one = list(LengthBucketSampler(lengths, 4, seed=0))
    dealt = np.array([[max(lengths[i] for i in b) for b in one[r : len(one) // 4 * 4 : 4]] for r in range(4)])
    assert aligned < 0.2 * np.mean(longest) and aligned < 0.3 * np.mean(dealt.max(0) - dealt.min(0))


def test_frame_budget_sizes_batches_by_their_longest_clip():
    lengths = [250] * 20 + [25] * 40
    sampler = LengthBucketSampler(lengths, 16, seed=0, max_frames=500)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(60))
    assert all(len(b) * max(lengths[i] for i in b) <= 500 for b in batches)
    assert max(len(b) for b in batches) == 16 and min(len(b) for b in batches) == 2


def _demo_rows(n: int) -> list[dict]:
    from genflow.data import read_manifest

    return read_manifest(ROOT / "data" / "demo" / "tta" / "train.jsonl", ("audio",))[:n]


@pytest.fixture
def shards(tmp_path) -> tuple[Path, list[dict]]:
    """6 demo clips written as 3 tar shards (+ the manifest they came from)."""
    from genflow.data import write_manifest
    from genflow.data.stream import write_shards

    rows = _demo_rows(6)
    manifest = tmp_path / "rows.jsonl"
    write_manifest(rows, manifest, ("audio",))
    paths = write_shards(manifest, str(tmp_path / "shards" / "train-%03d.tar"), per_shard=2)
    assert [Path(p).name for p in paths] == ["train-000.tar", "train-001.tar", "train-002.tar"]
    return tmp_path / "shards" / "train-{000..002}.tar", rows


def _stream(spec, **kw):
    from genflow.data.stream import ShardStream, expand_shards

    return ShardStream(expand_shards(str(spec)), sample_rate=16000, hop_length=256, max_frames=40,
                       batch_size=2, **kw)


def test_streamed_shards_give_the_manifest_path_batches_and_loss(shards):
    from genflow.codecs import load_codec
    from genflow.data import TextAudioDataset
    from genflow.flow import flow_loss

    spec, rows = shards
    first = next(iter(_stream(spec, shuffle=False)))
    dataset = TextAudioDataset(rows, codec_sample_rate=16000, hop_length=256, max_frames=40)
    items = sorted([dataset[0], dataset[1]], key=lambda it: -it["audio"].shape[0])
    manifest = collate(items)
    assert first["caption"] == manifest["caption"] and torch.equal(first["audio"], manifest["audio"])
    cond = Conditioner(load_codec("mel"), keys=BatchKeys(target="audio"))
    model = DiT.from_preset("tiny", latent_dim=cond.codec.latent_dim, text_dim=0, aligned_dim=0)
    losses = []
    for batch in (first, manifest):
        torch.manual_seed(0)
        losses.append(flow_loss(model, **cond(batch, torch.device("cpu"))))
    assert torch.equal(losses[0], losses[1])


def test_streamed_shards_resume_at_their_position(shards, tmp_path):
    """Two workers, two ranks' worth of shards: a loop restarted from a saved position yields the same batches."""
    spec, _ = shards
    run = tiny_run(tmp_path, num_workers=2)
    data = training.batches(run, _stream(spec, seed=3), None, None)
    straight = [next(data)["id"] for _ in range(7)]  # past the first epoch (3 batches)
    run.state = training.RunState()
    data = training.batches(run, _stream(spec, seed=3), None, None)
    head = [next(data)["id"] for _ in range(3)]
    saved = json.loads(json.dumps(run.state.state_dict()))  # through JSON, as a checkpoint holds it
    run.state = training.RunState()
    run.state.load_state_dict(saved)
    data = training.batches(run, _stream(spec, seed=3), None, None)
    assert head + [next(data)["id"] for _ in range(4)] == straight
    assert len({tuple(ids) for ids in straight[:3]}) == 3  # an epoch reads every sample once


def test_recipe_trains_on_shards_and_resumes(shards, tmp_path):
    import importlib.util

    spec_, _ = shards
    spec = importlib.util.spec_from_file_location("tta_train", ROOT / "recipes" / "tta" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fast = ["--preset", "tiny", "--train.log_with", "none", "--train.sample_every", "0",
            "--out", str(tmp_path / "run"), "--data", str(spec_)]
    module.main(fast + ["--max-steps", "2"])
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "genflow_state.json").read_text())
    # [epoch, shard, next sample]: 2 batches of 2 read, the stream's 2nd shard read to its end
    assert state["stream"]["streams"]["0"] == [0, 1, 2]
    module.main(fast + ["--max-steps", "3", "--resume", "latest"])
    assert (tmp_path / "run" / "release" / "model.safetensors").exists()
    assert len(list((tmp_path / "run" / "text_states").glob("*.safetensors"))) >= 2  # caption states on disk
