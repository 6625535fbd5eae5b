"""Every message on the wire, as small immutable classes (docs/protocol.md §4-§6).

Each class validates itself when built, so a message that exists is a valid
message, whether it was decoded from a peer or built locally. Names are
normalised on the way in (``#Dev`` becomes ``dev``) so ``decode(encode(m)) == m``.

Three families, by the path they travel:

* ``Request``: client -> broker on the DEALER/ROUTER pair; carries ``rid``.
* ``Reply`` (answers, carrying the request's ``rid``) and ``Push`` (unasked):
  broker -> client on the same pair.
* ``Broadcast``: broker -> clients on the PUB/SUB pair, under a topic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from zchat.protocol import rules
from zchat.protocol.errors import ProtocolError

_MAX_RID = 2**53  # fits every JSON/JS number too, should a gateway ever need it


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _check_rid(rid: int) -> None:
    if not 0 <= rid < _MAX_RID:
        raise ProtocolError("bad_request", f"rid {rid} out of range")


def _check_id(msg_id: str) -> None:
    if not 1 <= len(msg_id) <= 64 or not msg_id.isascii() or not msg_id.isprintable():
        raise ProtocolError("bad_request", "message id must be 1-64 printable ASCII characters")


def _check_count(name: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise ProtocolError("bad_request", f"{name} must be between 0 and {top}")


class Message:
    """Base of all wire messages; ``TYPE`` is the type frame (§2)."""

    TYPE: ClassVar[bytes] = b""


class Request(Message):
    """Client -> broker. Every request is answered by exactly one Reply (§4)."""

    rid: int


class Reply(Message):
    """Broker -> client answer to the request with the same ``rid``."""

    rid: int


class Push(Message):
    """Broker -> client message nobody asked for (a DM, §6.6)."""


class Broadcast(Message):
    """Broker -> subscribers on the PUB socket; ``topic`` is the first frame (§5)."""

    @property
    def topic(self) -> bytes:
        raise NotImplementedError


# --------------------------------------------------------------------- shared


EVENT_KINDS = frozenset({"msg", "action", "join", "leave", "kick", "nick", "topic", "op"})


@dataclass(frozen=True, slots=True)
class Event(Broadcast):
    """One entry of a room's log, broadcast live and returned by history (§5.1).

    ``kind`` says what happened: ``msg`` and ``action`` (/me) carry ``text``;
    ``join``/``leave`` carry a reason in ``text``; ``kick``: ``nick`` was
    removed, ``text`` says by whom and why; ``nick`` carries the new nick in
    ``text``; ``topic`` carries the new topic; ``op``: ``nick`` made the nick
    in ``text`` an operator of the room, ``-`` before it: no longer one.
    """

    TYPE: ClassVar[bytes] = b"EVENT"
    room: str
    seq: int
    kind: str
    nick: str
    text: str
    ts: float
    id: str

    def __post_init__(self) -> None:
        _set(self, "room", rules.normalize_room(self.room))
        if self.kind not in EVENT_KINDS:
            raise ProtocolError("bad_request", f"unknown event kind {self.kind[:20]!r}")
        if self.seq < 1:
            raise ProtocolError("bad_request", "event seq starts at 1")

    @property
    def topic(self) -> bytes:
        return room_topic(self.room)

    @classmethod
    def trusted(
        cls, room: str, seq: int, kind: str, nick: str, text: str, ts: float, id: str
    ) -> Event:
        """An event from values that were checked already (by the broker, on the way
        into its log): skips the checks, which cost more than the rest of building
        one on the broker's hot path. Never use it for what a peer sent."""
        ev = object.__new__(cls)
        # The slots' own setters: a frozen dataclass refuses setattr, and
        # object.__setattr__ by name costs twice as much.
        set_room, set_seq, set_kind, set_nick, set_text, set_ts, set_id = _EVENT_SLOTS
        set_room(ev, room)
        set_seq(ev, seq)
        set_kind(ev, kind)
        set_nick(ev, nick)
        set_text(ev, text)
        set_ts(ev, ts)
        set_id(ev, id)
        return ev


_EVENT_SLOTS = tuple(
    Event.__dict__[f.name].__set__ for f in dataclasses.fields(Event)
)  # in field order: room, seq, kind, nick, text, ts, id


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One line of a room list."""

    name: str
    members: int
    topic: str


# ------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Hello(Request):
    """Register ``nick``; with ``resume``, take back an earlier session (§6.1).

    ``id`` names this client's registration, the same on every try until a
    WELCOME arrives: a HELLO whose WELCOME was late and is tried again on a
    new connection gets the session the first try made, not ``nick_taken``.
    """

    TYPE: ClassVar[bytes] = b"HELLO"
    rid: int
    nick: str
    resume: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        rules.check_nick(self.nick)
        if len(self.resume) > 64:
            raise ProtocolError("bad_request", "resume token too long")
        if self.id:
            _check_id(self.id)


@dataclass(frozen=True, slots=True)
class Join(Request):
    """Join ``room`` (created on first join) and get its last ``history`` events.

    ``private`` matters only when the JOIN creates the room: it is then
    invite-only and its traffic never goes on the broadcast socket (§6.11).
    ``rejoin``: the client was in the room when its broker went away; just
    after a broker restart such a join is not announced (§6.2).
    """

    TYPE: ClassVar[bytes] = b"JOIN"
    rid: int
    room: str
    history: int = 20
    private: bool = False
    rejoin: bool = False

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        _check_count("history", self.history, rules.MAX_HISTORY)


@dataclass(frozen=True, slots=True)
class Leave(Request):
    TYPE: ClassVar[bytes] = b"LEAVE"
    rid: int
    room: str

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))


@dataclass(frozen=True, slots=True)
class Say(Request):
    """Say ``text`` in ``room``; ``id`` is the client's message id (§6.3)."""

    TYPE: ClassVar[bytes] = b"SAY"
    rid: int
    room: str
    id: str
    text: str
    action: bool = False

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        _check_id(self.id)
        rules.check_text(self.text)


@dataclass(frozen=True, slots=True)
class Tell(Request):
    """Send a direct message to the nick ``to`` (§6.6)."""

    TYPE: ClassVar[bytes] = b"TELL"
    rid: int
    to: str
    id: str
    text: str
    action: bool = False

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        rules.check_nick(self.to)
        _check_id(self.id)
        rules.check_text(self.text)


@dataclass(frozen=True, slots=True)
class Nick(Request):
    TYPE: ClassVar[bytes] = b"NICK"
    rid: int
    nick: str

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        rules.check_nick(self.nick)


@dataclass(frozen=True, slots=True)
class Topic(Request):
    """Read the topic of ``room`` (``topic`` is None) or set it."""

    TYPE: ClassVar[bytes] = b"TOPIC"
    rid: int
    room: str
    topic: str | None = None

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        if self.topic is not None:
            rules.check_topic(self.topic)


@dataclass(frozen=True, slots=True)
class Away(Request):
    """Mark the session away with ``text``, or back with "" (§6.13). Not stored."""

    TYPE: ClassVar[bytes] = b"AWAY"
    rid: int
    text: str = ""

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        if self.text:
            rules.check_topic(self.text)


@dataclass(frozen=True, slots=True)
class Whois(Request):
    """What the broker knows of ``nick`` (§6.13)."""

    TYPE: ClassVar[bytes] = b"WHOIS"
    rid: int
    nick: str

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        rules.check_nick(self.nick)


@dataclass(frozen=True, slots=True)
class Op(Request):
    """A room operator makes ``nick`` an operator of the room, or (``op`` false) not (§6.11)."""

    TYPE: ClassVar[bytes] = b"OP"
    rid: int
    room: str
    nick: str
    op: bool = True

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        rules.check_nick(self.nick)


@dataclass(frozen=True, slots=True)
class Search(Request):
    """The newest ``limit`` messages of ``room`` that contain the words of ``text`` (§6.13)."""

    TYPE: ClassVar[bytes] = b"SEARCH"
    rid: int
    room: str
    text: str
    limit: int = 20

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        rules.check_topic(self.text)
        if not self.text.strip():
            raise ProtocolError("empty", "search for what?")
        _check_count("limit", self.limit, rules.MAX_HISTORY)


@dataclass(frozen=True, slots=True)
class Who(Request):
    TYPE: ClassVar[bytes] = b"WHO"
    rid: int
    room: str

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))


@dataclass(frozen=True, slots=True)
class Rooms(Request):
    TYPE: ClassVar[bytes] = b"ROOMS"
    rid: int

    def __post_init__(self) -> None:
        _check_rid(self.rid)


@dataclass(frozen=True, slots=True)
class History(Request):
    """Read a room's log (§6.5).

    ``after > 0``: the events after seq ``after`` (gap recovery), oldest first.
    Otherwise the last ``limit`` events before seq ``before`` (0: the end).
    """

    TYPE: ClassVar[bytes] = b"HISTORY"
    rid: int
    room: str
    after: int = 0
    before: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        _check_count("after", self.after, _MAX_RID)
        _check_count("before", self.before, _MAX_RID)
        _check_count("limit", self.limit, rules.MAX_HISTORY)


@dataclass(frozen=True, slots=True)
class Seen(Request):
    """The client has shown every DM in its inbox up to ``seq`` (§6.6)."""

    TYPE: ClassVar[bytes] = b"SEEN"
    rid: int
    seq: int

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _check_count("seq", self.seq, _MAX_RID)


@dataclass(frozen=True, slots=True)
class Invite(Request):
    """A room operator lets ``nick`` into a private room (§6.11)."""

    TYPE: ClassVar[bytes] = b"INVITE"
    rid: int
    room: str
    nick: str

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        rules.check_nick(self.nick)


@dataclass(frozen=True, slots=True)
class Kick(Request):
    """A room operator removes ``nick`` from a room (§6.11)."""

    TYPE: ClassVar[bytes] = b"KICK"
    rid: int
    room: str
    nick: str
    reason: str = ""

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        rules.check_nick(self.nick)
        rules.check_topic(self.reason)


@dataclass(frozen=True, slots=True)
class Ban(Request):
    """A room operator bans ``nick`` from a room (``ban`` False lifts it, §6.11)."""

    TYPE: ClassVar[bytes] = b"BAN"
    rid: int
    room: str
    nick: str
    ban: bool = True

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        _set(self, "room", rules.normalize_room(self.room))
        rules.check_nick(self.nick)


@dataclass(frozen=True, slots=True)
class Stats(Request):
    """Ask for the broker's counters; needs no HELLO (§6.10)."""

    TYPE: ClassVar[bytes] = b"STATS"
    rid: int

    def __post_init__(self) -> None:
        _check_rid(self.rid)


@dataclass(frozen=True, slots=True)
class Ping(Request):
    """Liveness probe; any request also counts as one (§6.7)."""

    TYPE: ClassVar[bytes] = b"PING"
    rid: int

    def __post_init__(self) -> None:
        _check_rid(self.rid)


@dataclass(frozen=True, slots=True)
class Bye(Request):
    """End the session: leave every room, free the nick."""

    TYPE: ClassVar[bytes] = b"BYE"
    rid: int
    reason: str = ""

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        rules.check_topic(self.reason)


# -------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Welcome(Reply):
    """Answer to HELLO: the session and everything a client needs to know (§6.1).

    ``pub`` is the broadcast endpoint; a wildcard host (``*``/``0.0.0.0``) means
    "the host you connected to". ``rooms`` lists the rooms a resumed session is
    still in.
    """

    TYPE: ClassVar[bytes] = b"WELCOME"
    rid: int
    nick: str
    session: str
    pub: str
    epoch: str
    time: float
    heartbeat: float
    timeout: float
    resumed: bool = False
    rooms: list[str] = field(default_factory=list)
    boot: str = ""  # names this broker process: another one means it restarted (§6.1)


@dataclass(frozen=True, slots=True)
class Ok(Reply):
    TYPE: ClassVar[bytes] = b"OK"
    rid: int


@dataclass(frozen=True, slots=True)
class Joined(Reply):
    """Answer to JOIN: the room's state and its last events (§6.2).

    ``last`` is the room's latest seq at the moment of joining: live events
    with a seq at or below it are already in ``history`` or older.
    """

    TYPE: ClassVar[bytes] = b"JOINED"
    rid: int
    room: str
    topic: str
    members: list[str]
    last: int
    history: list[Event] = field(default_factory=list)
    more: int = 0  # members not listed, to keep the reply under the body limit
    private: bool = False  # the room is invite-only (§6.11)


@dataclass(frozen=True, slots=True)
class Ack(Reply):
    """The broker stored the message ``id``; ``dup`` if it had it already (§6.3)."""

    TYPE: ClassVar[bytes] = b"ACK"
    rid: int
    id: str
    seq: int
    dup: bool = False
    away: str = ""  # a DM's recipient is away: its message (§6.13)


@dataclass(frozen=True, slots=True)
class Names(Reply):
    TYPE: ClassVar[bytes] = b"NAMES"
    rid: int
    room: str
    members: list[str]
    more: int = 0  # members not listed, to keep the reply under the body limit
    away: list[str] = field(default_factory=list)  # those of `members` who are away


@dataclass(frozen=True, slots=True)
class WhoisIs(Reply):
    """Answer to WHOIS (§6.13). ``idle``: seconds since the nick last said anything
    (online); ``seen``: when its last session ended (offline; 0: unknown)."""

    TYPE: ClassVar[bytes] = b"WHOISIS"
    rid: int
    nick: str
    online: bool
    rooms: list[str] = field(default_factory=list)
    away: str = ""
    idle: float = 0.0
    seen: float = 0.0
    key: str = ""  # with CURVE: a fingerprint of the key that owns the nick


@dataclass(frozen=True, slots=True)
class RoomList(Reply):
    TYPE: ClassVar[bytes] = b"ROOMLIST"
    rid: int
    rooms: list[RoomInfo]
    more: int = 0  # rooms not listed, to keep the reply under the body limit


@dataclass(frozen=True, slots=True)
class TopicIs(Reply):
    TYPE: ClassVar[bytes] = b"TOPICIS"
    rid: int
    room: str
    topic: str


@dataclass(frozen=True, slots=True)
class Events(Reply):
    """Answer to HISTORY: events oldest first, and the room's latest seq."""

    TYPE: ClassVar[bytes] = b"EVENTS"
    rid: int
    room: str
    events: list[Event]
    last: int


@dataclass(frozen=True, slots=True)
class Head:
    """The latest seq of a room."""

    room: str
    last: int


@dataclass(frozen=True, slots=True)
class Pong(Reply):
    """Answer to PING: the broker's clock, its latest heartbeat number and the
    latest seq of every room the session is in, so a client notices events it
    lost at the tail of a burst, when no later event would show the gap (§6.7).
    """

    TYPE: ClassVar[bytes] = b"PONG"
    rid: int
    time: float
    beat: int
    heads: list[Head] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stat:
    """One named counter."""

    name: str
    value: int


@dataclass(frozen=True, slots=True)
class StatsReply(Reply):
    """Answer to STATS: gauges and counters since the broker started (§6.10)."""

    TYPE: ClassVar[bytes] = b"STATSIS"
    rid: int
    started: float
    time: float
    clients: int
    rooms: int
    counters: list[Stat]


@dataclass(frozen=True, slots=True)
class Error(Reply):
    """A request failed; ``code`` is from §7, ``text`` a sentence for a human.

    ``retry_after`` (seconds) is set when trying again later will work.
    """

    TYPE: ClassVar[bytes] = b"ERROR"
    rid: int
    code: str
    text: str
    retry_after: float = 0.0


# ---------------------------------------------------------------------- pushes


@dataclass(frozen=True, slots=True)
class Dm(Push):
    """A direct message, delivered only to its recipient's DEALER (§6.6).

    ``seq`` is its position in the recipient's inbox; the client confirms it
    with SEEN, and whatever is unconfirmed is delivered again at the next
    HELLO (the client drops repeats by ``id``).
    """

    TYPE: ClassVar[bytes] = b"DM"
    id: str
    sender: str
    to: str
    text: str
    ts: float
    action: bool = False
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Invited(Push):
    """``by`` invited you into the private room ``room`` (§6.11)."""

    TYPE: ClassVar[bytes] = b"INVITED"
    room: str
    by: str


@dataclass(frozen=True, slots=True)
class PrivateEvent(Push):
    """An event of a private room, sent to each member's DEALER, never published (§6.11)."""

    TYPE: ClassVar[bytes] = b"PEVENT"
    event: Event


# ----------------------------------------------------------------- broadcasts

CONTROL_TOPIC = b"!\x00"
#: The longest topic a client subscribes to: ``#``, a room name or a sync
#: token (both at most 64 ASCII characters), NUL (§5.2).
MAX_TOPIC_BYTES = 2 + max(rules.MAX_ROOM_CHARS, 64)


def room_topic(room: str) -> bytes:
    """The PUB topic of a room: ``#`` name NUL. The NUL ends the prefix match (§5)."""
    return b"#" + room.encode("ascii") + b"\x00"


def sync_topic(token: str) -> bytes:
    return b"~" + token.encode("ascii") + b"\x00"


@dataclass(frozen=True, slots=True)
class Beat(Broadcast):
    """Heartbeat on the control topic; ``n`` counts up (§6.7). ``epoch`` is the
    store's (§6.4): a client whose WELCOME named another reconnects (§6.7)."""

    TYPE: ClassVar[bytes] = b"BEAT"
    n: int
    time: float
    epoch: str = ""

    @property
    def topic(self) -> bytes:
        return CONTROL_TOPIC


@dataclass(frozen=True, slots=True)
class Shutdown(Broadcast):
    """The broker is going away (§6.8)."""

    TYPE: ClassVar[bytes] = b"SHUTDOWN"
    reason: str

    @property
    def topic(self) -> bytes:
        return CONTROL_TOPIC


@dataclass(frozen=True, slots=True)
class Synced(Broadcast):
    """Proof that a subscriber's earlier subscriptions are live (§5.2)."""

    TYPE: ClassVar[bytes] = b"SYNCED"
    token: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.token) <= 64 or not self.token.isascii() or not self.token.isalnum():
            raise ProtocolError("bad_request", "sync token must be 1-64 ASCII letters/digits")

    @property
    def topic(self) -> bytes:
        return sync_topic(self.token)


REQUESTS: tuple[type[Request], ...] = (
    Hello, Join, Leave, Say, Tell, Nick, Topic, Who, Rooms, History, Seen, Invite, Kick, Ban,
    Stats, Ping, Bye, Away, Whois, Op, Search,
)  # fmt: skip
FROM_BROKER: tuple[type[Message], ...] = (
    Welcome, Ok, Joined, Ack, Names, RoomList, TopicIs, Events, Pong, StatsReply, Error, Dm,
    Invited, PrivateEvent, WhoisIs,
)  # fmt: skip
BROADCASTS: tuple[type[Broadcast], ...] = (Event, Beat, Shutdown, Synced)
