"""logd-follower's --primary (several addresses) and --advertise settings."""

from __future__ import annotations

import pytest

from follower.cli import build_parser
from follower.config import FollowerConfig, SETTINGS, parse_primaries
from logd.config import ConfigError, load_table


def _load(argv: list[str], toml: str | None = None, tmp_path=None) -> FollowerConfig:
    args = build_parser().parse_args(argv)
    path = None
    if toml is not None:
        path = tmp_path / "f.toml"
        path.write_text(toml)
    return load_table(str(path) if path else None, {s.name: getattr(args, s.name) for s in SETTINGS},
                      FollowerConfig)


def test_primary_forms(tmp_path) -> None:
    assert _load(["--primary", "a:1"]).primary == ("a:1",)
    assert _load(["--primary", "a:1, b:2"]).primary == ("a:1", "b:2")
    assert _load(["--primary", "a:1", "--primary", "b:2,c:3"]).primary == ("a:1", "b:2", "c:3")
    assert _load([], 'primary = ["a:1", "b:2"]\n', tmp_path).primary == ("a:1", "b:2")
    assert _load(["--primary", "c:3"], 'primary = ["a:1", "b:2"]\n', tmp_path).primary == ("c:3",)
    assert parse_primaries("a:1,a:1") == ("a:1",)
    for bad in ("", " , ", 5, ["a:1", 2], []):
        with pytest.raises(ValueError):
            parse_primaries(bad)
    with pytest.raises(ConfigError, match="primary"):
        _load([], "primary = 5\n", tmp_path)


def test_advertise() -> None:
    assert _load(["--primary", "a:1"]).advertise == ""
    assert _load(["--primary", "a:1", "--advertise", "127.0.0.1:4000"]).advertise == "127.0.0.1:4000"
