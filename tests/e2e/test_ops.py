"""Operating a broker: config check, structured logs, metrics (issue 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.procs import Broker, Proc, free_port

ZCHAT = [sys.executable, "-m", "zchat"]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ZCHAT, "config", "check", str(path)], capture_output=True, text=True, timeout=20
    )


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("[broker]\nheartbeet = 3\n", "heartbeet", "unknown key"),
        ('[broker]\nheartbeat = "soon"\n', "heartbeat", "expected float"),
        ('[client]\nconnect = "localhost:5555"\n', "connect", "not a ZeroMQ endpoint"),
        ('[client]\nconnect = "tcp://chat:99999"\n', "connect", "out of range"),
    ],
)
def test_config_check_names_file_key_and_problem_in_one_line(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    done = check(bad)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(bad) in err and key in err and problem in err


def test_config_check_prints_effective_settings_and_their_sources(tmp_path: Path) -> None:
    good = tmp_path / "broker.toml"
    good.write_text('[broker]\nbind = "tcp://0.0.0.0:5555"\n[client]\nnick = "alice"\n')
    done = subprocess.run(
        [*ZCHAT, "config", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=20,
        env={"ZCHAT_TIMEOUT": "30", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"{good}: ok"
    # Values as the TOML file would have them, and where each came from.
    assert any('"tcp://0.0.0.0:5555"' in x and x.endswith("# file") for x in lines)
    assert any("timeout" in x and "30.0" in x and "environment ZCHAT_TIMEOUT" in x for x in lines)
    assert any("heartbeat" in x and x.endswith("# default") for x in lines)
    assert any("nick" in x and '"alice"' in x for x in lines)
    assert any("admins" in x and "= []" in x for x in lines)
    assert any("curve_open" in x and "= false" in x for x in lines)


def test_shipped_configs_pass_the_check() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    for path in [root / "loopback.toml", *sorted((root / "multihost").glob("*.toml"))]:
        done = check(path)
        assert done.returncode == 0, done.stderr


def test_json_logs_one_object_per_line(tmp_path: Path, procs: list[Proc]) -> None:
    broker = Broker(tmp_path, "--log-format", "json")
    procs.append(broker)
    alice = Proc(["client", "--plain", "--connect", broker.endpoint, "--nick", "alice",
                  "--room", "lobby"])  # fmt: skip
    procs.append(alice)
    alice.wait_for(r"^-- joined #lobby")
    alice.send("logged")
    line = broker.wait_for(lambda x: x.startswith("{") and "logged" in x)
    record = json.loads(line)
    assert record["level"] == "info" and record["msg"] == "[#lobby] <alice> logged"
    assert record["time"].endswith("Z")


def test_metrics_endpoint_serves_the_counters(
    broker_with_metrics: tuple[Broker, str], procs: list[Proc]
) -> None:
    broker, url = broker_with_metrics
    alice = Proc(["client", "--plain", "--connect", broker.endpoint, "--nick", "alice",
                  "--room", "lobby"])  # fmt: skip
    procs.append(alice)
    alice.wait_for(r"^-- joined #lobby")
    alice.send("measured")
    alice.wait_for("<alice> measured")
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if "zchat_messages_total 1.0" in text or time.monotonic() > deadline:
            break
    assert "zchat_messages_total 1.0" in text
    assert "zchat_clients 1.0" in text
    assert "# HELP zchat_published_total" in text


@pytest.fixture
def broker_with_metrics(tmp_path: Path, procs: list[Proc]) -> tuple[Broker, str]:
    port = free_port()
    broker = Broker(tmp_path, "--metrics", f"127.0.0.1:{port}")
    procs.append(broker)
    broker.wait_for("metrics on")
    return broker, f"http://127.0.0.1:{port}/metrics"
