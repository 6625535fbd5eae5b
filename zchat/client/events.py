"""What the client shows: UI events, and their plain-text and JSON renderings.

The core emits these; a UI only renders them. Every string that came from the
network passes through ``safe()`` before it reaches a terminal, so no nick,
topic or message can move the cursor or rewrite the screen.
"""

from __future__ import annotations

import dataclasses
import json
import time
import unicodedata
from dataclasses import dataclass

from zchat.protocol.rules import ALLOWED_FORMAT


def safe(text: str) -> str:
    """Replace control and invisible formatting characters with visible escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " " or (ch in ALLOWED_FORMAT and ch != "\t"):
            out.append(ch)  # ZWJ/ZWNJ join emoji and scripts; they move no cursor
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"):
            code = ord(ch)
            out.append(
                f"\\x{code:02x}" if code < 0x100
                else f"\\u{code:04x}" if code < 0x10000
                else f"\\U{code:08x}"
            )  # fmt: skip
        else:
            out.append(" ")  # other separators (e.g. U+3000) are blanks
    return "".join(out)


def hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


@dataclass(frozen=True, slots=True)
class Chat:
    """A message or /me action in a room."""

    room: str
    nick: str
    text: str
    ts: float
    action: bool
    mention: bool
    history: bool
    seq: int

    def plain(self) -> str:
        who = f"* {safe(self.nick)}" if self.action else f"<{safe(self.nick)}>"
        return f"{hhmm(self.ts)} #{self.room} {who} {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class RoomNotice:
    """Someone joined, left, changed nick or set the topic."""

    room: str
    kind: str
    nick: str
    text: str
    ts: float
    history: bool
    seq: int

    def what(self) -> str:
        """What happened, in words, escaped: ``bob left #dev (quit)``."""
        nick = safe(self.nick)
        if self.kind == "join":
            return f"{nick} joined #{self.room}"
        if self.kind == "leave":
            return f"{nick} left #{self.room}" + (f" ({safe(self.text)})" if self.text else "")
        if self.kind == "kick":
            return f"{nick} was removed from #{self.room} ({safe(self.text)})"
        if self.kind == "nick":
            return f"{nick} is now known as {safe(self.text)}"
        return f"{nick} set the topic of #{self.room}: {safe(self.text)}"

    def plain(self) -> str:
        return f"{hhmm(self.ts)} #{self.room} -- {self.what()}"


@dataclass(frozen=True, slots=True)
class DirectLine:
    """A direct message, received (``outgoing`` False) or sent and acknowledged."""

    sender: str
    to: str
    text: str
    ts: float
    action: bool
    outgoing: bool

    def plain(self) -> str:
        body = safe(self.text)
        if self.outgoing:
            head = f"[DM to {safe(self.to)}]"
            return f"{hhmm(self.ts)} {head} {'* ' if self.action else ''}{body}"
        who = f"* {safe(self.sender)}" if self.action else f"<{safe(self.sender)}>"
        return f"{hhmm(self.ts)} [DM] {who} {body}"


@dataclass(frozen=True, slots=True)
class Info:
    """A line from the client itself: help, lists, confirmations."""

    text: str

    def plain(self) -> str:
        return f"-- {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something went wrong; said in one line."""

    text: str

    def plain(self) -> str:
        return f"!! {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class StateChange:
    """The connection state changed.

    ``state`` is one of ``connecting``, ``connected``, ``reconnecting`` and
    ``auth_failed``; a UI shows a name it does not know as it is.
    """

    state: str
    text: str

    def plain(self) -> str:
        return f"-- {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class Clear:
    """The user asked to clear the screen (/clear); a line-based output has none to clear."""

    def plain(self) -> str:
        return "-- /clear only clears the interactive screen"


UiEvent = Chat | RoomNotice | DirectLine | Info | Problem | StateChange | Clear


def to_json(event: UiEvent) -> str:
    """One JSON object per event, for bots: ``{"event": "chat", ...fields}``."""
    data = {"event": _JSON_NAMES[type(event)], **dataclasses.asdict(event)}
    return json.dumps(data, ensure_ascii=False)


_JSON_NAMES: dict[type, str] = {
    Chat: "chat",
    RoomNotice: "notice",
    DirectLine: "dm",
    Info: "info",
    Problem: "error",
    StateChange: "state",
    Clear: "clear",
}
