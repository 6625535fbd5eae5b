"""Processes for the benchmark: start them, read their lines, wait on conditions, kill them.

Every process the bench starts goes through ``Harness.start`` and is killed by
``Harness.close`` (also run at interpreter exit and on SIGINT/SIGTERM), whatever
happened. Each wait has a deadline; nothing sleeps for synchronisation.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
NATS_PATHS = ("nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server")


class BenchError(Exception):
    """A workload could not run; str() says which process and why."""


def raise_nofile() -> int:
    """Raise our open-file limit (children inherit it) and return it: the hard
    limit too, up to the kernel's ``fs.nr_open``, where we may (root, or
    CAP_SYS_RESOURCE); otherwise the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            ceiling = int(fh.read())
    except (OSError, ValueError):
        ceiling = hard
    if ceiling > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
            return ceiling
        except (ValueError, OSError):
            pass  # not allowed: keep the hard limit we have
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_path() -> str | None:
    return _exe(NATS_PATHS)


def have_nats_py() -> bool:
    try:
        import nats  # noqa: F401
    except ImportError:
        return False
    return True


def mosquitto_path() -> str | None:
    return _exe(MOSQUITTO_PATHS)


def _exe(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def have_paho() -> bool:
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return False
    return True


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (no psutil needed)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(eq=False)
class Proc:
    """A started process; its stdout lines land in the harness's queue."""

    name: str
    popen: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)
    ready: Any = None
    result: Any = None
    failed: str | None = None
    progress: int = 0
    progress_at: float = 0.0
    probed: bool = False
    eof: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send(self, line: str) -> None:
        if self.popen.stdin is None or self.popen.poll() is not None:
            return
        try:
            self.popen.stdin.write(line + "\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def tail(self, n: int = 15) -> str:
        err = ""
        with contextlib.suppress(OSError):
            err = self.log.read_text(errors="replace")[-2000:]
        return "\n".join(self.lines[-n:]) + ("\n" + err if err.strip() else "")


_LINE = re.compile(r"^(READY|RESULT|PROGRESS|FAIL|PROBED)(?: (.*))?$")


class Harness:
    """Owns a temp directory and every process started in it."""

    def __init__(self, keep: bool = False, verbose: bool = False) -> None:
        self.nofile = raise_nofile()
        self.tmp = Path(tempfile.mkdtemp(prefix="zchat-bench-"))
        self.keep = keep
        self.verbose = verbose
        self.procs: list[Proc] = []
        self.events: queue.Queue[tuple[Proc, str, str]] = queue.Queue()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
        self._closed = False
        atexit.register(self.close)
        self._old = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.close()
        raise KeyboardInterrupt(f"signal {signum}")

    # ------------------------------------------------------------ processes

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        stdin: bool = True,
    ) -> Proc:
        log = self.tmp / f"{name}.{len(self.procs)}.stderr"
        with log.open("w") as err:
            popen = subprocess.Popen(
                args,
                cwd=REPO,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**self.env, **(env or {})},
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        if self.verbose:
            print(f"  [start {name} pid {popen.pid}]", file=sys.stderr)
        return proc

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start(name, [sys.executable, *args], env=env)

    def worker(self, name: str, spec: dict[str, Any]) -> Proc:
        return self.python(name, "-m", "bench.loadgen", json.dumps(spec))

    def _read(self, proc: Proc) -> None:
        assert proc.popen.stdout is not None
        for raw in proc.popen.stdout:
            line = raw.rstrip("\n")
            match = _LINE.match(line)
            if match:
                self.events.put((proc, match.group(1), match.group(2) or ""))
            else:
                proc.lines.append(line)
                self.events.put((proc, "LINE", line))
        self.events.put((proc, "EOF", ""))

    def _pump(self, timeout: float) -> bool:
        """Apply one line from any process; False if none came within ``timeout``."""
        try:
            proc, kind, rest = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if kind == "READY":
            proc.ready = json.loads(rest) if rest.startswith("{") else rest
        elif kind == "RESULT":
            proc.result = json.loads(rest)
        elif kind == "PROGRESS":
            proc.progress = int(rest)
            proc.progress_at = time.monotonic()
        elif kind == "PROBED":
            proc.probed = True
        elif kind == "FAIL":
            proc.failed = rest
        elif kind == "EOF":
            proc.eof = True
        return True

    def wait(
        self,
        cond: Callable[[], bool],
        timeout: float,
        what: str,
        watch: Iterable[Proc] = (),
    ) -> None:
        """Apply lines until ``cond()``; raise if it takes longer than ``timeout``
        or a watched process fails or exits first."""
        watched = list(watch)
        deadline = time.monotonic() + timeout
        while not cond():
            for p in watched:
                if p.failed is not None:
                    raise BenchError(f"{p.name} failed while waiting for {what}: {p.failed}")
                if p.eof and p.result is None:
                    raise BenchError(
                        f"{p.name} exited (code {p.popen.poll()}) while waiting for {what}:\n"
                        + p.tail()
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
            self._pump(min(left, 0.2))

    def wait_line(self, proc: Proc, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            for line in proc.lines:
                hit = rx.search(line)
                if hit:
                    found.append(hit)
                    return True
            return False

        self.wait(seen, timeout, f"{proc.name} to print {pattern!r}", [proc])
        return found[0]

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; by pid, this process only."""
        p = proc.popen
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p.stdin and not p.stdin.closed:
            with contextlib.suppress(OSError):
                p.stdin.close()
        if p.stdout and not p.stdout.closed:
            p.stdout.close()

    def stop_all(self, procs: Iterable[Proc]) -> None:
        for proc in reversed(list(procs)):
            self.stop(proc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.procs):
            try:
                self.stop(proc, grace=2.0)
            except Exception as exc:  # keep killing the others
                print(f"bench: could not stop {proc.name}: {exc}", file=sys.stderr)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------- servers

    def zchat_broker(
        self,
        store: str,
        *,
        max_clients: int = 10_000,
        extra: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
    ) -> tuple[Proc, str]:
        """``python -m zchat broker`` on a free port; returns it and its endpoint.

        The per-client rate limit (``rate``/``burst``, where the broker has one)
        is lifted: W1's single sender and W2's chatters send far above a chat
        user's pace on purpose. Unknown ZCHAT_* keys are ignored by the config.
        """
        env = {
            "ZCHAT_MAX_CLIENTS": str(max_clients),
            "ZCHAT_RATE": "1000000000",
            "ZCHAT_BURST": "1000000000",
        }
        args = [*prefix, "-m", "zchat", "broker", "--bind", "tcp://127.0.0.1:*"]
        args += ["--store", store, "--quiet", *extra]
        proc = self.python("zchat-broker", *args, env=env)
        try:
            hit = self.wait_line(proc, r"clients connect to (tcp://[^,\s]+)", 30)
        except BenchError:
            self.stop(proc)
            raise
        return proc, hit.group(1)

    def proxy(self) -> tuple[Proc, str, str]:
        proc = self.python("zmq.proxy", "-m", "bench.proxy")
        try:
            self.wait(lambda: proc.ready is not None, 15, "zmq.proxy to bind", [proc])
        except BenchError:
            self.stop(proc)
            raise
        xsub, xpub = str(proc.ready).split()
        return proc, xsub, xpub

    def mosquitto(self) -> tuple[Proc, int]:
        exe = mosquitto_path()
        if exe is None:
            raise BenchError("mosquitto is not installed (run bench/setup.sh)")
        port = free_port()
        conf = self.tmp / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest none\n"
            # Tuned like the zchat broker and the proxy: deep per-client queues,
            # Nagle off (libzmq sets TCP_NODELAY itself).
            "max_queued_messages 100000\n"
            "set_tcp_nodelay true\n"
        )
        proc = self.start("mosquitto", [exe, "-c", str(conf)])
        self._listening(proc, port)
        return proc, port

    def redis(self) -> tuple[Proc, str]:
        """redis-server on a free loopback port for a zchat cluster, persisting
        as docs/deploy.md advises (AOF, fsync every second); returns it and its URL."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        folder = self.tmp / f"redis-{port}"
        folder.mkdir()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]  # fmt: skip
        proc = self.start("redis-server", args)
        self._listening(proc, port)
        return proc, f"redis://127.0.0.1:{port}/0"

    def nats(self) -> tuple[Proc, int]:
        """nats-server on a free loopback port, tuned like the others: a deep
        per-client buffer before a subscriber counts as slow (``max_pending``,
        like the HWM of 100,000 messages), no monitoring, no JetStream."""
        exe = nats_path()
        if exe is None:
            raise BenchError("nats-server is not installed (run bench/setup.sh)")
        port = free_port()
        conf = self.tmp / f"nats-{port}.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\n"
            "max_pending: 268435456\n"  # 256 MiB per client before "slow consumer"
            "max_connections: 100000\n"
            'write_deadline: "30s"\n'
        )
        proc = self.start(name="nats-server", args=[exe, "-c", str(conf)])
        self._listening(proc, port)
        return proc, port

    def _listening(self, proc: Proc, port: int) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    self.stop(proc)
                    raise BenchError(f"{proc.name} did not start:\n" + proc.tail()) from None
                self._pump(0.02)  # a short, bounded wait for the listener
