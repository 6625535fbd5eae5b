"""The one error type the protocol layer raises."""

from __future__ import annotations


class ProtocolError(Exception):
    """A message broke the wire contract (docs/protocol.md §7).

    ``code`` is the machine-readable error code a broker sends back in an
    ``ERROR`` reply; ``rid`` is the request id when it could be read, so the
    reply can still be matched to its request.
    """

    def __init__(
        self, code: str, text: str, rid: int | None = None, retry_after: float = 0.0
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.rid = rid
        self.retry_after = retry_after  # seconds, when trying later will work

    def with_rid(self, rid: int | None) -> ProtocolError:
        """Return a copy of this error that carries ``rid``."""
        return ProtocolError(self.code, self.text, rid, self.retry_after)
