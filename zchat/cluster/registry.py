"""The cluster's registry in Redis: nicks, sessions, presence and brokers (§6.14).

Keys, under the cluster's prefix ``p`` (``zc:`` by default):

- ``p nick:<nick key>``: the token of the session holding the nick;
- ``p sess:<token>``: hash ``data`` (a packed SessionRecord) and ``broker``;
- ``p bsess:<broker>``: the tokens a broker serves;
- ``p room:<room>``: hash token -> packed ``[nick, away]``; ``p rooms``: the
  rooms with members, a sorted set for listing by name;
- ``p alive:<broker>``: set with a time to live every heartbeat; ``p brokers``:
  every broker that said it lives; ``p reap:<broker>``: who ends a dead one's
  sessions (one survivor wins it).

Every change that must be atomic is one Lua script; the rest are single commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, cast

import msgpack
import redis

from zchat.broker.registry import Member, Registry, SessionRecord
from zchat.store import StoreUnavailable

_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: sess:<token>; ARGV: prefix, token, data, broker
_PUT = """
local old = redis.call('HGET', KEYS[1], 'broker')
if old and old ~= ARGV[4] then redis.call('SREM', ARGV[1] .. 'bsess:' .. old, ARGV[2]) end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'broker', ARGV[4])
redis.call('SADD', ARGV[1] .. 'bsess:' .. ARGV[4], ARGV[2])
return 0
"""
_DROP = """
local old = redis.call('HGET', KEYS[1], 'broker')
if old then redis.call('SREM', ARGV[1] .. 'bsess:' .. old, ARGV[2]) end
redis.call('DEL', KEYS[1])
return 0
"""
# KEYS: room:<room>, rooms; ARGV: token, member (empty: leave), room
_PRESENCE = """
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local n = redis.call('HLEN', KEYS[1])
if n == 0 then redis.call('ZREM', KEYS[2], ARGV[3])
else redis.call('ZADD', KEYS[2], 0, ARGV[3]) end
return n
"""


class Health(Protocol):
    """Whether Redis answers, shared with the store on the same Redis
    (``RedisStore``): once a call timed out, every call fails at once until
    the store's ``retry()`` reaches Redis again."""

    def ready(self) -> None: ...

    def fail(self, exc: redis.RedisError) -> NoReturn: ...


class _OwnHealth:
    def ready(self) -> None:
        pass

    def fail(self, exc: redis.RedisError) -> NoReturn:
        raise StoreUnavailable(f"Redis: {' '.join(str(exc).split())}") from exc


class RedisRegistry(Registry):
    """The registry of a cluster's brokers, kept in one Redis database."""

    def __init__(
        self, client: redis.Redis, prefix: str = "zc:", health: Health | None = None
    ) -> None:
        self._r = client
        self._p = prefix
        self._health = health or _OwnHealth()
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._put = client.register_script(_PUT)
        self._drop = client.register_script(_DROP)
        self._presence = client.register_script(_PRESENCE)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Redis failures as the broker's retryable ``StoreUnavailable``."""
        self._health.ready()
        try:
            yield
        except redis.RedisError as exc:
            self._health.fail(exc)

    def claim(self, key: str, token: str) -> str:
        with self._guard():
            return _text(self._claim(keys=[self._p + "nick:" + key], args=[token]))

    def release(self, key: str, token: str) -> None:
        with self._guard():
            self._release(keys=[self._p + "nick:" + key], args=[token])

    def holder(self, key: str) -> str | None:
        with self._guard():
            held = self._r.get(self._p + "nick:" + key)
        return None if held is None else _text(held)

    def put(self, rec: SessionRecord) -> None:
        with self._guard():
            self._put(
                keys=[self._p + "sess:" + rec.token],
                args=[self._p, rec.token, rec.pack(), rec.broker],
            )

    def get(self, token: str) -> SessionRecord | None:
        with self._guard():
            raw = self._r.hget(self._p + "sess:" + token, "data")
        return None if raw is None else SessionRecord.unpack(cast(bytes, raw))

    def drop(self, token: str) -> None:
        with self._guard():
            self._drop(keys=[self._p + "sess:" + token], args=[self._p, token])

    def enter(self, room: str, token: str, member: Member) -> int:
        packed = msgpack.packb([member.nick, member.away])
        return self._set_presence(room, token, packed)

    def leave(self, room: str, token: str) -> int:
        return self._set_presence(room, token, b"")

    def _set_presence(self, room: str, token: str, packed: bytes) -> int:
        keys = [self._p + "room:" + room, self._p + "rooms"]
        with self._guard():
            return int(self._presence(keys=keys, args=[token, packed, room]))

    def members(self, room: str) -> list[Member]:
        with self._guard():
            packed = self._r.hvals(self._p + "room:" + room)
        return [Member(*msgpack.unpackb(raw)) for raw in cast(list[bytes], packed)]

    def count(self, room: str) -> int:
        with self._guard():
            return int(self._r.hlen(self._p + "room:" + room))

    def rooms(self, limit: int) -> list[tuple[str, int]]:
        with self._guard():
            names = [_text(n) for n in self._r.zrange(self._p + "rooms", 0, limit - 1)]
            pipe = self._r.pipeline(transaction=False)
            for name in names:
                pipe.hlen(self._p + "room:" + name)
            counts = pipe.execute()
        return [(name, int(n)) for name, n in zip(names, counts, strict=True) if n]

    def alive(self, broker: str, ttl: float) -> None:
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            pipe.set(self._p + "alive:" + broker, b"1", px=max(1, int(ttl * 1000)))
            pipe.sadd(self._p + "brokers", broker)
            pipe.execute()

    def orphans(self, broker: str) -> list[SessionRecord]:
        p = self._p
        with self._guard():
            brokers = [_text(b) for b in self._r.smembers(p + "brokers") if _text(b) != broker]
            pipe = self._r.pipeline(transaction=False)
            for b in brokers:
                pipe.exists(p + "alive:" + b)
            lives = pipe.execute()
            found: list[SessionRecord] = []
            for dead, alive in zip(brokers, lives, strict=True):
                if alive or not self._r.set(p + "reap:" + dead, broker, nx=True, ex=3600):
                    continue  # alive, or another survivor took it
                tokens = [_text(t) for t in self._r.smembers(p + "bsess:" + dead)]
                for token in tokens:
                    rec = self.get(token)
                    if rec is not None and rec.broker == dead:
                        found.append(rec)
                self._r.srem(p + "brokers", dead)
                self._r.delete(p + "bsess:" + dead)
        return found

    def close(self) -> None:
        self._r.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
