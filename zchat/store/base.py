"""The storage interface: per-log append with positions and dedupe (docs/protocol.md §6.4).

A *log* is an append-only sequence named by a string: ``#dev`` for a room,
``@alice`` for alice's DM inbox. The store assigns each entry the next
position (``seq``, from 1) and drops a second append of the same message id
to the same log. Entries are opaque bytes to the store, the way a Redis
stream or Kafka topic would hold them, so this interface can later sit on
such an engine for several brokers.

Besides the logs each log has one small *state* blob (a room's topic, an
inbox's delivery cursor), overwritten as a whole.
"""

from __future__ import annotations

import abc
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass


class StoreError(Exception):
    """The store cannot be opened or used; the message says why, for an operator."""


class StoreUnavailable(StoreError):
    """A write could not be made durable now (disk full, I/O error, read-only
    file system): the store keeps what it could not commit and ``retry()``
    tries it again; nothing else can be written until it succeeds."""


class StoreLost(StoreError):
    """The store cannot go on at all (its file vanished or was replaced)."""


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an append landed. ``duplicate``: the id was there already, at ``seq``."""

    epoch: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    msg_id: str
    sender: str
    body: bytes


class Store(abc.ABC):
    """A set of append-only logs. Not thread-safe: one broker loop owns it."""

    #: Identifies this store's life: a new or reset store has a new epoch, so a
    #: client's remembered positions from before are recognisably stale.
    epoch: str
    #: Writes made so far (appends and state changes); a caller compares two
    #: readings to learn whether something it ran wrote.
    writes: int = 0

    @abc.abstractmethod
    def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Appended:
        """Append ``body`` to ``log`` unless ``msg_id`` is in it already."""

    @abc.abstractmethod
    def search(self, log: str, text: str, limit: int) -> list[Entry]:
        """The newest ``limit`` messages of room log ``log`` whose text holds every
        word of ``text`` (whole words, any case), oldest first. Room logs only:
        their bodies are ``records.RoomRecord``; the index is built as searches
        need it, never on the append path."""

    @abc.abstractmethod
    def read(self, log: str, after: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries with ``seq > after``, oldest first."""

    @abc.abstractmethod
    def read_before(self, log: str, before: int, limit: int) -> list[Entry]:
        """The last ``limit`` entries with ``seq < before`` (0: no bound), oldest first."""

    @abc.abstractmethod
    def last(self, log: str) -> int:
        """The seq of the newest entry of ``log``; 0 for an empty log."""

    def heads(self, logs: list[str]) -> dict[str, int]:
        """``last()`` of each of ``logs``; a shared store answers in one round trip."""
        return {log: self.last(log) for log in logs}

    @abc.abstractmethod
    def get_state(self, log: str) -> bytes | None:
        """The state blob of ``log``, or None if never set."""

    @abc.abstractmethod
    def set_state(self, log: str, value: bytes) -> None:
        """Replace the state blob of ``log``."""

    @abc.abstractmethod
    def batch(self) -> AbstractContextManager[None]:
        """Group writes: all are durable when the block exits.

        The broker wraps each batch drained from its socket in one, so one
        commit covers many messages (docs/protocol.md §6.4). If the block
        raises, its writes are undone. If the commit itself fails, the block
        raises ``StoreUnavailable`` and its writes are *kept pending*: ``retry()``
        commits them later with the positions they were given, and until it
        has, every other write raises ``StoreUnavailable`` and ``last()`` and
        reads see only what is committed.
        """

    def retry(self) -> bool:
        """Try to commit the writes of a batch that failed; True once none are
        pending. Raises ``StoreLost`` if the store cannot go on at all."""
        return True

    def renew_epoch(self, seen: str) -> None:  # noqa: B027 - optional hook
        """A log went back under epoch ``seen`` (a shared store lost its last
        writes): replace the epoch unless that was done already. A single
        broker's store does nothing: its clients handle a restored backup."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise ``StoreLost`` if the store can no longer work (cheap; called
        about once a second)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the store is unusable afterwards."""


def search_words(text: str) -> list[str]:
    """The words a search looks for: runs of letters and digits, lower-cased."""
    return [w.lower() for w in re.findall(r"\w+", text)][:16]
