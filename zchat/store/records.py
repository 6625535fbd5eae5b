"""What the broker keeps in its logs' entry bodies: typed records, packed and
unpacked side by side (docs/protocol.md §6.4).

The store treats bodies as opaque bytes; only the broker core writes and reads
these records, and the SQLite store's schema migration reads room records once
to index their text for search.
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

#: One reused packer: records are packed on the broker's hot path.
_pack = msgpack.Packer().pack


class RoomRecord(NamedTuple):
    """One event of a room's log (``#room``)."""

    kind: str  # an Event kind (§5.1)
    nick: str
    text: str
    ts: float

    def pack(self) -> bytes:
        return _pack(self)

    @classmethod
    def unpack(cls, body: bytes) -> RoomRecord:
        return cls(*msgpack.unpackb(body))

    @property
    def searchable(self) -> str:
        """The text search finds this event by: said text only, not notices."""
        return self.text if self.kind in ("msg", "action") else ""


class DmRecord(NamedTuple):
    """One direct message in a nick's inbox (``@nick``)."""

    id: str
    sender: str
    to: str
    text: str
    ts: float
    action: bool

    def pack(self) -> bytes:
        return _pack(self)

    @classmethod
    def unpack(cls, body: bytes) -> DmRecord:
        return cls(*msgpack.unpackb(body))
