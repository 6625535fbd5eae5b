"""SQLiteStore when the disk refuses writes (docs/protocol.md §6.4), on a real file.

``PRAGMA max_page_count`` makes SQLite answer exactly as on a full disk
("database or disk is full"), without mounting anything; the broker-level
test with a real full tmpfs is tests/e2e/test_hostile.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zchat.store import SQLiteStore, StoreLost, StoreUnavailable


def _fill(store: SQLiteStore, log: str, count: int, size: int = 2000) -> None:
    with store.batch():
        for i in range(count):
            store.append(log, f"fill-{i}", "x", os.urandom(size))


def _cap(store: SQLiteStore) -> None:
    """Let the file grow by a few pages more."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 8}")


def _uncap(store: SQLiteStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1073741823")


def _write_through_failure(store: SQLiteStore, count: int) -> tuple[list[str], list[str]]:
    """Write as the broker core does, one request at a time inside one batch,
    taking each refusal; the batch then raises. Returns the ids written and refused."""
    stored: list[str] = []
    refused: list[str] = []
    with pytest.raises(StoreUnavailable, match="full"), store.batch():
        store.set_state("#dev", b"topic")
        for i in range(count):
            try:
                store.append("#dev", f"m{i}", "alice", os.urandom(2000))
                stored.append(f"m{i}")
            except StoreUnavailable:
                refused.append(f"m{i}")
    return stored, refused


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "s.sqlite3")
    # Checkpoint at every commit, so the main file must grow for new pages.
    s._db.execute("PRAGMA wal_autocheckpoint = 1")
    yield s  # type: ignore[misc]
    s.close()


def test_a_failed_commit_keeps_its_writes_pending_and_retry_commits_them(
    store: SQLiteStore,
) -> None:
    _fill(store, "#dev", 5)
    _cap(store)
    stored, refused = _write_through_failure(store, 50)
    assert refused and stored  # some went in before the disk filled up
    # Until the pending writes commit, readers see the committed positions.
    total = 5 + len(stored)
    assert store.last("#dev") == 5
    # Nothing else may be written before the pending batch, or the log would reorder.
    with pytest.raises(StoreUnavailable):
        store.append("#dev", "late", "bob", b"x")
    store._db.execute("PRAGMA max_page_count = 1")  # the disk is fuller still
    assert store.retry() is False
    # Reads work meanwhile (what was committed).
    assert [e.seq for e in store.read("#dev", 0, 100)] == [1, 2, 3, 4, 5]
    _uncap(store)
    assert store.retry() is True
    entries = store.read("#dev", 0, 100)
    assert [e.seq for e in entries] == list(range(1, total + 1))
    assert [e.msg_id for e in entries[5:]] == stored
    assert store.get_state("#dev") == b"topic"
    # Writing works again, after the replayed ones, and dedupe sees them.
    assert store.append("#dev", stored[0], "alice", b"again").duplicate
    assert store.append("#dev", "new", "alice", b"x").seq == total + 1


def test_the_replayed_writes_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path)
    store._db.execute("PRAGMA wal_autocheckpoint = 1")
    _fill(store, "#dev", 3)
    _cap(store)
    stored, _ = _write_through_failure(store, 50)
    _uncap(store)
    assert store.retry()
    store.close()
    again = SQLiteStore(path)
    try:
        assert again.last("#dev") == 3 + len(stored)
    finally:
        again.close()


def test_retry_with_nothing_pending_probes_the_disk(store: SQLiteStore) -> None:
    assert store.retry() is True
    _fill(store, "#dev", 3)
    _cap(store)
    with pytest.raises(StoreUnavailable):
        store.append("#dev", "big", "a", os.urandom(200_000))  # outside a batch: fails alone
    assert store.last("#dev") == 3  # a failed single write takes no position


def test_check_notices_a_removed_or_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path)
    try:
        store.check()
        path.unlink()
        with pytest.raises(StoreLost, match="removed"):
            store.check()
        path.write_bytes(b"")
        with pytest.raises(StoreLost, match="replaced"):
            store.check()
        with pytest.raises(StoreLost):
            store.retry()
    finally:
        store.close()


def test_a_batch_written_after_the_file_was_removed_is_not_committed(tmp_path: Path) -> None:
    """Removed between two checks: the next batch that writes finds out before its
    commit, so nothing is acknowledged that went into a deleted file."""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path)
    try:
        path.unlink()
        with pytest.raises(StoreLost, match="removed"), store.batch():
            store.append("#dev", "m1", "alice", b"x")
        with store.batch():  # a batch that only reads still works
            assert store.last("#dev") == 0
    finally:
        store.close()
