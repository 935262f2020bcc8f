"""The settings table (logd/config.py): one row per setting feeds ServerConfig, TOML keys, flags and --help."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from logd import cli
from logd.config import (
    SETTINGS,
    ConfigError,
    FsyncMode,
    FsyncPolicy,
    Role,
    ServerConfig,
    VerifyMode,
    format_size,
    load,
)

# Rows whose shown default is a description, not a value the parser takes.
DESCRIBED = {"data_dir", "unix", "admin_token", "admin_token_file"}


def test_every_field_is_a_row_and_every_row_a_field() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(ServerConfig)]
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:
        assert s.help and s.default, s.name


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name not in DESCRIBED], ids=lambda s: s.name)
def test_the_shown_default_is_the_default(setting) -> None:
    """--help cannot drift from ServerConfig: both come from the row, and the text parses back."""
    default = getattr(ServerConfig(), setting.name)
    if setting.switch:
        assert setting.default == "false" and default is False
    else:
        assert setting.parse(setting.default) == default


def test_computed_and_empty_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert ServerConfig().data_dir == "./logd-data"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/logd:/var/lib/other")
    assert ServerConfig().data_dir == "/var/lib/logd"
    assert ServerConfig().unix is None


def test_help_comes_from_the_table() -> None:
    serve = cli.build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    actions = {a.dest: a for a in serve._actions}
    for s in SETTINGS:
        action = actions[s.name]
        assert action.option_strings == [f"--{s.flag}"]
        assert action.default is None  # "not given": the TOML file or the row's default applies
        if s.switch:
            assert action.help == s.help and action.nargs == 0
        else:
            assert action.help == f"{s.help} [default: {s.default}]"


def test_every_row_is_a_toml_key_and_a_flag(tmp_path: Path) -> None:
    samples = {"host": "0.0.0.0", "port": 7, "unix": "/tmp/x.sock", "data_dir": "/d", "fsync": "interval:5",
               "partition_size": "2MiB", "index_interval": 512, "retain_bytes": "1GiB", "retain_age": "7d",
               "verify_on_start": "full", "allow_corrupt": True, "admin_from": ["10.0.0.0/8"],
               "max_clients": 3, "max_line": 64, "max_message": "4KiB", "max_args": 9, "max_request": 99,
               "max_pipeline": 2, "idle_timeout": "1m", "partial_timeout": 2, "send_timeout": 3.5,
               "shutdown_timeout": "4s", "stall_timeout": "5s", "log_level": "debug", "log_format": "json",
               "refuse": True, "watch": "poll", "watch_interval": "2s",
               "admin_token": "tok", "admin_token_file": "/run/logd/token",
               "metrics": "127.0.0.1:9464", "min_acks": 2, "ack_timeout": "1.5s",
               "peer": ["10.0.0.2:1774", "10.0.0.3:1774"], "peer_timeout": "1s"}
    assert set(samples) == {s.name for s in SETTINGS}, "a new row needs a sample here"
    lines = []
    for key, value in samples.items():
        text = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else (
            "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else str(value))
        lines.append(f"{key.replace('_', '-') if key.startswith('max') else key} = {text}")
    (tmp_path / "logd.toml").write_text("\n".join(lines) + "\n")
    from_toml = load(str(tmp_path / "logd.toml"), {})
    defaults = ServerConfig()
    for s in SETTINGS:
        assert getattr(from_toml, s.name) != getattr(defaults, s.name), s.name
    assert from_toml.fsync == FsyncPolicy(FsyncMode.INTERVAL, 5)
    assert from_toml.partition_size == 2 << 20 and from_toml.retain_age == 7 * 86400
    assert from_toml.verify_on_start is VerifyMode.FULL and from_toml.admin_from == ("10.0.0.0/8",)
    # The same values as flags (strings, as argparse hands them over), over a TOML file: flags win.
    argv = ["serve"]
    for key, value in samples.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    args = cli.build_parser().parse_args(argv)
    from_flags = load(None, {s.name: getattr(args, s.name) for s in SETTINGS})
    assert from_flags == from_toml


def test_flags_win_over_the_file_and_unset_flags_do_not(tmp_path: Path) -> None:
    (tmp_path / "logd.toml").write_text('port = 9\nhost = "0.0.0.0"\n')
    config = load(str(tmp_path / "logd.toml"), {"port": "10", "host": None})
    assert (config.port, config.host) == (10, "0.0.0.0")


@pytest.mark.parametrize("values, source, message", [
    ({"colour": 1}, "f.toml", "f.toml: colour: unknown setting (logd serve --help lists them)"),
    ({"max-clients": 0}, "f.toml", "f.toml: max-clients: must be at least 1, not 0"),
    ({"admin_from": "localhost"}, "", "--admin-from: not an address or network: 'localhost'"),
    ({"verify_on_start": "some"}, "", "--verify-on-start: must be one of auto, full, tail, not 'some'"),
    ({"fsync": "interval:0"}, "", "--fsync: fsync policy must be always, never or interval:<ms>"),
])
def test_bad_values_name_where_they_came_from(values: dict, source: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig().with_overrides(values, source)
    assert str(info.value).startswith(message)


def test_fsync_policy_and_modes() -> None:
    for text, mode, ms in [("always", FsyncMode.ALWAYS, 0), (" NEVER ", FsyncMode.NEVER, 0),
                           ("interval:200", FsyncMode.INTERVAL, 200)]:
        policy = FsyncPolicy.parse(text)
        assert policy.mode is mode and policy.interval_ms == ms
        assert FsyncPolicy.parse(str(policy)) == policy
    assert str(FsyncPolicy.parse("interval:200")) == "interval:200" and str(FsyncPolicy.parse("never")) == "never"
    assert FsyncPolicy("never").mode is FsyncMode.NEVER  # a string is taken as its mode
    with pytest.raises(ValueError):
        FsyncPolicy("sometimes")
    assert [m.value for m in FsyncMode] == ["always", "interval", "never"]
    assert [r.value for r in Role] == ["primary", "replica"]


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 4096, 1 << 20, 64 << 20, 3 << 30, (1 << 20) + 1)] == [
        "0", "4096", "1MiB", "64MiB", "3GiB", str((1 << 20) + 1)]
