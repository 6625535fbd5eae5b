"""The feed: appends of the logs this broker follows, from Redis pub/sub (§6.14).

Each append to the Redis store is published on its log's feed channel by the
same script that made it. A broker subscribes to the channels of the logs it
follows (rooms with members here, its sessions' inboxes) and reads them on its
one loop, without blocking: ``fileno()`` goes into the broker's poller.

Pub/sub is at most once: a message published while the connection is down is
gone. Nothing relies on it being complete. The broker core delivers each log
in order and reads any hole from the store; each (re)subscription is confirmed
by Redis and reported here as ``synced``, upon which the core compares its
position with the log's head and catches up (tested with ``CLIENT KILL TYPE
pubsub``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry

from zchat.store import Entry
from zchat.store.redis import decode_feed, feed_channel

#: Channels (un)subscribed per command: a broker with thousands of sessions
#: follows thousands of inboxes.
_CHUNK = 1000
#: Feed messages read per wake-up, at most: the loop has requests to serve too.
_DRAIN = 5000


@dataclass(slots=True)
class Arrivals:
    """What one ``read()`` brought."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)  # by log, in order
    synced: list[str] = field(default_factory=list)  # logs whose subscription is live now
    problem: str = ""  # the connection failed: why (it is retried from the next tick)


class Feed:
    """One pub/sub connection to the cluster's Redis, read without blocking."""

    def __init__(
        self, url: str, prefix: str = "zc:", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),  # never block the loop retrying: we retry on ticks
        )
        self._prefix = prefix
        self._skip = len(feed_channel(prefix, ""))
        self._clock = clock
        self._logs: set[str] = set()
        self._pubsub: PubSub | None = None
        self._retry_at = 0.0
        self._down_since: float | None = None

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def follow(self, log: str, on: bool) -> str:
        """Start or stop following ``log``; returns a problem, or ""."""
        if on == (log in self._logs):
            return ""
        (self._logs.add if on else self._logs.discard)(log)
        if self._pubsub is None:
            return ""  # (re)subscribed when the connection is back
        try:
            channel = feed_channel(self._prefix, log)
            if on:
                self._pubsub.subscribe(channel)
            else:
                self._pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return self._lost(exc)
        return ""

    def fileno(self) -> int | None:
        """The socket to poll, while connected."""
        if self._pubsub is None or self._pubsub.connection is None:
            return None
        sock = self._pubsub.connection._sock  # redis-py has no public accessor for it
        return None if sock is None else sock.fileno()

    def connect(self) -> str:
        """(Re)connect and subscribe everything followed, if it is time to try;
        returns a problem, or ""."""
        if self._pubsub is not None or self._clock() < self._retry_at:
            return ""
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            # One channel always: pub/sub needs a subscription to have a socket.
            channels = [feed_channel(self._prefix, "")]
            channels += sorted(feed_channel(self._prefix, log) for log in self._logs)
            for i in range(0, len(channels), _CHUNK):
                pubsub.subscribe(*channels[i : i + _CHUNK])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            pubsub.close()
            self._retry_at = self._clock() + 1.0
            return f"cannot follow the cluster's feed: {exc}"
        self._pubsub = pubsub
        self._down_since = None
        return ""

    def read(self) -> Arrivals:
        """Everything that has arrived, without waiting."""
        got = Arrivals()
        if self._pubsub is None:
            return got
        try:
            for _ in range(_DRAIN):
                msg = self._pubsub.get_message(timeout=0)
                if msg is None:
                    break
                log = msg["channel"][self._skip :].decode()
                if msg["type"] == "message":
                    try:
                        entry = decode_feed(msg["data"])
                    except ValueError as exc:  # not published by a zchat store
                        got.problem = f"dropped a message on {log}'s feed: {exc}"
                        continue
                    got.entries.setdefault(log, []).append(entry)
                elif msg["type"] == "subscribe" and log:
                    got.synced.append(log)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            got.problem = self._lost(exc)
        return got

    def _lost(self, exc: Exception) -> str:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
        self._pubsub = None
        self._retry_at = self._clock() + 1.0
        return f"lost the cluster's feed, catching up when it is back: {exc}"

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self._client.close()
