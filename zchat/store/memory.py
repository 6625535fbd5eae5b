"""An in-memory Store for unit tests and throwaway brokers, bounded per log."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from zchat.store.base import Appended, Entry, Store, search_words
from zchat.store.records import RoomRecord


class _Log:
    __slots__ = ("entries", "ids", "last")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.ids: dict[str, int] = {}
        self.last = 0


class MemoryStore(Store):
    """Keeps the newest ``keep`` entries of each log (and their ids for dedupe).

    ``batch()`` groups nothing and cannot roll back: this store is for unit
    tests and throwaway brokers, where a failed batch ends the process anyway.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.epoch = uuid.uuid4().hex
        self._keep = keep
        self._logs: dict[str, _Log] = {}
        self._state: dict[str, bytes] = {}

    def _log(self, log: str) -> _Log:
        found = self._logs.get(log)
        if found is None:
            found = self._logs[log] = _Log()
        return found

    def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Appended:
        lg = self._log(log)
        seen = lg.ids.get(msg_id)
        if seen is not None:
            return Appended(self.epoch, seen, True)
        self.writes += 1
        lg.last += 1
        lg.entries.append(Entry(lg.last, msg_id, sender, body))
        lg.ids[msg_id] = lg.last
        if len(lg.entries) > self._keep:
            del lg.ids[lg.entries.popleft().msg_id]
        return Appended(self.epoch, lg.last, False)

    def read(self, log: str, after: int, limit: int) -> list[Entry]:
        lg = self._logs.get(log)
        if lg is None or limit <= 0:
            return []
        out = [e for e in lg.entries if e.seq > after]
        return out[:limit]

    def read_before(self, log: str, before: int, limit: int) -> list[Entry]:
        lg = self._logs.get(log)
        if lg is None or limit <= 0:
            return []
        out = [e for e in lg.entries if before == 0 or e.seq < before]
        return out[-limit:]

    def last(self, log: str) -> int:
        lg = self._logs.get(log)
        return 0 if lg is None else lg.last

    def get_state(self, log: str) -> bytes | None:
        return self._state.get(log)

    def search(self, log: str, text: str, limit: int) -> list[Entry]:
        lg = self._logs.get(log)
        wanted = set(search_words(text))
        if lg is None or not wanted or limit <= 0:
            return []
        found: list[Entry] = []
        for entry in reversed(lg.entries):
            if wanted <= set(search_words(RoomRecord.unpack(entry.body).searchable)):
                found.append(entry)
                if len(found) == limit:
                    break
        return found[::-1]

    def set_state(self, log: str, value: bytes) -> None:
        self.writes += 1
        self._state[log] = value

    @contextmanager
    def batch(self) -> Iterator[None]:
        yield
