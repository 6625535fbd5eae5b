"""Client commands against a CURVE broker when the keys are missing, refused or unreadable.

Every client command (``client``, ``send``, ``stats``) says within 2 s that the
broker wants keys it does not have, or refuses the key it has, and exits 3;
a key file that is missing or unreadable is named as such.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import Broker, Proc, make_keys
from tests.procs import curve_broker as start_curve_broker

SAY_WITHIN = 2.0  # seconds a command may take to say what is wrong
BASE = [sys.executable, "-m", "zchat"]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path, ("broker", "alice", "mallory"), ("alice",))


@pytest.fixture
def curve_broker(keys: Path, procs: list[Proc]) -> Broker:
    b = start_curve_broker(keys)
    procs.append(b)
    return b


def run(
    args: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([*BASE, *args], input=stdin, capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})  # fmt: skip
    return done, time.monotonic() - started


def key_env(keys: Path, key: str) -> dict[str, str]:
    return {
        "ZCHAT_CURVE_KEY": str(keys / "keys" / f"{key}.key_secret"),
        "ZCHAT_CURVE_SERVER_KEY": str(keys / "keys" / "broker.key"),
    }


# Python's own start-up (and the CLI's imports) come on top of the 2 s.
START_UP = 1.5


COMMANDS = {
    "send": ["send", "--room", "dev", "hello"],
    "stats": ["stats"],
    "client": ["client", "--plain", "--nick", "mallory", "--room", "dev"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    ("key", "said"),
    [
        (None, "the broker requires CURVE: set curve_key and curve_server_key"),
        ("mallory", "the broker refused this client's key"),
    ],
    ids=["no-keys", "refused-key"],
)
def test_every_command_says_what_is_wrong_with_its_keys_and_exits_3(
    curve_broker: Broker, keys: Path, command: str, key: str | None, said: str
) -> None:
    """Within 2 s; ``zchat client`` with a refused key and empty stdin used to exit 0,
    ``zchat send`` without keys waited out its whole timeout."""
    env = key_env(keys, key) if key else {}
    stdin = "hi\n" if key is None else ""
    done, took = run([*COMMANDS[command], "--connect", curve_broker.endpoint], env, stdin)
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    assert said in out
    assert took < SAY_WITHIN + START_UP, took


def test_a_listed_key_still_sends_and_reads_stats(curve_broker: Broker, keys: Path) -> None:
    env = key_env(keys, "alice")
    sent, _ = run(["send", "--connect", curve_broker.endpoint, "--room", "dev", "--nick",
                   "alice", "hi"], env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    stats, _ = run(["stats", "--connect", curve_broker.endpoint, "--json"], env)
    assert stats.returncode == 0, stats.stderr
    assert '"messages": 1' in stats.stdout


@pytest.mark.parametrize(
    "command",
    [["send", "--room", "dev", "x"], ["stats"], ["client", "--plain"]],
    ids=["send", "stats", "client"],
)
def test_missing_key_files_are_named_as_missing(keys: Path, command: list[str]) -> None:
    env = key_env(keys, "alice")
    env["ZCHAT_CURVE_KEY"] = str(keys / "keys" / "nobody.key_secret")
    done, _ = run([*command, "--connect", "tcp://127.0.0.1:9"], env)
    assert done.returncode != 0
    assert f"{keys / 'keys' / 'nobody.key_secret'}: no such file" in done.stderr
    assert "Invalid certificate" not in done.stderr


def test_unreadable_key_files_say_so(keys: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    secret = keys / "keys" / "alice.key_secret"
    secret.chmod(0)
    done, _ = run(["stats", "--connect", "tcp://127.0.0.1:9"], key_env(keys, "alice"))
    assert done.returncode != 0
    assert f"{secret}: cannot be read" in done.stderr


def test_a_directory_for_a_key_file_is_named(keys: Path) -> None:
    env = key_env(keys, "alice")
    env["ZCHAT_CURVE_SERVER_KEY"] = str(keys / "keys")
    done, _ = run(["stats", "--connect", "tcp://127.0.0.1:9"], env)
    assert done.returncode != 0
    assert f"{keys / 'keys'}: is a directory" in done.stderr
