"""What the IRC door knows across its connections: its users, who is in which room.

WHOIS, WHO and AWAY go to the broker (§6.13); the rest of what IRC clients ask
(ISON, USERHOST, WHO of a nick, operator prefixes, the hostmask and real name
of IRC users, away-notify among IRC users) the door answers from what it has
seen: every public room event passes through ``Door.broadcast`` (the door
starts with the broker, so it sees every join and leave of public rooms, except
in rooms too big to announce them), private rooms' events reach it through the
IRC members of those rooms, and its own users it knows exactly. Operators it
learns from events (a room's creator, ``op`` events, topic setters, kickers):
the broker's replies do not list them. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zchat.protocol import messages as m
from zchat.protocol.rules import nick_key

if TYPE_CHECKING:
    from zchat.irc.protocol import IrcConnection

#: Host part of the hostmask shown for users of ZeroMQ clients (and web ones).
ZCHAT_HOST = "zchat"
#: Host part shown for the IRC door's own users (their address is not shown).
IRC_HOST = "irc"


@dataclass(slots=True)
class Room:
    """A room as the door knows it: members by nick key (display nick as value)."""

    name: str
    members: dict[str, str] = field(default_factory=dict)
    ops: set[str] = field(default_factory=set)  # nick keys known to be operators
    private: bool = False
    #: The IRC connections that are in the room or joining it.
    watchers: set[IrcConnection] = field(default_factory=set)


class Hub:
    """The door's users and rooms, shared by every connection of one door."""

    def __init__(self) -> None:
        self.users: dict[str, IrcConnection] = {}  # nick key -> registered IRC connection
        self.rooms: dict[str, Room] = {}
        #: Connections that another connection wrote to (away-notify, a takeover):
        #: the door moves their output too.
        self.touched: set[IrcConnection] = set()
        #: The latest room messages as rendered, by (room, seq, server-time, message-tags).
        self.rendered: dict[tuple[str, int, bool, bool], bytes] = {}
        #: Idents of users who just left, for the hostmask of their QUIT lines.
        self.departed: dict[str, str] = {}

    # ------------------------------------------------------------------ users

    def add_user(self, conn: IrcConnection) -> None:
        self.users[nick_key(conn.nick)] = conn
        self.departed.pop(nick_key(conn.nick), None)

    def remove_user(self, conn: IrcConnection) -> None:
        if self.users.get(nick_key(conn.nick)) is conn:
            del self.users[nick_key(conn.nick)]
            if len(self.departed) >= 1000:
                del self.departed[next(iter(self.departed))]
            self.departed[nick_key(conn.nick)] = conn.ident
        for name in list(self.rooms):
            self.unwatch(name, conn)

    def renamed(self, conn: IrcConnection, old: str) -> None:
        if self.users.get(nick_key(old)) is conn:
            del self.users[nick_key(old)]
        self.users[nick_key(conn.nick)] = conn

    def user(self, nick: str) -> IrcConnection | None:
        return self.users.get(nick_key(nick))

    def hostmask(self, nick: str) -> str:
        conn = self.users.get(nick_key(nick))
        if conn is not None:
            return f"{conn.nick}!{conn.ident}@{IRC_HOST}"
        ident = self.departed.get(nick_key(nick))
        if ident is not None:
            return f"{nick}!{ident}@{IRC_HOST}"
        return f"{nick}!{nick[:10]}@{ZCHAT_HOST}"

    # ------------------------------------------------------------------ rooms

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        return room

    def watch(self, name: str, conn: IrcConnection) -> None:
        self.room(name).watchers.add(conn)

    def unwatch(self, name: str, conn: IrcConnection) -> None:
        room = self.rooms.get(name)
        if room is not None:
            room.watchers.discard(conn)
            self._forget_if_empty(room)

    def _forget_if_empty(self, room: Room) -> None:
        if not room.members and not room.watchers:
            del self.rooms[room.name]

    def set_members(self, name: str, members: list[str], complete: bool) -> None:
        """A member list from the broker (JOINED, NAMES): the truth for that room."""
        room = self.room(name)
        listed = {nick_key(n): n for n in members}
        if complete:
            room.members = listed
        else:
            room.members.update(listed)

    def rooms_of(self, nick: str) -> Iterator[Room]:
        key = nick_key(nick)
        return (room for room in self.rooms.values() if key in room.members)

    def is_present(self, nick: str) -> bool:
        return nick_key(nick) in self.users or any(True for _ in self.rooms_of(nick))

    def display_nick(self, nick: str) -> str:
        conn = self.users.get(nick_key(nick))
        if conn is not None:
            return conn.nick
        for room in self.rooms_of(nick):
            return room.members[nick_key(nick)]
        return nick

    def observe(self, ev: m.Event) -> None:
        """Keep membership and known operators in step with a room event.

        Idempotent: a private room's event arrives once per IRC member.
        """
        room = self.rooms.get(ev.room)
        if room is None:
            if ev.kind != "join":
                return
            room = self.room(ev.room)
        key = nick_key(ev.nick)
        if ev.kind == "join":
            room.members[key] = ev.nick
        elif ev.kind in ("leave", "kick"):
            room.members.pop(key, None)
            if ev.kind == "kick":
                op = kicker(ev.text)
                if op:
                    room.ops.add(nick_key(op))
        elif ev.kind == "nick":
            if room.members.pop(key, None) is not None:
                room.members[nick_key(ev.text)] = ev.text
            if key in room.ops:
                room.ops.discard(key)
        elif ev.kind == "topic":
            room.ops.add(key)  # only operators (and admins) set topics (§6.11)
        elif ev.kind == "op":
            room.ops.add(key)
            if ev.text.startswith("-"):
                room.ops.discard(nick_key(ev.text[1:]))
            else:
                room.ops.add(nick_key(ev.text))
        if not room.members and not room.watchers:
            del self.rooms[room.name]

    def is_op(self, name: str, nick: str) -> bool:
        room = self.rooms.get(name)
        return room is not None and nick_key(nick) in room.ops


def kicker(text: str) -> str:
    """The operator named in a kick event's text ("by OP" or "by OP: REASON")."""
    if not text.startswith("by "):
        return ""
    return text[3:].partition(":")[0].strip()
