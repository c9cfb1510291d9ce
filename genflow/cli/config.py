"""Command-line overrides for nested config dataclasses.

Every field of a (nested) dataclass becomes a flag: ``--lr 1e-4`` for a top-level field,
``--model.depth 12`` for a field of a nested dataclass. Unknown keys and values of the wrong type fail
with the nearest valid name, so a typo never trains the wrong model silently::

    cfg = parse_config(PRESETS, default="demo", argv=sys.argv[1:])
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")


def flat_fields(cfg: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Map ``a.b.c`` -> (declared type, current value) for every leaf field of a dataclass tree."""
    out: dict[str, tuple[Any, Any]] = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (hints[f.name], value)
    return out


def _convert(key: str, text: str, hint: Any) -> Any:
    """Parse ``text`` as a value of type ``hint`` (bool, int, float, str, X | None, list/tuple)."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            return None
        return _convert(key, text, args[0]) if len(args) == 1 else text
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        item_t = args[0] if args else str
        if item_t is Ellipsis:
            item_t = str
        try:
            if text.strip().startswith("["):
                items = json.loads(text)
            else:  # strings (prompts, paths) may hold commas: several of them need the JSON form
                items = [text] if item_t is str else text.split(",")
        except json.JSONDecodeError as e:
            raise ValueError(f"--{key}: could not parse {text!r} as a JSON list ({e})") from e
        items = [_convert(key, str(i), item_t) for i in items]
        return tuple(items) if origin is tuple or hint is tuple else items
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{key}: expected a boolean (true/false), got {text!r}")
    if hint in (int, float, str):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"--{key}: expected {hint.__name__}, got {text!r}") from None
    return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block): what was given, and where to look."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def apply_overrides(cfg: C, overrides: Mapping[str, str]) -> C:
    """Return a copy of ``cfg`` with dotted-key string overrides applied (typed, checked)."""
    fields = flat_fields(cfg)
    for key in overrides:
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" Did you mean {', '.join('--' + n for n in near)}?" if near else ""
            raise ValueError(f"unknown option --{key}.{hint} Run with --help to list every option.")

    def rebuild(obj: Any, prefix: str) -> Any:
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(value):
                changes[f.name] = rebuild(value, key + ".")
            elif key in overrides:
                changes[f.name] = _convert(key, overrides[key], fields[key][0])
        return dataclasses.replace(obj, **changes)

    return rebuild(cfg, "")


def parse_config(
    presets: Mapping[str, C],
    default: str,
    argv: Sequence[str] | None = None,
    description: str | None = None,
    extra: Sequence[tuple[str, dict]] = (),
    aliases: Mapping[str, str] | None = None,
) -> tuple[C, argparse.Namespace]:
    """Parse ``--preset NAME`` plus ``--field value`` overrides of that preset's dataclass.

    ``extra`` adds plain argparse options (name, kwargs) that are not config fields (e.g. ``--resume``);
    ``aliases`` adds short flags for common fields (``{"out": "train.out"}`` makes ``--out`` set
    ``train.out``). Returns the resolved config and the namespace of the extra options.
    """
    parser = Parser(description=description, formatter_class=argparse.RawTextHelpFormatter, allow_abbrev=False)
    parser.add_argument("--preset", default=default, choices=sorted(presets), help="base configuration")
    for name, kwargs in extra:
        parser.add_argument(name, **kwargs)
    base = presets[default]
    for short, key in (aliases or {}).items():
        parser.add_argument(f"--{short}", dest=f"cfg:{key}", default=None, help=f"same as --{key}")
    group = parser.add_argument_group("config fields (override any of them)")
    for key, (_, value) in flat_fields(base).items():
        group.add_argument(f"--{key}", dest=f"cfg:{key}", default=None, metavar=type(value).__name__.upper(),
                           help=f"(default in preset {default!r}: {value!r})")
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would say "unrecognized arguments"; give the nearest valid names instead.
        bad = unknown[0].lstrip("-").split("=")[0]
        near = difflib.get_close_matches(bad, [k for k in flat_fields(base)] + ["preset"], n=3)
        hint = f" Did you mean {', '.join('--' + n for n in near)}?" if near else ""
        parser.error(f"unknown option {unknown[0]!r}.{hint}")
    overrides = {k[4:]: v for k, v in vars(known).items() if k.startswith("cfg:") and v is not None}
    try:
        cfg = apply_overrides(presets[known.preset], overrides)
    except ValueError as e:
        parser.error(str(e))
    rest = argparse.Namespace(**{k: v for k, v in vars(known).items() if not k.startswith("cfg:")})
    return cfg, rest


def config_to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a dataclass tree (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
