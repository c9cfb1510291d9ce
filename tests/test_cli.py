"""Dataclass command lines: typed overrides, lists, nearest-name errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from genflow.cli.config import apply_overrides, parse_config


@dataclass
class Inner:
    depth: int = 2
    ratio: float = 4.0
    flag: bool = False


@dataclass
class Outer:
    name: str = "x"
    prompts: tuple[str, ...] = ()
    sizes: list[int] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    maybe: str | None = None


def test_typed_nested_overrides_and_lists():
    cfg = apply_overrides(Outer(), {"inner.depth": "12", "inner.flag": "true", "inner.ratio": "2.5",
                                    "prompts": "a dog barks, then a cat meows", "sizes": "1,2,3", "maybe": "none"})
    assert cfg.inner == Inner(depth=12, ratio=2.5, flag=True)
    assert cfg.prompts == ("a dog barks, then a cat meows",)  # commas inside one prompt are kept
    assert cfg.sizes == [1, 2, 3] and cfg.maybe is None
    assert apply_overrides(Outer(), {"prompts": '["a, b", "c"]'}).prompts == ("a, b", "c")


def test_bad_values_and_names_fail_with_the_fix():
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(Outer(), {"inner.depth": "deep"})
    with pytest.raises(ValueError, match="--inner.depth"):
        apply_overrides(Outer(), {"inner.dpth": "3"})


def test_parse_config_presets_aliases_and_extras(capsys):
    presets = {"a": Outer(), "b": Outer(name="b", inner=Inner(depth=8))}
    cfg, rest = parse_config(presets, "a", ["--preset", "b", "--out", "run", "--inner.ratio", "1"],
                             aliases={"out": "name"}, extra=[("--resume", {"default": None})])
    assert (cfg.name, cfg.inner.depth, cfg.inner.ratio, rest.resume) == ("run", 8, 1.0, None)
    with pytest.raises(SystemExit):
        parse_config(presets, "a", ["--inner.detph", "3"])
    assert "--inner.depth" in capsys.readouterr().err
