"""The one table of sampling settings: read by releases, ``Generator`` and the sampling/enhancement CLIs.

    settings = SamplingSettings(steps=25, guidance_scale=5.0)     # checked on construction
    settings.replace(steps=8)                                     # None values keep the current setting
    add_setting_flags(parser, exclude=("chunk_s", "overlap_s"))   # --steps, --guidance-scale, ...

A release stores its settings in ``pipeline.json`` (``"sampling"``); a call or a flag overrides one
setting by its name, the same name everywhere (``--guidance-scale`` on the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from genflow.config import from_dict
from genflow.flow import SCHEDULES, SOLVERS, SWAY_RANGE, sigma_schedule

#: where enhanced audio takes its phase: the codec's own decoder, or the noisy input's STFT (magnitude codecs)
PHASES = ("decoder", "input")
#: settings only enhancement reads (text-to-audio sampling has no input to window or take a phase from)
ENHANCEMENT_ONLY = ("chunk_s", "overlap_s", "phase")

#: name -> (valid?, what is expected): one rule per setting, used by the dataclass and the CLI parsers alike
RULES = {
    "duration_s": (lambda v: v is None or v > 0, "a positive number of seconds (or None: the model predicts it)"),
    "steps": (lambda v: int(v) == v and v >= 1, "an integer >= 1"),
    "guidance_scale": (lambda v: 0 <= v <= 100, "a scale in [0, 100] (1 = no guidance)"),
    "guidance_rescale": (lambda v: 0 <= v <= 1, "a value in [0, 1]"),
    "solver": (lambda v: v in SOLVERS, f"one of {', '.join(SOLVERS)}"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "shift": (lambda v: v > 0, "a positive number"),
    "sway_coef": (lambda v: SWAY_RANGE[0] <= v <= SWAY_RANGE[1], f"a value in [{SWAY_RANGE[0]}, {SWAY_RANGE[1]:.3f}]"),
    "chunk_s": (lambda v: v > 0, "a positive number of seconds"),
    "overlap_s": (lambda v: v >= 0, "a number of seconds >= 0"),
    "phase": (lambda v: v in PHASES, f"one of {', '.join(PHASES)}"),
}


def check(name: str, value) -> None:
    """Raise a one-line ``ValueError`` when ``value`` is not valid for setting ``name``."""
    valid, expected = RULES[name]
    try:
        ok = valid(value)
    except (TypeError, ValueError):  # a string where a number belongs, say
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {expected}")


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SamplingSettings:
    """How a release samples: clip length, steps, guidance, solver, schedule, enhancement windows."""

    duration_s: float | None = _setting(10.0, "seconds per generated clip (None: the model predicts it)")
    steps: int = _setting(25, "ODE steps from noise to data")
    guidance_scale: float = _setting(3.0, "classifier-free guidance scale (1 = no guidance)")
    guidance_rescale: float = _setting(0.0, "std-rescale of the guided velocity, in [0, 1]")
    solver: str = _setting("euler", "ODE solver")
    schedule: str = _setting("sway", "sigma schedule")
    shift: float = _setting(3.0, "shift of the 'shifted' schedule")
    sway_coef: float = _setting(-1.0, "coefficient of the 'sway' schedule")
    chunk_s: float = _setting(10.0, "enhancement: window length in seconds for long files")
    overlap_s: float = _setting(1.0, "enhancement: crossfaded overlap between windows, seconds")
    phase: str = _setting("decoder", "enhancement: output phase from the codec's decoder, or the noisy input's STFT "
                                     "('input': magnitude codecs such as mel)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check(f.name, getattr(self, f.name))
        if self.overlap_s > self.chunk_s / 2:
            raise ValueError(f"overlap_s={self.overlap_s} is more than half of chunk_s={self.chunk_s}; "
                             "expected overlap_s <= chunk_s / 2")

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "sampling settings") -> SamplingSettings:
        """Settings from a dict (e.g. ``pipeline.json``); unknown names fail with the nearest valid one."""
        return from_dict(cls, d, where)

    def replace(self, **overrides) -> SamplingSettings:
        """A copy with the non-None ``overrides`` applied (checked)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sigmas(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The (steps + 1,) noise levels from 1 to 0 of these settings."""
        return sigma_schedule(self.steps, kind=self.schedule, shift=self.shift, sway_coef=self.sway_coef,
                              device=device)


_FIELDS = {f.name: f for f in dataclasses.fields(SamplingSettings)}
_TYPES = typing.get_type_hints(SamplingSettings)


def _flag_type(name: str):
    hint = _TYPES[name]
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if typing.get_args(hint) else hint

    def parse(text: str):
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {text!r}") from None
        try:
            check(name, value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = base.__name__  # argparse names the type in its messages
    return parse


def add_setting_flags(parser: argparse.ArgumentParser, exclude: Iterable[str] = ()) -> None:
    """One ``--name`` flag per setting (underscores as dashes), checked while parsing; default: the release's."""
    group = parser.add_argument_group("sampling settings (default: the release's)")
    for name, f in _FIELDS.items():
        if name in exclude:
            continue
        choices = {"solver": SOLVERS, "schedule": SCHEDULES, "phase": PHASES}.get(name)
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, choices=choices,
                           type=None if choices else _flag_type(name), help=f.metadata["help"])


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The settings given on the command line (flags left out are absent)."""
    return {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}
