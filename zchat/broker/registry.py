"""Who is here: the facts the brokers of one cluster share (docs/protocol.md §6.14).

A broker keeps its own sessions (with their routing ids) itself; the registry
holds what every broker of a cluster must agree on:

- **nicks**: which session holds each nick now, claimed atomically;
- **sessions**: enough of each session for another broker to resume it by
  token when its client fails over, and which broker serves it;
- **presence**: who is in each room (nick, away), across brokers;
- **brokers**: which are alive, so that exactly one survivor ends the sessions
  of a broker that died (``orphans``).

``LocalRegistry`` is the in-process default of a single broker;
``zchat.cluster.registry.RedisRegistry`` shares it through Redis. Both pass
tests/broker/test_registry_contract.py. Keys are nick keys (``nick_key``) and
session tokens; the registry never interprets them.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack


@dataclass(slots=True)
class SessionRecord:
    """What another broker needs to take a session over (§6.14)."""

    token: str
    nick: str
    user: str = ""  # CURVE key or door account the session authenticated with
    hello_id: str = ""
    broker: str = ""  # the boot id of the broker serving it
    away: str = ""
    rooms: list[str] = field(default_factory=list)

    def pack(self) -> bytes:
        fields = [self.token, self.nick, self.user, self.hello_id, self.broker, self.away]
        return msgpack.packb([*fields, sorted(self.rooms)])

    @classmethod
    def unpack(cls, raw: bytes) -> SessionRecord:
        token, nick, user, hello_id, broker, away, rooms = msgpack.unpackb(raw)
        return cls(token, nick, user, hello_id, broker, away, list(rooms))


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room as every broker sees it."""

    nick: str
    away: bool = False


class Registry(abc.ABC):
    """Nicks, sessions, presence and brokers, shared by a cluster's brokers.

    Every method may raise ``StoreUnavailable`` when the shared engine cannot
    be reached; the broker refuses what needed it with a retryable error.
    """

    # ---------------------------------------------------------------- nicks

    @abc.abstractmethod
    def claim(self, key: str, token: str) -> str:
        """Take nick ``key`` for session ``token`` unless another session holds
        it; returns the holder afterwards (``token`` itself if it won)."""

    @abc.abstractmethod
    def release(self, key: str, token: str) -> None:
        """Free nick ``key`` if ``token`` holds it (anyone else's claim stays)."""

    @abc.abstractmethod
    def holder(self, key: str) -> str | None:
        """The token of the session holding nick ``key``, if any."""

    # ------------------------------------------------------------- sessions

    @abc.abstractmethod
    def put(self, rec: SessionRecord) -> None:
        """Record (or replace) a session, served by ``rec.broker``."""

    @abc.abstractmethod
    def get(self, token: str) -> SessionRecord | None:
        """A session by token, whichever broker serves it."""

    @abc.abstractmethod
    def drop(self, token: str) -> None:
        """Forget a session (its nick and presence are released separately)."""

    # ------------------------------------------------------------- presence

    @abc.abstractmethod
    def enter(self, room: str, token: str, member: Member) -> int:
        """``token`` is in ``room`` as ``member`` (again: updated); returns the
        number of members now."""

    @abc.abstractmethod
    def leave(self, room: str, token: str) -> int:
        """``token`` is no longer in ``room``; returns the number of members now."""

    @abc.abstractmethod
    def members(self, room: str) -> list[Member]:
        """Everyone in ``room``, on any broker, in no particular order."""

    @abc.abstractmethod
    def count(self, room: str) -> int:
        """How many are in ``room``."""

    @abc.abstractmethod
    def rooms(self, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` rooms with members, and their member counts, by name."""

    # -------------------------------------------------------------- brokers

    @abc.abstractmethod
    def alive(self, broker: str, ttl: float) -> None:
        """``broker`` is alive for ``ttl`` more seconds (called every heartbeat)."""

    @abc.abstractmethod
    def orphans(self, broker: str) -> list[SessionRecord]:
        """Sessions of brokers whose life lapsed, handed to ``broker`` to end.

        Each dead broker's sessions are handed out once, to one caller: exactly
        one broker announces each leave (§6.14). Sessions that moved to a live
        broker (failover) are not orphans.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the registry is unusable afterwards."""


class LocalRegistry(Registry):
    """The registry of a single broker, in its own memory. ``clock`` times the
    brokers' lives (only tests run several brokers on one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._nicks: dict[str, str] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._rooms: dict[str, dict[str, Member]] = {}
        self._alive: dict[str, float] = {}

    def claim(self, key: str, token: str) -> str:
        return self._nicks.setdefault(key, token)

    def release(self, key: str, token: str) -> None:
        if self._nicks.get(key) == token:
            del self._nicks[key]

    def holder(self, key: str) -> str | None:
        return self._nicks.get(key)

    def put(self, rec: SessionRecord) -> None:
        self._sessions[rec.token] = SessionRecord.unpack(rec.pack())  # a copy, as Redis holds

    def get(self, token: str) -> SessionRecord | None:
        rec = self._sessions.get(token)
        return None if rec is None else SessionRecord.unpack(rec.pack())

    def drop(self, token: str) -> None:
        self._sessions.pop(token, None)

    def enter(self, room: str, token: str, member: Member) -> int:
        here = self._rooms.setdefault(room, {})
        here[token] = member
        return len(here)

    def leave(self, room: str, token: str) -> int:
        here = self._rooms.get(room)
        if here is None:
            return 0
        here.pop(token, None)
        if not here:
            del self._rooms[room]
        return len(here)

    def members(self, room: str) -> list[Member]:
        return list(self._rooms.get(room, {}).values())

    def count(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    def rooms(self, limit: int) -> list[tuple[str, int]]:
        return [(name, len(self._rooms[name])) for name in sorted(self._rooms)[:limit]]

    def alive(self, broker: str, ttl: float) -> None:
        self._alive[broker] = self._clock() + ttl

    def orphans(self, broker: str) -> list[SessionRecord]:
        now = self._clock()
        dead = {b for b, until in self._alive.items() if until <= now and b != broker}
        for b in dead:
            del self._alive[b]
        return [SessionRecord.unpack(r.pack()) for r in self._sessions.values() if r.broker in dead]
