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

from zchat.client.state import ConnectionState
from zchat.protocol.rules import ALLOWED_FORMAT

#: What a tab in a message shows as: it is allowed text (§3.3), but a raw tab
#: would move the cursor by a width the screen cannot know.
TAB = "    "


def safe(text: str) -> str:
    """Replace control and invisible formatting characters with visible escapes.

    A tab, which messages may carry, becomes spaces.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == "\t":
            out.append(TAB)
        elif ch.isprintable() or ch == " " or ch in ALLOWED_FORMAT:
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


def hhmm(ts: float, now: float | None = None) -> str:
    """``08:44`` for a time of today, ``Nov 28 08:44`` for an older day (or another
    year's ``2025-11-28 08:44``): history and offline DMs can be days old."""
    when = time.localtime(ts)
    today = time.localtime(time.time() if now is None else now)
    if when[:3] == today[:3]:
        return time.strftime("%H:%M", when)
    if when.tm_year == today.tm_year:
        return time.strftime("%b %d %H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


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
    id: str = ""  # the message id its sender gave it (§6.3)

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
        if self.kind == "op":
            if self.text.startswith("-"):
                return f"{nick} made {safe(self.text[1:])} no longer an operator of #{self.room}"
            return f"{nick} made {safe(self.text)} an operator of #{self.room}"
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
    id: str = ""  # the message id its sender gave it (§6.6)
    seq: int = 0  # its place in the recipient's inbox (0: not known, e.g. one we sent)

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
class JoinedRoom:
    """We are in ``room`` now: ``here`` members, its topic."""

    room: str
    here: int
    topic: str

    def plain(self) -> str:
        return f"-- joined #{self.room} ({self.here} here)"


@dataclass(frozen=True, slots=True)
class LeftRoom:
    """We left ``room`` (``/leave``)."""

    room: str

    def plain(self) -> str:
        return f"-- you left #{self.room}"


@dataclass(frozen=True, slots=True)
class Kicked:
    """An operator removed us (``nick``) from ``room``; ``text`` says by whom and why."""

    room: str
    nick: str
    text: str
    ts: float
    seq: int = 0

    def plain(self) -> str:
        return (f"!! {safe(self.nick)} was removed from #{self.room} ({safe(self.text)}): "
                f"that is you, you are no longer in #{self.room}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Members:
    """Who is in ``room`` (``/who``); ``more`` were not listed."""

    room: str
    members: tuple[str, ...]
    more: int = 0
    away: tuple[str, ...] = ()  # those of ``members`` who are away

    def plain(self) -> str:
        gone = set(self.away)
        names = ", ".join(safe(n) + (" (away)" if n in gone else "") for n in self.members)
        names = names or "nobody"
        more = f" and {self.more} more" if self.more else ""
        return f"-- #{self.room}: {names}{more}"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One room of a ``/rooms`` list."""

    name: str
    members: int
    topic: str


@dataclass(frozen=True, slots=True)
class RoomListing:
    """The broker's rooms (``/rooms``); ``more`` were not listed."""

    rooms: tuple[RoomInfo, ...]
    more: int = 0

    def plain(self) -> str:
        if not self.rooms:
            return "-- no rooms yet: /join one"
        lines = [
            f"-- #{r.name} ({r.members})" + (f" - {safe(r.topic)}" if r.topic else "")
            for r in self.rooms
        ]
        if self.more:
            lines.append(f"-- ... and {self.more} more rooms")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """The topic of ``room`` ("" for none), as asked with ``/topic`` or shown on join."""

    room: str
    topic: str

    def plain(self) -> str:
        return f"-- topic of #{self.room}: {safe(self.topic) or '(none)'}"


@dataclass(frozen=True, slots=True)
class NickIs:
    """Our nick is now ``nick``."""

    nick: str

    def plain(self) -> str:
        return f"-- you are now {safe(self.nick)}"


@dataclass(frozen=True, slots=True)
class Invitation:
    """``by`` invited us into the private room ``room`` (§6.11)."""

    room: str
    by: str

    def plain(self) -> str:
        return f"-- {safe(self.by)} invited you to #{self.room}: /join {self.room}"


@dataclass(frozen=True, slots=True)
class HistoryHeader:
    """What ``/history`` shows next: ``count`` past events of ``room`` (``end`` marks the end)."""

    room: str
    count: int
    end: bool = False
    search: str = ""  # set for /search: the words searched for

    def plain(self) -> str:
        if self.search:
            if self.end:
                return f"-- end of search results in #{self.room}"
            return f"-- {self.count} message(s) in #{self.room} with {safe(self.search)!r}"
        if self.end:
            return f"-- end of history of #{self.room}"
        if not self.count:
            return f"-- no history in #{self.room}"
        return f"-- history of #{self.room}: the last {self.count} event(s)"


@dataclass(frozen=True, slots=True)
class AwayIs:
    """``nick`` is away with ``text`` (told when we sent them a DM)."""

    nick: str
    text: str

    def plain(self) -> str:
        return f"-- {safe(self.nick)} is away: {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class WhoisInfo:
    """What the broker knows of ``nick`` (``/whois``). ``idle``: seconds since it last
    said something (online); ``seen``: when its last session ended (offline; 0: unknown);
    ``key``: with CURVE, a fingerprint of the key that owns the nick."""

    nick: str
    online: bool
    rooms: tuple[str, ...] = ()
    away: str = ""
    idle: float = 0.0
    seen: float = 0.0
    key: str = ""

    def plain(self) -> str:
        parts = [safe(self.nick)]
        if self.online:
            parts.append("online" + (" in " + ", ".join(f"#{r}" for r in self.rooms)
                                     if self.rooms else ""))  # fmt: skip
            if self.away:
                parts.append(f"away: {safe(self.away)}")
            parts.append(f"idle {_duration(self.idle)}")
        else:
            parts.append("offline" + (f", last seen {hhmm(self.seen)}" if self.seen else ""))
        if self.key:
            parts.append(f"key {safe(self.key)}")
        return "-- " + "; ".join(parts)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something went wrong; said in one line."""

    text: str

    def plain(self) -> str:
        return f"!! {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class StateChange:
    """The connection state changed (zchat/client/state.py names the states).

    ``queued`` counts the messages waiting in the outbox to be sent (again).
    """

    state: ConnectionState
    text: str
    queued: int = 0

    def plain(self) -> str:
        return f"-- {safe(self.text)}"


@dataclass(frozen=True, slots=True)
class Clear:
    """The user asked to clear the screen (/clear); a line-based output has none to clear."""

    def plain(self) -> str:
        return "-- /clear only clears the interactive screen"


UiEvent = (
    Chat
    | RoomNotice
    | DirectLine
    | Info
    | JoinedRoom
    | LeftRoom
    | Kicked
    | Members
    | RoomListing
    | TopicInfo
    | NickIs
    | Invitation
    | HistoryHeader
    | AwayIs
    | WhoisInfo
    | Problem
    | StateChange
    | Clear
)
#: Lines from the client itself (not from a room): a UI styles them like Info.
INFO_EVENTS = (JoinedRoom, LeftRoom, Members, RoomListing, TopicInfo, NickIs, Invitation,
               HistoryHeader, AwayIs, WhoisInfo)  # fmt: skip


def to_json(event: UiEvent) -> str:
    """One JSON object per event, for bots: ``{"event": "chat", ...fields}``."""
    data = {"event": _JSON_NAMES[type(event)], **dataclasses.asdict(event)}
    return json.dumps(data, ensure_ascii=False)


_JSON_NAMES: dict[type, str] = {
    Chat: "chat",
    RoomNotice: "notice",
    DirectLine: "dm",
    Info: "info",
    JoinedRoom: "joined",
    LeftRoom: "left",
    Kicked: "kicked",
    Members: "who",
    RoomListing: "rooms",
    TopicInfo: "topic",
    NickIs: "nick",
    Invitation: "invited",
    HistoryHeader: "history",
    AwayIs: "away",
    WhoisInfo: "whois",
    Problem: "error",
    StateChange: "state",
    Clear: "clear",
}
