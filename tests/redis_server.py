"""A real redis-server for tests: loopback, a free port, no persistence.

``RedisServer`` starts ``redis-server`` and waits (bounded) until it answers
PING; ``kill()`` and ``restart()`` play a crash and a restart without
persistence (it comes back empty, on the same port). ``tests/conftest.py``
shares one as the ``redis_server`` fixture; a test that needs a server of
its own uses the class directly, as a context manager.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: How long a start may take before it is a failure, not a hang.
START_TIMEOUT = 10.0


class RedisServerMissing(RuntimeError):
    """The redis-server program is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (started by the constructor)."""

    def __init__(self, directory: Path | None = None) -> None:
        program = shutil.which("redis-server")
        if program is None:
            raise RedisServerMissing(
                "redis-server not found: install it (apt-get install redis-server) "
                "to run the Redis store tests"
            )
        self._program = program
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="zchat-redis-")) if directory is None else directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start it on ``self.port`` (empty: nothing is saved) and wait for PING."""
        (self.dir / "dump.rdb").unlink(missing_ok=True)
        log = self.dir / "redis.log"
        self._proc = subprocess.Popen(
            [self._program, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        with self.client() as probe:
            while True:
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    pass
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
                time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        """A client of this server, with short timeouts and no retries; the caller closes it."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._finish()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._finish()

    def pause(self) -> None:
        """A hung server (SIGSTOP): connections open, nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same port: it comes back empty."""
        self.stop()
        self.start()

    def _finish(self) -> None:
        self._proc = None

    def close(self) -> None:
        """Stop it for good and remove its directory if it made it."""
        if self._proc is not None and self._proc.poll() is None:
            self.resume()  # a stopped process would not handle SIGTERM
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
