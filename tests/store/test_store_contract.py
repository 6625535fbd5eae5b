"""The Store contract (docs/protocol.md §6.4): one suite, every implementation.

Each contract test runs against MemoryStore, against SQLiteStore on a real
file and against RedisStore on a real redis-server, the way trio's in-memory
fakes pass the same tests as the real thing. What only SQLite promises
(reopening, rollback, refusing a file it cannot read) is tested on SQLiteStore
alone, MemoryStore's bound on its own, and what only Redis does (a feed, several
brokers, a Redis that restarts or dies) in test_redis_store.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer
from zchat.store import Appended, Entry, MemoryStore, SQLiteStore, Store, StoreError
from zchat.store.records import RoomRecord
from zchat.store.redis import RedisStore
from zchat.store.sqlite import SCHEMA_VERSION

MakeStore = Callable[[], Store]


class Boom(Exception):
    """Raised inside a batch to make it fail."""


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """A factory of fresh, empty stores of one kind; every store made is closed."""
    made: list[Store] = []
    redis_server: RedisServer | None = None
    if request.param == "redis":
        redis_server = request.getfixturevalue("redis_server")

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore()
        elif redis_server is not None:
            # A prefix of its own: another store on the same (emptied) Redis.
            store = RedisStore(redis_server.url, prefix=f"zc{len(made)}:")
        else:
            store = SQLiteStore(tmp_path / f"store{len(made)}.sqlite3")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def fill(store: Store, log: str, count: int) -> None:
    """Append ``count`` entries ``m1``..``mN`` to ``log``."""
    for i in range(1, count + 1):
        store.append(log, f"m{i}", "alice", f"body{i}".encode())


def seqs(entries: list[Entry]) -> list[int]:
    return [e.seq for e in entries]


# ------------------------------------------------------------------ appending


def test_append_assigns_positions_from_one_per_log(store: Store) -> None:
    """Each log counts its own positions from 1; logs do not share a counter."""
    assert store.append("#dev", "a", "alice", b"1") == Appended(store.epoch, 1, False)
    assert store.append("#dev", "b", "bob", b"2") == Appended(store.epoch, 2, False)
    assert store.append("#ops", "c", "alice", b"3") == Appended(store.epoch, 1, False)
    assert store.append("@bob", "d", "alice", b"4") == Appended(store.epoch, 1, False)
    assert store.append("#dev", "e", "carol", b"5") == Appended(store.epoch, 3, False)
    assert store.last("#dev") == 3
    assert store.last("#ops") == 1
    assert store.last("@bob") == 1


def test_entries_keep_id_sender_and_body(store: Store) -> None:
    body = bytes(range(256))  # opaque bytes, NULs included
    store.append("#dev", "id-1", "alice", body)
    store.append("#dev", "id-2", "Bob", b"")
    assert store.read("#dev", 0, 10) == [
        Entry(1, "id-1", "alice", body),
        Entry(2, "id-2", "Bob", b""),
    ]


def test_duplicate_id_returns_the_original_position(store: Store) -> None:
    """§6.3/§6.4: a second append of an id is dropped and reports where the first landed."""
    store.append("#dev", "x", "alice", b"first")
    store.append("#dev", "y", "alice", b"second")
    again = store.append("#dev", "x", "alice", b"retry")
    assert again == Appended(store.epoch, 1, True)
    assert store.last("#dev") == 2
    assert store.read("#dev", 0, 10) == [
        Entry(1, "x", "alice", b"first"),  # the original body, not the retry
        Entry(2, "y", "alice", b"second"),
    ]
    # The drop does not consume a position.
    assert store.append("#dev", "z", "alice", b"third").seq == 3


def test_same_id_in_another_log_is_not_a_duplicate(store: Store) -> None:
    store.append("#dev", "x", "alice", b"1")
    store.append("#dev", "y", "alice", b"2")
    assert store.append("#ops", "x", "alice", b"3") == Appended(store.epoch, 1, False)
    assert store.append("@alice", "x", "bob", b"4") == Appended(store.epoch, 1, False)


# -------------------------------------------------------------------- reading


def test_read_after_is_oldest_first_and_bounded(store: Store) -> None:
    fill(store, "#dev", 5)
    assert seqs(store.read("#dev", 0, 10)) == [1, 2, 3, 4, 5]
    assert seqs(store.read("#dev", 0, 2)) == [1, 2]
    assert seqs(store.read("#dev", 2, 2)) == [3, 4]
    assert seqs(store.read("#dev", 3, 100)) == [4, 5]
    assert store.read("#dev", 5, 10) == []
    assert store.read("#dev", 99, 10) == []
    assert store.read("#dev", 0, 0) == []
    assert store.read("#nowhere", 0, 10) == []


def test_read_before_is_the_newest_below_the_bound_oldest_first(store: Store) -> None:
    fill(store, "#dev", 5)
    # before=0: no upper bound, i.e. the end of the log.
    assert seqs(store.read_before("#dev", 0, 2)) == [4, 5]
    assert seqs(store.read_before("#dev", 0, 100)) == [1, 2, 3, 4, 5]
    assert seqs(store.read_before("#dev", 4, 2)) == [2, 3]
    assert seqs(store.read_before("#dev", 3, 10)) == [1, 2]
    assert seqs(store.read_before("#dev", 99, 1)) == [5]
    assert store.read_before("#dev", 1, 10) == []
    assert store.read_before("#dev", 0, 0) == []
    assert store.read_before("#nowhere", 0, 10) == []


def test_reads_see_one_log_only(store: Store) -> None:
    fill(store, "#dev", 3)
    store.append("#ops", "o1", "bob", b"ops")
    assert [e.msg_id for e in store.read("#ops", 0, 10)] == ["o1"]
    assert [e.msg_id for e in store.read_before("#ops", 0, 10)] == ["o1"]
    assert seqs(store.read("#dev", 0, 10)) == [1, 2, 3]


def test_last_is_zero_for_an_empty_log(store: Store) -> None:
    assert store.last("#dev") == 0
    fill(store, "#dev", 2)
    assert store.last("#dev") == 2
    assert store.last("#ops") == 0


def test_heads_are_the_last_of_each_log(store: Store) -> None:
    """The broker's periodic head check of the logs it follows (one round trip on Redis)."""
    fill(store, "#dev", 3)
    store.append("@bob", "d", "alice", b"psst")
    assert store.heads(["#dev", "@bob", "#nowhere"]) == {"#dev": 3, "@bob": 1, "#nowhere": 0}
    assert store.heads([]) == {}


# ---------------------------------------------------------------------- state


def test_state_is_one_blob_per_log_overwritten_whole(store: Store) -> None:
    assert store.get_state("#dev") is None
    store.set_state("#dev", b"release friday")
    store.set_state("@alice", b"7")
    assert store.get_state("#dev") == b"release friday"
    store.set_state("#dev", b"\x00\xff")
    assert store.get_state("#dev") == b"\x00\xff"
    store.set_state("#dev", b"")
    assert store.get_state("#dev") == b""  # empty is set, not absent
    assert store.get_state("@alice") == b"7"
    assert store.get_state("#ops") is None


def test_state_and_entries_are_independent(store: Store) -> None:
    store.set_state("#dev", b"topic")
    assert store.last("#dev") == 0
    assert store.read("#dev", 0, 10) == []
    fill(store, "#dev", 2)
    assert store.get_state("#dev") == b"topic"


# ---------------------------------------------------------------------- epoch


def test_epoch_is_a_stable_non_empty_string(make_store: MakeStore) -> None:
    store = make_store()
    epoch = store.epoch
    assert isinstance(epoch, str)
    assert epoch
    fill(store, "#dev", 3)
    store.set_state("#dev", b"t")
    assert store.epoch == epoch
    assert store.append("#dev", "m9", "x", b"").epoch == epoch
    # A new store is a new life: positions remembered from another are stale.
    assert make_store().epoch != epoch


# ---------------------------------------------------------------------- batch


def test_batch_groups_writes(store: Store) -> None:
    """§6.4: the broker wraps each drained batch of requests in one batch()."""
    with store.batch():
        first = store.append("#dev", "a", "alice", b"1")
        store.append("#dev", "b", "alice", b"2")
        store.set_state("#dev", b"topic")
        # Writes inside the batch are visible to reads in it (dedupe needs that).
        assert store.append("#dev", "a", "alice", b"again") == Appended(store.epoch, 1, True)
        assert store.last("#dev") == 2
    assert first.seq == 1
    assert seqs(store.read("#dev", 0, 10)) == [1, 2]
    assert store.get_state("#dev") == b"topic"
    with store.batch():
        store.append("#dev", "c", "alice", b"3")
    assert store.last("#dev") == 3


def test_batches_nest(store: Store) -> None:
    with store.batch():
        store.append("#dev", "a", "alice", b"1")
        with store.batch():
            store.append("#dev", "b", "alice", b"2")
        store.append("#dev", "c", "alice", b"3")
    assert seqs(store.read("#dev", 0, 10)) == [1, 2, 3]
    with store.batch():  # usable again after a nested one
        store.append("#dev", "d", "alice", b"4")
    assert store.last("#dev") == 4


def test_batch_lets_an_exception_through(store: Store) -> None:
    with pytest.raises(Boom), store.batch():
        store.append("#dev", "a", "alice", b"1")
        raise Boom
    # The store stays usable; whether the write survived is the durable store's
    # promise (test_failed_batch_is_rolled_back), not MemoryStore's.
    assert store.append("#dev", "b", "alice", b"2").seq == store.last("#dev")


# ------------------------------------------------------------- SQLite only


def test_sqlite_reopen_keeps_entries_positions_state_and_epoch(tmp_path: Path) -> None:
    path = tmp_path / "zchat.sqlite3"
    store = SQLiteStore(path)
    epoch = store.epoch
    fill(store, "#dev", 3)  # outside a batch: each write commits on its own
    with store.batch():
        store.append("@bob", "dm1", "alice", b"psst")
        store.set_state("#dev", b"release friday")
    store.close()

    again = SQLiteStore(path)
    try:
        assert again.epoch == epoch
        assert again.last("#dev") == 3
        assert again.last("@bob") == 1
        assert again.read("#dev", 0, 10) == [
            Entry(i, f"m{i}", "alice", f"body{i}".encode()) for i in (1, 2, 3)
        ]
        assert again.get_state("#dev") == b"release friday"
        # Dedupe and positions carry on where they were.
        assert again.append("#dev", "m2", "alice", b"retry") == Appended(epoch, 2, True)
        assert again.append("#dev", "m4", "alice", b"body4") == Appended(epoch, 4, False)
    finally:
        again.close()


def test_sqlite_failed_batch_is_rolled_back(tmp_path: Path) -> None:
    """§6.4: none of a failed batch's writes happen, and positions do not skip."""
    path = tmp_path / "zchat.sqlite3"
    store = SQLiteStore(path)
    store.append("#dev", "kept", "alice", b"kept")
    with pytest.raises(Boom), store.batch():
        store.append("#dev", "lost1", "alice", b"x")
        store.append("#dev", "lost2", "alice", b"y")
        store.append("#new", "lost3", "alice", b"z")
        store.set_state("#dev", b"lost topic")
        assert store.last("#dev") == 3
        raise Boom
    assert store.last("#dev") == 1
    assert store.last("#new") == 0
    assert [e.msg_id for e in store.read("#dev", 0, 10)] == ["kept"]
    assert store.get_state("#dev") is None
    # The rolled-back ids are free again and the next position is 2, not 4.
    assert store.append("#dev", "lost1", "alice", b"x") == Appended(store.epoch, 2, False)
    store.close()

    again = SQLiteStore(path)
    try:
        assert [e.msg_id for e in again.read("#dev", 0, 10)] == ["kept", "lost1"]
        assert again.read("#new", 0, 10) == []
        assert again.get_state("#dev") is None
        assert again.append("#dev", "next", "alice", b"n").seq == 3
    finally:
        again.close()


def test_sqlite_exception_in_a_nested_batch_rolls_back_the_whole_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "zchat.sqlite3")
    try:
        with pytest.raises(Boom), store.batch():
            store.append("#dev", "outer", "alice", b"1")
            with store.batch():
                store.append("#dev", "inner", "alice", b"2")
                raise Boom
        assert store.last("#dev") == 0
        assert store.read("#dev", 0, 10) == []
    finally:
        store.close()


def test_sqlite_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "zchat.sqlite3"
    store = SQLiteStore(path)
    try:
        store.append("#dev", "x", "alice", b"1")
    finally:
        store.close()
    assert path.is_file()


def test_sqlite_garbage_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database, just bytes \x00\xff" * 200)
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is not a database")  # left untouched


def _set_meta(path: Path, key: str, value: str) -> None:
    db = sqlite3.connect(str(path))
    try:
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    finally:
        db.close()


def test_sqlite_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zchat.sqlite3"
    SQLiteStore(path).close()
    newer = SCHEMA_VERSION + 1
    _set_meta(path, "schema", str(newer))
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    message = str(info.value)
    assert f"version {newer}" in message
    assert str(path) in message


def test_sqlite_unreadable_schema_version_is_a_store_error(tmp_path: Path) -> None:
    """A damaged meta table is an operator's problem to be told about, not a traceback."""
    path = tmp_path / "zchat.sqlite3"
    SQLiteStore(path).close()
    _set_meta(path, "schema", "one")
    with pytest.raises(StoreError, match="version"):
        SQLiteStore(path)


def test_sqlite_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a zchat store") as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("below", [(), ("sub",)], ids=["in-file", "under-file"])
def test_sqlite_unwritable_location_is_refused(tmp_path: Path, below: tuple[str, ...]) -> None:
    """A path whose parent is a regular file cannot be created (this holds even for root)."""
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a directory")
    path = blocker.joinpath(*below, "zchat.sqlite3")
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------ MemoryStore only


def test_memory_store_keeps_at_most_keep_entries_per_log() -> None:
    store = MemoryStore(keep=3)
    fill(store, "#dev", 5)
    fill(store, "#ops", 2)
    assert seqs(store.read("#dev", 0, 10)) == [3, 4, 5]
    assert seqs(store.read_before("#dev", 0, 10)) == [3, 4, 5]
    assert seqs(store.read("#ops", 0, 10)) == [1, 2]  # bounded per log, not in total
    # Positions are not reused after dropping old entries.
    assert store.last("#dev") == 5
    assert store.append("#dev", "m6", "alice", b"").seq == 6
    assert seqs(store.read("#dev", 0, 10)) == [4, 5, 6]
    # The ids of the entries kept still deduplicate.
    assert store.append("#dev", "m5", "alice", b"") == Appended(store.epoch, 5, True)


def test_sqlite_asking_about_unknown_logs_keeps_no_memory(tmp_path: Path) -> None:
    """A client can ask about any room name; that must not grow the broker's cache."""
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(1000):
        assert store.last(f"#nothing-{i}") == 0
    assert len(store._last) == 0
    store.append("#real", "m1", "alice", b"x")
    assert store.last("#real") == 1


def test_sqlite_store_is_held_by_one_broker_at_a_time(tmp_path: Path) -> None:
    """Two brokers on one store would hand out the same sequence numbers."""
    first = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(StoreError, match="in use by another broker"):
        SQLiteStore(tmp_path / "s.db")
    first.close()
    SQLiteStore(tmp_path / "s.db").close()  # free again once closed


# ------------------------------------------------------- search (§6.13)


def _say(store: Store, log: str, msg_id: str, text: str, kind: str = "msg") -> None:
    store.append(log, msg_id, "alice", RoomRecord(kind, "alice", text, 1.0).pack())


def test_search_finds_the_newest_messages_holding_every_word(store: Store) -> None:
    for i in range(30):
        _say(store, "#dev", f"m{i}", f"Deploy #{i} on Friday" if i % 3 == 0 else f"lunch {i}")
    _say(store, "#dev", "j", "deploy friday", kind="join")  # a notice, not a message
    _say(store, "#ops", "o", "deploy friday")  # another room
    found = store.search("#dev", "friday DEPLOY", 4)
    assert [e.msg_id for e in found] == ["m18", "m21", "m24", "m27"]  # newest, oldest first
    assert store.search("#dev", "deploy lunch", 10) == []
    assert store.search("#dev", "dep", 10) == []  # whole words
    assert store.search("#dev", "  ?! ", 10) == []  # no words
    assert store.search("#nowhere", "deploy", 10) == []
    # What is stored after a search is found by the next one.
    _say(store, "#dev", "late", "deploy friday again")
    assert [e.msg_id for e in store.search("#dev", "friday", 2)] == ["m27", "late"]


def test_sqlite_store_of_schema_1_is_migrated_and_its_messages_found(tmp_path: Path) -> None:
    path = tmp_path / "zchat.sqlite3"
    store = SQLiteStore(path)
    _say(store, "#dev", "old", "written before search existed")
    store.close()
    db = sqlite3.connect(str(path))
    with db:
        db.executescript("DROP TABLE search; DROP TABLE indexed;")
    db.close()
    _set_meta(path, "schema", "1")
    again = SQLiteStore(path)
    try:
        assert [e.msg_id for e in again.search("#dev", "existed", 5)] == ["old"]
    finally:
        again.close()
