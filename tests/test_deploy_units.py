"""The systemd units in deploy/ (issue 11): verified by systemd itself, hardened, and agreeing with the configs.

``systemd-analyze verify`` exits 0 on a misspelt key (it only prints
``Unknown key ...``), so any line it prints fails the test. It also checks
that ``ExecStart=`` is executable: the units name ``/usr/local/bin/logd``
(the symlink README.rst installs), so the test verifies a copy whose
ExecStart names the console scripts installed with this checkout
(``pip install -e``). ``systemd-analyze security --offline=yes`` must rate
each unit 2.0 or below. Without systemd-analyze the test is skipped, except
under ``.ci/run`` (``LOGD_CI=1``), which installs systemd first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from follower.config import FollowerConfig
from logd import config as config_mod
from logd.daemon import FD_RESERVE

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = {"logd.service": "logd.service", "logd-follower@.service": "logd-follower@ci.service"}
PLACEHOLDER = "/usr/local/bin/"
ANALYZE = shutil.which("systemd-analyze")


def analyze() -> str:
    if ANALYZE is None:
        if os.environ.get("LOGD_CI"):
            pytest.fail("systemd-analyze is missing: .ci/run should have installed systemd")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
    return ANALYZE


def scripts_dir() -> Path:
    """Where this environment's console scripts are (``logd``, ``logd-follower``)."""
    for candidate in (Path(sys.executable).parent, *(Path(p) for p in os.environ.get("PATH", "").split(":") if p)):
        if (candidate / "logd").is_file() and (candidate / "logd-follower").is_file():
            return candidate
    pytest.fail("the logd and logd-follower console scripts are not installed (pip install -e .)")


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units with ExecStart= naming the installed console scripts (templates also as an instance)."""
    where = str(scripts_dir()) + "/"
    for name, instance in UNITS.items():
        text = (DEPLOY / name).read_text()
        assert f"ExecStart={PLACEHOLDER}" in text, name
        text = text.replace(f"ExecStart={PLACEHOLDER}", f"ExecStart={where}")
        (tmp_path / name).write_text(text)
        if instance != name:
            (tmp_path / instance).write_text(text)
    return tmp_path


@pytest.mark.parametrize("name", sorted({*UNITS, *UNITS.values()}))
def test_systemd_analyze_verify_prints_nothing(installed: Path, name: str) -> None:
    proc = subprocess.run([analyze(), "verify", "--man=no", str(installed / name)],
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 0 and lines == [], f"systemd-analyze verify {name}:\n" + "\n".join(lines)


def test_verify_is_read_for_what_it_prints(installed: Path) -> None:
    """What the check above relies on: a misspelt key passes with exit 0, but is printed."""
    bad = installed / "typo.service"
    bad.write_text((installed / "logd.service").read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    proc = subprocess.run([analyze(), "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'NoNewPrivilege'" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_security_exposure_is_at_most_2(installed: Path, name: str) -> None:
    proc = subprocess.run([analyze(), "security", "--offline=yes", "--no-pager", str(installed / name)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= 2.0, f"{name}: exposure {m.group(1)}\n" + "\n".join(
        line for line in proc.stdout.splitlines() if "✗" in line)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_units_are_hardened_as_issue_11_asks(name: str) -> None:
    s = unit_settings(DEPLOY / name)
    for key, want in {"Type": "notify", "NotifyAccess": "main", "DynamicUser": "yes", "StateDirectory": "logd",
                      "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                      "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
                      "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert s.get(key) == [want], (key, s.get(key))
    assert "@system-service" in s["SystemCallFilter"]
    assert s["WatchdogSec"] and s["User"] == ["logd"]  # one dynamic user: the replica reads the follower's copy


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_example_configs_load_and_fit_their_units() -> None:
    server = config_mod.load(str(DEPLOY / "logd.toml"), {})
    unit = unit_settings(DEPLOY / "logd.service")
    assert int(unit["LimitNOFILE"][0]) >= server.max_clients + FD_RESERVE
    # Two shutdown steps wait up to shutdown_timeout each (drain, connections), then fsync and close.
    assert seconds(unit["TimeoutStopSec"][0]) > 2 * server.shutdown_timeout + 10
    assert not server.refuse and server.fsync.mode is config_mod.FsyncMode.ALWAYS

    follower = config_mod.load_table(str(DEPLOY / "follower-example.toml"), {}, FollowerConfig)
    assert follower.primary and follower.data_dir == "/var/lib/" + unit["StateDirectory"][0]
    template = unit_settings(DEPLOY / "logd-follower@.service")
    assert template["ExecStart"] == [f"{PLACEHOLDER}logd-follower --config /etc/logd/follower-%i.toml"]
    assert template["StateDirectory"] == unit["StateDirectory"]
