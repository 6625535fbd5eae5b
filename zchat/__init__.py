"""zchat: real-time chat on ZeroMQ.

The client API (docs/api.md) is importable from here: ``zchat.connect``,
``zchat.send``, ``zchat.stats``, the events (``zchat.Message``, ...) and the
errors (``zchat.ChatError``, ...). It is loaded on first use, so the command
line does not pay for asyncio and zmq until it needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from zchat.client.api import (
        AuthFailed,
        Chat,
        ChatError,
        Closed,
        ConnectionState,
        ConnectTimeout,
        Event,
        InvalidRequest,
        Invited,
        Joined,
        Kicked,
        Left,
        Message,
        NickChanged,
        Notice,
        NotSupported,
        OpChanged,
        Refused,
        RoomInfo,
        RoomState,
        StateChanged,
        Stats,
        TopicChanged,
        WhoisInfo,
        connect,
        send,
        stats,
    )

__all__ = [
    "AuthFailed",
    "Chat",
    "ChatError",
    "Closed",
    "ConnectTimeout",
    "ConnectionState",
    "Event",
    "InvalidRequest",
    "Invited",
    "Joined",
    "Kicked",
    "Left",
    "Message",
    "NickChanged",
    "NotSupported",
    "Notice",
    "OpChanged",
    "Refused",
    "RoomInfo",
    "RoomState",
    "StateChanged",
    "Stats",
    "TopicChanged",
    "WhoisInfo",
    "__version__",
    "connect",
    "send",
    "stats",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from zchat.client import api

        return getattr(api, name)
    raise AttributeError(f"module 'zchat' has no attribute {name!r}")
