"""The protocol's error codes and the one error type the protocol layer raises.

Every code is a member of ``Code`` and carries the "whose fault" column of
docs/protocol.md §7, so a caller decides what to do from the code alone:

- ``Fault.SENDER``: the peer's software broke the contract (a bug, or another
  version); nothing a person can fix by retyping.
- ``Fault.USER``: what a person asked for is not allowed (a bad nick, a room
  they are not in); show it to them.
- ``Fault.CLIENT_STATE``: the client's session is not what it thinks (not
  registered, already registered); the client repairs it itself.
- ``Fault.BROKER``: the broker cannot do it now (full, flooded, its store
  failing); the same request may succeed later, after ``retry_after``.

The wire carries a code as its string value; ``Code`` is a ``StrEnum``, so a
member compares equal to that string.
"""

from __future__ import annotations

import enum


class Fault(enum.Enum):
    """Whose fault an error is (docs/protocol.md §7)."""

    SENDER = "sender"
    USER = "user"
    CLIENT_STATE = "client state"
    BROKER = "broker"


class Code(enum.StrEnum):
    """The error codes of docs/protocol.md §7."""

    fault: Fault
    retryable: bool

    def __new__(cls, value: str, fault: Fault, retryable: bool = False) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.fault = fault
        member.retryable = retryable
        return member

    BAD_FRAME = "bad_frame", Fault.SENDER
    BAD_VERSION = "bad_version", Fault.SENDER
    BAD_UTF8 = "bad_utf8", Fault.SENDER
    TOO_LONG = "too_long", Fault.USER
    UNKNOWN_TYPE = "unknown_type", Fault.SENDER
    BAD_REQUEST = "bad_request", Fault.SENDER
    BAD_NICK = "bad_nick", Fault.USER
    BAD_ROOM = "bad_room", Fault.USER
    EMPTY = "empty", Fault.USER
    BAD_TEXT = "bad_text", Fault.USER
    NOT_REGISTERED = "not_registered", Fault.CLIENT_STATE
    ALREADY_REGISTERED = "already_registered", Fault.CLIENT_STATE
    NICK_TAKEN = "nick_taken", Fault.USER
    FULL = "full", Fault.BROKER
    TOO_MANY_ROOMS = "too_many_rooms", Fault.USER
    NOT_MEMBER = "not_member", Fault.USER
    NO_SUCH_NICK = "no_such_nick", Fault.USER
    NOT_OP = "not_op", Fault.USER
    BANNED = "banned", Fault.USER
    INVITE_ONLY = "invite_only", Fault.USER
    TOO_MANY = "too_many", Fault.USER
    RATE_LIMITED = "rate_limited", Fault.USER, True
    STORE_UNAVAILABLE = "store_unavailable", Fault.BROKER, True


_BY_VALUE: dict[str, Code] = {c.value: c for c in Code}


class ProtocolError(Exception):
    """A message broke the wire contract, or a request was refused (docs/protocol.md §7).

    ``code`` is the machine-readable error code a broker sends back in an
    ``ERROR`` reply; ``rid`` is the request id when it could be read, so the
    reply can still be matched to its request; ``retry_after`` (seconds) is
    set with the retryable codes.
    """

    def __init__(
        self, code: Code | str, text: str, rid: int | None = None, retry_after: float = 0.0
    ) -> None:
        super().__init__(text)
        self.code = _BY_VALUE[code]  # an unknown string is our own bug: fail loudly
        self.text = text
        self.rid = rid
        self.retry_after = retry_after

    @property
    def fault(self) -> Fault:
        return self.code.fault

    def with_rid(self, rid: int | None) -> ProtocolError:
        """Return a copy of this error that carries ``rid``."""
        return ProtocolError(self.code, self.text, rid, self.retry_after)
