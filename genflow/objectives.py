"""Training objectives by name: what each trains, what its release predicts, what it needs.

    flow       the flow-matching loss (``flow.flow_loss``): the model predicts the velocity v
    meanflow   MeanFlow (``meanflow.meanflow_loss``): the average velocity u, from data alone
    ctm        consistency-trajectory distillation (``distill.ctm_loss``) from a frozen teacher release

The few-step objectives need the DiT's interval input: ``student_model`` adds it (zero-initialised) to a
flow model, which then starts out as itself. Their releases say ``"prediction": "average_velocity"`` in
``pipeline.json``; ``Generator`` reads it once and jumps with the average velocity.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genflow.flow import Source, TimestepSampler, flow_loss

logger = logging.getLogger("genflow.objectives")

#: objective -> what its model predicts (the release's "prediction")
PREDICTION = {"flow": "velocity", "meanflow": "average_velocity", "ctm": "average_velocity"}
NEEDS_TEACHER = ("ctm",)
#: the shift of the "shifted" schedule a student's release samples on, per objective (docs/fewstep.md: chosen on
#: the demo train split; CTM's long jumps are its strength, MeanFlow's its weakness)
SHIFT = {"meanflow": 1.0, "ctm": 0.4}
#: the module a student adds to its flow model (zero-initialised; under LoRA it trains whole beside the adapters)
INTERVAL_MODULE = "interval_embedder."


@dataclass
class FewStepConfig:
    """Settings of the few-step objectives (``meanflow``, ``ctm``); unused by ``flow``."""

    ratio: float = 0.5  # rows trained on a jump r < t; the others (r = t) on the instantaneous velocity
    grid_fraction: float = 0.5  # of the jump rows, those put on a step of a 1/2/4-step linear schedule
    shift: float | None = None  # the release's 'shifted' schedule (1 = linear); None = the objective's (SHIFT)
    guidance_scale: float | None = None  # CFG folded into the target; None = the run's sampling guidance_scale
    adaptive_p: float = 1.0  # per-example loss weight 1 / (mse + c)^p (MeanFlow's adaptive weighting)
    adaptive_c: float = 1e-3
    derivative_step: float = 0.0  # meanflow: 0 = du/dt by the exact JVP; h > 0 = a central difference over +-h
    teacher_span: float = 0.25  # ctm: sigma span the teacher solves before the student's own jump
    teacher_steps: int = 2  # ctm: Euler steps of the guided teacher over that span

    def __post_init__(self):
        """Check every field on construction, so a bad ``--train.fewstep.*`` flag fails before anything loads."""
        rules = {
            "ratio": (0 <= self.ratio <= 1, "a value in [0, 1]"),
            "grid_fraction": (0 <= self.grid_fraction <= 1, "a value in [0, 1]"),
            "shift": (self.shift is None or self.shift > 0, "a positive number (1 = the linear schedule)"),
            "guidance_scale": (self.guidance_scale is None or self.guidance_scale > 0, "a positive number"),
            "adaptive_p": (self.adaptive_p >= 0, "a number >= 0"),
            "adaptive_c": (self.adaptive_c > 0, "a positive number"),
            "derivative_step": (self.derivative_step >= 0, "0 (the exact JVP) or a positive step"),
            "teacher_span": (self.teacher_span > 0, "a positive number"),
            "teacher_steps": (self.teacher_steps >= 1, "an integer >= 1"),
        }
        for name, (ok, expected) in rules.items():
            if not ok:
                raise ValueError(f"train.fewstep.{name}={getattr(self, name)!r}: expected {expected}; "
                                 f"fix --train.fewstep.{name}")


def check_objective(name: str, init: str | None = None) -> None:
    """Fail early on an unknown objective, or (``init`` given as "") a distillation without a teacher."""
    if name not in PREDICTION:
        raise ValueError(f"--train.objective {name!r} is unknown; expected one of {', '.join(PREDICTION)}")
    if name in NEEDS_TEACHER and init == "":
        raise ValueError(f"--train.objective {name} distils a frozen teacher: pass --init RELEASE (a flow release)")


def objective_loss(name: str, model: Callable, inputs: dict, *, fewstep: FewStepConfig, text_dropout: float,
                   aligned_dropout: float, timesteps: TimestepSampler, source: Source | None = None,
                   plain_model: Callable | None = None, teacher: Callable | None = None) -> torch.Tensor:
    """The loss of objective ``name`` on one batch of DiT inputs (``conditioner(batch)``'s dict).

    ``plain_model``: the unwrapped module, for the no-gradient passes (JVP, the student's own jumps).
    """
    common = dict(text_dropout=text_dropout, aligned_dropout=aligned_dropout, timesteps=timesteps, source=source)
    if name == "flow":
        return flow_loss(model, **inputs, **common)
    few = dict(ratio=fewstep.ratio, grid_fraction=fewstep.grid_fraction,
               guidance_scale=1.0 if fewstep.guidance_scale is None else fewstep.guidance_scale,
               adaptive_p=fewstep.adaptive_p, adaptive_c=fewstep.adaptive_c)
    if name == "meanflow":
        from genflow.meanflow import meanflow_loss

        return meanflow_loss(model, **inputs, **common, **few, derivative_step=fewstep.derivative_step,
                             jvp_model=plain_model)
    if name == "ctm":
        from genflow.distill import ctm_loss

        if teacher is None:
            raise ValueError("--train.objective ctm distils a frozen teacher: pass --init RELEASE (the teacher)")
        return ctm_loss(model, teacher, **inputs, **common, **few, span=fewstep.teacher_span,
                        teacher_steps=fewstep.teacher_steps, target_model=plain_model)
    check_objective(name)
    raise AssertionError(name)


def student_model(model: torch.nn.Module, objective: str, fewstep: FewStepConfig | None = None) -> torch.nn.Module:
    """``model`` ready for ``objective``: a DiT without an interval input gets one, zero-initialised.

    ``model`` is a genflow DiT or a model whose ``config.backbone`` is one (the official generator,
    ``AudioGen``). Every other weight is copied; the new keys are exactly the interval embedder's (checked),
    so the student computes what the model did for any interval.
    """
    check_objective(objective)
    if PREDICTION[objective] == "velocity":
        return model
    config = getattr(model, "config", None)
    dit = getattr(config, "backbone", config)
    wrapped = dit is not config  # AudioGen: the DiT's config is its backbone's
    if not hasattr(dit, "interval_input"):
        raise ValueError(f"--train.objective {objective} needs a genflow DiT (it adds an interval input); got a "
                         f"{type(model).__name__}, whose config has no DiT")
    if objective == "meanflow" and dit.timestep_int and not (fewstep and fewstep.derivative_step > 0):
        raise ValueError("--train.objective meanflow with the exact JVP: this model truncates 1000 sigma to an "
                         "integer (timestep_int, as the official generator does), so du/dt through its time input "
                         "is 0; pass --train.fewstep.derivative_step 0.02 or use --objective ctm")
    if dit.interval_input:
        return model
    dit = dataclasses.replace(dit, interval_input=True)
    student = type(model)(dataclasses.replace(config, backbone=dit) if wrapped else dit)
    own, given = student.state_dict(), model.state_dict()
    missing, unexpected = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    if unexpected or any(not k.removeprefix("backbone.").startswith(INTERVAL_MODULE) for k in missing):
        raise ValueError(f"adding the interval input changed more than its embedder: missing {missing}, "
                         f"unexpected {unexpected}")
    student.load_state_dict({**own, **given}, strict=True)  # the new embedder keeps its zero initialisation
    logger.info("added a zero-initialised interval input for --train.objective %s", objective)
    return student


def new_modules(objective: str) -> tuple[str, ...]:
    """Name fragments of the modules ``student_model`` adds for ``objective`` (none for a flow objective)."""
    return () if PREDICTION[objective] == "velocity" else (INTERVAL_MODULE,)


def load_teacher(objective: str, init: str) -> torch.nn.Module | None:
    """The frozen teacher of a distillation objective: the ``--init`` release, eval mode, no gradients."""
    if objective not in NEEDS_TEACHER:
        return None
    if not init:
        raise ValueError(f"--train.objective {objective} distils a frozen teacher: pass --init RELEASE")
    from genflow.release import load_release

    teacher = load_release(init)[0].eval()
    teacher.requires_grad_(False)
    return teacher


def resolve_fewstep(objective: str, fewstep: FewStepConfig, guidance_scale: float) -> FewStepConfig:
    """The few-step settings with what None leaves open decided: the folded guidance scale (the run's sampling
    scale) and the release's schedule shift (the objective's, ``SHIFT``)."""
    if PREDICTION[objective] == "velocity":
        return fewstep
    return dataclasses.replace(fewstep, guidance_scale=fewstep.guidance_scale or guidance_scale,
                               shift=fewstep.shift or SHIFT[objective])


def release_sampling(objective: str, sampling: dict, fewstep: FewStepConfig) -> dict:
    """The sampling settings a release of ``objective`` ships: guidance already folded in, 2 jumps on the
    "shifted" schedule of ``fewstep.shift``."""
    if PREDICTION[objective] == "velocity":
        return sampling
    return {**sampling, "guidance_scale": 1.0, "guidance_rescale": 0.0, "steps": 2, "schedule": "shifted",
            "shift": fewstep.shift, "solver": "euler"}
