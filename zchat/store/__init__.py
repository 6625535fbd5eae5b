"""Per-log message storage behind one narrow interface (see base.Store).

``RedisStore`` is imported on first use (``zchat.store.RedisStore`` or
``zchat.store.redis``): redis-py takes about 0.2 s to import, and only a
cluster of brokers needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zchat.store.base import Appended, Entry, Store, StoreError, StoreLost, StoreUnavailable
from zchat.store.memory import MemoryStore
from zchat.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from zchat.store.redis import RedisStore

__all__ = [
    "Appended",
    "Entry",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from zchat.store.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
