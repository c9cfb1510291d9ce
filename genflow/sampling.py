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
import difflib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from genflow.flow import SCHEDULES, SOLVERS, SWAY_RANGE, sigma_schedule


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive number")


def _check_duration(value) -> None:
    if value is not None:
        _positive("duration_s", value)


def _check_steps(value) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"steps={value!r}: expected an integer >= 1")


def _check_range(name: str, lo: float, hi: float):
    def check(value) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"{name}={value!r}: expected a value in [{lo:g}, {hi:g}]")
    return check


def _check_choice(name: str, choices: tuple[str, ...]):
    def check(value) -> None:
        if value not in choices:
            raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return check


def _setting(default, help: str, check):
    return field(default=default, metadata={"help": help, "check": check})


@dataclass(frozen=True)
class SamplingSettings:
    """How a release samples: clip length, steps, guidance, solver, schedule, enhancement windows."""

    duration_s: float | None = _setting(10.0, "seconds per generated clip (None: the model predicts it)",
                                        _check_duration)
    steps: int = _setting(25, "ODE steps from noise to data", _check_steps)
    guidance_scale: float = _setting(3.0, "classifier-free guidance scale (1 = no guidance)",
                                     _check_range("guidance_scale", 0.0, 100.0))
    guidance_rescale: float = _setting(0.0, "std-rescale of the guided velocity, in [0, 1]",
                                       _check_range("guidance_rescale", 0.0, 1.0))
    solver: str = _setting("euler", f"ODE solver: {', '.join(SOLVERS)}", _check_choice("solver", SOLVERS))
    schedule: str = _setting("sway", f"sigma schedule: {', '.join(SCHEDULES)}",
                             _check_choice("schedule", SCHEDULES))
    shift: float = _setting(3.0, "shift of the 'shifted' schedule", lambda v: _positive("shift", v))
    sway_coef: float = _setting(-1.0, "coefficient of the 'sway' schedule",
                                _check_range("sway_coef", SWAY_RANGE[0], SWAY_RANGE[1]))
    chunk_s: float = _setting(10.0, "enhancement: window length in seconds for long files",
                              lambda v: _positive("chunk_s", v))
    overlap_s: float = _setting(1.0, "enhancement: crossfaded overlap between windows, seconds",
                                _check_range("overlap_s", 0.0, 3600.0))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check(f.name, getattr(self, f.name))
        if self.overlap_s > self.chunk_s / 2:
            raise ValueError(f"overlap_s={self.overlap_s} is more than half of chunk_s={self.chunk_s}; "
                             "expected overlap_s <= chunk_s / 2")

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "sampling settings") -> SamplingSettings:
        """Settings from a dict (e.g. ``pipeline.json``); unknown names fail with the nearest valid one."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                raise ValueError(f"{where}: unknown setting {key!r}"
                                 f"{f' (did you mean {near[0]!r}?)' if near else ''}; valid: {', '.join(names)}")
        return cls(**d)

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


def check(name: str, value) -> None:
    """Raise a one-line ``ValueError`` when ``value`` is not valid for setting ``name``."""
    _FIELDS[name].metadata["check"](value)


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
        choices = {"solver": SOLVERS, "schedule": SCHEDULES}.get(name)
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, choices=choices,
                           type=None if choices else _flag_type(name), help=f.metadata["help"])


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The settings given on the command line (flags left out are absent)."""
    return {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}
