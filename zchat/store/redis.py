"""The shared Store: one Redis for a cluster of brokers (docs/protocol.md §6.4, "The Redis store").

The design follows Centrifugo's Redis engine: each log is a Redis stream with
its own position counter, the whole store has one epoch, and an append is one
Lua script run atomically by Redis, so brokers on the same Redis never hand
out the same position and dedupe each other's resends.

Keys, for a prefix ``p`` (default ``zc:``) and a log name ``log`` (``#dev``):

=================  ======  ===================================================
``{p}epoch``       string  the store's epoch (uuid4 hex); the first broker sets it
``{p}log:{log}``   stream  the entries; entry id ``<seq>-1``, fields ``id``,
                           ``sender``, ``body``: XRANGE reads by seq directly
``{p}seq:{log}``   string  the newest seq of the log (absent: 0)
``{p}ids:{log}``   hash    msg_id -> seq, for dedupe
``{p}state``       hash    log -> state blob
=================  ======  ===================================================

Every stored (not duplicate) entry is published once, by the same script, on
the channel ``{p}feed:{log}`` (``feed_channel``) as a MessagePack array
``[seq, msg_id, sender, body]`` with ``body`` in the bin format
(``decode_feed``): the other brokers follow the logs their clients read there.

The epoch is checked by the append script: if Redis lost it (restarted
without persistence, so it came back empty), or another broker already
adopted a new one, the store adopts the epoch in Redis (setting a new one if
there is none; the first broker to set it wins) and appends in it, from seq 1.
``check()`` notices the same for a broker that is not appending.

A single Redis (or a primary with replicas), not Redis Cluster: the script
touches the epoch key and the log's keys together.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from zchat.store.base import Appended, Entry, Store, StoreError, StoreUnavailable, search_words
from zchat.store.records import RoomRecord

#: Seconds a Redis call may take (connecting, or waiting for an answer) before
#: it fails with StoreUnavailable: a hung Redis must not freeze the broker.
TIMEOUT = 2.0
#: Entries one search looks through at most, newest first (there is no index).
SEARCH_SCAN = 20_000
_SEARCH_CHUNK = 1_000

#: KEYS: epoch, stream, seq counter, id hash. ARGV: our epoch, msg_id, sender,
#: body, feed channel. Returns {seq, 0} stored, {seq, 1} duplicate, or
#: {0, epoch in Redis or ''} when that is not our epoch (nothing written).
_APPEND = r"""
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return {0, epoch or ''}
end
local seen = redis.call('HGET', KEYS[4], ARGV[2])
if seen then
  return {tonumber(seen), 1}
end
local seq = (tonumber(redis.call('GET', KEYS[3])) or 0) + 1
-- XADD first: it is the only command here that can be refused (out of memory,
-- a read-only replica, a stream ahead of its counter), and Redis does not undo
-- what a script wrote before a command failed.
redis.call('XADD', KEYS[2], string.format('%d-1', seq),
           'id', ARGV[2], 'sender', ARGV[3], 'body', ARGV[4])
redis.call('SET', KEYS[3], seq)
redis.call('HSET', KEYS[4], ARGV[2], seq)
-- [seq, msg_id, sender, body] with the body as MessagePack bin: cmsgpack
-- would pack it as a string, which a reader would have to decode as UTF-8.
local n = #ARGV[4]
local head
if n < 256 then
  head = '\196' .. string.char(n)
elseif n < 65536 then
  head = '\197' .. struct.pack('>I2', n)
else
  head = '\198' .. struct.pack('>I4', n)
end
redis.call('PUBLISH', ARGV[5], '\148' .. cmsgpack.pack(seq, ARGV[2], ARGV[3]) .. head .. ARGV[4])
return {seq, 0}
"""

#: Times an append adopts a new epoch and tries again before giving up (each
#: adoption is another broker's or a Redis reset's doing, so twice is already rare).
_ADOPTIONS = 3
#: Seconds the probe of a hung Redis waits (``retry()``): the loop stalls this
#: long per try, not TIMEOUT.
PROBE_TIMEOUT = 0.25
#: Replace the epoch if it is still the one a broker saw (KEYS: epoch; ARGV:
#: seen, new).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
return 0
"""


def feed_channel(prefix: str, log: str) -> bytes:
    """The pub/sub channel on which every entry stored in ``log`` is published once."""
    return f"{prefix}feed:{log}".encode()


def decode_feed(payload: bytes) -> Entry:
    """The entry a feed message carries. Raises ValueError if it is not one."""
    try:
        seq, msg_id, sender, body = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a feed entry: {exc}") from None
    if not (
        type(seq) is int
        and seq > 0
        and isinstance(msg_id, str)
        and isinstance(sender, str)
        and isinstance(body, bytes)
    ):
        raise ValueError("not a feed entry: [seq, msg_id, sender, body] expected")
    return Entry(seq, msg_id, sender, body)


class RedisStore(Store):
    """Logs in one Redis, shared by several brokers.

    Every write is made by Redis at once: ``batch()`` groups nothing, and how
    durable a write is depends on Redis's persistence settings (docs/deploy.md).
    A call Redis does not answer (down, hung past the timeout, loading, a
    read-only replica, out of memory) raises ``StoreUnavailable`` with Redis's
    reason. Nothing is then pending: an append happened whole or not at all,
    and a resend with the same id is told where it landed. ``retry()`` says
    when Redis takes writes again. After a *timeout*, every call fails at once
    until ``retry()`` succeeds, so a hung Redis costs one timeout per retry
    rather than one per request.
    """

    def __init__(self, url: str, prefix: str = "zc:", *, timeout: float = TIMEOUT) -> None:
        self.prefix = prefix
        self._where = f"store {redact(url)}"
        self._epoch_key = f"{prefix}epoch"
        self._state_key = f"{prefix}state"
        #: Why calls fail at once (a timeout), until retry() reaches Redis.
        self._hung = ""
        self.writes = 0
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One immediate reconnect: a pooled connection that Redis closed
                # (it restarted) fails once, and a fresh one works. Safe for every
                # write here (the append dedupes by id). A timeout is not retried:
                # it would double the wait on a hung Redis.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
            raise StoreError(f"{self._where}: {exc}") from None
        try:
            self.epoch = self._adopt(None)
        except redis.RedisError as exc:
            self._redis.close()
            raise StoreError(f"{self._where}: cannot use Redis: {_why(exc)}") from None
        self._append = self._redis.register_script(_APPEND)
        self._renew = self._redis.register_script(_RENEW)
        #: Asks whether a hung Redis answers again, without hanging as long.
        self._probe = redis.Redis.from_url(
            url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip

    # ------------------------------------------------------------ helpers

    def _key(self, kind: str, log: str) -> str:
        return f"{self.prefix}{kind}:{log}"

    @property
    def client(self) -> redis.Redis:
        """The connection pool, for the cluster's registry on the same Redis."""
        return self._redis

    def fail(self, exc: redis.RedisError) -> NoReturn:
        """Raise ``StoreUnavailable`` for a failed call; after a timeout every
        call (of this store, and of the registry sharing it) fails at once
        until ``retry()`` reaches Redis again."""
        if isinstance(exc, redis.TimeoutError):
            self._hung = _why(exc)
        raise StoreUnavailable(f"{self._where}: {_why(exc)}") from None

    def ready(self) -> None:
        """Raise ``StoreUnavailable`` at once while Redis is known to hang."""
        if self._hung:
            raise StoreUnavailable(f"{self._where}: {self._hung}; not asked again until it answers")

    def renew_epoch(self, seen: str) -> None:
        """Replace epoch ``seen`` with a new one, unless another broker did
        already: a log went back under an unchanged epoch (Redis lost its last
        writes in a crash with ``appendfsync everysec``), so positions clients
        hold may name other messages now (§6.14)."""
        self._call(self._renew, [self._epoch_key], [seen, uuid.uuid4().hex])
        found = self._call(self._redis.get, self._epoch_key)
        self.epoch = bytes(found or b"").decode("utf-8", "replace")

    def _adopt(self, current: bytes | None) -> str:
        """Take ``current`` as the epoch, or if Redis has none, set a new one:
        the first broker to set it wins and the others read the winner's."""
        if not current:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._epoch_key, uuid.uuid4().hex, nx=True)
            pipe.get(self._epoch_key)
            current = pipe.execute()[1]
        epoch = bytes(current or b"").decode("utf-8", "replace")
        self.epoch = epoch
        return epoch

    # -------------------------------------------------------------- writes

    def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Appended:
        self.ready()
        keys = [self._epoch_key, *(self._key(kind, log) for kind in ("log", "seq", "ids"))]
        channel = feed_channel(self.prefix, log)
        try:
            for _ in range(_ADOPTIONS):
                seq, flag = self._append(keys, [self.epoch, msg_id, sender, body, channel])
                if seq:
                    if not flag:
                        self.writes += 1
                    return Appended(self.epoch, int(seq), bool(flag))
                # Not our epoch: Redis came back empty, or another broker saw it first.
                self._adopt(flag)
        except redis.RedisError as exc:
            self.fail(exc)
        raise StoreUnavailable(f"{self._where}: the epoch keeps changing")

    def set_state(self, log: str, value: bytes) -> None:
        self.ready()
        try:
            self._redis.hset(self._state_key, log, value)
        except redis.RedisError as exc:
            self.fail(exc)
        self.writes += 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Groups nothing: each write is made by Redis when it is called, as
        durable as Redis's persistence makes it (``appendfsync``), and a block
        that raises keeps the writes it made."""
        yield

    # --------------------------------------------------------------- reads

    def read(self, log: str, after: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        start = f"{after + 1}-0" if after >= 0 else "-"
        rows = self._call(self._redis.xrange, self._key("log", log), start, "+", limit)
        return _entries(rows)

    def read_before(self, log: str, before: int, limit: int) -> list[Entry]:
        if limit <= 0 or before < 0 or before == 1:
            return []
        return self._newest(self._key("log", log), before, limit)[::-1]

    def _newest(self, key: str, before: int, count: int) -> list[Entry]:
        """Up to ``count`` entries with seq < ``before`` (0: no bound), newest first."""
        top = f"{before - 1}-1" if before else "+"
        return _entries(self._call(self._redis.xrevrange, key, top, "-", count))

    def last(self, log: str) -> int:
        return int(self._call(self._redis.get, self._key("seq", log)) or 0)

    def heads(self, logs: list[str]) -> dict[str, int]:
        """The newest seq of each log, in one round trip."""
        if not logs:
            return {}
        found = self._call(self._redis.mget, [self._key("seq", log) for log in logs])
        return {log: int(seq or 0) for log, seq in zip(logs, found, strict=True)}

    def get_state(self, log: str) -> bytes | None:
        value = self._call(self._redis.hget, self._state_key, log)
        return None if value is None else bytes(value)

    def search(self, log: str, text: str, limit: int) -> list[Entry]:
        """Looks through the newest ``SEARCH_SCAN`` entries, newest first (no index)."""
        wanted = set(search_words(text))
        if not wanted or limit <= 0:
            return []
        key = self._key("log", log)
        found: list[Entry] = []
        before, scanned = 0, 0
        while scanned < SEARCH_SCAN:
            rows = self._newest(key, before, min(_SEARCH_CHUNK, SEARCH_SCAN - scanned))
            for entry in rows:
                if wanted <= set(search_words(RoomRecord.unpack(entry.body).searchable)):
                    found.append(entry)
                    if len(found) == limit:
                        return found[::-1]
            scanned += len(rows)
            if not rows or rows[-1].seq <= 1:
                break
            before = rows[-1].seq
        return found[::-1]

    def _call(self, command: Callable[..., Any], *args: Any) -> Any:
        """Run one redis-py command; StoreUnavailable if Redis does not answer."""
        self.ready()
        try:
            return command(*args)
        except redis.RedisError as exc:
            self.fail(exc)

    # ------------------------------------------------------------ health

    def retry(self) -> bool:
        """True once Redis takes writes again (a write that changes nothing:
        ``SET epoch NX``); adopts a new epoch if Redis came back empty."""
        try:
            self._probe.set(self._epoch_key, uuid.uuid4().hex, nx=True)
            self._adopt(None)
        except redis.RedisError:
            return False
        self._hung = ""
        return True

    def check(self) -> None:
        """Adopt the epoch in Redis if it changed (one GET). Raises nothing:
        an unreachable Redis shows in the next call, and ``retry()`` finds
        when it is back."""
        if self._hung:
            return
        try:
            found = self._redis.get(self._epoch_key)
            current = found if isinstance(found, bytes) else None  # (bytes: no decode_responses)
            if current != self.epoch.encode():
                self._adopt(current)
        except redis.TimeoutError as exc:
            self._hung = _why(exc)  # the next call fails at once; retry() probes
        except redis.RedisError:
            pass

    def close(self) -> None:
        self._redis.close()
        self._probe.close()


def _entries(rows: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
    """Stream entries (id ``<seq>-1``, fields id, sender, body) as Entries."""
    return [
        Entry(
            int(sid.partition(b"-")[0]),
            fields[b"id"].decode(),
            fields[b"sender"].decode(),
            bytes(fields[b"body"]),
        )
        for sid, fields in rows
    ]


def redact(url: str) -> str:
    """``url`` without its password, for error messages and logs."""
    url = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _why(exc: redis.RedisError) -> str:
    """Redis's reason on one line, with its error code ("OOM command not allowed
    ...", "Error 111 connecting to ...") and without the script's name."""
    why = " ".join(str(exc).split())
    why = re.sub(r"\s*script: \w+, on @user_script:\d+\.?$", "", why)
    code = exc.status_code if isinstance(exc.status_code, str) else ""
    return " ".join(part for part in (code, why) if part) or type(exc).__name__
