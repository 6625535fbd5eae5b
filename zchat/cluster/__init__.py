"""Several brokers sharing rooms through Redis (docs/protocol.md §6.14, docs/deploy.md).

The store (zchat/store/redis.py) keeps every log in Redis and publishes each
append on the log's feed channel; the registry (``registry.py``) shares nicks,
sessions, presence and the brokers' lives; the feed (``feed.py``) brings each
broker the appends of the logs it follows, which the broker core delivers in
order and repairs from the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from zchat.cluster.feed import Feed
from zchat.cluster.registry import RedisRegistry
from zchat.store.redis import RedisStore, redact


@dataclass(frozen=True, slots=True)
class Cluster:
    """What a broker of a cluster runs on, all on one Redis."""

    store: RedisStore
    registry: RedisRegistry
    feed: Feed


def open_cluster(url: str, prefix: str = "zc:") -> Cluster:
    """Connect a broker to its cluster's Redis; raises StoreError (one line)."""
    store = RedisStore(url, prefix)
    return Cluster(store, RedisRegistry(store.client, prefix, health=store), Feed(url, prefix))


def describe(url: str) -> str:
    return f"cluster {redact(url)}"
