"""Doors: ways into the broker besides ZeroMQ (IRC, the web), in the same loop.

A door's users are broker sessions like any other: the door turns what its
connections say into requests (wire frames, exactly as a DEALER would send
them) and the core answers them; the core never knows. The server

- polls ``door.fileno()`` with its sockets (a door multiplexes its own
  connections behind that one descriptor, e.g. an epoll selector), and calls
  ``service(now)`` when it is ready and ``tick(now)`` on every wake-up;
- runs the requests a door returns through the core in the same store
  transaction as everything else;
- hands every ``Send`` whose peer id starts with ``door.prefix`` to
  ``deliver`` instead of the ROUTER, and every ``Publish`` to ``broadcast``
  as well as to the broadcast socket (private rooms never publish, so their
  events reach door users only through ``deliver``, as for anyone).

Peer ids a door makes up start with ``DOOR_MARK`` and then its prefix. A
ROUTER peer may choose its routing id, so the server drops every ROUTER
request whose id starts with ``DOOR_MARK``: no ZeroMQ peer can pose as a
door's user.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zchat.protocol import messages as m

if TYPE_CHECKING:
    from zchat.config import BrokerConfig

#: The first byte of every door peer id; never a routing id the ROUTER accepts.
DOOR_MARK = b"\xff"


@dataclass(frozen=True, slots=True)
class DoorRequest:
    """One request from a door's user, as the core takes it."""

    peer: bytes
    frames: list[bytes]
    user: str = ""  # what the user authenticated as ("account:NAME"), or ""


class DoorError(Exception):
    """A door cannot open (address, port in use, TLS files): one line for the operator."""


class Door(abc.ABC):
    """One listening socket and its connections, served in the broker's loop."""

    #: Every peer id this door makes up starts with this (``DOOR_MARK`` first).
    prefix: bytes
    #: Where the door's lines for the operator go; the server sets it.
    show: Callable[[str], None] = staticmethod(lambda line: None)

    @abc.abstractmethod
    def fileno(self) -> int:
        """One descriptor that is readable whenever the door has I/O to do."""

    @abc.abstractmethod
    def service(self, now: float) -> list[DoorRequest]:
        """Do the I/O that is ready without blocking; the requests it produced."""

    @abc.abstractmethod
    def deliver(self, peer: bytes, msg: m.Reply | m.Push) -> None:
        """A reply or push the core sent to one of this door's users."""

    @abc.abstractmethod
    def broadcast(self, msg: m.Broadcast) -> None:
        """Something published on the broadcast socket (room events, beats, shutdown)."""

    def tick(self, now: float) -> list[DoorRequest]:
        """Timers (keep-alive pings, timeouts); requests they produce."""
        return []

    def next_deadline(self) -> float:
        """When ``tick`` next has work (inf: never)."""
        return float("inf")

    def describe(self) -> str:
        """Where it listens, and how (TLS or not), for the operator at start."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close every connection and the listening socket."""


def open_doors(config: BrokerConfig) -> list[Door]:
    """The doors the configuration asks for, listening; DoorError if one cannot."""
    doors: list[Door] = []
    try:
        if config.irc:
            from zchat.irc.door import open_door as open_irc

            doors.append(open_irc(config))
        if config.web:
            from zchat.web.door import open_door as open_web

            doors.append(open_web(config))
    except BaseException:
        for door in doors:
            door.close()
        raise
    return doors
