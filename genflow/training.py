"""The one training loop: flow matching of a DiT on codec latents, on Accelerate.

Read top to bottom: Accelerator -> model, optimizer, LR schedule -> ``prepare`` (the frozen codec and
text encoder are only moved) -> EMA -> resume -> loop over optimizer steps inside
``accelerator.accumulate`` -> on sync: clip, skip non-finite, step, EMA -> periodic log, preview samples
and checkpoints (safetensors + JSON + a manifest, ``genflow.checkpoint``; never pickles) -> at the end, a
release folder with the EMA weights.

Task-agnostic: a recipe passes the data (dataset, batch sampler, collate) and a ``Conditioner`` that
turns a batch into DiT inputs; text-to-audio and speech enhancement differ only there. Launch with
``accelerate launch`` for any number of GPUs/nodes (DDP, or FSDP from ``accelerate config``).
"""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from genflow import checkpoint, hub, lora
from genflow.cli.config import flat_fields
from genflow.conditioning import Conditioner
from genflow.data import SkipBatches
from genflow.ema import EMA
from genflow.flow import Source, TimestepSampler
from genflow.objectives import FewStepConfig, objective_loss
from genflow.release import save_release

logger = logging.getLogger("genflow.training")

DATA_REPORT = "data_report.json"  # what the data set-up dropped, per manifest and reason


@dataclass
class TrainConfig:
    """Optimisation, checkpointing and logging settings of one run (model and data live elsewhere)."""

    out: str = "runs/demo"  # run folder: config.json, checkpoints/, logs/, samples/, release/
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # clips per process per micro-step (the most, with max_batch_frames)
    max_batch_frames: int = 0  # frame budget per micro-batch: clips x longest <= budget (0 = batch_size clips)
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" (to min_lr_ratio * lr) | "constant" (after warm-up)
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (the `accelerate launch` flag wins when given)
    seed: int = 0
    timesteps: str = "logit_normal"  # "logit_normal" | "uniform"
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    timestep_shift: float = 1.0
    text_dropout: float = 0.2  # probability of training a row with the null text (for CFG)
    aligned_dropout: float = 0.2  # same for the time-aligned condition
    objective: str = "flow"  # "flow" | "meanflow" | "ctm" (genflow.objectives; ctm needs --init, the teacher)
    fewstep: FewStepConfig = field(default_factory=FewStepConfig)  # settings of meanflow / ctm
    source: Source = field(default_factory=Source)  # the flow's source: N(0, I), or the aligned condition + noise
    log_every: int = 10
    save_every: int = 500
    save_total_limit: int = 3
    sample_every: int = 500  # preview samples with the EMA weights (0 = never)
    max_bad_steps: int = 10  # abort after this many non-finite steps in a row
    num_workers: int = 0  # DataLoader workers, kept alive for the whole run (persistent, one loader)
    log_with: str = "tensorboard"  # "tensorboard" | "wandb" | "none"
    process_group_timeout_s: int = 1800  # collective timeout (NCCL/gloo): raise it for long first-launch caches
    stop_check_every: int = 10  # steps between the cross-rank checks for SIGTERM/SIGINT (one all-reduce each)
    compile_blocks: str = ""  # torch.compile each DiT block with this backend ("inductor"); "" = off (opt-in:
    # the first steps pay the compilation)

    def __post_init__(self):
        """Check every field on construction, so a bad ``--train.*`` flag fails before anything loads."""
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "save_every", "save_total_limit",
                     "max_bad_steps", "process_group_timeout_s", "stop_check_every"):
            _check(self, name, lambda v: v >= 1, "an integer >= 1")
        for name in ("warmup_steps", "sample_every", "num_workers", "weight_decay", "max_batch_frames"):
            _check(self, name, lambda v: v >= 0, "a number >= 0")
        for name in ("lr", "max_grad_norm", "timestep_std", "timestep_shift"):
            _check(self, name, lambda v: v > 0, "a positive number")
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            _check(self, name, lambda v: 0 <= v < 1, "a value in [0, 1)")
        for name in ("min_lr_ratio", "text_dropout", "aligned_dropout"):
            _check(self, name, lambda v: 0 <= v <= 1, "a value in [0, 1]")
        if self.compile_blocks:
            backends = torch._dynamo.list_backends(exclude_tags=())
            _check(self, "compile_blocks", lambda v: v in backends, "'' (off) or a torch.compile backend such as "
                   "inductor (the default one) or aot_eager (no code generation)")
        for name, choices in (("lr_schedule", ("cosine", "constant")), ("mixed_precision", ("no", "bf16", "fp16")),
                              ("timesteps", ("logit_normal", "uniform")),
                              ("log_with", ("tensorboard", "wandb", "none"))):
            _check(self, name, lambda v, c=choices: v in c, f"one of {', '.join(choices)}")


def _check(cfg: TrainConfig, name: str, ok: Callable, expected: str) -> None:
    value = getattr(cfg, name)
    if not ok(value):
        raise ValueError(f"train.{name}={value!r}: expected {expected}; fix --train.{name}")


class RunState:
    """Counters restored on resume: step, data position, skipped work."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed
        self.bad_steps_total = 0
        self.bad_files_total = 0
        self.stream: dict = {}  # streamed shards (genflow.data.stream): each worker stream's position

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for k in vars(self):
            if k == "stream":
                self.stream = dict(state.get("stream") or {})
            else:
                setattr(self, k, int(state[k]))


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio``."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    return f


def configure_logging() -> None:
    """INFO lines with a time stamp on the main process's console (the other processes keep warnings only)."""
    if process_state().is_main_process:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def log_data_report(accelerator: Accelerator, out: Path) -> None:
    """RUN/data_report.json (written by the data set-up) -> TensorBoard scalars ``data/MANIFEST/REASON``."""
    path = out / DATA_REPORT
    if not path.is_file():
        return
    logs = {}
    for manifest, report in hub.read_json(path).items():
        name = Path(manifest).stem
        logs |= {f"data/{name}/kept": report["kept"], f"data/{name}/dropped": report["dropped"]}
        logs |= {f"data/{name}/{reason}": n for reason, n in report["counts"].items()}
    accelerator.log(logs, step=0)


def process_state(timeout_s: float | None = None) -> PartialState:
    """The process group, on the CPU when asked (``accelerate launch --cpu``) or when there is no GPU.

    Without ``cpu=True`` Accelerate treats several processes on a GPU-less machine (``torchrun
    --nproc_per_node 2``) as unrelated single processes; with it they form a gloo process group.
    ``timeout_s`` (``train.process_group_timeout_s``) only counts on the first call, which creates the group.
    """
    if timeout_s is None or PartialState._shared_state:
        return PartialState(cpu=_use_cpu())
    return PartialState(cpu=_use_cpu(), timeout=timedelta(seconds=timeout_s))


def _use_cpu() -> bool:
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def _memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Run:
    """What the steps of one training run share: the Accelerator, the model and its optimisation state."""

    cfg: TrainConfig
    out: Path
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    conditioner: Conditioner
    sigma_sampler: TimestepSampler
    ema_file: str
    state: RunState = field(default_factory=RunState)
    bad_streak: int = 0  # non-finite steps in a row, as last read by check_skips
    teacher: torch.nn.Module | None = None  # frozen, for distillation objectives; moved, never prepared
    # on the device: [skipped since the last check_skips, in a row now, most in a row since the last check]
    skips: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def make_accelerator(cfg: TrainConfig, run_config: dict | None) -> Accelerator:
    """The Accelerator of a run, seeded; logging, the resolved config (RUN/config.json) and trackers set up."""
    out = Path(cfg.out)
    log_with = None if cfg.log_with == "none" else cfg.log_with
    process_state(cfg.process_group_timeout_s)  # the group's timeout is set by whoever creates it first
    accelerator = Accelerator(
        cpu=_use_cpu(),
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=None if cfg.mixed_precision == "no" else cfg.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # DDP: gradients live in the communication buckets (no second fp32 copy: 8.4 GB less for `large`)
        kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True),
                         InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.process_group_timeout_s))],
    )
    set_seed(cfg.seed, device_specific=True)
    configure_logging()
    check_shared_filesystem(accelerator, out)
    if accelerator.is_main_process and run_config is not None:
        hub.write_json(out / "config.json", run_config)
        logger.info("resolved config:\n%s", json.dumps(run_config, indent=2))
    if log_with:
        # TensorBoard's hparams take flat scalars: nested settings go in as "fewstep.NAME", "source.NAME"
        hparams = {k: "none" if v is None else v for k, (_, v) in flat_fields(cfg).items()}
        accelerator.init_trackers("genflow", config=hparams)
        log_data_report(accelerator, out)
    if accelerator.device.type == "cuda":  # TF32 matmuls/convolutions for whatever runs in fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return accelerator


def build(cfg: TrainConfig, model: torch.nn.Module, conditioner: Conditioner, run_config: dict | None = None) -> Run:
    """Accelerator, optimizer, LR schedule, EMA; the frozen conditioner is moved, never prepared."""
    out = Path(cfg.out)
    accelerator = make_accelerator(cfg, run_config)
    conditioner.place(accelerator.device)  # with cached latents the codec's encoder stays off the GPU
    _reduce_in_fp32(accelerator)
    if cfg.compile_blocks:
        compile_blocks(model, cfg.compile_blocks)
    # Fused AdamW (one kernel for all parameters; it skips a non-finite step on the device) where the device
    # has it; the model is moved first so the optimizer sees its parameters where they will live.
    fused = accelerator.device.type in ("cuda", "cpu") and accelerator.distributed_type != DistributedType.FSDP
    if fused:
        model.to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay, fused=fused or None)
    # A plain LambdaLR (not prepared, so Accelerate does not step it once per process), saved as JSON.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    # Sharded (FSDP) EMA: every process writes (and reads back) its own shard of the shadows.
    sharded = accelerator.distributed_type == DistributedType.FSDP
    run = Run(cfg, out, accelerator, model, optimizer, scheduler, EMA(model.parameters(), decay=cfg.ema_decay),
              conditioner, TimestepSampler(kind=cfg.timesteps, mean=cfg.timestep_mean, std=cfg.timestep_std,
                                           shift=cfg.timestep_shift),
              f"ema-rank{accelerator.process_index}.safetensors" if sharded else "ema.safetensors",
              skips=torch.zeros(3, dtype=torch.long, device=accelerator.device))
    return run


def _reduce_in_fp32(accelerator: Accelerator) -> None:
    """FSDP2 under bf16/fp16: compute in the low precision, but all-reduce gradients in fp32.

    Accelerate's default policy reduces in the compute dtype: summing 8+ ranks' gradients in bf16 loses
    bits that the fp32 master weights then never see.
    """
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 2 or accelerator.mixed_precision not in ("bf16", "fp16"):
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float16
    plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32,
                                                         output_dtype=dtype)


def compile_blocks(model: torch.nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` every DiT block in place (``Module.compile``: state-dict keys stay as they are)."""
    from genflow.model import DiTBlock

    blocks = [m for m in model.modules() if isinstance(m, DiTBlock)]
    if not blocks:
        raise ValueError(f"train.compile_blocks={backend!r}, but {type(model).__name__} has no DiTBlock to "
                         "compile; drop --train.compile_blocks")
    for block in blocks:
        block.compile(backend=backend, dynamic=True)  # lengths vary from batch to batch: one graph for all
    logger.info("torch.compile: %d DiT blocks (compiled on their first call)", len(blocks))


def check_shared_filesystem(accelerator: Accelerator, out: Path) -> None:
    """Fail at start when the processes do not see one run folder (several nodes without a shared filesystem).

    Checkpoints are renamed by the main process while every rank writes its own files into them, cache
    shards are read across ranks and ``find_checkpoint`` runs on every rank: all need one shared ``out``.
    """
    if accelerator.num_processes == 1:
        return
    marker = out / ".genflow-shared-fs-check"
    token = torch.tensor(float(time.time_ns() % 2**31 if accelerator.is_main_process else 0), device=accelerator.device)
    token = accelerator.reduce(token, "sum")  # every rank learns the main process's token
    if accelerator.is_main_process:
        hub.write_text(marker, str(int(token.item())))
    accelerator.wait_for_everyone()
    seen = marker.read_text().strip() if marker.is_file() else None
    mine = seen == str(int(token.item()))
    seeing = int(accelerator.reduce(torch.tensor(float(mine), device=accelerator.device), "sum").item())
    if seeing < accelerator.num_processes:
        raise RuntimeError(
            f"{accelerator.num_processes - seeing} of {accelerator.num_processes} processes do not see the marker "
            f"the main process wrote in {out} (process {accelerator.process_index} found {seen!r}): the processes "
            "do not share the run folder; genflow needs --out on a filesystem every node mounts at the same path "
            "(NFS, Lustre, ...); see docs/scaling.md")
    accelerator.wait_for_everyone()


def restore_counters(run, state: dict) -> None:
    """The grad scaler, Accelerate's micro-step count and the run counters from ``genflow_state.json``."""
    if run.accelerator.scaler is not None and state.get("scaler"):
        run.accelerator.scaler.load_state_dict(state["scaler"])
    run.accelerator.step = int(state["accelerator_step"])
    run.state.load_state_dict(state)


def resume(run: Run, ckpt: Path) -> None:
    """Load a verified checkpoint (``checkpoint.find_checkpoint``) into the run.

    Only files the checkpoint's manifest lists are read, and only as safetensors or JSON (see
    ``genflow.checkpoint``): nothing in a checkpoint folder is unpickled.
    """
    files = checkpoint.listed(ckpt)
    state = hub.read_json(ckpt / checkpoint.STATE)
    model_sd = hub.read_weights(ckpt / "model.safetensors")
    optim_sd = checkpoint.load_optimizer(ckpt / "optimizer.safetensors")
    if run.accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(run.model, run.optimizer.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                       options=StateDictOptions(full_state_dict=True))
    else:
        unwrapped = run.accelerator.unwrap_model(run.model)
        own = unwrapped.state_dict()
        adapters = lora.is_lora(unwrapped)  # only the trained tensors were saved: strict on exactly those
        hub.check_keys(lora.trained_state(unwrapped, own) if adapters else own, model_sd,
                       str(ckpt / "model.safetensors"))
        unwrapped.load_state_dict({**own, **model_sd}, strict=True)  # LoRA: the frozen base as loaded by --init
        run.optimizer.load_state_dict(optim_sd)
    run.scheduler.load_state_dict(state["scheduler"])
    restore_counters(run, state)
    if run.ema_file not in files:
        raise ValueError(f"{ckpt}: no {run.ema_file}; resume with the process count and sharding it was saved with")
    run.ema.load(ckpt / run.ema_file)
    checkpoint.restore_rng(ckpt, run.accelerator.process_index)
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, run.state.step, run.state.epoch,
                run.state.batch_in_epoch)


def batches(run: Run, dataset: Dataset, batch_sampler, collate_fn: Callable) -> Iterator[dict]:
    """Micro-batches from the run's data position on, epoch after epoch (exact data order on resume).

    One DataLoader for the whole run (workers persist across epochs): the batch sampler's epochs are
    chained, and each index carries its epoch, so the workers' copies of the dataset draw that epoch's
    crops and noises, and the loop learns where an epoch ended from the batches themselves.
    """
    if batch_sampler is None:  # an IterableDataset of collated batches (streamed shards)
        yield from _streamed(run, dataset)
        return
    # The loader gets its own generator: creating an iterator must not draw from the global RNG, or a
    # resumed run (new iterator mid-epoch) would see other noise than an uninterrupted one.
    state, workers = run.state, run.cfg.num_workers
    loader = DataLoader(_EpochItems(dataset), batch_sampler=_EpochBatches(batch_sampler, state.epoch,
                                                                          state.batch_in_epoch),
                        collate_fn=_EpochCollate(collate_fn), num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=run.device.type == "cuda", generator=torch.Generator().manual_seed(run.cfg.seed))
    for batch in loader:
        epoch = batch.pop("_epoch")
        if epoch != state.epoch:  # the previous epoch ended: this batch is the first of the next one
            state.epoch, state.batch_in_epoch = epoch, 0
        state.batch_in_epoch += 1
        state.bad_files_total += int(batch.get("num_skipped", 0))
        yield batch


def _streamed(run: Run, dataset) -> Iterator[dict]:
    """Batches of a ``ShardStream``, its worker streams reopened where the run's checkpoint left them."""
    state, workers = run.state, run.cfg.num_workers
    dataset.position = state.stream
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=run.device.type == "cuda")
    for batch in loader:
        stream, epoch, shard, sample = batch.pop("_stream")
        # DataLoader takes batches from its workers round-robin: the next one comes from the next stream
        state.stream = {"streams": {**state.stream.get("streams", {}), str(stream): [epoch, shard, sample]},
                        "next": (stream + 1) % max(1, workers)}
        state.epoch, state.batch_in_epoch = epoch, state.batch_in_epoch + 1
        state.bad_files_total += int(batch.get("num_skipped", 0))
        yield batch


class _EpochBatches:
    """A batch sampler's epochs one after another from (epoch, skip): lists of (epoch, index) pairs."""

    def __init__(self, batch_sampler, epoch: int, skip: int):
        self.batch_sampler, self.epoch, self.skip = batch_sampler, epoch, skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip, empty = self.epoch, self.skip, 0
        while empty < 2:  # two epochs in a row without a batch: the sampler has none to give
            self.batch_sampler.set_epoch(epoch)
            empty += 1
            for batch in SkipBatches(self.batch_sampler, skip):
                empty = 0
                yield [(epoch, i) for i in batch]
            epoch, skip = epoch + 1, 0
        raise ValueError(f"the batch sampler {type(self.batch_sampler).__name__} yields no batch; expected at least "
                         "one per epoch: use more data or a smaller batch size")


class _EpochItems(Dataset):
    """``dataset`` indexed by (epoch, index): sets the epoch (crops, noises) before reading the item."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)  # random crops/noises differ per epoch, reproducibly
        return epoch, self.dataset[index]


class _EpochCollate:
    """The recipe's collate on the items, plus the batch's epoch under ``"_epoch"``."""

    def __init__(self, collate_fn: Callable):
        self.collate_fn = collate_fn

    def __call__(self, items: list[tuple[int, object]]) -> dict:
        batch = self.collate_fn([item for _, item in items])
        batch["_epoch"] = items[0][0]
        return batch


def frozen_autocast(run: Run) -> torch.autocast:
    """bf16 autocast for the frozen codec and text encoder's matmuls when training in bf16 (fp32 otherwise).

    Their spectral front/back ends (STFT, mel, ISTFT) switch autocast off themselves and stay fp32.
    fp16 is not used there: T5 overflows in fp16.
    """
    # the Accelerator's precision: the `accelerate launch --mixed_precision` flag wins over train.mixed_precision
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.accelerator.mixed_precision == "bf16")


def train_step(run: Run, batch: dict, text_dropout: float, aligned_dropout: float):
    """One micro-batch: conditions, flow loss, backward; on sync also clip, skip non-finite, step, EMA.

    Returns (loss, grad norm) on an optimizer step, (loss, None) on an accumulation micro-step.
    """
    cfg, accelerator = run.cfg, run.accelerator
    with accelerator.accumulate(run.model):
        with frozen_autocast(run):
            inputs = run.conditioner(batch, run.device)
        loss = objective_loss(cfg.objective, run.model, inputs, fewstep=cfg.fewstep, text_dropout=text_dropout,
                              aligned_dropout=aligned_dropout, timesteps=run.sigma_sampler, source=cfg.source,
                              teacher=run.teacher, plain_model=accelerator.unwrap_model(run.model))
        accelerator.backward(loss)
        if not accelerator.sync_gradients:
            return loss.detach(), None
        grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor norm -> the plain tensor the masks below need
            grad_norm = grad_norm.full_tensor()
        # A non-finite step is skipped on the device (no host sync): no parameter, optimizer-state or EMA
        # change; the LR schedule follows the step count. The skips are read at log steps (check_skips).
        finite = torch.isfinite(grad_norm)
        optimizer_step(run, finite)
        run.scheduler.step()
        run.ema.update(finite)
        bad = (~finite).long()
        streak = (run.skips[1] + 1) * bad  # non-finite steps in a row, ending at this one
        run.skips = torch.stack([run.skips[0] + bad, streak, torch.maximum(run.skips[2], streak)])
        run.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), grad_norm


def optimizer_step(run: Run, finite: torch.Tensor) -> None:
    """Step the optimizer unless ``finite`` (0-d bool, on the device) is False, decided on the device.

    fp16: the grad scaler skips on what its unscale found (and lowers its scale). Fused AdamW (CUDA and CPU)
    takes ``found_inf`` as the grad scaler hands it over; another optimizer (FSDP's foreach AdamW) costs one
    host sync.
    """
    inner = run.optimizer.optimizer
    if run.accelerator.scaler is not None:
        run.optimizer.step()
    elif getattr(inner, "_step_supports_amp_scaling", False):
        inner.found_inf = (~finite).float()
        try:
            run.optimizer.step()
        finally:
            del inner.found_inf
    elif finite.item():
        run.optimizer.step()


def check_skips(run: Run) -> None:
    """Read the skipped-step counters off the device (one host sync, at log steps and checkpoints): count them
    in the run state, warn, and stop after ``max_bad_steps`` non-finite steps in a row."""
    skipped, streak, worst = run.skips.tolist()
    run.skips = torch.tensor([0, streak, streak], device=run.skips.device)
    run.state.bad_steps_total += skipped
    run.bad_streak = streak
    if skipped:
        logger.warning("non-finite loss/gradient in %d step(s) up to step %d: update skipped (%d in a row now)",
                       skipped, run.state.step, streak)
    if worst >= run.cfg.max_bad_steps:
        raise RuntimeError(f"{worst} non-finite steps in a row before step {run.state.step}: lower the learning "
                           "rate, enable gradient clipping or check the data")


class Meter:
    """Loss and speed since the last log line."""

    def __init__(self, run: Run):
        self.loss_sum = torch.zeros((), device=run.device)
        self.others: dict[str, torch.Tensor] = {}
        self.count, self.t_last, self.step_last = 0, time.perf_counter(), run.state.step

    def add(self, loss: torch.Tensor, **others: torch.Tensor) -> None:
        """Accumulate the loss (and other named scalars, e.g. the parts of a GAN loss) of a micro-step."""
        self.loss_sum += loss
        for name, value in others.items():
            self.others[name] = self.others.get(name, 0.0) + value.detach()
        self.count += 1

    def log(self, run: Run, grad_norm, dataset: Dataset, progress: tqdm) -> None:
        """Reduce, print and track the loss, LR, grad norm, speed, memory and skipped work."""
        elapsed, steps = time.perf_counter() - self.t_last, run.state.step - self.step_last
        per_step = run.cfg.batch_size * run.cfg.grad_accum * run.accelerator.num_processes
        logs = {
            "loss": run.accelerator.reduce(self.loss_sum / max(1, self.count), "mean").item(),
            "lr": run.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "steps_per_s": steps / elapsed,
            "samples_per_s": steps * per_step / elapsed,
            "memory_gb": _memory_gb(run.device),
            # clips replaced by the dataset (counted here with num_workers=0) + dropped by collate
            "bad_files": run.state.bad_files_total + getattr(dataset, "num_bad", 0),
            "bad_steps": run.state.bad_steps_total,
            **{k: run.accelerator.reduce(v / max(1, self.count), "mean").item() for k, v in self.others.items()},
        }
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        if run.cfg.log_with != "none":
            run.accelerator.log(logs, step=run.state.step)
        if run.accelerator.is_main_process:
            logger.info("step %d %s", run.state.step, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        self.loss_sum.zero_()
        self.others.clear()
        self.count, self.t_last, self.step_last = 0, time.perf_counter(), run.state.step


def _state_dicts(run: Run) -> tuple[dict, dict]:
    """Full model and optimizer state dicts (gathered to the CPU of the main process under FSDP)."""
    if run.accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(run.model, run.optimizer.optimizer,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    unwrapped = run.accelerator.unwrap_model(run.model)
    model_sd = unwrapped.state_dict()
    # LoRA: the trained tensors are all a checkpoint needs (the frozen base comes from --init again on resume)
    trained = lora.trained_state(unwrapped, model_sd) if lora.is_lora(unwrapped) else model_sd
    return trained, run.optimizer.state_dict()


def save_checkpoint(run: Run, tag: str | None = None) -> None:
    """Model, optimizer, EMA, RNG and run state -> checkpoints/checkpoint-STEP (temp name, manifest, rename).

    Safetensors and JSON only (``genflow.checkpoint``); the manifest of sizes and hashes is written last,
    so a folder without one is incomplete. Rotation keeps the newest ``save_total_limit`` verified ones.
    """
    accelerator, state, started = run.accelerator, run.state, time.perf_counter()
    check_skips(run)  # the checkpoint's skip count is up to date
    with checkpoint.staged(accelerator, run.out / "checkpoints", state.step, run.cfg.save_total_limit, tag) as tmp:
        model_sd, optim_sd = _state_dicts(run)  # every process takes part in the FSDP gather
        if accelerator.is_main_process:
            hub.write_weights(tmp / "model.safetensors", model_sd)
            checkpoint.save_optimizer(tmp / "optimizer.safetensors", optim_sd)
        accelerator.wait_for_everyone()
        if run.ema_file != "ema.safetensors" or accelerator.is_main_process:  # every shard, or the one file
            run.ema.save(tmp / run.ema_file)
        if accelerator.is_main_process:
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            hub.write_json(tmp / checkpoint.STATE, {**state.state_dict(), "scheduler": run.scheduler.state_dict(),
                                                    "scaler": scaler, "accelerator_step": accelerator.step})
    # Pre-emption: the previous checkpoint stays valid until this one is complete and renamed; this figure
    # says whether a SIGTERM save fits the scheduler's grace period (often ~30 s).
    if accelerator.is_main_process:
        logger.info("checkpoint of step %d took %.1f s", state.step, time.perf_counter() - started)


def make_preview(run: Run, preview: Callable, release: dict) -> None:
    """Sample ``preview(generator)`` with the EMA weights (sampled as ``release`` says); write WAVs, spectrograms
    and TensorBoard entries."""
    from genflow.pipeline import Generator, release_options

    unwrapped = run.accelerator.unwrap_model(run.model)
    with run.ema.applied():
        unwrapped.eval()
        # no_grad, not inference_mode: FSDP2 cannot unshard its parameters inside inference_mode
        clips = preview(Generator(unwrapped, run.conditioner, inference_mode=False, **release_options(release)))
        unwrapped.train()
    write_preview(run, clips, run.conditioner.codec.sample_rate)


def write_release(run: Run, release: dict) -> Path:
    """The EMA weights, unwrapped and gathered, + ``release`` as pipeline.json -> RUN/release."""
    release_dir = run.out / "release"
    with run.ema.applied():
        weights = _release_weights(run)
    if run.accelerator.is_main_process:
        model = run.accelerator.unwrap_model(run.model)
        if lora.is_lora(model):  # adapters merged into the base: a release like any other, no peft needed
            model, weights = lora.merged_release(model, weights)
        save_release(release_dir, model, weights, release)
        logger.info("release folder: %s", release_dir)
    run.accelerator.wait_for_everyone()
    return release_dir


def _release_weights(run: Run) -> dict[str, torch.Tensor]:
    """The model's current weights as CPU copies on the main process ({} elsewhere); all ranks call under FSDP.

    Copies: the state dict shares storage with the parameters, which get their raw values back after
    ``ema.applied()``. Only the main process writes the release, so only it holds (and only on the CPU).
    """
    if run.accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(run.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not run.accelerator.is_main_process:
        return {}
    state = run.accelerator.unwrap_model(run.model).state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@contextmanager
def stop_signals() -> Iterator[dict]:
    """SIGTERM/SIGINT (pre-emption, Ctrl-C) set ``flag["asked"]``: checkpoint at the next step, then exit."""
    flag = {"asked": False}
    previous = {s: signal.signal(s, lambda *_: flag.update(asked=True)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def loop(run, step: Callable[[dict], tuple], dataset: Dataset, batch_sampler, collate_fn: Callable, *,
         save: Callable[[str | None], None], preview: Callable[[], None] | None, desc: str = "train",
         on_log: Callable[[], None] | None = None) -> None:
    """The loop over optimizer steps, shared by the DiT and codec training: ``step(batch)`` -> (loss, grad norm or
    None while accumulating, {name: scalar} to log), then periodic log (``on_log`` first), preview and checkpoint.

    A stop signal writes an "interrupted" checkpoint and exits 0; otherwise the final checkpoint and preview
    are made unless the last step already made them.
    """
    cfg = run.cfg
    progress = tqdm(total=cfg.max_steps, initial=run.state.step, disable=not run.accelerator.is_main_process,
                    desc=desc, dynamic_ncols=True)
    meter, stopped = Meter(run), False
    with stop_signals() as stop:
        data = batches(run, dataset, batch_sampler, collate_fn)
        while run.state.step < cfg.max_steps and not stopped:
            loss, grad_norm, parts = step(next(data))
            meter.add(loss, **parts)
            if grad_norm is None:  # accumulating
                continue
            run.state.step += 1
            progress.update(1)
            if run.state.step % cfg.log_every == 0 or run.state.step == cfg.max_steps:
                if on_log is not None:
                    on_log()
                meter.log(run, grad_norm, dataset, progress)
            if preview is not None and run.state.step % cfg.sample_every == 0:
                preview()
            stopped = _agree(run, stop["asked"])
            if stopped or run.state.step % cfg.save_every == 0:
                save("interrupted" if stopped else None)
    progress.close()
    if stopped:
        logger.info("stopped by signal at step %d; resume with --resume latest", run.state.step)
        run.accelerator.end_training()
        raise SystemExit(0)
    if run.state.step % cfg.save_every != 0:
        save("final")
    if preview is not None and run.state.step % cfg.sample_every != 0:
        preview()


def _agree(run: Run, asked: bool) -> bool:
    """Every rank must agree to stop at the same step: asked every ``stop_check_every`` steps (an all-reduce)."""
    if run.accelerator.num_processes == 1:
        return asked
    if run.state.step % run.cfg.stop_check_every and run.state.step < run.cfg.max_steps:
        return False
    return bool(run.accelerator.reduce(torch.tensor(float(asked), device=run.device), "max").item())


def train(cfg: TrainConfig, model: torch.nn.Module, dataset: Dataset, batch_sampler, collate_fn: Callable,
          conditioner: Conditioner, *, release: dict, run_config: dict, preview: Callable | None = None,
          resume_from: str | None = None, teacher: torch.nn.Module | None = None) -> Path:
    """Train ``model`` and return the release folder.

    ``batch_sampler`` yields lists of dataset indices for this process (it shards by rank itself) and
    has ``set_epoch``; ``conditioner(batch, device)`` returns the DiT inputs of a collated batch;
    ``preview(generator) -> {name: waveform}`` makes the periodic samples; ``release`` is written as
    ``pipeline.json`` next to the EMA weights; ``run_config`` is the resolved config of the whole run;
    ``teacher`` is the frozen model a distillation objective learns from.
    """
    # Found (and verified) before anything is written, so a bad --resume leaves the run folder as it was.
    ckpt = checkpoint.find_checkpoint(Path(cfg.out), resume_from) if resume_from else None
    run = build(cfg, model, conditioner, run_config)
    run.teacher = teacher.to(run.device) if teacher is not None else None
    if ckpt is not None:
        resume(run, ckpt)
    elif resume_from:
        logger.info("--resume latest: no checkpoint in %s, starting from scratch", run.out / "checkpoints")
    previews = preview is not None and cfg.sample_every > 0
    run.model.train()
    loop(run, lambda batch: (*train_step(run, batch, cfg.text_dropout, cfg.aligned_dropout), {}), dataset,
         batch_sampler, collate_fn, save=partial(save_checkpoint, run), on_log=partial(check_skips, run),
         preview=partial(make_preview, run, preview, release) if previews else None)
    bad_files = run.state.bad_files_total + getattr(dataset, "num_bad", 0)
    if bad_files and run.accelerator.is_main_process:
        logger.warning("%d unreadable clips were skipped during training", bad_files)
    release_dir = write_release(run, release)
    run.accelerator.end_training()
    return release_dir


def write_preview(run, clips: dict[str, torch.Tensor], sample_rate: int) -> None:
    """Preview clips (main process) -> WAVs + a spectrogram grid in RUN/samples/step-STEP, audio + images in
    TensorBoard."""
    from genflow.audio import save_audio
    from genflow.plots import save_spectrogram_grid, spectrogram_rgb

    if not run.accelerator.is_main_process:
        return
    step = run.state.step
    folder, names = run.out / "samples" / f"step-{step:07d}", list(clips)
    for i, name in enumerate(names):
        save_audio(folder / f"{i:02d}.wav", clips[name], sample_rate)
    hub.write_json(folder / "names.json", names)
    save_spectrogram_grid([clips[n] for n in names], names, sample_rate, folder / "spectrograms.png")
    try:
        writer = run.accelerator.get_tracker("tensorboard", unwrap=True)
    except Exception:  # no TensorBoard tracker configured
        return
    if not hasattr(writer, "add_audio"):
        return
    for i, name in enumerate(names):
        wav = clips[name].float().clamp(-1, 1).reshape(1, -1).cpu()
        writer.add_audio(f"sample/{i:02d}", wav, step, sample_rate=sample_rate)
        writer.add_image(f"spectrogram/{i:02d}", spectrogram_rgb(wav[0], sample_rate), step, dataformats="HWC")
        writer.add_text(f"sample/{i:02d}", name, step)
