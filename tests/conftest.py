"""Shared fixtures: a real broker, real clients, raw zmq sockets for tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zmq

from tests.procs import Broker, Proc, start_brokers

if TYPE_CHECKING:
    from tests.redis_server import RedisServer


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every Proc appended here is stopped at the end of the test, whatever happens."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def broker(tmp_path: Path, procs: list[Proc]) -> Broker:
    b = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3")
    procs.append(b)
    return b


@pytest.fixture
def several_brokers(tmp_path: Path, procs: list[Proc]) -> Callable[..., list[Broker]]:
    """Start ``n`` brokers, each with its own store: ``several_brokers(2, "--heartbeat", "0.5")``
    (tests.procs.start_brokers); stopped at the end of the test."""

    def start(n: int, *extra: str, env: dict[str, str] | None = None) -> list[Broker]:
        return start_brokers(tmp_path, n, *extra, env=env, started=procs)

    return start


@pytest.fixture
def client(broker: Broker, procs: list[Proc]) -> Callable[..., Proc]:
    """Start ``zchat client --plain`` for a nick against the test broker."""

    def start(nick: str, *extra: str, room: str = "lobby") -> Proc:
        c = Proc(["client", "--plain", "--connect", broker.endpoint, "--nick", nick,
                  "--room", room, *extra])  # fmt: skip
        procs.append(c)
        return c

    return start


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A zmq context for raw test sockets; every socket closed with linger 0."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    from tests.redis_server import RedisServer, RedisServerMissing  # redis-py: 0.2 s to import

    try:
        server = RedisServer()
    except RedisServerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> RedisServer:
    """A real redis-server on loopback, shared by the session and emptied for
    each test (FLUSHALL); started again if a test killed it."""
    if not _redis_session.alive:
        _redis_session.start()
    with _redis_session.client() as client:
        client.flushall()
    return _redis_session
