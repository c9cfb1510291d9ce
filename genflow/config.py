"""Typed configs from dicts (``config.json``, ``pipeline.json``, flags): an unknown key fails with the nearest name.

    cfg = from_dict(DiTConfig, json_dict, "config.json")    # DiTConfig(**d), or ValueError naming the bad key
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def check_known(keys: Iterable[str], valid: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` for the first key not in ``valid``, naming the nearest valid one."""
    valid = list(valid)
    for key in keys:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"{what}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def from_dict(cls: type[C], d: Mapping[str, Any], what: str, ignore: Iterable[str] = ()) -> C:
    """``cls(**d)`` for a dataclass ``cls``, after dropping ``ignore`` keys and refusing unknown ones."""
    d = {k: v for k, v in d.items() if k not in set(ignore)}
    check_known(d, [f.name for f in dataclasses.fields(cls)], what)
    return cls(**d)
