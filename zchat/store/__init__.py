"""Per-log message storage behind one narrow interface (see base.Store)."""

from zchat.store.base import Appended, Entry, Store, StoreError, StoreLost, StoreUnavailable
from zchat.store.memory import MemoryStore
from zchat.store.sqlite import SQLiteStore

__all__ = [
    "Appended",
    "Entry",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
]
