"""Which broker a client tries next, and how long a try may last (docs/protocol.md §6.7).

A client may be given several broker endpoints (the brokers of a cluster, or a
spare): ``tcp://a:5555,tcp://b:5555``. It connects to the first. A session
that loses its broker moves on to the next endpoint at once (round robin); a
try that gets no ``WELCOME`` within the retry delay, or whose endpoint refuses
the connection, gives way to the next one. The retry delay (2 s, doubling to
32 s) grows once per full round over the list, not per endpoint, and the last
try of a round always waits it out, so dead brokers are never tried in a
tight loop. With one endpoint this is the plain retry of one broker.

Pure: no sockets and no clock. ``ClientCore`` owns a ``Rotation`` and asks it
where and how long; the transport connects where it says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Seconds a try waits for WELCOME in the first round; doubled after each
#: round without one, up to ``MAX_DELAY``; back to this after a WELCOME.
FIRST_DELAY = 2.0
MAX_DELAY = 32.0

_COMMA = re.compile(r"\s*,\s*")


def split_endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"tcp://a:5555,tcp://b:5555"`` (spaces after commas allowed), or a sequence
    of endpoints, as a tuple. ValueError for no endpoint or an empty one."""
    parts = _COMMA.split(value) if isinstance(value, str) else list(value)
    if not parts or parts == [""]:
        raise ValueError("no broker endpoint given")
    for n, part in enumerate(parts, start=1):
        if not isinstance(part, str) or not part:
            raise ValueError(f"endpoint {n} of {len(parts)} is empty or not a string")
    return tuple(parts)


def endpoint_host(endpoint: str) -> str:
    """The host part of ``tcp://host:port`` (brackets kept for IPv6)."""
    rest = endpoint.partition("://")[2]
    return rest.rpartition(":")[0] or "127.0.0.1"


class Rotation:
    """The endpoints in order, the one tried now, and the retry delay of this round.

    A round is one try of each endpoint, starting where the last loss (or the
    start) put us. ``delay`` is how long each try of the round may wait for a
    WELCOME.
    """

    def __init__(self, endpoints: Iterable[str] = ()) -> None:
        #: Empty for a core driven without a transport (tests): one endpoint, unnamed.
        self.endpoints = tuple(endpoints)
        self.at = 0
        self.delay = FIRST_DELAY
        self._failed = 0  # tries of this round that ended without a WELCOME

    def __len__(self) -> int:
        return max(1, len(self.endpoints))

    @property
    def current(self) -> str:
        """The endpoint to try now ("" when none was given)."""
        return self.endpoints[self.at] if self.endpoints else ""

    @property
    def last_in_round(self) -> bool:
        """Whether the try now is the last of its round: after it, the delay grows."""
        return self._failed == len(self) - 1

    def lost(self, *, same: bool = False) -> None:
        """A session lost its broker: a new round, from the next endpoint (``same``:
        from this one again), its first try at once and with the first delay."""
        self.delay = FIRST_DELAY
        self._failed = 0
        if not same:
            self.at = (self.at + 1) % len(self)

    def failed(self) -> None:
        """The try now ended without a WELCOME: move to the next endpoint; after a
        full round, double the delay (up to ``MAX_DELAY``)."""
        self._failed += 1
        self.at = (self.at + 1) % len(self)
        if self._failed >= len(self):
            self._failed = 0
            self.delay = min(self.delay * 2, MAX_DELAY)

    def welcomed(self) -> None:
        """A WELCOME arrived: the next loss starts afresh from here."""
        self.delay = FIRST_DELAY
        self._failed = 0
