"""One IRC connection's state, and every transition it may make (h11-style table).

Everything that moves a connection from one state to another is an ``Input``
here; ``next_state`` refuses a pair that is not in the table, which is a bug
in the protocol module, never the client's fault (the client's mistakes are
answered with numerics and leave the state alone).
"""

from __future__ import annotations

import enum


class ConnState(enum.Enum):
    #: Connected; NICK and USER not both given yet (CAP and SASL happen here).
    NEW = "new"
    #: CAP LS or REQ was sent before registration: it waits for CAP END.
    NEGOTIATING = "negotiating"
    #: NICK and USER known, HELLO sent to the broker, WELCOME awaited.
    HELLO_SENT = "hello_sent"
    #: A broker session: commands go through.
    REGISTERED = "registered"
    #: QUIT (or a fatal error): BYE sent, closing once the output is out.
    CLOSING = "closing"
    #: Nothing more is read or written.
    CLOSED = "closed"


class Input(enum.Enum):
    CAP_START = "cap_start"  # CAP LS or CAP REQ before registration
    CAP_END = "cap_end"
    IDENTIFIED = "identified"  # NICK and USER both given, nothing to wait for
    WELCOMED = "welcomed"  # the broker's WELCOME
    REFUSED = "refused"  # HELLO refused with a retryable reason (nick taken): ask again
    QUIT = "quit"  # QUIT, a fatal protocol error, a timeout, shutdown
    GONE = "gone"  # the socket is closed


S, In = ConnState, Input
TRANSITIONS: dict[tuple[ConnState, Input], ConnState] = {
    (S.NEW, In.CAP_START): S.NEGOTIATING,
    (S.NEW, In.IDENTIFIED): S.HELLO_SENT,
    (S.NEGOTIATING, In.CAP_START): S.NEGOTIATING,
    (S.NEGOTIATING, In.CAP_END): S.NEW,
    (S.HELLO_SENT, In.WELCOMED): S.REGISTERED,
    (S.HELLO_SENT, In.REFUSED): S.NEW,
    (S.HELLO_SENT, In.CAP_START): S.HELLO_SENT,  # a late CAP LS: answered, changes nothing
    (S.REGISTERED, In.CAP_START): S.REGISTERED,  # CAP REQ after registration (cap-notify)
    (S.REGISTERED, In.CAP_END): S.REGISTERED,
    (S.HELLO_SENT, In.CAP_END): S.HELLO_SENT,
    (S.NEW, In.CAP_END): S.NEW,  # CAP END without CAP LS: harmless
    **{(s, In.QUIT): S.CLOSING for s in (S.NEW, S.NEGOTIATING, S.HELLO_SENT, S.REGISTERED)},
    (S.CLOSING, In.QUIT): S.CLOSING,
    **{(s, In.GONE): S.CLOSED for s in ConnState},
}
del S, In


class StateError(Exception):
    """A transition the table does not have: a bug in zchat.irc, not the peer's fault."""


def next_state(state: ConnState, event: Input) -> ConnState:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise StateError(f"no transition from {state.value} on {event.value}") from None


#: States in which the connection has no broker session yet.
PRE_REGISTRATION = frozenset({ConnState.NEW, ConnState.NEGOTIATING, ConnState.HELLO_SENT})
