"""One contract for the registry (zchat/broker/registry.py): the in-process
default and the cluster's Redis implementation (a real redis-server) pass it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from zchat.broker.registry import LocalRegistry, Member, Registry, SessionRecord
from zchat.cluster.registry import RedisRegistry
from zchat.store import StoreUnavailable

#: Makes a registry; all registries one test makes share their state (one
#: cluster), and ``advance`` moves the clock the brokers' lives are timed by.
Make = Callable[[], Registry]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[Make, Callable[[float], None]]]:
    if request.param == "local":
        clock = _Clock()
        shared = LocalRegistry(clock)

        def advance(seconds: float) -> None:
            clock.now += seconds

        yield (lambda: shared), advance
        return
    server: Any = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    made: list[RedisRegistry] = []

    def make() -> Registry:
        made.append(RedisRegistry(redis.Redis.from_url(server.url), prefix))
        return made[-1]

    def wait(seconds: float) -> None:
        time.sleep(seconds)  # Redis times keys by its own clock

    yield make, wait
    for reg in made:
        reg.close()


@pytest.fixture
def reg(cluster: tuple[Make, Callable[[float], None]]) -> Registry:
    return cluster[0]()


def test_a_nick_goes_to_the_first_claim_and_is_freed_by_its_holder_only(reg: Registry) -> None:
    assert reg.holder("alice") is None
    assert reg.claim("alice", "t1") == "t1"
    assert reg.claim("alice", "t2") == "t1"  # taken: the holder is answered
    assert reg.claim("alice", "t1") == "t1"  # claiming one's own again is fine
    reg.release("alice", "t2")  # not t2's to free
    assert reg.holder("alice") == "t1"
    reg.release("alice", "t1")
    assert reg.holder("alice") is None
    assert reg.claim("alice", "t2") == "t2"


def test_two_brokers_see_one_owner_of_a_nick(cluster: tuple[Make, Any]) -> None:
    a, b = cluster[0](), cluster[0]()
    assert a.claim("bob", "ta") == "ta"
    assert b.claim("bob", "tb") == "ta"
    assert b.holder("bob") == "ta"


def test_sessions_are_found_by_token_from_any_broker(cluster: tuple[Make, Any]) -> None:
    a, b = cluster[0](), cluster[0]()
    rec = SessionRecord("tok", "Alice", "KEY", "h1", "A", "lunch", ["dev", "ops"])
    a.put(rec)
    got = b.get("tok")
    assert got == rec
    assert got is not rec  # a copy: changing it changes nothing stored
    got.broker = "B"  # failover: B serves it now
    b.put(got)
    assert a.get("tok") == SessionRecord("tok", "Alice", "KEY", "h1", "B", "lunch", ["dev", "ops"])
    a.drop("tok")
    assert b.get("tok") is None
    b.drop("tok")  # dropping twice is harmless


def test_presence_counts_lists_and_updates_members(reg: Registry) -> None:
    assert reg.enter("dev", "t1", Member("alice")) == 1
    assert reg.enter("dev", "t2", Member("bob", True)) == 2
    assert reg.enter("dev", "t1", Member("alicia", True)) == 2  # again: updated, not added
    assert sorted(reg.members("dev"), key=lambda x: x.nick) == [
        Member("alicia", True),
        Member("bob", True),
    ]
    assert reg.count("dev") == 2
    assert reg.count("nowhere") == 0 and reg.members("nowhere") == []
    assert reg.leave("dev", "t2") == 1
    assert reg.leave("dev", "t2") == 1  # twice: harmless
    assert reg.leave("nowhere", "t2") == 0


def test_rooms_lists_rooms_with_members_by_name(reg: Registry) -> None:
    reg.enter("zoo", "t1", Member("a"))
    reg.enter("abc", "t1", Member("a"))
    reg.enter("abc", "t2", Member("b"))
    reg.enter("gone", "t1", Member("a"))
    reg.leave("gone", "t1")
    assert reg.rooms(10) == [("abc", 2), ("zoo", 1)]
    assert reg.rooms(1) == [("abc", 2)]


def test_a_dead_brokers_sessions_go_to_exactly_one_survivor(cluster: tuple[Make, Any]) -> None:
    make, advance = cluster
    a, b, c = make(), make(), make()
    a.alive("A", 0.5)
    b.alive("B", 30)
    c.alive("C", 30)
    a.put(SessionRecord("t1", "alice", broker="A", rooms=["dev"]))
    a.put(SessionRecord("t2", "bob", broker="A"))
    moved = SessionRecord("t3", "carol", broker="A")
    a.put(moved)
    moved.broker = "B"  # carol's client failed over to B before A was found dead
    b.put(moved)
    assert b.orphans("B") == [] and c.orphans("C") == []  # A still lives
    advance(0.7)
    handed = b.orphans("B") + c.orphans("C")
    assert sorted(r.token for r in handed) == ["t1", "t2"]
    assert b.orphans("B") == [] and c.orphans("C") == []  # handed out once
    b.alive("B", 30)
    assert c.orphans("C") == []  # a live broker's sessions are nobody's orphans


@pytest.mark.timeout(30)
def test_redis_down_is_store_unavailable(redis_server: Any) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    reg = RedisRegistry(client, f"t{uuid.uuid4().hex[:8]}:")
    reg.claim("alice", "t1")
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Redis"):
            reg.holder("alice")
        assert time.monotonic() - started < 3
    finally:
        redis_server.restart()
    assert reg.claim("alice", "t2") == "t2"  # back, empty
