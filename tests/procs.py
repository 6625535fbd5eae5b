"""Real zchat processes for end-to-end tests: start, read lines, wait on conditions.

Every process is started through the CLI (``python -m zchat``); its output is
read by a reader thread into a queue (test side only), and every wait is on a
condition with a deadline: no sleeps for synchronisation.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from zchat.protocol import decode_from_broker, encode
from zchat.protocol import messages as m

WAIT = 10.0  # seconds any single expected event may take before the test fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A zchat subprocess whose stdout lines are collected as they arrive."""

    def __init__(
        self,
        args: list[str],
        stdin: bool = True,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = args
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
        self.p = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "zchat", *args],
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _pull(self, timeout: float) -> bool:
        """Move one line from the reader into ``lines``; False on EOF or timeout."""
        try:
            line = self._q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if line is None:
            self._q.put(None)  # keep EOF visible to later waits
            return False
        self.lines.append(line)
        return True

    def wait_for(self, pattern: str | Callable[[str], bool], timeout: float = WAIT) -> str:
        """The first line (seen before or arriving now) matching ``pattern``."""
        match = pattern if callable(pattern) else re.compile(pattern).search
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[seen:]:
                if match(line):
                    return line
            seen = len(self.lines)
            pulled = self._pull(deadline - time.monotonic())
            if not pulled and (time.monotonic() >= deadline or self.p.poll() is not None):
                self.drain(0.2)
                for line in self.lines[seen:]:
                    if match(line):
                        return line
                raise AssertionError(
                    f"no line matching {pattern!r} from zchat {' '.join(self.args)}; "
                    f"got:\n" + "\n".join(self.lines[-40:])
                )

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for line in self.lines if rx.search(line))

    def drain(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pull(deadline - time.monotonic()):
            pass

    def send(self, *lines: str) -> None:
        assert self.p.stdin is not None
        for line in lines:
            self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def close_stdin(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()

    def wait_exit(self, timeout: float = WAIT) -> int:
        code = self.p.wait(timeout)
        self._reader.join(timeout)
        self.drain()
        return code

    def signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()


class Broker(Proc):
    def __init__(
        self,
        tmp: Path,
        *extra: str,
        port: int | None = None,
        pub_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.store = tmp / "broker.sqlite3"
        args = ["broker", "--bind", self.endpoint, "--store", str(self.store)]
        if pub_port:
            args += ["--pub", f"tcp://127.0.0.1:{pub_port}"]
        super().__init__([*args, *extra], stdin=False, env=env)
        self.wait_for("clients connect to")


def start_brokers(
    tmp: Path,
    n: int,
    *extra: str,
    env: dict[str, str] | None = None,
    started: list[Proc] | None = None,
) -> list[Broker]:
    """``n`` single brokers, each in its own directory ``tmp/broker{i}`` with its own
    SQLite store and a free port; ``extra`` goes to every one (short heartbeats,
    or ``--cluster URL`` for brokers sharing a Redis). Each is appended
    to ``started`` as soon as it runs, so a failing start leaks nothing."""
    brokers = []
    for i in range(n):
        folder = tmp / f"broker{i}"
        folder.mkdir(exist_ok=True)
        broker = Broker(folder, *extra, env=env)
        if started is not None:
            started.append(broker)
        brokers.append(broker)
    return brokers


def endpoints(brokers: list[Broker]) -> str:
    """The brokers' endpoints as ``--connect`` takes several: comma-separated, in order."""
    return ",".join(b.endpoint for b in brokers)


def raw_session(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, nick: str
) -> tuple[zmq.Socket[bytes], m.Welcome]:
    """A hand-written client: a raw DEALER that said HELLO as ``nick``, and its WELCOME."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    dealer.send_multipart(encode(m.Hello(1, nick)))
    assert dealer.poll(int(WAIT * 1000)), f"no WELCOME for {nick}"
    welcome = decode_from_broker(dealer.recv_multipart())
    assert isinstance(welcome, m.Welcome), welcome
    return dealer, welcome


def raw_subscriber(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *topics: bytes
) -> zmq.Socket[bytes]:
    """A raw SUB on the broadcast endpoint, subscribed to ``topics``."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    return sub


def make_keys(folder: Path, names: tuple[str, ...], allowed: tuple[str, ...]) -> Path:
    """``zchat keygen`` for each name into ``folder/keys``, and an allow-list
    directory ``folder/allowed`` holding the public keys of ``allowed``."""
    for name in names:
        done = subprocess.run(
            [sys.executable, "-m", "zchat", "keygen", name, "--dir", str(folder / "keys")],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    (folder / "allowed").mkdir()
    for name in allowed:
        public = (folder / "keys" / f"{name}.key").read_bytes()
        (folder / "allowed" / f"{name}.key").write_bytes(public)
    return folder


def curve_broker(keys: Path) -> Broker:
    """A broker with the key pair ``keys/keys/broker`` and the allow-list ``keys/allowed``."""
    conf = keys / "broker.toml"
    conf.write_text(
        "[broker]\n"
        f'curve_secret_key = "{keys / "keys" / "broker.key_secret"}"\n'
        f'curve_clients = "{keys / "allowed"}"\n'
    )
    return Broker(keys, "--config", str(conf), "--heartbeat", "0.5", "--timeout", "3")
