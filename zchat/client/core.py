"""The client's logic: typed lines, API calls and received messages in, actions out. No sockets.

The transport (zchat/client/transport.py) owns the DEALER and SUB sockets and
the clock; it feeds ``ClientCore`` and carries out the actions it returns:
``Request`` (send on the DEALER), ``Subscribe``/``Unsubscribe`` (SUB topics),
``ConnectSub`` (the broadcast endpoint the broker announced), ``Reconnect``,
``Output`` (a UiEvent for the screen), ``Done``/``Failed`` (the answer to a
call the public API made, by its tag) and ``Quit``.

What it guarantees (docs/protocol.md §5-§6): every room event is shown once,
in seq order. Live events that arrive while a join or a gap fetch is under way
are buffered and merged by seq; a gap in seqs triggers a HISTORY fetch; every
SAY/TELL stays in the outbox until acknowledged and is resent after a
reconnect (the broker drops duplicates by message id) or, when the broker
asks to wait (any error with ``retry_after`` > 0, §6.12), after that wait.

Where state lives: ``state`` (zchat/client/state.py) is the connection state;
``outbox`` and ``_later`` hold what the user asked for and outlive
connections; ``_link`` holds everything that belongs to one connection and is
replaced whole by ``connecting()``, so no piece of it can survive a reconnect
by mistake. Replies are dispatched through ``_ROWS``, one row per request type.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from zchat.client.endpoints import Rotation, endpoint_host
from zchat.client.events import (
    AwayIs,
    Chat,
    Clear,
    DirectLine,
    HistoryHeader,
    Info,
    Invitation,
    JoinedRoom,
    Kicked,
    LeftRoom,
    Members,
    NickIs,
    Problem,
    RoomInfo,
    RoomListing,
    RoomNotice,
    StateChange,
    TopicInfo,
    UiEvent,
    WhoisInfo,
)
from zchat.client.state import ConnectionState
from zchat.protocol import ProtocolError
from zchat.protocol import messages as m
from zchat.protocol.errors import Code
from zchat.protocol.rules import MAX_HISTORY, check_nick, check_topic, nick_key, normalize_room

#: Messages in flight at once; more wait in the outbox. Bounds what a
#: throttled client has to resend and keeps its order (§6.12).
WINDOW = 64
R = TypeVar("R", bound=m.Request)
CS = ConnectionState
#: What the public API passes with a call, to find its answer among the actions.
Tag = int

# ----------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Request:
    msg: m.Request


@dataclass(frozen=True, slots=True)
class Subscribe:
    topic: bytes


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic: bytes


@dataclass(frozen=True, slots=True)
class ConnectSub:
    endpoint: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Drop both sockets and connect again (the broker stopped answering)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Output:
    event: UiEvent


@dataclass(frozen=True, slots=True)
class Quit:
    code: int = 0


@dataclass(frozen=True, slots=True)
class Done:
    """The call made with ``tag`` succeeded; ``reply`` is the broker's answer
    (None when there was nothing to ask: e.g. joining a room we are in)."""

    tag: Tag
    reply: m.Reply | None


@dataclass(frozen=True, slots=True)
class Failed:
    """The call made with ``tag`` failed: ``code`` as in docs/protocol.md §7."""

    tag: Tag
    code: str
    text: str


Action = Request | Subscribe | Unsubscribe | ConnectSub | Reconnect | Output | Quit | Done | Failed

HELP = {
    "join": "/join ROOM - join ROOM (created if new) and make it current",
    "leave": "/leave [ROOM] - leave ROOM (default: the current room)",
    "msg": "/msg NICK TEXT - send a direct message to NICK",
    "me": "/me ACTION - say an action in the current room (* nick waves)",
    "nick": "/nick NAME - change your nick",
    "who": "/who [ROOM] - list the members of ROOM",
    "rooms": "/rooms - list rooms with member counts and topics",
    "topic": "/topic [TEXT] - show or set the current room's topic",
    "switch": "/switch ROOM - make ROOM (joined already) the current room",
    "query": "/query [NICK] - send what you type to NICK as DMs (no NICK: back to the room)",
    "away": "/away [MESSAGE] - mark yourself away (shown in /who, /whois, to DMs); /away: back",
    "names": "/names [ROOM] - who is in ROOM (same as /who)",
    "clear": "/clear - clear the screen of the current room or query",
    "history": "/history [N] - show the last N messages of the current room, under a header",
    "private": "/private ROOM - create (or join) an invite-only room",
    "invite": "/invite NICK - let NICK into the current (private) room; operators only",
    "kick": "/kick NICK [REASON] - remove NICK from the current room; operators only",
    "ban": "/ban NICK - keep NICK out of the current room; operators only",
    "op": "/op NICK - make NICK an operator of the current room; operators only",
    "deop": "/deop NICK - NICK is no longer an operator of the current room; operators only",
    "search": "/search WORDS - the newest messages of the current room holding every word",
    "unban": "/unban NICK - lift a ban in the current room; operators only",
    "ignore": "/ignore [NICK] - hide NICK's messages and DMs (no NICK: list who is ignored)",
    "unignore": "/unignore NICK - show NICK's messages again",
    "whois": "/whois NICK - NICK's rooms, away message, idle time or last seen, key fingerprint",
    "help": "/help [COMMAND] - this list, or one command's help",
    "quit": "/quit [REASON] - leave the chat (typing exit does the same)",
}

# --------------------------------------------------------------- state


@dataclass(slots=True)
class RoomView:
    """What the client knows of one room it is in (or joining)."""

    name: str
    last: int = 0  # seq of the last event shown
    joined: bool = False  # JOINED received for the current connection
    fetching: bool = False  # a HISTORY(after=last) is in flight
    private: bool = False  # asked to be created invite-only (§6.11)
    acked: int = 0  # the highest seq the broker gave a message of ours
    buffer: dict[int, m.Event] = field(default_factory=dict)  # seq -> event, not yet shown
    #: Who is here, nick_key -> nick: JOINED's members, then join/leave/nick events
    #: after ``members_at`` (the seq JOINED counted them at). For completion.
    members: dict[str, str] = field(default_factory=dict)
    members_at: int = 0
    #: API calls waiting for this room's JOINED.
    tags: list[Tag] = field(default_factory=list)
    #: Joined on an earlier connection: a JOIN after a reconnect is a rejoin (§6.2).
    was_joined: bool = False
    #: The room's head in the last PONG, if it was ahead of ``last``: only if the
    #: next PONG finds us still behind it, and our SUB queue ran dry in between,
    #: is the tail really lost (§6.7). Until then its events may simply wait in
    #: our SUB queue.
    behind: int = 0
    behind_at: float = 0.0  # when that PONG came

    def disconnected(self) -> None:
        """The connection is gone: nothing of this room is joined or in flight."""
        self.joined = self.fetching = False
        self.buffer.clear()


@dataclass(frozen=True, slots=True)
class _Pending:
    """What a request in flight was for, to interpret its reply."""

    msg: m.Request
    show: bool = True  # False for background requests (pings, gap fetches)
    tag: Tag | None = None  # the API call waiting for the answer


@dataclass(frozen=True, slots=True)
class _Queued:
    """A message in the outbox: kept until the broker acknowledges it."""

    msg: m.Say | m.Tell
    tag: Tag | None = None


@dataclass(frozen=True, slots=True)
class _Later:
    """A request asked for before it could go (not connected, joining, told to wait)."""

    build: Callable[[int], m.Request]
    show: bool = True
    tag: Tag | None = None


@dataclass(slots=True)
class _Link:
    """Everything that lives as long as one connection, replaced whole by ``connecting()``."""

    #: rid -> what the request in flight was for.
    pending: dict[int, _Pending] = field(default_factory=dict)
    #: sync token -> rooms waiting for their SYNCED before their JOIN (§5.2).
    syncs: dict[str, list[str]] = field(default_factory=dict)
    #: Outbox ids not yet sent on this connection, in order. Kept apart from
    #: the outbox so a flush walks only what may still go, not every message in flight.
    unsent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: Outbox ids the broker asked to send again later, in the order sent: they
    #: go again first, once ``hold_until`` has passed (§6.12).
    refused: OrderedDict[str, None] = field(default_factory=OrderedDict)
    hold_until: float = 0.0
    #: How many entries at the front of ``_later`` are requests told to wait.
    throttled_later: int = 0
    #: The error code of the wait the broker asked for, until a message goes
    #: through: one notice per episode, not one per refused message.
    waiting: str = ""
    bye_sent: bool = False
    last_rx: float = 0.0  # when the DEALER last heard from the broker
    last_beat_rx: float = 0.0  # when the SUB last heard a BEAT
    last_tx: float = 0.0
    #: When the SUB queue was last read empty (None: the transport does not say,
    #: and every PONG is taken as coming after a drained queue).
    drained_at: float | None = None


class ClientCore:
    """One client's state machine. Single-threaded; the clock is passed in."""

    def __init__(
        self,
        nick: str,
        room: str | None,
        history: int = 20,
        quit_wait: float = 10.0,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        new_token: Callable[[], str] = lambda: secrets.token_hex(8),
        hello_id: str = "",
        *,
        rooms: Iterable[str] = (),
        lazy_room: str | None = None,
        lazy_waits: bool = False,
        register: bool = True,
    ) -> None:
        """``room``: the room to join first and talk in; ``rooms``: more to join.
        ``lazy_room``: joined at the first typed line unless that line is a /join
        (a script that joins its own room never lands in the default one), or
        at the connection if no line came before, unless ``lazy_waits`` (the
        lines come from a script: its first line decides, whenever it comes).
        ``register=False``: no HELLO, no session, no heartbeats: only requests
        that need no session (STATS, §6.10) go out, at once."""
        self.register = register
        self.nick = nick
        self.history = history
        self.current: str | None = room
        #: Set by /query NICK: plain lines go to NICK as DMs instead of the room.
        self.query: str | None = None
        #: Set by /away: the away message ("" for none); None when here.
        self.away: str | None = None
        #: nick_key -> nick, hidden by /ignore.
        self.ignored: dict[str, str] = {}
        self.rooms: dict[str, RoomView] = {}
        self.state = CS.CONNECTING
        self.session = ""
        self.epoch = ""
        self.pub = ""
        self.heartbeat = 5.0
        self.timeout = 15.0
        #: The endpoint the DEALER connects to, and its host: the host replaces
        #: a wildcard in WELCOME.pub.
        self.endpoint = ""
        self.host = "127.0.0.1"
        #: The broker endpoints to try, the one tried now and the retry delay
        #: (§6.7); the transport sets it from its list and connects where it says.
        self.rotation = Rotation()
        self.outbox: OrderedDict[str, _Queued] = OrderedDict()
        self.quitting = False
        self.quit_wait = quit_wait
        self._quit_by = 0.0  # when we give up waiting for acks and quit anyway
        self._quit_reason = ""
        self._new_id = new_id
        self._new_token = new_token
        self._rid = 0
        self._link = _Link()
        self._later: list[_Later] = []
        # Ids of DMs shown lately: an unconfirmed DM comes again after a reconnect.
        self._dm_ids: OrderedDict[str, None] = OrderedDict()
        #: room -> the last seq shown before we left it: a rejoin shows only what is newer.
        self._left_at: dict[str, int] = {}
        self._lazy_room = lazy_room
        # Lines come from a script, not a person: its first line says where it
        # goes even if it arrives after the WELCOME.
        self._lazy_waits = lazy_waits
        self._rejoin = False  # the broker restarted since our last WELCOME: JOINs are rejoins
        self._boot = ""  # WELCOME.boot: names the broker process that answered last
        #: Names this client's registration, the same on every try: a HELLO tried
        #: again after a late WELCOME gets the session the first try made (§6.1).
        self._hello_id = hello_id or secrets.token_hex(8)
        for name in ([room] if room is not None else []) + list(rooms):
            self.rooms.setdefault(normalize_room(name), RoomView(normalize_room(name)))
        if self.current is not None:
            self.current = normalize_room(self.current)

    # ------------------------------------------------------------ lifecycle

    def _move(self, new: ConnectionState) -> None:
        self.state = self.state.check(new)

    def connecting(self, endpoint: str, now: float) -> list[Action]:
        """The transport (re)created its DEALER, connected to ``endpoint`` (the
        rotation's current one): say HELLO, resuming if we can."""
        again = self.state in (CS.CONNECTED, CS.RECONNECTING)
        self._move(CS.RECONNECTING if again else CS.CONNECTING)
        self.endpoint = endpoint
        self.host = endpoint_host(endpoint)
        redo = [p for p in self._link.pending.values() if _redo_after_reconnect(p)]
        self._link = _Link(unsent=OrderedDict.fromkeys(self.outbox))
        self._link.last_rx = self._link.last_beat_rx = self._link.last_tx = now
        # Calls the API still waits for are asked again on the new connection.
        self._later[:0] = [_Later(_builder(p.msg), p.show, p.tag) for p in redo]
        for view in self.rooms.values():
            view.disconnected()
        text = f"connecting to {endpoint} ..."
        connecting = Output(StateChange(self.state, text, len(self.outbox)))
        if not self.register:
            # No session to wait for: what was asked on the last connection goes now.
            later, self._later = self._later, []
            asked: list[Action] = [connecting]
            for item in later:
                asked.append(self._request(item.build(self._next_rid()), now, item.show, item.tag))
            return asked
        return [
            connecting,
            self._request(
                m.Hello(self._next_rid(), self.nick, self.session, self._hello_id), now, show=True
            ),
        ]

    @property
    def idle(self) -> bool:
        """Nothing in flight: no unacknowledged message, no unanswered request."""
        return (
            not self.outbox
            and not self._link.syncs
            and not self._later
            and not any(p.show for p in self._link.pending.values())
            and all(v.last >= v.acked for v in self.rooms.values() if v.joined)
        )

    def tick(self, now: float) -> list[Action]:
        """Heartbeats (§6.7): ping when idle, give up on a silent broker."""
        link = self._link
        if not self.register:
            # No session to keep alive; the caller bounds the wait. With several
            # brokers, one that does not answer in time gives way to the next.
            waited = now - link.last_tx
            if len(self.rotation) > 1 and link.pending and waited >= self.rotation.delay:
                self.rotation.failed()
                return [Reconnect("no answer yet")]
            return []
        if self.quitting and now >= self._quit_by:
            left = len(self.outbox)
            why = f"{left} message(s) were not acknowledged" if left else "no answer to BYE"
            return [Output(Problem(f"gave up waiting: {why}")), Quit(1)]
        if self.state != CS.CONNECTED:
            if now - link.last_tx < self.rotation.delay:
                return []
            self.rotation.failed()  # the next endpoint; a longer delay after a round
            return [Reconnect("no answer yet")]
        if now - link.last_rx > self.timeout:
            return self._lost("the broker stopped answering", now)
        if link.last_beat_rx and now - link.last_beat_rx > self.timeout:
            return self._lost("the broadcast socket went silent", now)
        if link.hold_until and now >= link.hold_until:
            link.hold_until = 0.0
            return self._flush_later(now) + self._flush_outbox(now)
        if now - link.last_tx >= self.heartbeat:
            return [self._request(m.Ping(self._next_rid()), now, show=False)]
        return []

    def next_deadline(self) -> float:
        link = self._link
        if not self.register:
            if len(self.rotation) > 1 and link.pending:
                return link.last_tx + self.rotation.delay
            return link.last_tx + 3600.0
        if self.state != CS.CONNECTED:
            soonest = link.last_tx + self.rotation.delay
        else:
            soonest = min(link.last_tx + self.heartbeat, link.last_rx + self.timeout)
            if link.hold_until:
                soonest = min(soonest, link.hold_until)
        return min(soonest, self._quit_by) if self.quitting else soonest

    def auth_failed(self, why: str) -> list[Action]:
        """The CURVE handshake failed: retrying cannot help, so say so and stop."""
        self._move(CS.AUTH_FAILED)
        text = f"authentication failed: {why}"
        return [Output(StateChange(CS.AUTH_FAILED, text, len(self.outbox))), Quit(3)]

    def link_down(self, now: float) -> list[Action]:
        """The transport saw the DEALER's TCP connection drop (the broker died or the
        network went): reconnect now rather than wait out the heartbeat timeout."""
        if self.state != CS.CONNECTED:
            return self.unreachable(now)  # dropped before its WELCOME: as if refused
        return self._lost("the connection to the broker dropped", now, broker_gone=True)

    def unreachable(self, now: float) -> list[Action]:
        """The transport saw the endpoint of this try refuse the connection (nothing
        listens there): try the next endpoint at once. Not after the last try of a
        round: that one waits out the retry delay (libzmq keeps knocking meanwhile),
        so a list of dead brokers is never tried in a tight loop (§6.7)."""
        if self.state not in (CS.CONNECTING, CS.RECONNECTING) or self.rotation.last_in_round:
            return []
        gone = self.endpoint
        self.rotation.failed()
        return [Reconnect(f"nothing answers at {gone}")]

    def close(self) -> None:
        """The transport stopped for good."""
        self._move(CS.CLOSED)

    def _lost(
        self, why: str, now: float, broker_gone: bool = False, same: bool = False
    ) -> list[Action]:
        """``broker_gone``: the broker process went away (it said so, or its TCP
        connection closed), rather than a silent link: the next JOINs are rejoins
        (§6.2), which a freshly restarted broker does not announce. The next try
        goes to the next endpoint, at once; ``same``: the broker is there (it
        answered), so to this endpoint first (§6.7)."""
        if self.quitting and self._link.bye_sent:
            return [Quit(0)]  # we were leaving anyway; the broker ends the session
        self.rotation.lost(same=same)
        if not self._boot:  # a broker too old to say which process it is: guess
            self._rejoin = broker_gone
        self._move(CS.RECONNECTING)
        self.pub = ""  # the transport drops the SUB too; WELCOME names the endpoint again
        queued = len(self.outbox)
        waiting = f" ({queued} message(s) wait to be sent)" if queued else ""
        text = f"{why}; reconnecting ...{waiting}"
        return [Output(StateChange(CS.RECONNECTING, text, queued)), Reconnect(why)]

    # ----------------------------------------------------- calls (the API)

    def say(
        self, room: str, text: str, now: float, *, action: bool = False, tag: Tag | None = None
    ) -> list[Action]:
        """Say ``text`` in ``room``: into the outbox, sent when it can go."""
        return self._send_outbox(lambda rid, mid: m.Say(rid, room, mid, text, action), now, tag)

    def dm(
        self, nick: str, text: str, now: float, *, action: bool = False, tag: Tag | None = None
    ) -> list[Action]:
        """Send a direct message to ``nick``: into the outbox, sent when it can go."""
        return self._send_outbox(lambda rid, mid: m.Tell(rid, nick, mid, text, action), now, tag)

    def join(
        self, room: str, now: float, *, private: bool = False, tag: Tag | None = None
    ) -> list[Action]:
        """Join ``room`` and make it current; the tag is answered at its JOINED."""
        try:
            room = normalize_room(room)
        except ProtocolError as exc:
            return self._failed(tag, exc)
        self.current = room
        self.query = None
        view = self.rooms.get(room)
        if view is not None:
            if tag is None:
                return [Output(Info(f"now talking in #{room}"))]
            if view.joined:
                return [Done(tag, None)]
            view.tags.append(tag)
            return []
        self.rooms[room] = RoomView(room, private=private, tags=[] if tag is None else [tag])
        return self._start_joins([room], now)

    def leave(self, room: str, now: float, *, tag: Tag | None = None) -> list[Action]:
        """Leave ``room``: at once here; the broker is told when connected."""
        try:
            room = normalize_room(room)
        except ProtocolError as exc:
            return self._failed(tag, exc)
        if room not in self.rooms:
            return self._fail(tag, "not_member", f"you are not in #{room}")
        view = self.rooms.pop(room)
        self._left_at[room] = view.last
        if self.current == room:
            self.current = next(iter(self.rooms), None)
        actions: list[Action] = [Unsubscribe(m.room_topic(room))]
        actions += [Failed(t, "left", f"left #{room} before it was joined") for t in view.tags]
        # Still syncing: no JOIN went out, so there is nothing to leave. Not
        # connected: the resumed WELCOME lists the room and we leave it then.
        if self.state == CS.CONNECTED and (view.joined or self._join_in_flight(room)):
            actions.append(self._request(m.Leave(self._next_rid(), room), now, tag=tag))
        elif tag is not None:
            actions.append(Done(tag, None))
        return actions

    def ask(
        self, build: Callable[[int], m.Request], now: float, tag: Tag | None = None
    ) -> list[Action]:
        """Any other request; its answer goes to ``tag`` (or to the screen without one)."""
        try:
            msg = build(self._next_rid())
        except ProtocolError as exc:
            return self._failed(tag, exc)
        link = self._link
        if not self.register:
            return [self._request(msg, now, tag=tag)]
        if self.state != CS.CONNECTED or self._joining() or now < link.hold_until:
            # Keep the order the user typed: after the connection, the joins and
            # any wait the broker asked for.
            self._later.append(_Later(build, True, tag))
            return []
        return [self._request(msg, now, tag=tag)]

    def quit(self, reason: str, now: float) -> list[Action]:
        """Leave once every queued message is acknowledged (bounded by quit_wait)."""
        try:
            reason = check_topic(reason[:300])
        except ProtocolError:
            reason = ""  # a reason is a courtesy; never a reason not to leave
        if not self.quitting:
            self.quitting = True
            self._quit_by = now + self.quit_wait
            self._quit_reason = reason
        return self._maybe_bye(now)

    def _failed(self, tag: Tag | None, exc: ProtocolError) -> list[Action]:
        return self._fail(tag, str(exc.code), exc.text)

    def _fail(self, tag: Tag | None, code: str, text: str) -> list[Action]:
        """A call that cannot be made: to the API caller by tag, else to the screen."""
        if tag is not None:
            return [Failed(tag, code, text)]
        return [Output(Problem(text))]

    # --------------------------------------------------------------- input

    def command(self, line: str, now: float) -> list[Action]:
        """A line the user typed: a chat line for the current room or a /command."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return []
        actions: list[Action] = []
        if self._lazy_room is not None:
            room, self._lazy_room = self._lazy_room, None
            verb = line.split(" ", 1)[0].lower()
            if verb not in ("/join", "/private", "/quit", "exit") and not self.rooms:
                actions += self.join(room, now)
        if line.strip() == "exit":
            return actions + self.quit("", now)
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            return actions + self._say_current(text, False, now)
        verb, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        handler = getattr(self, f"_cmd_{verb.lower()}", None)
        if handler is None:
            return [*actions, Output(Problem(f"unknown command /{verb}; /help lists them"))]
        return actions + cast("list[Action]", handler(rest, now))

    def _usage(self, verb: str) -> list[Action]:
        return [Output(Problem(f"usage: {HELP[verb]}"))]

    def _cmd_private(self, rest: str, now: float) -> list[Action]:
        if not rest or " " in rest:
            return self._usage("private")
        return self._cmd_join(rest, now, private=True)

    def _cmd_invite(self, rest: str, now: float) -> list[Action]:
        return self._moderate(
            "invite", rest, now, lambda rid, room, nick, _: m.Invite(rid, room, nick)
        )

    def _cmd_kick(self, rest: str, now: float) -> list[Action]:
        return self._moderate("kick", rest, now, m.Kick)

    def _cmd_ban(self, rest: str, now: float) -> list[Action]:
        return self._moderate("ban", rest, now, lambda rid, room, nick, _: m.Ban(rid, room, nick))

    def _cmd_unban(self, rest: str, now: float) -> list[Action]:
        return self._moderate(
            "unban", rest, now, lambda rid, room, nick, _: m.Ban(rid, room, nick, False)
        )

    def _moderate(
        self, verb: str, rest: str, now: float, build: Callable[[int, str, str, str], m.Request]
    ) -> list[Action]:
        nick, _, reason = rest.partition(" ")
        room = self.current
        if not nick or (reason and verb != "kick"):
            return self._usage(verb)
        if room is None:
            return [Output(Problem("join a room first"))]
        return self.ask(lambda rid: build(rid, room, nick, reason.strip()), now)

    def _cmd_join(self, rest: str, now: float, private: bool = False) -> list[Action]:
        if not rest or " " in rest:
            return self._usage("join")
        return self.join(rest, now, private=private)

    def _cmd_leave(self, rest: str, now: float) -> list[Action]:
        target = rest or self.current
        if not target:
            return self._usage("leave")
        return self.leave(target, now)

    def _join_in_flight(self, room: str) -> bool:
        return any(
            isinstance(p.msg, m.Join) and p.msg.room == room for p in self._link.pending.values()
        )

    def _cmd_msg(self, rest: str, now: float) -> list[Action]:
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            return self._usage("msg")
        return self.dm(to, text, now)

    def _cmd_me(self, rest: str, now: float) -> list[Action]:
        if not rest:
            return self._usage("me")
        return self._say_current(rest, True, now)

    def _cmd_nick(self, rest: str, now: float) -> list[Action]:
        if not rest:
            return self._usage("nick")
        return self.ask(lambda rid: m.Nick(rid, rest), now)  # a bad nick: says why

    def _cmd_who(self, rest: str, now: float) -> list[Action]:
        room = rest or self.current
        if not room:
            return self._usage("who")
        return self.ask(lambda rid: m.Who(rid, room), now)

    def _cmd_rooms(self, rest: str, now: float) -> list[Action]:
        return self.ask(m.Rooms, now)

    def _cmd_topic(self, rest: str, now: float) -> list[Action]:
        room = self.current
        if not room:
            return [Output(Problem("join a room first"))]
        return self.ask(lambda rid: m.Topic(rid, room, rest or None), now)

    def _cmd_switch(self, rest: str, now: float) -> list[Action]:
        try:
            room = normalize_room(rest)
        except ProtocolError:
            return self._usage("switch")
        if room not in self.rooms:
            return [Output(Problem(f"you are not in #{room}; /join it first"))]
        self.current = room
        self.query = None
        return [Output(Info(f"now talking in #{room}"))]

    def _cmd_query(self, rest: str, now: float) -> list[Action]:
        if not rest:
            self.query = None
            where = f"in #{self.current}" if self.current else "in no room: /join one"
            return [Output(Info(f"now talking {where}"))]
        try:
            nick = check_nick(rest)
        except ProtocolError:
            return self._usage("query")
        self.query = nick
        return [Output(Info(f"now talking to {nick} in private; /query alone to leave"))]

    def _cmd_away(self, rest: str, now: float) -> list[Action]:
        """Away is a state of the session (§6.13): shown in /who, /whois and to DMs."""
        if self.away is not None and not rest:
            self.away = None
        else:
            self.away = rest
        note = "you are back" if self.away is None else "you are away; /away again when back"
        text = "" if self.away is None else self.away or "away"
        return [Output(Info(note)), *self.ask(lambda rid: m.Away(rid, text), now)]

    def _cmd_names(self, rest: str, now: float) -> list[Action]:
        return self._cmd_who(rest, now)

    def _cmd_clear(self, rest: str, now: float) -> list[Action]:
        return [Output(Clear())]

    def _cmd_history(self, rest: str, now: float) -> list[Action]:
        room = self.current
        view = self.rooms.get(room) if room else None
        if view is None or room is None:
            return [Output(Problem("join a room first"))]
        try:
            count = int(rest) if rest else self.history or 20
        except ValueError:
            return self._usage("history")
        count = max(1, min(count, MAX_HISTORY))
        return self.ask(lambda rid: m.History(rid, room, limit=count), now)

    def _cmd_ignore(self, rest: str, now: float) -> list[Action]:
        if not rest:
            if not self.ignored:
                return [Output(Info("you ignore nobody"))]
            return [Output(Info("you ignore " + ", ".join(sorted(self.ignored.values()))))]
        try:
            nick = check_nick(rest)
        except ProtocolError as exc:
            return [Output(Problem(exc.text))]
        self.ignored[nick_key(nick)] = nick
        return [Output(Info(f"ignoring {nick}: /unignore {nick} to see them again"))]

    def _cmd_unignore(self, rest: str, now: float) -> list[Action]:
        if not rest:
            return self._usage("unignore")
        if self.ignored.pop(nick_key(rest), None) is None:
            return [Output(Problem(f"you do not ignore {rest}"))]
        return [Output(Info(f"no longer ignoring {rest}"))]

    def _cmd_whois(self, rest: str, now: float) -> list[Action]:
        if not rest or " " in rest:
            return self._usage("whois")
        return self.ask(lambda rid: m.Whois(rid, rest), now)

    def _cmd_op(self, rest: str, now: float) -> list[Action]:
        if " " in rest:
            return self._usage("op")
        return self._moderate("op", rest, now, lambda rid, room, nick, _: m.Op(rid, room, nick))

    def _cmd_deop(self, rest: str, now: float) -> list[Action]:
        if " " in rest:
            return self._usage("deop")
        return self._moderate(
            "deop", rest, now, lambda rid, room, nick, _: m.Op(rid, room, nick, False)
        )

    def _cmd_search(self, rest: str, now: float) -> list[Action]:
        room = self.current
        if not rest:
            return self._usage("search")
        if room is None:
            return [Output(Problem("join a room first"))]
        return self.ask(lambda rid: m.Search(rid, room, rest), now)

    def _cmd_help(self, rest: str, now: float) -> list[Action]:
        verb = rest.lstrip("/").lower()
        if verb:
            text = HELP.get(verb)
            return [Output(Info(text) if text else Problem(f"no command /{verb}"))]
        lines = [Info("commands (plain text goes to the current room):")]
        lines += [Info("  " + text) for text in HELP.values()]
        return [Output(e) for e in lines]

    def _cmd_quit(self, rest: str, now: float) -> list[Action]:
        return self.quit(rest, now)

    def _maybe_bye(self, now: float) -> list[Action]:
        if not self.quitting or self._link.bye_sent:
            return []
        if self.state != CS.CONNECTED:  # no session to end; quit unless input still waits
            return [] if self.outbox or self._later else [Quit(0)]
        if not self.idle:
            return []
        self._link.bye_sent = True
        return [self._request(m.Bye(self._next_rid(), self._quit_reason), now)]

    def _say_current(self, text: str, action: bool, now: float) -> list[Action]:
        to = self.query
        if to is not None:
            return self.dm(to, text, now, action=action)
        room = self.current
        if room is None:
            return [Output(Problem("you are in no room: /join one first"))]
        return self.say(room, text, now, action=action)

    def _send_outbox(
        self, build: Callable[[int, str], m.Say | m.Tell], now: float, tag: Tag | None = None
    ) -> list[Action]:
        try:
            msg = build(self._next_rid(), self._new_id())
        except ProtocolError as exc:
            return self._failed(tag, exc)
        self.outbox[msg.id] = _Queued(msg, tag)
        self._link.unsent[msg.id] = None
        return self._flush_outbox(now)

    def _flush_outbox(self, now: float) -> list[Action]:
        """Send, in order, every queued message that can go now (§6.3).

        A message for a room waits for that room's JOINED, so a script's
        ``/join dev`` then ``hello`` reaches the room in that order.
        """
        link = self._link
        if self.state != CS.CONNECTED or now < link.hold_until:
            return []
        actions: list[Action] = []
        in_flight = len(self.outbox) - len(link.unsent) - len(link.refused)
        for queue in (link.refused, link.unsent):
            going: list[str] = []
            for msg_id in queue:  # no copy: stops at the window, so no walk of the backlog
                if in_flight >= WINDOW:
                    break
                queued = self.outbox[msg_id].msg
                if isinstance(queued, m.Say):
                    view = self.rooms.get(queued.room)
                    if view is not None and not view.joined:
                        continue
                going.append(msg_id)
                in_flight += 1
            for msg_id in going:
                del queue[msg_id]
                entry = self.outbox[msg_id]
                resend = _with_rid(entry.msg, self._next_rid())
                actions.append(self._request(resend, now, tag=entry.tag))
        return actions

    def _joining(self) -> bool:
        return bool(self._link.syncs) or any(
            isinstance(p.msg, m.Join) for p in self._link.pending.values()
        )

    def _flush_later(self, now: float) -> list[Action]:
        link = self._link
        if self.state != CS.CONNECTED or self._joining() or not self._later:
            return []
        if now < link.hold_until:
            return []
        link.throttled_later = 0
        later, self._later = self._later, []
        actions: list[Action] = []
        for item in later:
            try:
                msg = item.build(self._next_rid())
            except ProtocolError as exc:
                actions += self._failed(item.tag, exc)
                continue
            actions.append(self._request(msg, now, item.show, item.tag))
        return actions

    # ---------------------------------------------------- from the broker

    def on_direct(self, msg: m.Reply | m.Push, now: float) -> list[Action]:
        """A reply or push received on the DEALER."""
        self._link.last_rx = now
        actions = self._on_direct(msg, now)
        return actions + self._maybe_bye(now) if self.quitting else actions

    def _on_direct(self, msg: m.Reply | m.Push, now: float) -> list[Action]:
        if isinstance(msg, m.Push):
            return _PUSHES[type(msg)](self, msg, now)
        pending = self._link.pending.pop(msg.rid, None)
        if pending is None:
            return []  # a reply from before a reconnect: its request was redone
        if isinstance(msg, m.Error):
            return self._on_error(pending, msg, now)
        row = _ROWS[type(pending.msg)]
        if not isinstance(msg, row.reply):
            why = f"the broker answered {pending.msg.TYPE.decode()} with {msg.TYPE.decode()}"
            return self._fail(pending.tag, "bad_reply", why)
        actions = row.on_reply(self, pending, msg, now)
        if pending.tag is not None:
            actions.append(Done(pending.tag, msg))
        return actions

    def _on_invited(self, msg: m.Invited, now: float) -> list[Action]:
        return [Output(Invitation(msg.room, msg.by))]

    def _on_private_event(self, msg: m.PrivateEvent, now: float) -> list[Action]:
        return self._on_event(msg.event, now)

    def _on_ack(self, pending: _Pending, msg: m.Ack, now: float) -> list[Action]:
        entry = self.outbox.pop(msg.id, None)
        self._link.unsent.pop(msg.id, None)
        self._link.waiting = ""  # a message went through: a wait that comes next is news
        shown = self._flush_outbox(now)  # the window has room again
        sent = entry.msg if entry is not None else pending.msg
        view = self.rooms.get(sent.room) if isinstance(sent, m.Say) else None
        if view is not None:
            # Our own line comes back on the SUB; a duplicate was published
            # before a reconnect and may have been missed: fetch it.
            view.acked = max(view.acked, msg.seq)
            if msg.dup and view.joined:
                shown += self._advance(view, msg.seq, now)
        if isinstance(sent, m.Tell) and entry is not None:
            line = DirectLine(self.nick, sent.to, sent.text, now, sent.action, True, sent.id)
            shown.append(Output(line))
            if msg.away:
                shown.append(Output(AwayIs(sent.to, msg.away)))
        return shown

    def _on_pong(self, pending: _Pending, msg: m.Pong, now: float) -> list[Action]:
        actions: list[Action] = []
        for head in msg.heads:  # events lost at the tail of a burst (§6.7)
            view = self.rooms.get(head.room)
            if view is None or not view.joined:
                continue
            drained = self._link.drained_at
            if view.behind > view.last and (drained is None or drained >= view.behind_at):
                # Still behind a heartbeat later, though the SUB queue ran dry
                # meanwhile: the tail was lost, not merely queued.
                actions += self._advance(view, view.behind, now)
            view.behind = head.last if head.last > view.last else 0
            view.behind_at = now
        return actions

    def _on_names(self, pending: _Pending, msg: m.Names, now: float) -> list[Action]:
        view = self.rooms.get(msg.room)
        if view is not None and not msg.more:
            view.members = {nick_key(n): n for n in msg.members}
        if pending.tag is not None:
            return []
        return [Output(Members(msg.room, tuple(msg.members), msg.more, tuple(msg.away)))]

    def _on_room_list(self, pending: _Pending, msg: m.RoomList, now: float) -> list[Action]:
        if pending.tag is not None:
            return []
        rooms = tuple(RoomInfo(r.name, r.members, r.topic) for r in msg.rooms)
        return [Output(RoomListing(rooms, msg.more))]

    def _on_whois(self, pending: _Pending, msg: m.WhoisIs, now: float) -> list[Action]:
        if pending.tag is not None:
            return []
        info = WhoisInfo(msg.nick, msg.online, tuple(msg.rooms), msg.away, msg.idle, msg.seen,
                         msg.key)  # fmt: skip
        return [Output(info)]

    def _on_topic_is(self, pending: _Pending, msg: m.TopicIs, now: float) -> list[Action]:
        req = cast(m.Topic, pending.msg)
        if req.topic is not None or pending.tag is not None:
            return []  # the topic event in the room shows the change
        return [Output(TopicInfo(msg.room, msg.topic))]

    def _on_nick_ok(self, pending: _Pending, msg: m.Ok, now: float) -> list[Action]:
        nick = cast(m.Nick, pending.msg).nick
        self.nick = nick
        return [Output(NickIs(nick))]

    def _on_left(self, pending: _Pending, msg: m.Ok, now: float) -> list[Action]:
        room = cast(m.Leave, pending.msg).room
        return [Output(LeftRoom(room))] if pending.show else []

    def _on_bye_ok(self, pending: _Pending, msg: m.Ok, now: float) -> list[Action]:
        return [Quit(0)]

    def sub_drained(self, now: float) -> None:
        """The transport read the SUB queue empty: whatever a PONG said was ahead
        of us before now is not waiting there (§6.7)."""
        self._link.drained_at = now

    def on_broadcast(self, msg: m.Broadcast, now: float) -> list[Action]:
        """A message received on the SUB socket."""
        actions = self._on_broadcast(msg, now)
        return actions + self._maybe_bye(now) if self.quitting else actions

    def _on_broadcast(self, msg: m.Broadcast, now: float) -> list[Action]:
        if isinstance(msg, m.Event):
            return self._on_event(msg, now)
        if isinstance(msg, m.Beat):
            self._link.last_beat_rx = now
            if msg.epoch and self.epoch and msg.epoch != self.epoch and self.state == CS.CONNECTED:
                # The broker's (shared) store was reset under a running broker: a
                # new session there brings the new epoch in its WELCOME, and
                # with it the reset of our positions (§6.1, §6.7).
                return self._lost("the broker's history was reset", now, same=True)
            return []
        if isinstance(msg, m.Synced):
            rooms = self._link.syncs.pop(msg.token, None)
            if rooms is None:
                return []
            actions: list[Action] = [Unsubscribe(m.sync_topic(msg.token))]
            for room in rooms:
                if room in self.rooms:
                    view = self.rooms[room]
                    history = 0 if view.last else self.history
                    rejoin = view.was_joined and self._rejoin
                    join = m.Join(self._next_rid(), room, history, view.private, rejoin)
                    actions.append(self._request(join, now))
            return actions + self._flush_later(now) + self._flush_outbox(now)
        if isinstance(msg, m.Shutdown):
            return self._lost(f"the broker is going away ({msg.reason})", now, broker_gone=True)
        return []

    def _on_dm(self, dm: m.Dm, now: float) -> list[Action]:
        """Show a DM once, and confirm it so the broker stops delivering it (§6.6)."""
        actions: list[Action] = []
        if dm.id not in self._dm_ids:
            self._dm_ids[dm.id] = None
            if len(self._dm_ids) > 1000:
                self._dm_ids.popitem(last=False)
            if nick_key(dm.sender) not in self.ignored:
                line = DirectLine(
                    dm.sender, dm.to, dm.text, dm.ts, dm.action, False, dm.id, dm.seq
                )
                actions.append(Output(line))
        if dm.seq:
            actions.append(self._request(m.Seen(self._next_rid(), dm.seq), now, show=False))
        return actions

    def _on_welcome(self, pending: _Pending, msg: m.Welcome, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.epoch and msg.epoch != self.epoch:
            # A reset or replaced store: our positions mean nothing there.
            actions.append(Output(Problem("the broker's history was reset; positions start over")))
            for view in self.rooms.values():
                view.last = view.acked = 0
            self._left_at.clear()
        self.epoch, self.session, self.nick = msg.epoch, msg.session, msg.nick
        if msg.boot:  # another broker process than before: our rooms' JOINs are rejoins
            self._rejoin = bool(self._boot) and msg.boot != self._boot
            self._boot = msg.boot
        self.heartbeat, self.timeout = msg.heartbeat, msg.timeout
        self._link.last_beat_rx = now  # BEATs must start within `timeout`, or the SUB is dead
        self._move(CS.CONNECTED)
        if self._lazy_room is not None and not self._lazy_waits:
            # Connected before a person typed anything: take the default room.
            room, self._lazy_room = self._lazy_room, None
            if not self.rooms:
                self.rooms[room] = RoomView(room)
                self.current = room
        # With several brokers to choose from, say which one took us.
        where = f" to {self.endpoint}" if len(self.rotation.endpoints) > 1 else ""
        state = StateChange(CS.CONNECTED, f"connected{where} as {msg.nick}", len(self.outbox))
        actions.append(Output(state))
        pub = msg.pub
        if pub.startswith("tcp://*:"):
            pub = "tcp://" + self.host + ":" + pub.rsplit(":", 1)[1]
        if pub != self.pub:
            self.pub = pub
            actions.append(ConnectSub(pub))
        actions.append(Subscribe(m.CONTROL_TOPIC))
        self.rotation.welcomed()
        actions += self._start_joins(list(self.rooms), now)
        if self.away is not None and not msg.resumed:  # away ends with a session (§6.13)
            text = self.away or "away"
            self._later.insert(0, _Later(lambda rid: m.Away(rid, text), False))
        for gone in sorted(set(msg.rooms) - set(self.rooms)):  # left while disconnected
            actions.append(self._request(m.Leave(self._next_rid(), gone), now, show=False))
        actions += self._flush_later(now)
        return actions + self._flush_outbox(now)  # resent in order; the broker dedupes by id

    def _start_joins(self, rooms: list[str], now: float) -> list[Action]:
        """Subscribe, prove the subscriptions live, then JOIN (§5.2)."""
        if not rooms or self.state != CS.CONNECTED:
            return []
        token = self._new_token()
        self._link.syncs[token] = rooms
        actions: list[Action] = [Subscribe(m.room_topic(r)) for r in rooms]
        actions.append(Subscribe(m.sync_topic(token)))
        return actions

    def _on_joined(self, pending: _Pending, msg: m.Joined, now: float) -> list[Action]:
        view = self.rooms.get(msg.room)
        if view is None:  # left again before the reply came
            return self._flush_later(now) + self._flush_outbox(now)
        actions: list[Action] = []
        if view.private and not msg.private:
            actions.append(Output(Problem(f"#{msg.room} exists already and is not invite-only")))
            view.private = False
        if msg.last < view.last:
            # The room's log is shorter than what we saw: the broker's store was
            # restored from a backup (same epoch, fewer entries). Start over there
            # rather than skip everything until the numbers pass ours again.
            actions.append(Output(Problem(f"#{msg.room}: the broker's history went back; "
                                          "positions start over")))  # fmt: skip
            view.last = view.acked = 0
            view.buffer.clear()
            self._left_at.pop(msg.room, None)
        if not view.last:
            here = len(msg.members) + msg.more
            actions.append(Output(JoinedRoom(msg.room, here, msg.topic)))
            if msg.topic:
                actions.append(Output(TopicInfo(msg.room, msg.topic)))
            # Back in a room we left: what we saw then is still on the screen.
            seen = self._left_at.pop(msg.room, 0)
            seen = 0 if seen > msg.last else seen  # unless the log went back since
            for ev in msg.history:
                if ev.seq > seen:
                    actions += self._show(view, ev, history=True)
            view.last = max(view.last, msg.last)
        view.members = {nick_key(n): n for n in msg.members}
        view.members_at = msg.last
        view.joined = view.was_joined = True
        view.buffer = {s: e for s, e in view.buffer.items() if s > view.last}
        actions += [Done(t, msg) for t in view.tags]
        view.tags.clear()
        actions += self._advance(view, msg.last, now)
        return actions + self._flush_later(now) + self._flush_outbox(now)

    def _on_events(self, pending: _Pending, msg: m.Events, now: float) -> list[Action]:
        view = self.rooms.get(msg.room)
        if not pending.show:  # a gap fetch for a room we are in
            if view is None:
                return []
            view.fetching = False
            first = msg.events[0].seq if msg.events else msg.last + 1
            if first > view.last + 1:  # trimmed from the log: nothing to wait for
                lost = first - view.last - 1
                view.last = first - 1
                notice = Problem(f"#{view.name}: {lost} older event(s) are no longer in history")
                return [Output(notice), *self._gap_filled(view, msg, now)]
            return self._gap_filled(view, msg, now)
        if pending.tag is not None:
            return []
        words = pending.msg.text if isinstance(pending.msg, m.Search) else ""
        shown: list[Action] = [Output(HistoryHeader(msg.room, len(msg.events), search=words))]
        if not msg.events:
            return shown
        shown += [Output(_to_ui(ev, self.nick, history=True)) for ev in self._visible(msg.events)]
        return [*shown, Output(HistoryHeader(msg.room, len(msg.events), True, words))]

    def _visible(self, events: Iterable[m.Event]) -> list[m.Event]:
        """Events minus the messages of ignored nicks."""
        return [e for e in events if not self._hidden(e)]

    def _hidden(self, ev: m.Event) -> bool:
        return ev.kind in ("msg", "action") and nick_key(ev.nick) in self.ignored

    def _gap_filled(self, view: RoomView, msg: m.Events, now: float) -> list[Action]:
        for ev in msg.events:
            if ev.seq > view.last:
                view.buffer[ev.seq] = ev
        return self._advance(view, msg.last, now)

    def _on_event(self, ev: m.Event, now: float) -> list[Action]:
        view = self.rooms.get(ev.room)
        if view is None or ev.seq <= view.last:
            return []  # not ours, or already shown
        if ev.kind == "kick" and nick_key(ev.nick) == nick_key(self.nick) and view.joined:
            # We were removed: the room is no longer ours (§6.11). Say so where
            # the user looks next, not in the window that goes away.
            del self.rooms[ev.room]
            self._left_at[ev.room] = ev.seq
            if self.current == ev.room:
                self.current = next(iter(self.rooms), None)
            kicked = Kicked(ev.room, ev.nick, ev.text, ev.ts, ev.seq)
            return [Output(kicked), Unsubscribe(m.room_topic(ev.room))]
        if ev.seq == view.last + 1 and view.joined and not view.buffer:
            return self._show(view, ev)  # the usual case: the next one, nothing waiting
        view.buffer[ev.seq] = ev
        if not view.joined:
            return []  # merged when JOINED arrives
        return self._advance(view, ev.seq, now)

    def _advance(self, view: RoomView, known_last: int, now: float) -> list[Action]:
        """Show buffered events in order; fetch what is missing up to ``known_last``."""
        actions: list[Action] = []
        while view.last + 1 in view.buffer:
            actions += self._show(view, view.buffer.pop(view.last + 1))
        newest = max([known_last, *view.buffer])
        if newest > view.last and not view.fetching:
            view.fetching = True
            limit = min(MAX_HISTORY, newest - view.last)
            fetch = m.History(self._next_rid(), view.name, after=view.last, limit=limit)
            actions.append(self._request(fetch, now, show=False))
        return actions

    def _show(self, view: RoomView, ev: m.Event, history: bool = False) -> list[Action]:
        view.last = max(view.last, ev.seq)
        if ev.seq > view.members_at:
            view.members_at = ev.seq
            if ev.kind == "join":
                view.members[nick_key(ev.nick)] = ev.nick
            elif ev.kind in ("leave", "kick"):
                view.members.pop(nick_key(ev.nick), None)
            elif ev.kind == "nick" and nick_key(ev.nick) in view.members:
                del view.members[nick_key(ev.nick)]
                view.members[nick_key(ev.text)] = ev.text
        if self._hidden(ev):
            return []
        return [Output(_to_ui(ev, self.nick, history))]

    # -------------------------------------------------------------- errors

    def _on_error(self, pending: _Pending, err: m.Error, now: float) -> list[Action]:
        row = _ROWS[type(pending.msg)]
        if row.on_error is not None:
            handled = row.on_error(self, pending, err, now)
            if handled is not None:
                return handled
        if err.code == Code.NOT_REGISTERED:
            # libzmq re-established the DEALER's connection by itself and the
            # broker sees a new peer: HELLO again, resuming. What was refused
            # stays in the outbox or is asked again.
            if self.state != CS.CONNECTED:
                return []
            return self._lost("the broker no longer knows this connection", now, same=True)
        if err.retry_after > 0:
            return self._wait_and_retry(pending, err, now)
        if row.on_refused is not None:
            return row.on_refused(self, pending, err, now)
        return self._refused(pending, err)

    def _refused(self, pending: _Pending, err: m.Error) -> list[Action]:
        if pending.tag is not None:
            return [Failed(pending.tag, err.code, err.text)]
        return [Output(Problem(f"{err.code}: {err.text}"))]

    def _wait_and_retry(self, pending: _Pending, err: m.Error, now: float) -> list[Action]:
        """Told to wait, not refused (§6.12): keep it, send it again when allowed.

        ``rate_limited`` (too fast) and ``store_unavailable`` (the broker cannot
        store right now) both carry ``retry_after``; one notice per episode.
        """
        link = self._link
        notice: list[Action] = []
        if link.waiting != err.code:
            link.waiting = err.code
            if err.code == "rate_limited":
                why = "sending too fast: the broker asks to slow down; nothing is lost"
            else:
                why = (f"{err.code}: {err.text}; {len(self.outbox)} message(s) kept, "
                       f"sent again in {err.retry_after:g}s")  # fmt: skip
            notice.append(Output(Problem(why)))
        link.hold_until = max(link.hold_until, now + max(err.retry_after, 0.05))
        req = pending.msg
        if isinstance(req, m.Say | m.Tell):
            if req.id in self.outbox:
                link.refused[req.id] = None
        elif not isinstance(req, m.Join) or req.room in self.rooms:
            # Ahead of what was typed since, behind what was throttled before.
            again = _Later(_builder(req), pending.show, pending.tag)
            self._later.insert(link.throttled_later, again)
            link.throttled_later += 1
        return notice

    def _hello_failed(self, pending: _Pending, err: m.Error, now: float) -> list[Action] | None:
        if err.code == "nick_taken" and not self.session:
            return [Output(Problem(f"{err.code}: {err.text}")), Quit(2)]
        # Register anew, after the retry interval (tick), never in a tight loop.
        self.session = ""
        return [Output(Problem(f"{err.code}: {err.text}"))]

    def _bye_failed(self, pending: _Pending, err: m.Error, now: float) -> list[Action] | None:
        return [Quit(0)]

    def _gap_fetch_failed(
        self, pending: _Pending, err: m.Error, now: float
    ) -> list[Action] | None:
        if pending.show:
            return None
        # A gap fetch that failed: fetch again at the next event or PONG head.
        req = cast(m.History, pending.msg)
        view = self.rooms.get(req.room)
        if view is not None:
            view.fetching = False
        if err.retry_after > 0:
            link = self._link
            link.hold_until = max(link.hold_until, now + max(err.retry_after, 0.05))
            return []
        return None

    def _message_refused(self, pending: _Pending, err: m.Error, now: float) -> list[Action]:
        req = cast(m.Say | m.Tell, pending.msg)
        self._drop(req.id)
        return self._refused(pending, err)

    def _join_refused(self, pending: _Pending, err: m.Error, now: float) -> list[Action]:
        req = cast(m.Join, pending.msg)
        problem: list[Action] = [Output(Problem(f"{err.code}: {err.text}"))]
        problem.append(Unsubscribe(m.room_topic(req.room)))
        view = self.rooms.pop(req.room, None)
        if view is not None:
            problem += [Failed(t, err.code, err.text) for t in view.tags]
        stuck = [
            i for i, q in self.outbox.items() if isinstance(q.msg, m.Say) and q.msg.room == req.room
        ]
        for msg_id in stuck:
            tag = self.outbox[msg_id].tag
            if tag is not None:
                problem.append(Failed(tag, err.code, f"#{req.room}: {err.text}"))
            self._drop(msg_id)
        if stuck:
            problem.append(Output(Problem(f"{len(stuck)} message(s) for #{req.room} not sent")))
        if self.current == req.room:
            self.current = next(iter(self.rooms), None)
        return problem + self._flush_later(now) + self._flush_outbox(now)

    # ------------------------------------------------------------- helpers

    def _drop(self, msg_id: str) -> None:
        """Forget a message for good: it is in no queue of the outbox any more."""
        self.outbox.pop(msg_id, None)
        self._link.unsent.pop(msg_id, None)
        self._link.refused.pop(msg_id, None)

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _request(
        self, msg: m.Request, now: float, show: bool = True, tag: Tag | None = None
    ) -> Request:
        self._link.pending[msg.rid] = _Pending(msg, show, tag)
        self._link.last_tx = now
        return Request(msg)


# --------------------------------------------------------- the dispatch table

Handler = Callable[[ClientCore, _Pending, Any, float], list[Action]]
PreHandler = Callable[[ClientCore, _Pending, m.Error, float], "list[Action] | None"]


@dataclass(frozen=True, slots=True)
class _Row:
    """How the core treats one request type's answers.

    ``reply``: the answer expected (anything else is a broker bug, reported);
    ``on_reply``: what that answer does; ``on_error``: runs first on an ERROR
    and may settle it (None: go on); ``on_refused``: for an ERROR that is
    final (not ``not_registered``, no ``retry_after``); default: report it.
    """

    reply: type[m.Reply]
    on_reply: Handler
    on_error: PreHandler | None = None
    on_refused: Handler | None = None


def _nothing(core: ClientCore, pending: _Pending, msg: Any, now: float) -> list[Action]:
    return []


_ROWS: dict[type[m.Request], _Row] = {
    m.Hello: _Row(m.Welcome, ClientCore._on_welcome, ClientCore._hello_failed),
    m.Join: _Row(m.Joined, ClientCore._on_joined, on_refused=ClientCore._join_refused),
    m.Leave: _Row(m.Ok, ClientCore._on_left),
    m.Say: _Row(m.Ack, ClientCore._on_ack, on_refused=ClientCore._message_refused),
    m.Tell: _Row(m.Ack, ClientCore._on_ack, on_refused=ClientCore._message_refused),
    m.Nick: _Row(m.Ok, ClientCore._on_nick_ok),
    m.Topic: _Row(m.TopicIs, ClientCore._on_topic_is),
    m.Who: _Row(m.Names, ClientCore._on_names),
    m.Rooms: _Row(m.RoomList, ClientCore._on_room_list),
    m.History: _Row(m.Events, ClientCore._on_events, ClientCore._gap_fetch_failed),
    m.Seen: _Row(m.Ok, _nothing),
    m.Invite: _Row(m.Ok, _nothing),
    m.Kick: _Row(m.Ok, _nothing),
    m.Ban: _Row(m.Ok, _nothing),
    m.Stats: _Row(m.StatsReply, _nothing),
    m.Ping: _Row(m.Pong, ClientCore._on_pong),
    m.Bye: _Row(m.Ok, ClientCore._on_bye_ok, ClientCore._bye_failed),
    m.Away: _Row(m.Ok, _nothing),
    m.Whois: _Row(m.WhoisIs, ClientCore._on_whois),
    m.Op: _Row(m.Ok, _nothing),
    m.Search: _Row(m.Events, ClientCore._on_events),
}
_PUSHES: dict[type[m.Push], Callable[[ClientCore, Any, float], list[Action]]] = {
    m.Dm: ClientCore._on_dm,
    m.PrivateEvent: ClientCore._on_private_event,
    m.Invited: ClientCore._on_invited,
}


def _redo_after_reconnect(pending: _Pending) -> bool:
    """An API call in flight when the connection went: ask it again on the next one.
    (Messages are in the outbox and joins in ``rooms``: those are redone anyway.)"""
    return pending.tag is not None and not isinstance(
        pending.msg, m.Hello | m.Join | m.Say | m.Tell | m.Bye | m.Ping | m.Seen
    )


def _builder(msg: m.Request) -> Callable[[int], m.Request]:
    """A builder of ``msg`` under a new request id."""
    return lambda rid: _with_rid(msg, rid)


def _with_rid(msg: R, rid: int) -> R:
    """``msg`` again under a new request id (a resend, or a request asked again)."""
    return cast(R, dataclasses.replace(cast(Any, msg), rid=rid))


def _to_ui(ev: m.Event, me: str, history: bool) -> UiEvent:
    if ev.kind in ("msg", "action"):
        mention = nick_key(ev.nick) != nick_key(me) and mentions(ev.text, me)
        return Chat(
            ev.room, ev.nick, ev.text, ev.ts, ev.kind == "action", mention, history, ev.seq, ev.id
        )
    return RoomNotice(ev.room, ev.kind, ev.nick, ev.text, ev.ts, history, ev.seq)


def mentions(text: str, nick: str) -> bool:
    """Whether ``text`` names ``nick`` as a word: ``bob:`` and ``@Bob`` do, ``bobcat`` does not."""
    # Most messages do not contain the nick at all: a substring test decides those.
    return nick.lower() in text.lower() and _mention_pattern(nick).search(text) is not None


@functools.lru_cache(maxsize=4096)
def _mention_pattern(nick: str) -> re.Pattern[str]:
    """Compiled once per nick: a process with many sessions has many nicks, more
    than the re module's own cache holds."""
    pattern = rf"(?<![A-Za-z0-9_.\-]){re.escape(nick)}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_])"
    return re.compile(pattern, re.IGNORECASE)
