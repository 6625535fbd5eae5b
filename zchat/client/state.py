"""The client's connection state: one enum, one transition table.

Everything that moves a client between these states lives in ``ClientCore``
(zchat/client/core.py), which calls ``ConnectionState.check`` on every move;
the events it emits (``StateChange``), the public API's ``StateChanged`` and
the status line all use these same names. A move not in ``TRANSITIONS`` is a
bug in the client, not something a broker can cause, so it raises.

======================  ===================================================
state                   meaning
======================  ===================================================
``connecting``          first attempt: no session yet
``connected``           the broker answered HELLO; a session exists
``reconnecting``        had a session, lost the broker, trying again
``auth_failed``         the CURVE handshake was refused: final
``closed``              the client stopped: final
======================  ===================================================
"""

from __future__ import annotations

from enum import StrEnum


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"
    CLOSED = "closed"

    def check(self, new: ConnectionState) -> ConnectionState:
        """``new`` if the table allows moving there from here; else a RuntimeError."""
        if new not in TRANSITIONS[self]:
            raise RuntimeError(f"client state cannot go from {self} to {new}")
        return new

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self] - {ConnectionState.CLOSED}


CS = ConnectionState
#: Where each state may go. A retry from ``connecting`` or ``reconnecting``
#: stays where it is: a retry after a loss is still reconnecting.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    CS.CONNECTING: frozenset({CS.CONNECTING, CS.CONNECTED, CS.AUTH_FAILED, CS.CLOSED}),
    CS.CONNECTED: frozenset({CS.RECONNECTING, CS.CLOSED}),
    CS.RECONNECTING: frozenset({CS.RECONNECTING, CS.CONNECTED, CS.AUTH_FAILED, CS.CLOSED}),
    CS.AUTH_FAILED: frozenset({CS.CLOSED}),
    CS.CLOSED: frozenset(),
}
