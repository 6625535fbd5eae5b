"""What only the Redis store does (docs/protocol.md §6.4, "The Redis store"), on a
real redis-server: the feed, several brokers on one Redis, a Redis that comes
back empty, dies, hangs or refuses writes. The Store contract itself runs in
test_store_contract.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest
import redis

import zchat.store.redis as redis_store
from tests.redis_server import RedisServer, free_port
from zchat.store import Appended, Entry, StoreError, StoreUnavailable
from zchat.store.records import RoomRecord
from zchat.store.redis import RedisStore, decode_feed, feed_channel

MakeStore = Callable[..., RedisStore]  # (timeout=...)


@pytest.fixture
def make_store(redis_server: RedisServer) -> Iterator[MakeStore]:
    """RedisStores on the test's Redis (several brokers, if called again); all closed."""
    made: list[RedisStore] = []

    def make(timeout: float = redis_store.TIMEOUT) -> RedisStore:
        store = RedisStore(redis_server.url, timeout=timeout)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> RedisStore:
    return make_store()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as c:
        yield c


def test_keys_are_laid_out_as_documented(store: RedisStore, client: redis.Redis) -> None:
    """Operators and the other brokers read these keys; docs/protocol.md names them."""
    store.append("#dev", "m1", "alice", b"one")
    store.append("#dev", "m2", "bob", b"two")
    store.set_state("#dev", b"topic")
    assert client.get("zc:epoch") == store.epoch.encode()
    assert client.xrange("zc:log:#dev") == [
        (b"1-1", {b"id": b"m1", b"sender": b"alice", b"body": b"one"}),
        (b"2-1", {b"id": b"m2", b"sender": b"bob", b"body": b"two"}),
    ]
    assert client.get("zc:seq:#dev") == b"2"
    assert client.hgetall("zc:ids:#dev") == {b"m1": b"1", b"m2": b"2"}
    assert client.hgetall("zc:state") == {b"#dev": b"topic"}


# ----------------------------------------------------------------------- feed


def _subscribe(client: redis.Redis, *logs: str) -> redis.client.PubSub:
    """A real subscriber, subscribed before anything is appended."""
    pubsub = client.pubsub()
    pubsub.subscribe(*(feed_channel("zc:", log) for log in logs))
    for _ in logs:  # the confirmations: Redis has registered the subscriptions
        message = pubsub.get_message(timeout=2)
        assert message is not None
        assert message["type"] == "subscribe"
    return pubsub


def _feed(pubsub: redis.client.PubSub) -> list[tuple[bytes, Entry]]:
    """Every feed message until none comes for 0.2 s."""
    got = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        got.append((message["channel"], decode_feed(message["data"])))
    return got


def test_feed_carries_every_stored_entry_once(store: RedisStore, client: redis.Redis) -> None:
    pubsub = _subscribe(client, "#dev", "#ops")
    # Bodies around the MessagePack bin size steps (8, 16 and 32-bit lengths).
    bodies = [b"", b"x", bytes(range(256)), b"\xff" * 255, b"\x00" * 65_535, b"y" * 70_000]
    for i, body in enumerate(bodies):
        store.append("#dev", f"m{i}", "alice", body)
    store.append("#dev", "m1", "alice", b"resent")  # a duplicate: not published
    store.append("#ops", "m1", "bob", b"other room")
    store.set_state("#dev", b"topic")  # state is not in the feed
    dev, ops = feed_channel("zc:", "#dev"), feed_channel("zc:", "#ops")
    assert _feed(pubsub) == [
        *((dev, entry) for entry in store.read("#dev", 0, 100)),
        (ops, Entry(1, "m1", "bob", b"other room")),
    ]
    assert [len(e.body) for e in store.read("#dev", 0, 100)] == [len(b) for b in bodies]
    pubsub.close()


def test_feed_payload_is_seq_id_sender_body(store: RedisStore, client: redis.Redis) -> None:
    """The wire form other brokers (and other languages) read: body as bin, not str."""
    pubsub = _subscribe(client, "@bob")
    store.append("@bob", "dm-1", "Ålice", b"\x00psst")
    message = pubsub.get_message(timeout=2)
    assert message is not None
    assert feed_channel("zc:", "@bob") == b"zc:feed:@bob"
    assert message["channel"] == b"zc:feed:@bob"
    raw = [1, b"dm-1", "Ålice".encode(), b"\x00psst"]
    assert msgpack.unpackb(message["data"], raw=True) == raw
    assert msgpack.unpackb(message["data"], raw=False) == [1, "dm-1", "Ålice", b"\x00psst"]
    pubsub.close()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", msgpack.packb([1, "id", "s"]), msgpack.packb([0, "id", "s", b""]),
     msgpack.packb([1, "id", "s", "text, not bytes"]), msgpack.packb({"seq": 1}),
     msgpack.packb([1, "id", "s", b""]) + b"extra", msgpack.packb([True, "id", "s", b""])],
)  # fmt: skip
def test_decode_feed_refuses_what_is_not_an_entry(payload: bytes) -> None:
    with pytest.raises(ValueError, match="not a feed entry"):
        decode_feed(payload)


# ----------------------------------------------------------- several brokers


def test_two_brokers_appending_at_once_get_distinct_consecutive_seqs(
    make_store: MakeStore,
) -> None:
    """Each broker's own ids and the ids both append (a client resending to
    the other broker) are each stored once, at positions 1..N without gaps."""
    brokers = [make_store(), make_store()]
    results: list[list[tuple[str, Appended]]] = [[], []]
    start = threading.Barrier(2)

    def run(n: int) -> None:
        start.wait()
        for i in range(300):
            for msg_id in (f"b{n}-{i}", f"shared-{i}"):
                results[n].append((msg_id, brokers[n].append("#dev", msg_id, f"b{n}", b"x")))

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stored = [(msg_id, a.seq) for r in results for msg_id, a in r if not a.duplicate]
    assert sorted(seq for _, seq in stored) == list(range(1, 901))  # 300 + 300 + 300 shared
    assert sorted(msg_id for msg_id, _ in stored) == sorted(
        [f"b0-{i}" for i in range(300)] + [f"b1-{i}" for i in range(300)]
        + [f"shared-{i}" for i in range(300)]
    )  # fmt: skip
    # A duplicate names where the other broker stored it.
    where = dict(stored)
    for r in results:
        for msg_id, a in r:
            assert a.seq == where[msg_id]
    assert brokers[0].last("#dev") == brokers[1].last("#dev") == 900
    assert [e.seq for e in brokers[1].read("#dev", 0, 1000)] == list(range(1, 901))


def test_a_second_broker_sees_the_first_ones_log_and_state(make_store: MakeStore) -> None:
    first, second = make_store(), make_store()
    assert first.epoch == second.epoch  # the first one set it, the second read it
    first.append("#dev", "m1", "alice", b"hi")
    first.set_state("#dev", b"topic")
    assert second.read("#dev", 0, 10) == [Entry(1, "m1", "alice", b"hi")]
    assert second.get_state("#dev") == b"topic"
    assert second.append("#dev", "m1", "alice", b"resent") == Appended(first.epoch, 1, True)
    assert second.writes == 0  # a duplicate writes nothing


# ---------------------------------------------------------- a Redis reset


def test_redis_back_empty_starts_a_new_epoch_that_every_broker_adopts(
    make_store: MakeStore, redis_server: RedisServer
) -> None:
    first, second, idle = make_store(), make_store(), make_store()
    old = first.epoch
    first.append("#dev", "m1", "alice", b"1")
    first.append("#dev", "m2", "alice", b"2")
    redis_server.restart()  # no persistence: everything is gone, the script too

    # The first append after the reset does not land in the old epoch.
    new = first.append("#dev", "m3", "alice", b"3")
    assert new.epoch != old
    assert new == Appended(first.epoch, 1, False)
    # Another broker, still in the old epoch, adopts the new one and appends in it.
    assert second.append("#dev", "m4", "bob", b"4") == Appended(new.epoch, 2, False)
    assert second.epoch == new.epoch
    # One that writes nothing learns of it from check().
    assert idle.epoch == old
    idle.check()
    assert idle.epoch == new.epoch
    assert [e.msg_id for e in idle.read("#dev", 0, 10)] == ["m3", "m4"]


def test_brokers_that_notice_the_reset_in_check_agree_on_one_epoch(
    make_store: MakeStore, redis_server: RedisServer
) -> None:
    brokers = [make_store() for _ in range(3)]
    old = brokers[0].epoch
    redis_server.restart()
    for broker in brokers:
        broker.check()
    assert len({b.epoch for b in brokers}) == 1
    assert brokers[0].epoch != old
    assert brokers[2].append("#dev", "m1", "x", b"").epoch == brokers[0].epoch


def test_a_flushed_script_cache_is_reloaded(store: RedisStore, client: redis.Redis) -> None:
    store.append("#dev", "m1", "alice", b"1")
    client.script_flush()
    assert store.append("#dev", "m2", "alice", b"2").seq == 2


# ------------------------------------------------- a Redis that fails


def test_dead_redis_refuses_promptly_and_retry_says_when_it_is_back(
    store: RedisStore, redis_server: RedisServer
) -> None:
    store.append("#dev", "m1", "alice", b"1")
    redis_server.kill()
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Connection refused") as info:
        store.append("#dev", "m2", "alice", b"2")
    assert time.monotonic() - began < 1.0  # refused, not timed out
    assert redis_server.url in str(info.value)
    assert "\n" not in str(info.value)
    for read in (lambda: store.read("#dev", 0, 10), lambda: store.last("#dev"),
                 lambda: store.get_state("#dev"), lambda: store.heads(["#dev"]),
                 lambda: store.set_state("#dev", b"t")):  # fmt: skip
        with pytest.raises(StoreUnavailable):
            read()
    store.check()  # raises nothing: the broker calls it every second regardless
    assert store.retry() is False
    assert store.retry() is False

    redis_server.start()  # same port, empty
    assert store.retry() is True
    assert store.append("#dev", "m2", "alice", b"2") == Appended(store.epoch, 1, False)


def test_hung_redis_costs_one_timeout_then_calls_fail_at_once(
    make_store: MakeStore, redis_server: RedisServer
) -> None:
    store = make_store(timeout=0.3)
    epoch = store.epoch
    redis_server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"(?i)timeout"):
            store.append("#dev", "m1", "alice", b"1")
        assert 0.25 < time.monotonic() - began < 2.0
        # Until retry() reaches Redis, every call fails without waiting again.
        began = time.monotonic()
        for call in (lambda: store.append("#dev", "m2", "alice", b""), lambda: store.last("#dev")):
            with pytest.raises(StoreUnavailable, match="not asked again"):
                call()
        assert time.monotonic() - began < 0.1
        store.check()
        assert store.retry() is False
    finally:
        redis_server.resume()
    assert store.retry() is True
    assert store.epoch == epoch  # Redis kept its data: same life
    # The append that timed out may have run when Redis woke up; its resend
    # lands at seq 1 either way.
    assert store.append("#dev", "m1", "alice", b"1").seq == 1
    assert store.append("#dev", "m2", "alice", b"2").seq == 2


def test_retry_probes_a_hung_redis_briefly(
    make_store: MakeStore, redis_server: RedisServer
) -> None:
    store = make_store()  # 2 s per call: the probe must not wait that long
    redis_server.pause()
    try:
        began = time.monotonic()
        assert store.retry() is False
        assert time.monotonic() - began < 1.0
    finally:
        redis_server.resume()
    assert store.retry() is True


def test_renew_epoch_replaces_only_the_epoch_it_was_told(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    seen = a.epoch
    a.renew_epoch(seen)
    assert a.epoch != seen
    b.renew_epoch(seen)  # too late: a renewed it already; b adopts a's
    assert b.epoch == a.epoch


def _out_of_memory(client: redis.Redis) -> Callable[[], None]:
    client.config_set("maxmemory", 1)  # below what Redis uses: every write refused
    return lambda: client.config_set("maxmemory", 0)


def _read_only(client: redis.Redis) -> Callable[[], None]:
    client.replicaof("127.0.0.1", free_port())  # a primary that is not there
    return lambda: client.replicaof("NO", "ONE")


@pytest.mark.parametrize(
    ("refusal", "why"), [(_out_of_memory, "OOM"), (_read_only, "READONLY")], ids=["oom", "readonly"]
)
def test_refused_writes_are_unavailable_and_write_nothing(
    store: RedisStore,
    client: redis.Redis,
    refusal: Callable[[redis.Redis], Callable[[], None]],
    why: str,
) -> None:
    store.append("#dev", "m1", "alice", b"1")
    pubsub = _subscribe(client, "#dev")
    undo = refusal(client)
    try:
        with pytest.raises(StoreUnavailable, match=why) as info:
            store.append("#dev", "m2", "alice", b"2")
        assert "script" not in str(info.value)
        with pytest.raises(StoreUnavailable, match=why):
            store.set_state("#dev", b"topic")
        assert store.retry() is False  # PING alone would say yes
        # Nothing of the refused append happened; reads go on.
        assert store.last("#dev") == 1
        assert [e.msg_id for e in store.read("#dev", 0, 10)] == ["m1"]
        assert _feed(pubsub) == []
    finally:
        undo()
    assert store.retry() is True
    assert store.append("#dev", "m2", "alice", b"2") == Appended(store.epoch, 2, False)
    pubsub.close()


# ---------------------------------------------------------------- opening


def test_unreachable_redis_is_a_store_error_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError, match="Connection refused") as info:
        RedisStore(url)
    assert url in str(info.value)
    assert "\n" not in str(info.value)


def test_a_url_that_is_not_redis_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="http://localhost:6379"):
        RedisStore("http://localhost:6379")


def test_the_password_in_the_url_stays_out_of_messages() -> None:
    port = free_port()
    with pytest.raises(StoreError) as info:
        RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert redis_store.redact("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert redis_store.redact("unix:///run/r.sock?db=1&password=p") == (
        "unix:///run/r.sock?db=1&password=***"
    )


# ---------------------------------------------------------------- the rest


def test_batch_groups_nothing_and_keeps_the_writes_of_a_failed_block(store: RedisStore) -> None:
    with pytest.raises(ZeroDivisionError), store.batch():
        store.append("#dev", "m1", "alice", b"1")
        _ = 1 / 0
    assert store.last("#dev") == 1


def test_search_scans_a_bounded_number_of_the_newest_entries(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "_SEARCH_CHUNK", 100)  # (1,000: as many, but slower)

    def say(msg_id: str, text: str) -> None:
        store.append("#dev", msg_id, "alice", RoomRecord("msg", "alice", text, 1.0).pack())

    say("old", "needle")
    for i in range(250):  # more than one XREVRANGE chunk
        say(f"m{i}", f"hay {i}")
    say("new", "needle")
    assert [e.msg_id for e in store.search("#dev", "needle", 10)] == ["old", "new"]
    assert [e.msg_id for e in store.search("#dev", "needle", 1)] == ["new"]
    monkeypatch.setattr(redis_store, "SEARCH_SCAN", 200)
    assert [e.msg_id for e in store.search("#dev", "needle", 10)] == ["new"]
