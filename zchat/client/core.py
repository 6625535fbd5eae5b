"""The client's logic: typed lines and received messages in, actions out. No sockets.

The transport (zchat/client/transport.py) owns the DEALER and SUB sockets and
the clock; it feeds ``ClientCore`` and carries out the actions it returns:
``Request`` (send on the DEALER), ``Subscribe``/``Unsubscribe`` (SUB topics),
``ConnectSub`` (the broadcast endpoint the broker announced), ``Reconnect``,
``Output`` (a UiEvent for the screen) and ``Quit``.

What it guarantees (docs/protocol.md §5-§6): every room event is shown once,
in seq order. Live events that arrive while a join or a gap fetch is under way
are buffered and merged by seq; a gap in seqs triggers a HISTORY fetch; every
SAY/TELL stays in the outbox until acknowledged and is resent after a
reconnect (the broker drops duplicates by message id).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from zchat.client.events import (
    Chat,
    Clear,
    DirectLine,
    Info,
    Problem,
    RoomNotice,
    StateChange,
    UiEvent,
)
from zchat.protocol import ProtocolError
from zchat.protocol import messages as m
from zchat.protocol.rules import MAX_HISTORY, check_nick, check_topic, nick_key, normalize_room

#: Messages in flight at once; more wait in the outbox. Bounds what a
#: throttled client has to resend and keeps its order (§6.12).
WINDOW = 64
R = TypeVar("R", bound=m.Request)

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


Action = Request | Subscribe | Unsubscribe | ConnectSub | Reconnect | Output | Quit

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
    "away": "/away [MESSAGE] - mark yourself away and tell the room; /away again when back",
    "names": "/names [ROOM] - who is in ROOM (same as /who)",
    "clear": "/clear - clear the screen of the current room or query",
    "history": "/history [N] - show the last N messages of the current room",
    "private": "/private ROOM - create (or join) an invite-only room",
    "invite": "/invite NICK - let NICK into the current (private) room; operators only",
    "kick": "/kick NICK [REASON] - remove NICK from the current room; operators only",
    "ban": "/ban NICK - keep NICK out of the current room; operators only",
    "unban": "/unban NICK - lift a ban in the current room; operators only",
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


@dataclass(frozen=True, slots=True)
class _Pending:
    """What a request in flight was for, to interpret its reply."""

    msg: m.Request
    show: bool = True  # False for background requests (pings, gap fetches)


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
    ) -> None:
        self.nick = nick
        self.history = history
        self.current: str | None = room
        #: Set by /query NICK: plain lines go to NICK as DMs instead of the room.
        self.query: str | None = None
        #: Set by /away: the away message ("" for none); None when here.
        self.away: str | None = None
        self.rooms: dict[str, RoomView] = {}
        self.state = "connecting"
        self.session = ""
        self.epoch = ""
        self.pub = ""
        self.heartbeat = 5.0
        self.timeout = 15.0
        #: The host the DEALER connects to: replaces a wildcard in WELCOME.pub.
        self.host = "127.0.0.1"
        self.outbox: OrderedDict[str, m.Say | m.Tell] = OrderedDict()
        self.quitting = False
        self.quit_wait = quit_wait
        self._quit_by = 0.0  # when we give up waiting for acks and quit anyway
        self._quit_reason = ""
        self._bye_sent = False
        self._new_id = new_id
        self._new_token = new_token
        self._rid = 0
        self._pending: dict[int, _Pending] = {}
        # Outbox ids not yet sent on this connection, in order. Kept apart from
        # the outbox so a flush walks only what may still go, not every
        # message in flight.
        self._unsent: OrderedDict[str, None] = OrderedDict()
        # Refused by the rate limit, in the order sent: they go again first,
        # once the broker's retry-after (`_hold_until`) has passed (§6.12).
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._hold_until = 0.0
        self._throttled_later = 0  # how many of `_later` are throttled requests, at its front
        # Requests asked for before they could go (not connected, joining, throttled),
        # each with whether its answer is shown (False: a background request).
        self._later: list[tuple[Callable[[int], m.Request], bool]] = []
        self._retry = 2.0  # seconds before a HELLO is tried again; doubles to 32
        # Ids of DMs shown lately: an unconfirmed DM comes again after a reconnect.
        self._dm_ids: OrderedDict[str, None] = OrderedDict()
        self._syncs: dict[str, list[str]] = {}  # sync token -> rooms waiting to JOIN
        self._last_rx = 0.0  # when the DEALER last heard from the broker
        self._last_beat_rx = 0.0  # when the SUB last heard a BEAT
        self._last_tx = 0.0
        if room is not None:
            self.rooms[room] = RoomView(room)

    # ------------------------------------------------------------ lifecycle

    def connecting(self, endpoint: str, now: float) -> list[Action]:
        """The transport (re)created its DEALER: say HELLO, resuming if we can."""
        self.state = "connecting"
        self._pending.clear()
        self._unsent = OrderedDict.fromkeys(self.outbox)
        self._refused.clear()
        self._hold_until = 0.0
        self._throttled_later = 0
        self._bye_sent = False
        self._syncs.clear()
        self._last_rx = self._last_beat_rx = self._last_tx = now
        for view in self.rooms.values():
            view.joined = view.fetching = False
            view.buffer.clear()
        return [
            Output(StateChange("connecting", f"connecting to {endpoint} ...")),
            self._request(m.Hello(self._next_rid(), self.nick, self.session), now, show=True),
        ]

    @property
    def idle(self) -> bool:
        """Nothing in flight: no unacknowledged message, no unanswered request."""
        return (
            not self.outbox
            and not self._syncs
            and not self._later
            and not any(p.show for p in self._pending.values())
            and all(v.last >= v.acked for v in self.rooms.values() if v.joined)
        )

    def tick(self, now: float) -> list[Action]:
        """Heartbeats (§6.7): ping when idle, give up on a silent broker."""
        if self.quitting and now >= self._quit_by:
            left = len(self.outbox)
            why = f"{left} message(s) were not acknowledged" if left else "no answer to BYE"
            return [Output(Problem(f"gave up waiting: {why}")), Quit(1)]
        if self.state != "ready":
            if now - self._last_tx < self._retry:
                return []
            self._retry = min(self._retry * 2, 32.0)
            return [Reconnect("no answer yet")]
        if now - self._last_rx > self.timeout:
            return self._lost("the broker stopped answering", now)
        if self._last_beat_rx and now - self._last_beat_rx > self.timeout:
            return self._lost("the broadcast socket went silent", now)
        if self._hold_until and now >= self._hold_until:
            self._hold_until = 0.0
            return self._flush_later(now) + self._flush_outbox(now)
        if now - self._last_tx >= self.heartbeat:
            return [self._request(m.Ping(self._next_rid()), now, show=False)]
        return []

    def next_deadline(self) -> float:
        if self.state != "ready":
            soonest = self._last_tx + self._retry
        else:
            soonest = min(self._last_tx + self.heartbeat, self._last_rx + self.timeout)
            if self._hold_until:
                soonest = min(soonest, self._hold_until)
        return min(soonest, self._quit_by) if self.quitting else soonest

    def auth_failed(self, why: str) -> list[Action]:
        """The CURVE handshake failed: retrying cannot help, so say so and stop."""
        self.state = "auth_failed"
        return [Output(StateChange("auth_failed", f"authentication failed: {why}")), Quit(3)]

    def _lost(self, why: str, now: float) -> list[Action]:
        if self.quitting and self._bye_sent:
            return [Quit(0)]  # we were leaving anyway; the broker ends the session
        self.state = "reconnecting"
        self.pub = ""  # the transport drops the SUB too; WELCOME names the endpoint again
        return [Output(StateChange("reconnecting", f"{why}; reconnecting ...")), Reconnect(why)]

    # --------------------------------------------------------------- input

    def command(self, line: str, now: float) -> list[Action]:
        """A line the user typed: a chat line for the current room or a /command."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return []
        if line.strip() == "exit":
            return self._quit("", now)
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            return self._say_current(text, False, now)
        verb, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        handler = getattr(self, f"_cmd_{verb.lower()}", None)
        if handler is None:
            return [Output(Problem(f"unknown command /{verb}; /help lists them"))]
        actions: list[Action] = handler(rest, now)
        return actions

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
        return self._simple(lambda rid: build(rid, room, nick, reason.strip()), now)

    def _cmd_join(self, rest: str, now: float, private: bool = False) -> list[Action]:
        if not rest or " " in rest:
            return self._usage("join")
        try:
            room = normalize_room(rest)
        except ProtocolError as exc:
            return [Output(Problem(exc.text))]
        self.current = room
        self.query = None
        if room in self.rooms:
            return [Output(Info(f"now talking in #{room}"))]
        self.rooms[room] = RoomView(room, private=private)
        return self._start_joins([room], now)

    def _cmd_leave(self, rest: str, now: float) -> list[Action]:
        target = rest or self.current
        if not target:
            return self._usage("leave")
        try:
            room = normalize_room(target)
        except ProtocolError as exc:
            return [Output(Problem(exc.text))]
        if room not in self.rooms:
            return [Output(Problem(f"you are not in #{room}"))]
        view = self.rooms.pop(room)
        if self.current == room:
            self.current = next(iter(self.rooms), None)
        actions: list[Action] = [Unsubscribe(m.room_topic(room))]
        # Still syncing: no JOIN went out, so there is nothing to leave. Not
        # connected: the resumed WELCOME lists the room and we leave it then.
        if self.state == "ready" and (view.joined or self._join_in_flight(room)):
            actions.append(self._request(m.Leave(self._next_rid(), room), now))
        return actions

    def _join_in_flight(self, room: str) -> bool:
        return any(isinstance(p.msg, m.Join) and p.msg.room == room for p in self._pending.values())

    def _cmd_msg(self, rest: str, now: float) -> list[Action]:
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            return self._usage("msg")
        return self._send_outbox(lambda rid, mid: m.Tell(rid, to, mid, text), now)

    def _cmd_me(self, rest: str, now: float) -> list[Action]:
        if not rest:
            return self._usage("me")
        return self._say_current(rest, True, now)

    def _cmd_nick(self, rest: str, now: float) -> list[Action]:
        if not rest or " " in rest:
            return self._usage("nick")
        return self._simple(lambda rid: m.Nick(rid, rest), now)

    def _cmd_who(self, rest: str, now: float) -> list[Action]:
        room = rest or self.current
        if not room:
            return self._usage("who")
        return self._simple(lambda rid: m.Who(rid, room), now)

    def _cmd_rooms(self, rest: str, now: float) -> list[Action]:
        return self._simple(m.Rooms, now)

    def _cmd_topic(self, rest: str, now: float) -> list[Action]:
        room = self.current
        if not room:
            return [Output(Problem("join a room first"))]
        return self._simple(lambda rid: m.Topic(rid, room, rest or None), now)

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
        """Away is local (the status line) plus an action line in the current room."""
        if self.away is not None and not rest:
            self.away = None
            told = "is back"
        else:
            self.away = rest
            told = f"is away: {rest}" if rest else "is away"
        note = "you are back" if self.away is None else "you are away; /away again when back"
        shown: list[Action] = [Output(Info(note))]
        room = self.current
        if room is None:
            return shown
        return shown + self._send_outbox(lambda rid, mid: m.Say(rid, room, mid, told, True), now)

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
        return self._simple(lambda rid: m.History(rid, room, limit=count), now)

    def _cmd_help(self, rest: str, now: float) -> list[Action]:
        verb = rest.lstrip("/").lower()
        if verb:
            text = HELP.get(verb)
            return [Output(Info(text) if text else Problem(f"no command /{verb}"))]
        lines = [Info("commands (plain text goes to the current room):")]
        lines += [Info("  " + text) for text in HELP.values()]
        return [Output(e) for e in lines]

    def _cmd_quit(self, rest: str, now: float) -> list[Action]:
        return self._quit(rest, now)

    def _quit(self, reason: str, now: float) -> list[Action]:
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

    def _maybe_bye(self, now: float) -> list[Action]:
        if not self.quitting or self._bye_sent:
            return []
        if self.state != "ready":  # no session to end; quit unless input still waits
            return [] if self.outbox or self._later else [Quit(0)]
        if not self.idle:
            return []
        self._bye_sent = True
        return [self._request(m.Bye(self._next_rid(), self._quit_reason), now)]

    def _say_current(self, text: str, action: bool, now: float) -> list[Action]:
        to = self.query
        if to is not None:
            return self._send_outbox(lambda rid, mid: m.Tell(rid, to, mid, text, action), now)
        room = self.current
        if room is None:
            return [Output(Problem("you are in no room: /join one first"))]
        return self._send_outbox(lambda rid, mid: m.Say(rid, room, mid, text, action), now)

    def _send_outbox(self, build: Callable[[int, str], m.Say | m.Tell], now: float) -> list[Action]:
        try:
            msg = build(self._next_rid(), self._new_id())
        except ProtocolError as exc:
            return [Output(Problem(exc.text))]
        self.outbox[msg.id] = msg
        self._unsent[msg.id] = None
        return self._flush_outbox(now)

    def _flush_outbox(self, now: float) -> list[Action]:
        """Send, in order, every queued message that can go now (§6.3).

        A message for a room waits for that room's JOINED, so a script's
        ``/join dev`` then ``hello`` reaches the room in that order.
        """
        if self.state != "ready" or now < self._hold_until:
            return []
        actions: list[Action] = []
        in_flight = len(self.outbox) - len(self._unsent) - len(self._refused)
        for queue in (self._refused, self._unsent):
            going: list[str] = []
            for msg_id in queue:  # no copy: stops at the window, so no walk of the backlog
                if in_flight >= WINDOW:
                    break
                queued = self.outbox[msg_id]
                if isinstance(queued, m.Say):
                    view = self.rooms.get(queued.room)
                    if view is not None and not view.joined:
                        continue
                going.append(msg_id)
                in_flight += 1
            for msg_id in going:
                del queue[msg_id]
                actions.append(self._request(_with_rid(self.outbox[msg_id], self._next_rid()), now))
        return actions

    def _simple(self, build: Callable[[int], m.Request], now: float) -> list[Action]:
        try:
            msg = build(self._next_rid())
        except ProtocolError as exc:
            return [Output(Problem(exc.text))]
        if self.state != "ready" or self._joining() or now < self._hold_until:
            # Keep the order the user typed: after the connection, the joins and
            # any rate-limit wait.
            self._later.append((build, True))
            return []
        return [self._request(msg, now)]

    def _joining(self) -> bool:
        return bool(self._syncs) or any(isinstance(p.msg, m.Join) for p in self._pending.values())

    def _flush_later(self, now: float) -> list[Action]:
        if self.state != "ready" or self._joining() or not self._later:
            return []
        if now < self._hold_until:
            return []
        self._throttled_later = 0
        later, self._later = self._later, []
        return [self._request(build(self._next_rid()), now, show) for build, show in later]

    # ---------------------------------------------------- from the broker

    def on_direct(self, msg: m.Reply | m.Push, now: float) -> list[Action]:
        """A reply or push received on the DEALER."""
        self._last_rx = now
        actions = self._on_direct(msg, now)
        return actions + self._maybe_bye(now) if self.quitting else actions

    def _on_direct(self, msg: m.Reply | m.Push, now: float) -> list[Action]:
        if isinstance(msg, m.Dm):
            return self._on_dm(msg, now)
        if isinstance(msg, m.PrivateEvent):
            return self._on_event(msg.event, now)
        if isinstance(msg, m.Invited):
            text = f"{msg.by} invited you to #{msg.room}: /join {msg.room}"
            return [Output(Info(text))]
        assert isinstance(msg, m.Reply)
        pending = self._pending.pop(msg.rid, None)
        if pending is None:
            return []  # a reply from before a reconnect: its request was redone
        req = pending.msg
        if isinstance(msg, m.Error):
            return self._on_error(req, msg, pending.show, now)
        if isinstance(msg, m.Welcome):
            return self._on_welcome(msg, now)
        if isinstance(msg, m.Joined):
            return self._on_joined(msg, now)
        if isinstance(msg, m.Events):
            return self._on_events(msg, pending.show, now)
        if isinstance(msg, m.Ack):
            sent = self.outbox.pop(msg.id, None)
            self._unsent.pop(msg.id, None)
            shown = self._flush_outbox(now)  # the window has room again
            view = self.rooms.get(sent.room) if isinstance(sent, m.Say) else None
            if view is not None:
                # Our own line comes back on the SUB; a duplicate was published
                # before a reconnect and may have been missed: fetch it.
                view.acked = max(view.acked, msg.seq)
                if msg.dup and view.joined:
                    shown += self._advance(view, msg.seq, now)
            if isinstance(sent, m.Tell):
                shown.append(
                    Output(DirectLine(self.nick, sent.to, sent.text, now, sent.action, True))
                )
            return shown
        if isinstance(msg, m.Pong):
            actions: list[Action] = []
            for head in msg.heads:  # events lost at the tail of a burst (§6.7)
                view = self.rooms.get(head.room)
                if view is not None and view.joined and head.last > view.last:
                    actions += self._advance(view, head.last, now)
            return actions
        if isinstance(msg, m.Names):
            view = self.rooms.get(msg.room)
            if view is not None and not msg.more:
                view.members = {nick_key(n): n for n in msg.members}
            names = ", ".join(msg.members) or "nobody"
            more = f" and {msg.more} more" if msg.more else ""
            return [Output(Info(f"#{msg.room}: {names}{more}"))]
        if isinstance(msg, m.RoomList):
            if not msg.rooms:
                return [Output(Info("no rooms yet: /join one"))]
            lines: list[Action] = [
                Output(Info(f"#{r.name} ({r.members})" + (f" - {r.topic}" if r.topic else "")))
                for r in msg.rooms
            ]
            if msg.more:
                lines.append(Output(Info(f"... and {msg.more} more rooms")))
            return lines
        if isinstance(msg, m.TopicIs):
            if isinstance(req, m.Topic) and req.topic is not None:
                return []  # the topic event in the room shows the change
            return [Output(Info(f"topic of #{msg.room}: {msg.topic or '(none)'}"))]
        if isinstance(msg, m.Ok):
            if isinstance(req, m.Nick):
                self.nick = req.nick
                return [Output(Info(f"you are now {req.nick}"))]
            if isinstance(req, m.Leave):
                return [Output(Info(f"you left #{req.room}"))]
            if isinstance(req, m.Bye):
                return [Quit(0)]
        return []

    def on_broadcast(self, msg: m.Broadcast, now: float) -> list[Action]:
        """A message received on the SUB socket."""
        actions = self._on_broadcast(msg, now)
        return actions + self._maybe_bye(now) if self.quitting else actions

    def _on_broadcast(self, msg: m.Broadcast, now: float) -> list[Action]:
        if isinstance(msg, m.Event):
            return self._on_event(msg, now)
        if isinstance(msg, m.Beat):
            self._last_beat_rx = now
            return []
        if isinstance(msg, m.Synced):
            rooms = self._syncs.pop(msg.token, None)
            if rooms is None:
                return []
            actions: list[Action] = [Unsubscribe(m.sync_topic(msg.token))]
            for room in rooms:
                if room in self.rooms:
                    view = self.rooms[room]
                    history = 0 if view.last else self.history
                    join = m.Join(self._next_rid(), room, history, view.private)
                    actions.append(self._request(join, now))
            return actions + self._flush_later(now) + self._flush_outbox(now)
        if isinstance(msg, m.Shutdown):
            return self._lost(f"the broker is going away ({msg.reason})", now)
        return []

    def _on_dm(self, dm: m.Dm, now: float) -> list[Action]:
        """Show a DM once, and confirm it so the broker stops delivering it (§6.6)."""
        actions: list[Action] = []
        if dm.id not in self._dm_ids:
            self._dm_ids[dm.id] = None
            if len(self._dm_ids) > 1000:
                self._dm_ids.popitem(last=False)
            actions.append(Output(DirectLine(dm.sender, dm.to, dm.text, dm.ts, dm.action, False)))
        if dm.seq:
            actions.append(self._request(m.Seen(self._next_rid(), dm.seq), now, show=False))
        return actions

    def _on_welcome(self, msg: m.Welcome, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.epoch and msg.epoch != self.epoch:
            # A reset or replaced store: our positions mean nothing there.
            actions.append(Output(Problem("the broker's history was reset; positions start over")))
            for view in self.rooms.values():
                view.last = view.acked = 0
        self.epoch, self.session, self.nick = msg.epoch, msg.session, msg.nick
        self.heartbeat, self.timeout = msg.heartbeat, msg.timeout
        self._last_beat_rx = now  # BEATs must start within `timeout`, or the SUB is dead
        self.state = "ready"
        actions.append(Output(StateChange("connected", f"connected as {msg.nick}")))
        pub = msg.pub
        if pub.startswith("tcp://*:"):
            pub = "tcp://" + self.host + ":" + pub.rsplit(":", 1)[1]
        if pub != self.pub:
            self.pub = pub
            actions.append(ConnectSub(pub))
        actions.append(Subscribe(m.CONTROL_TOPIC))
        self._retry = 2.0
        actions += self._start_joins(list(self.rooms), now)
        for gone in sorted(set(msg.rooms) - set(self.rooms)):  # left while disconnected
            actions.append(self._request(m.Leave(self._next_rid(), gone), now, show=False))
        actions += self._flush_later(now)
        return actions + self._flush_outbox(now)  # resent in order; the broker dedupes by id

    def _start_joins(self, rooms: list[str], now: float) -> list[Action]:
        """Subscribe, prove the subscriptions live, then JOIN (§5.2)."""
        if not rooms or self.state != "ready":
            return []
        token = self._new_token()
        self._syncs[token] = rooms
        actions: list[Action] = [Subscribe(m.room_topic(r)) for r in rooms]
        actions.append(Subscribe(m.sync_topic(token)))
        return actions

    def _on_joined(self, msg: m.Joined, now: float) -> list[Action]:
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
        if not view.last:
            here = len(msg.members) + msg.more
            actions.append(Output(Info(f"joined #{msg.room} ({here} here)")))
            if msg.topic:
                actions.append(Output(Info(f"topic of #{msg.room}: {msg.topic}")))
            for ev in msg.history:
                actions += self._show(view, ev, history=True)
            view.last = max(view.last, msg.last)
        view.members = {nick_key(n): n for n in msg.members}
        view.members_at = msg.last
        view.joined = True
        view.buffer = {s: e for s, e in view.buffer.items() if s > view.last}
        actions += self._advance(view, msg.last, now)
        return actions + self._flush_later(now) + self._flush_outbox(now)

    def _on_events(self, msg: m.Events, show: bool, now: float) -> list[Action]:
        view = self.rooms.get(msg.room)
        if not show:  # a gap fetch for a room we are in
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
        if not msg.events:
            return [Output(Info(f"no history in #{msg.room}"))]
        return [Output(_to_ui(ev, self.nick, history=True)) for ev in msg.events]

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
            # We were removed: the room is no longer ours (§6.11).
            del self.rooms[ev.room]
            if self.current == ev.room:
                self.current = next(iter(self.rooms), None)
            return [Output(_to_ui(ev, self.nick, False)), Unsubscribe(m.room_topic(ev.room))]
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
        return [Output(_to_ui(ev, self.nick, history))]

    def _on_error(self, req: m.Request, err: m.Error, show: bool, now: float) -> list[Action]:
        if isinstance(req, m.History) and not show:
            # A gap fetch that failed: fetch again at the next event or PONG head.
            view = self.rooms.get(req.room)
            if view is not None:
                view.fetching = False
            if err.code == "rate_limited":
                self._hold_until = max(self._hold_until, now + max(err.retry_after, 0.05))
                return []
        if isinstance(req, m.Hello):
            if err.code == "nick_taken" and not self.session:
                return [Output(Problem(f"{err.code}: {err.text}")), Quit(2)]
            # Register anew, after the retry interval (tick), never in a tight loop.
            self.session = ""
            return [Output(Problem(f"{err.code}: {err.text}"))]
        if err.code == "not_registered":
            # libzmq re-established the DEALER's connection by itself and the
            # broker sees a new peer: HELLO again, resuming. What was refused
            # stays in the outbox or is asked again.
            if self.state != "ready":
                return []
            return self._lost("the broker no longer knows this connection", now)
        if err.code == "rate_limited":
            # Throttled, not refused: keep it and send it again when allowed (§6.12).
            notice: list[Action] = []
            if now >= self._hold_until:
                why = "sending too fast: the broker asks to slow down; nothing is lost"
                notice.append(Output(Problem(why)))
            self._hold_until = max(self._hold_until, now + max(err.retry_after, 0.05))
            if isinstance(req, (m.Say, m.Tell)):
                if req.id in self.outbox:
                    self._refused[req.id] = None
            elif not isinstance(req, m.Join) or req.room in self.rooms:
                # Ahead of what was typed since, behind what was throttled before.
                build = functools.partial(_with_rid, req)
                self._later.insert(self._throttled_later, (build, show))
                self._throttled_later += 1
            return notice
        if isinstance(req, (m.Say, m.Tell)):
            self._drop(req.id)
            return [Output(Problem(f"{err.code}: {err.text}"))]
        if isinstance(req, m.Bye):
            return [Quit(0)]
        problem: list[Action] = [Output(Problem(f"{err.code}: {err.text}"))]
        if isinstance(req, m.Join):
            problem.append(Unsubscribe(m.room_topic(req.room)))
            self.rooms.pop(req.room, None)
            stuck = [
                i for i, q in self.outbox.items() if isinstance(q, m.Say) and q.room == req.room
            ]
            for msg_id in stuck:
                self._drop(msg_id)
            if stuck:
                problem.append(Output(Problem(f"{len(stuck)} message(s) for #{req.room} not sent")))
            if self.current == req.room:
                self.current = next(iter(self.rooms), None)
            return problem + self._flush_later(now) + self._flush_outbox(now)
        return problem

    # ------------------------------------------------------------- helpers

    def _drop(self, msg_id: str) -> None:
        """Forget a message for good: it is in no queue of the outbox any more."""
        self.outbox.pop(msg_id, None)
        self._unsent.pop(msg_id, None)
        self._refused.pop(msg_id, None)

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _request(self, msg: m.Request, now: float, show: bool = True) -> Request:
        self._pending[msg.rid] = _Pending(msg, show)
        self._last_tx = now
        return Request(msg)


def _with_rid(msg: R, rid: int) -> R:
    """``msg`` again under a new request id (a resend, or a request asked again)."""
    return cast(R, dataclasses.replace(cast(Any, msg), rid=rid))


def _to_ui(ev: m.Event, me: str, history: bool) -> UiEvent:
    if ev.kind in ("msg", "action"):
        mention = nick_key(ev.nick) != nick_key(me) and mentions(ev.text, me)
        return Chat(ev.room, ev.nick, ev.text, ev.ts, ev.kind == "action", mention, history, ev.seq)
    return RoomNotice(ev.room, ev.kind, ev.nick, ev.text, ev.ts, history, ev.seq)


def mentions(text: str, nick: str) -> bool:
    """Whether ``text`` names ``nick`` as a word: ``bob:`` and ``@Bob`` do, ``bobcat`` does not."""
    pattern = rf"(?<![A-Za-z0-9_.\-]){re.escape(nick)}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_])"
    return re.search(pattern, text, re.IGNORECASE) is not None
