"""The durable Store: one SQLite file in WAL mode, one transaction per batch."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zchat.store.base import (
    Appended,
    Entry,
    Store,
    StoreError,
    StoreLost,
    StoreUnavailable,
    search_words,
)
from zchat.store.records import RoomRecord

#: Bump when the schema changes, with a migration from every older version.
SCHEMA_VERSION = 2

#: Version 2: the words of room messages, for SEARCH (docs/protocol.md §6.13),
#: indexed when a search needs them (`indexed` says how far, per log), never
#: on the append path. detail=none: words only, no positions; a third of the cost.
_SEARCH = """
CREATE VIRTUAL TABLE search USING fts5(
    text, log UNINDEXED, seq UNINDEXED, detail=none, columnsize=0
);
CREATE TABLE indexed (log TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""
#: Entries one search indexes at most before it answers from what is indexed.
_INDEX_BATCH = 50_000

_SCHEMA = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    log    TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    msg_id TEXT    NOT NULL,
    sender TEXT    NOT NULL,
    body   BLOB    NOT NULL,
    PRIMARY KEY (log, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX entries_id ON entries (log, msg_id);
CREATE TABLE state (log TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""
    + _SEARCH
)


class SQLiteStore(Store):
    """Logs in one SQLite file. Positions are cached in memory after first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if self.path.parent != Path(""):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock: int | None = None
            if str(self.path) != ":memory:":
                if not self.path.exists():
                    # History is private: owner-only from the start (SQLite gives
                    # its -wal and -shm files the same mode).
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                self._lock = _lock(self.path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, per batch.
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.epoch = self._open_schema()
        except (sqlite3.DatabaseError, OSError, StoreError) as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if getattr(self, "_lock", None) is not None:
                os.close(self._lock)  # type: ignore[arg-type]
            if isinstance(exc, StoreError):
                raise
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(f"store {self.path}: {why}") from None
        self._last: dict[str, int] = {}
        self._depth = 0
        stat = os.stat(self.path) if self._lock is not None else None
        self._inode = (stat.st_dev, stat.st_ino) if stat else None
        #: The writes of the open batch, kept so that a failed commit can be
        #: replayed by retry(); `_failed` says why the open batch cannot commit.
        self._writes: list[tuple[str, tuple[object, ...]]] = []
        self._pending: list[tuple[str, tuple[object, ...]]] = []
        self._failed = ""
        self.writes = 0

    def _open_schema(self) -> str:
        tables = {
            row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            epoch = uuid.uuid4().hex
            self._db.executescript(
                "BEGIN;"
                + _SCHEMA
                + f"INSERT INTO meta VALUES ('schema', '{SCHEMA_VERSION}');"
                + f"INSERT INTO meta VALUES ('epoch', '{epoch}');"
                + "COMMIT;"
            )
            return epoch
        if "meta" not in tables:
            raise StoreError(f"store {self.path}: not a zchat store (no meta table)")
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema", "none")
        if version == "1":
            self._migrate_1_to_2()
            version = "2"
        if version != str(SCHEMA_VERSION):
            raise StoreError(
                f"store {self.path}: schema version {version}, this zchat reads "
                f"version {SCHEMA_VERSION}; use the zchat that wrote it, or another --store"
            )
        return str(meta["epoch"])

    def _migrate_1_to_2(self) -> None:
        """Add the search tables; searches index what was stored before."""
        self._db.executescript(
            "BEGIN;" + _SEARCH + "UPDATE meta SET value = '2' WHERE key = 'schema'; COMMIT;"
        )

    def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Appended:
        seq = self.last(log) + 1
        # One statement in the common case: the unique (log, msg_id) index is the
        # dedupe, and only a duplicate costs a second look-up.
        inserted = self._write(
            "INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?)", (log, seq, msg_id, sender, body)
        )
        if inserted:
            self._last[log] = seq
            return Appended(self.epoch, seq, False)
        row = self._db.execute(
            "SELECT seq FROM entries WHERE log = ? AND msg_id = ?", (log, msg_id)
        ).fetchone()
        return Appended(self.epoch, int(row[0]), True)

    def read(self, log: str, after: int, limit: int) -> list[Entry]:
        rows = self._db.execute(
            "SELECT seq, msg_id, sender, body FROM entries"
            " WHERE log = ? AND seq > ? ORDER BY seq LIMIT ?",
            (log, after, limit),
        )
        return [Entry(*row) for row in rows]

    def read_before(self, log: str, before: int, limit: int) -> list[Entry]:
        rows = self._db.execute(
            "SELECT seq, msg_id, sender, body FROM entries"
            " WHERE log = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (log, before or 2**62, limit),
        ).fetchall()
        return [Entry(*row) for row in reversed(rows)]

    def last(self, log: str) -> int:
        cached = self._last.get(log)
        if cached is None:
            row = self._db.execute("SELECT max(seq) FROM entries WHERE log = ?", (log,)).fetchone()
            if row[0] is None:
                return 0  # not cached: asking about any name must not grow memory
            cached = self._last[log] = int(row[0])
        return cached

    def search(self, log: str, text: str, limit: int) -> list[Entry]:
        words = search_words(text)
        if not words or limit <= 0:
            return []
        self._index(log)
        query = " ".join(f'"{w}"' for w in words)  # \w+ words: nothing to escape
        rows = self._db.execute(
            "SELECT e.seq, e.msg_id, e.sender, e.body FROM search"
            " JOIN entries e ON e.log = search.log AND e.seq = search.seq"
            " WHERE search MATCH ? AND search.log = ? ORDER BY search.seq DESC LIMIT ?",
            (query, log, limit),
        ).fetchall()
        return [Entry(*row) for row in reversed(rows)]

    def _index(self, log: str) -> None:
        """Index the messages of ``log`` stored since its last search, oldest
        first, at most _INDEX_BATCH of them (the rest at the next search)."""
        row = self._db.execute("SELECT seq FROM indexed WHERE log = ?", (log,)).fetchone()
        done = int(row[0]) if row else 0
        if done >= self.last(log) or self._pending:
            return
        rows = self._db.execute(
            "SELECT seq, body FROM entries WHERE log = ? AND seq > ? ORDER BY seq LIMIT ?",
            (log, done, _INDEX_BATCH),
        ).fetchall()
        if not rows:
            return
        words = [(t, log, seq) for seq, body in rows if (t := RoomRecord.unpack(body).searchable)]
        # An index, not history: in the open batch if there is one, but never
        # part of what a failed batch replays; if the disk is full, answer from
        # what is indexed.
        try:
            self._db.execute("SAVEPOINT indexing")
            self._db.executemany("INSERT INTO search (text, log, seq) VALUES (?, ?, ?)", words)
            self._db.execute("INSERT OR REPLACE INTO indexed VALUES (?, ?)", (log, rows[-1][0]))
            self._db.execute("RELEASE indexing")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK TO indexing")
                self._db.execute("RELEASE indexing")

    def get_state(self, log: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE log = ?", (log,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_state(self, log: str, value: bytes) -> None:
        self._write("INSERT OR REPLACE INTO state VALUES (?, ?)", (log, value))

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        """Run one write; its row count. Raises StoreUnavailable if it cannot be made."""
        if self._pending or self._failed:
            # An earlier batch waits to be committed, or this one already failed:
            # writing after it would reorder the logs.
            raise StoreUnavailable(f"store {self.path}: {self._failed or 'cannot write'}")
        try:
            count = self._db.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            if self._depth:
                self._failed = _why(exc)
            raise StoreUnavailable(f"store {self.path}: {_why(exc)}") from None
        if self._depth:
            self._writes.append((sql, args))
        self.writes += 1
        return count

    @contextmanager
    def batch(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN")
        self._depth = 1
        self._writes = []
        try:
            yield
        except StoreUnavailable:
            self._failed = self._failed or "cannot write"
            self._commit()  # keeps what was written pending, and raises
        except BaseException:
            self._rollback()
            self._last.clear()  # cached positions may name rolled-back rows
            raise
        else:
            self._commit()
        finally:
            self._depth = 0
            self._writes = []

    def _commit(self) -> None:
        """Commit the open batch, or keep its writes pending and raise StoreUnavailable.

        retry() replays exactly the pending writes, in order, before anything
        else is written; until then ``last()`` says the committed positions.
        """
        why = self._failed
        if self._writes and self._lock is not None and os.fstat(self._lock).st_nlink == 0:
            # Removed under us: committing would acknowledge writes that go nowhere.
            self._rollback()
            self._last.clear()
            raise StoreLost(f"store {self.path}: the file was removed")
        if not why:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as exc:
                why = _why(exc)
        self._rollback()
        if self._writes:  # (with writes pending already, every write was refused)
            self._pending = self._writes
        self._failed = ""
        # Until the pending writes commit, readers see the committed positions:
        # a client told of a position it cannot fetch yet would skip it.
        self._last.clear()
        raise StoreUnavailable(f"store {self.path}: {why}")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                self._db.execute("ROLLBACK")

    def retry(self) -> bool:
        self.check()
        # With nothing pending (a single write failed), a small write shows
        # whether the store takes writes again.
        writes = self._pending or [("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", ("1",))]
        try:
            self._db.execute("BEGIN")
            for sql, args in writes:
                self._db.execute(sql, args)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            return False
        self.writes += len(self._pending)
        self._pending = []
        self._last.clear()  # the replayed positions are committed now
        return True

    def check(self) -> None:
        if self._inode is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise StoreLost(f"store {self.path}: the file was removed") from None
        except OSError as exc:
            raise StoreLost(f"store {self.path}: {exc.strerror or exc}") from None
        if (stat.st_dev, stat.st_ino) != self._inode:
            raise StoreLost(f"store {self.path}: the file was replaced")

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None


def _lock(path: Path) -> int:
    """Hold an exclusive lock on ``path``: two brokers on one store would hand out
    the same sequence numbers (each caches the positions)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"store {path}: in use by another broker") from None
    return fd


def _why(exc: sqlite3.Error) -> str:
    """SQLite's reason, for the operator's log line ("database or disk is full")."""
    return str(exc) or type(exc).__name__
