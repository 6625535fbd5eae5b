"""Log lines that peers can cause, at most one per kind per interval, with a count.

A client without keys retries its handshake every reconnect interval, and a
hostile peer sends garbage as fast as it likes: the operator's log says so
once per interval, not once per try.
"""

from __future__ import annotations


class QuietLog:
    """Decides which lines of each kind to show: one per ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def note(self, what: str, now: float, kind: str = "") -> str:
        """The line to show for ``what`` (``! what``, with how many of its ``kind``
        were kept quiet since the last one), or "" to stay quiet. ``kind``
        defaults to ``what`` itself."""
        kind = kind or what
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return ""
        if len(self._last) > 1000:  # bounded, whatever peers send
            self._last.clear()
            self._quiet.clear()
        self._last[kind] = now
        more = self._quiet.pop(kind, 0)
        return f"! {what}" + (f" ({more} more since)" if more else "")
