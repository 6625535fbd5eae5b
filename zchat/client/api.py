"""zchat's public client API: async sessions, typed events, typed errors, blocking helpers.

Re-exported from ``zchat``; documented with examples in docs/api.md::

    async with zchat.connect("tcp://127.0.0.1:5555", nick="echobot", rooms=["dev"]) as chat:
        async for event in chat:
            if isinstance(event, zchat.Message) and event.text.startswith("!echo "):
                await chat.say(event.room, event.text[len("!echo "):])

A ``Chat`` is one session: a ``ClientCore`` (the sans-I/O logic, with its one
outbox and one reconnect logic) driven by a ``Transport`` on the caller's
asyncio loop. Every session in a process shares one zmq context. The
interactive UI, the plain/JSON line modes and ``zchat send``/``zchat stats``
are built on this same class.

Errors, one tree (``code`` is docs/protocol.md §7's error code, or one of the
client's own codes below)::

    ChatError                       anything this API raises
    ├── InvalidRequest              refused here, before anything was sent (bad_room, empty, ...)
    ├── Refused                     the broker refused the request (not_member, nick_taken, ...)
    ├── AuthFailed                  "auth_failed": the CURVE handshake failed or keys are unusable
    ├── ConnectTimeout              "timeout": no answer from a broker in time
    ├── Closed                      "closed": the session ended before the answer came
    └── NotSupported                "unsupported": this broker cannot answer that yet (kept
                                    for requests a broker may lack; WHOIS is answered now)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import zmq.asyncio

import zchat
from zchat.client import events as ui
from zchat.client.core import Action, ClientCore, Done, Failed, Tag, mentions
from zchat.client.endpoints import split_endpoints
from zchat.client.events import RoomInfo as RoomInfo
from zchat.client.state import ConnectionState as ConnectionState
from zchat.client.transport import Transport
from zchat.keys import ClientKeys, KeyFileError
from zchat.protocol import messages as m
from zchat.protocol.errors import Code, Fault
from zchat.protocol.rules import nick_key, normalize_room

# The public names: the one list is zchat.__all__ (zchat/__init__.py loads them from here).
__all__ = [name for name in zchat.__all__ if name != "__version__"]

# ------------------------------------------------------------------ errors


class ChatError(Exception):
    """A call failed. ``code``: the protocol's error code (§7) or the client's own."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = str(code)
        self.text = text

    @property
    def fault(self) -> Fault | None:
        """Whose fault, as docs/protocol.md §7 says for the protocol's codes (the
        user's, the sender's, the client state's, the broker's); None for the
        client's own codes."""
        known = _CODES.get(self.code)
        return known.fault if known is not None else None


_CODES: dict[str, Code] = {code.value: code for code in Code}


class InvalidRequest(ChatError):
    """Refused by the client itself, before anything was sent: a bad room name,
    an empty or too long text, a bad nick. Fix the call."""


class Refused(ChatError):
    """The broker refused the request (you are not in the room, the nick is
    taken, you are banned, ...)."""


class AuthFailed(ChatError):
    """The broker refused this client's CURVE key, the broker key is wrong, the
    broker requires CURVE and no keys were given, or a key file is unusable."""


class ConnectTimeout(ChatError):
    """No broker answered within the timeout."""


class Closed(ChatError):
    """The session ended (closed, or failed for good) before the call was answered."""


class NotSupported(ChatError):
    """The broker does not answer this request yet."""


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a room, or a direct message (``room`` is None, ``to`` is you).

    ``seq``: its place in the room's log (in your DM inbox for a DM); ``id``:
    the id its sender gave it; ``history``: replayed from the log (on join),
    not live; ``mention``: it names your nick. Your own room messages come
    back too: compare ``nick`` with ``chat.nick``.
    """

    room: str | None
    nick: str
    text: str
    seq: int
    time: float
    id: str
    action: bool = False
    to: str | None = None
    history: bool = False
    mention: bool = False

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError("seq is never negative")


@dataclass(frozen=True, slots=True)
class Joined:
    """``nick`` joined ``room`` (the broker also says so when a client comes back)."""

    room: str
    nick: str
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class Left:
    """``nick`` left ``room``; ``reason``: their quit message, or why the broker
    let them go (e.g. they stopped answering)."""

    room: str
    nick: str
    reason: str
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class Kicked:
    """An operator removed ``nick`` from ``room``; ``reason`` says by whom and why.
    When ``nick`` is yours, you are no longer in the room."""

    room: str
    nick: str
    reason: str
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class NickChanged:
    """``nick`` is now known as ``new_nick`` (seen in ``room``)."""

    room: str
    nick: str
    new_nick: str
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class OpChanged:
    """``nick`` made ``target`` an operator of ``room`` (``op`` false: no longer one)."""

    room: str
    nick: str
    target: str
    op: bool
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class TopicChanged:
    """``nick`` set the topic of ``room``."""

    room: str
    nick: str
    topic: str
    seq: int
    time: float
    history: bool = False


@dataclass(frozen=True, slots=True)
class Invited:
    """``by`` invited you into the private room ``room``: ``await chat.join(room)``."""

    room: str
    by: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The connection state changed: ``connected``, ``reconnecting``, ... (see
    ``ConnectionState``). ``queued``: messages waiting to be sent. Reconnects are
    otherwise invisible: nothing is lost or repeated across them."""

    state: ConnectionState
    text: str
    queued: int = 0


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the client noticed that no call of yours raised: the broker's
    history was reset, events were trimmed from a log, the broker asks to slow
    down (nothing is lost)."""

    text: str


Event = (
    Message
    | Joined
    | Left
    | Kicked
    | NickChanged
    | OpChanged
    | TopicChanged
    | Invited
    | StateChanged
    | Notice
)


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room you are in: what ``chat.join()`` returns."""

    name: str
    topic: str
    members: tuple[str, ...]
    last: int  # the room's latest seq when you joined


@dataclass(frozen=True, slots=True)
class WhoisInfo:
    """What the broker knows of a nick (``chat.whois()``, §6.13).

    ``online``: it has a session; then ``rooms`` (not private rooms you are not
    in), ``away`` ("" when here) and ``idle`` (seconds since it last said
    anything). Offline: ``seen``, when its last session ended (0: unknown).
    ``key``: with CURVE, a fingerprint of the key that owns the nick.
    """

    nick: str
    online: bool
    rooms: tuple[str, ...]
    away: str
    idle: float
    seen: float
    key: str


@dataclass(frozen=True, slots=True)
class Stats:
    """A broker's counters (``zchat.stats()``); ``endpoint``: the broker that answered."""

    started: float
    time: float
    clients: int
    rooms: int
    counters: dict[str, int]
    endpoint: str = ""

    @property
    def uptime(self) -> float:
        return max(0.0, self.time - self.started)


def _room_event(ev: ui.RoomNotice) -> Event:
    if ev.kind == "join":
        return Joined(ev.room, ev.nick, ev.seq, ev.ts, ev.history)
    if ev.kind == "leave":
        return Left(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.history)
    if ev.kind == "kick":
        return Kicked(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.history)
    if ev.kind == "nick":
        return NickChanged(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.history)
    if ev.kind == "op":
        target, op = (ev.text[1:], False) if ev.text.startswith("-") else (ev.text, True)
        return OpChanged(ev.room, ev.nick, target, op, ev.seq, ev.ts, ev.history)
    return TopicChanged(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.history)


def public_event(ev: ui.UiEvent, me: str) -> Event | None:
    """The API event for what the core showed, or None for the UI's own lines."""
    if isinstance(ev, ui.Chat):
        return Message(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.id, ev.action, None,
                       ev.history, ev.mention)  # fmt: skip
    if isinstance(ev, ui.DirectLine):
        if ev.outgoing:
            return None  # dm() returned when it was stored
        return Message(None, ev.sender, ev.text, ev.seq, ev.ts, ev.id, ev.action, ev.to)
    if isinstance(ev, ui.RoomNotice):
        return _room_event(ev)
    if isinstance(ev, ui.Kicked):
        return Kicked(ev.room, ev.nick, ev.text, ev.seq, ev.ts)
    if isinstance(ev, ui.StateChange):
        return StateChanged(ev.state, ev.text, ev.queued)
    if isinstance(ev, ui.Invitation):
        return Invited(ev.room, ev.by)
    if isinstance(ev, ui.Problem):
        return Notice(ev.text)
    return None


def _history_event(ev: m.Event, me: str) -> Event:
    if ev.kind in ("msg", "action"):
        mention = nick_key(ev.nick) != nick_key(me) and mentions(ev.text, me)
        return Message(ev.room, ev.nick, ev.text, ev.seq, ev.ts, ev.id, ev.kind == "action",
                       None, True, mention)  # fmt: skip
    notice = ui.RoomNotice(ev.room, ev.kind, ev.nick, ev.text, ev.ts, True, ev.seq)
    return _room_event(notice)


# ----------------------------------------------------------------- session

_END = object()  # ends the event stream


class Chat:
    """One chat session. Use ``zchat.connect(...)`` (an async context manager).

    Calls are coroutines that return once the broker answered; ``async for
    event in chat`` yields typed events until the session ends. Events queue
    up until read: a program that never reads them should pass
    ``events=False``.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        nick: str,
        rooms: Iterable[str] = (),
        curve_key: str | None = None,
        curve_server_key: str | None = None,
        history: int = 0,
        timeout: float = 10.0,
        quit_wait: float = 10.0,
        events: bool = True,
        context: zmq.asyncio.Context | None = None,
        on_ui: Callable[[ui.UiEvent], None] | None = None,
        core: ClientCore | None = None,
        register: bool = True,
    ) -> None:
        """See ``connect()``. ``on_ui`` and ``core`` are for the client's own
        front ends (the terminal UI and the line modes)."""
        #: The brokers to try, in order (raises ValueError for none or an empty one).
        self.endpoints = split_endpoints(endpoint)
        self.timeout = timeout
        try:
            self._keys = ClientKeys.load(curve_key or "", curve_server_key or "")
        except KeyFileError as exc:
            raise AuthFailed("auth_failed", str(exc)) from None
        self._rooms = list(rooms)
        self.core = core or ClientCore(nick, None, history, quit_wait, register=register)
        self._on_ui = on_ui
        self._events_on = events
        self._events: asyncio.Queue[object] | None = None
        self._calls: dict[Tag, asyncio.Future[m.Reply | None]] = {}
        self._tags = itertools.count(1)
        self._local: Tag | None = None  # the tag of the call being made right now
        self._last_state: ConnectionState | None = None
        self._last_problem = ""
        self._connected: asyncio.Future[None] | None = None
        self.transport = Transport(
            self.core, self.endpoints, self._show, keys=self._keys, on_result=self._answer,
            ctx=context,
        )  # fmt: skip
        self._run: asyncio.Task[int] | None = None
        self.exit_code: int | None = None

    # ---------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Chat:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def begin(self) -> asyncio.Task[int]:
        """Start the session's transport on this loop; returns the task that ends
        with the exit code (0: left cleanly). For front ends; others use ``start()``."""
        if self._run is None:
            loop = asyncio.get_running_loop()
            self._events = asyncio.Queue()
            self._connected = loop.create_future()
            self._run = asyncio.create_task(self.transport.run())
            self._run.add_done_callback(self._ended)
        return self._run

    async def start(self) -> None:
        """Connect, register and join the initial rooms; raises AuthFailed,
        ConnectTimeout or Refused (e.g. ``nick_taken``) when that fails."""
        run = self.begin()
        if not self.core.register:
            return
        assert self._connected is not None
        joins = [asyncio.ensure_future(self.join(room)) for room in self._rooms]
        waiting: set[asyncio.Future[Any]] = {self._connected, *joins}
        try:
            async with asyncio.timeout(self.timeout):
                while waiting:
                    done, _ = await asyncio.wait(
                        waiting | {run}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if run in done:
                        raise self._end_error()
                    waiting -= done
                    for fut in done:
                        fut.result()  # a refused join raises here
        except TimeoutError:
            await self._give_up(joins)
            raise ConnectTimeout(
                "timeout", f"no answer from a broker at {_listed(self.endpoints)} in "
                f"{self.timeout:g}s",
            ) from None  # fmt: skip
        except BaseException:
            await self._give_up(joins)
            raise

    async def _give_up(self, joins: Sequence[asyncio.Future[RoomState]]) -> None:
        for join in joins:
            join.cancel()
        await self._abort()
        for join in joins:  # retrieved, so asyncio does not report them as lost
            if join.done() and not join.cancelled():
                join.exception()

    async def close(self, reason: str = "") -> None:
        """Leave: wait (bounded by ``quit_wait``) until what was said is stored, then BYE."""
        if self._run is None:
            return
        if not self._run.done():
            self.transport.apply(lambda now: self.core.quit(reason, now))
            await asyncio.wait({self._run})

    async def _abort(self) -> None:
        if self._run is not None and not self._run.done():
            self.transport.quit(1)
            await asyncio.wait({self._run})

    def _ended(self, run: asyncio.Task[int]) -> None:
        failure = None if run.cancelled() else run.exception()
        if failure is not None:
            self._last_problem = f"the session failed: {failure!r}"
        self.exit_code = 1 if run.cancelled() or failure else run.result()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(self._end_error())
            self._connected.exception()  # retrieved: start() raises its own
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(self._end_error())  # e.g. AuthFailed, saying why
                fut.exception()
        self._calls.clear()
        if self._events is not None:
            self._push(StateChanged(ConnectionState.CLOSED, "closed", len(self.core.outbox)))
            self._events.put_nowait(_END)

    def _end_error(self) -> ChatError:
        why = self._last_problem or "the session ended"
        run = self._run
        if self.exit_code is None and run is not None and run.done() and not run.cancelled():
            self.exit_code = 1 if run.exception() else run.result()
        if self.exit_code == 3 or self.core.state == ConnectionState.AUTH_FAILED:
            return AuthFailed("auth_failed", why.removeprefix("authentication failed: "))
        if self.exit_code == 2:
            code, _, text = why.partition(": ")
            return Refused(code, text)
        return Closed("closed", why)

    # ---------------------------------------------------------- properties

    @property
    def nick(self) -> str:
        """Your nick now (the broker may have changed its case)."""
        return self.core.nick

    @property
    def endpoint(self) -> str:
        """The broker endpoint connected to now (or tried next) among ``endpoints``."""
        return self.transport.endpoint

    @property
    def state(self) -> ConnectionState:
        return self.core.state

    @property
    def joined(self) -> list[str]:
        """The rooms you are in (or joining)."""
        return list(self.core.rooms)

    # -------------------------------------------------------------- events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._events is None:
            raise RuntimeError("start the session first: async with zchat.connect(...)")
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # every later read ends too
            raise StopAsyncIteration
        return cast(Event, item)

    def _show(self, event: ui.UiEvent) -> None:
        if isinstance(event, ui.Problem):
            self._last_problem = event.text
        elif isinstance(event, ui.StateChange):
            if event.state == ConnectionState.AUTH_FAILED:
                self._last_problem = event.text
            connected = self._connected
            if event.state == ConnectionState.CONNECTED and connected and not connected.done():
                connected.set_result(None)
        if self._on_ui is not None:
            self._on_ui(event)
        public = public_event(event, self.core.nick)
        if public is not None:
            self._push(public)

    def _push(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            if event.state == self._last_state:
                return  # a retry, still the same state
            self._last_state = event.state
        if self._events is not None and self._events_on:
            self._events.put_nowait(event)

    # --------------------------------------------------------------- calls

    def _answer(self, result: Done | Failed) -> None:
        fut = self._calls.pop(result.tag, None)
        if fut is None or fut.done():
            return
        if isinstance(result, Done):
            fut.set_result(result.reply)
        elif result.tag == self._local:
            fut.set_exception(InvalidRequest(result.code, result.text))
        else:
            fut.set_exception(Refused(result.code, result.text))

    async def _call(self, make: Callable[[float, Tag], list[Action]]) -> m.Reply | None:
        if self._run is None or self._run.done():
            raise Closed("closed", "the session is not running")
        tag = next(self._tags)
        fut: asyncio.Future[m.Reply | None] = asyncio.get_running_loop().create_future()
        self._calls[tag] = fut
        self._local = tag
        try:
            self.transport.apply(lambda now: make(now, tag))
        finally:
            self._local = None
        return await fut

    def command(self, line: str) -> None:
        """A line as typed in the terminal client (``/join dev``, ``hello``)."""
        self.transport.feed(line)

    async def say(self, room: str, text: str, *, action: bool = False) -> int:
        """Say ``text`` in ``room``; returns its seq once the broker stored it.

        Kept in the outbox until then: across reconnects, and while the broker
        asks to wait (rate limit, store trouble), it is sent again, never lost.
        """
        reply = await self._call(lambda now, tag: self.core.say(room, text, now, action=action,
                                                                tag=tag))  # fmt: skip
        return cast(m.Ack, reply).seq

    async def dm(self, nick: str, text: str, *, action: bool = False) -> int:
        """Send a direct message to ``nick`` (stored for them if offline); returns
        its seq in their inbox once the broker stored it."""
        reply = await self._call(lambda now, tag: self.core.dm(nick, text, now, action=action,
                                                               tag=tag))  # fmt: skip
        return cast(m.Ack, reply).seq

    async def join(self, room: str, *, private: bool = False) -> RoomState:
        """Join ``room`` (created on first join; ``private``: invite-only)."""
        reply = await self._call(
            lambda now, tag: self.core.join(room, now, private=private, tag=tag)
        )
        if isinstance(reply, m.Joined):
            return RoomState(reply.room, reply.topic, tuple(reply.members), reply.last)
        name = normalize_room(room)  # in the room already: what the client knows of it
        view = self.core.rooms.get(name)
        members = tuple(view.members.values()) if view else ()
        return RoomState(name, "", members, view.last if view else 0)

    async def leave(self, room: str) -> None:
        """Leave ``room``."""
        await self._call(lambda now, tag: self.core.leave(room, now, tag=tag))

    async def history(self, room: str, n: int = 50) -> list[Event]:
        """The last ``n`` events of ``room`` (at most 500), oldest first."""
        reply = await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.History(rid, room, limit=n), now, tag)
        )
        events = cast(m.Events, reply).events
        return [_history_event(ev, self.core.nick) for ev in events]

    async def who(self, room: str) -> list[str]:
        """The nicks in ``room`` (a very big room lists the first ones only)."""
        reply = await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Who(rid, room), now, tag)
        )
        return list(cast(m.Names, reply).members)

    async def rooms(self) -> list[RoomInfo]:
        """Every room on the broker (the ones you may see), with member counts and topics."""
        reply = await self._call(lambda now, tag: self.core.ask(m.Rooms, now, tag))
        return [RoomInfo(r.name, r.members, r.topic) for r in cast(m.RoomList, reply).rooms]

    async def topic(self, room: str) -> str:
        """The topic of ``room`` ("" for none)."""
        reply = await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Topic(rid, room), now, tag)
        )
        return cast(m.TopicIs, reply).topic

    async def set_topic(self, room: str, topic: str) -> None:
        """Set the topic of ``room`` (operators only)."""
        await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Topic(rid, room, topic), now, tag)
        )

    async def change_nick(self, nick: str) -> None:
        """Take the nick ``nick``."""
        await self._call(lambda now, tag: self.core.ask(lambda rid: m.Nick(rid, nick), now, tag))

    async def invite(self, room: str, nick: str) -> None:
        """Let ``nick`` into the private room ``room`` (operators only)."""
        await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Invite(rid, room, nick), now, tag)
        )

    async def kick(self, room: str, nick: str, reason: str = "") -> None:
        """Remove ``nick`` from ``room`` (operators only)."""
        await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Kick(rid, room, nick, reason), now, tag)
        )

    async def ban(self, room: str, nick: str, ban: bool = True) -> None:
        """Keep ``nick`` out of ``room`` (``ban=False`` lifts it; operators only)."""
        await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Ban(rid, room, nick, ban), now, tag)
        )

    async def whois(self, nick: str) -> WhoisInfo:
        """What the broker knows of ``nick``; Refused ``no_such_nick`` if never seen."""
        reply = await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Whois(rid, nick), now, tag)
        )
        got = cast(m.WhoisIs, reply)
        return WhoisInfo(got.nick, got.online, tuple(got.rooms), got.away, got.idle, got.seen,
                         got.key)  # fmt: skip

    async def away(self, text: str = "") -> None:
        """Mark yourself away with ``text`` (shown in ``who``/``whois`` and to DMs), or
        back with "". A state of the session: set again after a reconnect."""
        self.core.away = text or None
        await self._call(lambda now, tag: self.core.ask(lambda rid: m.Away(rid, text), now, tag))

    async def op(self, room: str, nick: str, op: bool = True) -> None:
        """Make ``nick`` an operator of ``room`` (``op=False``: no longer; operators only)."""
        await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Op(rid, room, nick, op), now, tag)
        )

    async def search(self, room: str, text: str, limit: int = 20) -> list[Event]:
        """The newest ``limit`` messages of ``room`` holding every word of ``text``,
        oldest first."""
        reply = await self._call(
            lambda now, tag: self.core.ask(lambda rid: m.Search(rid, room, text, limit), now, tag)
        )
        events = cast(m.Events, reply).events
        return [_history_event(ev, self.core.nick) for ev in events]

    async def stats(self) -> Stats:
        """The broker's counters (STATS, §6.10)."""
        reply = await self._call(lambda now, tag: self.core.ask(m.Stats, now, tag))
        got = cast(m.StatsReply, reply)
        counters = {c.name: c.value for c in got.counters}
        return Stats(got.started, got.time, got.clients, got.rooms, counters)


def connect(
    endpoint: str | Sequence[str],
    *,
    nick: str,
    rooms: Iterable[str] = (),
    curve_key: str | None = None,
    curve_server_key: str | None = None,
    history: int = 0,
    timeout: float = 10.0,
    quit_wait: float = 10.0,
    events: bool = True,
    context: zmq.asyncio.Context | None = None,
) -> Chat:
    """A session with the broker at ``endpoint``, as ``nick``, in ``rooms``.

    ``endpoint``: one broker, or several to fail over between, as a comma-separated
    str (``"tcp://a:5555,tcp://b:5555"``) or a sequence. The session connects to
    the first; when it loses its broker it moves to the next (round robin),
    resumes there and resends what was not acknowledged (docs/protocol.md §6.7).

    ``async with connect(...) as chat`` connects, registers and joins (raising
    AuthFailed, ConnectTimeout or Refused), and leaves cleanly at the end.
    ``curve_key``: this client's secret key file; ``curve_server_key``: the
    broker's public key file or the key itself (40 Z85 characters).
    ``history``: past events of each room replayed on join (with
    ``history=True``). ``timeout``: seconds to connect; ``quit_wait``: how long
    leaving waits for unacknowledged messages. ``events=False``: nobody reads
    the event stream, do not keep events. ``context``: a zmq.asyncio context
    to use; by default every session in the process shares one.
    """
    return Chat(endpoint, nick=nick, rooms=rooms, curve_key=curve_key,
                curve_server_key=curve_server_key, history=history, timeout=timeout,
                quit_wait=quit_wait, events=events, context=context)  # fmt: skip


# ------------------------------------------------------- blocking helpers


@dataclass(frozen=True, slots=True)
class SendReport:
    """What ``send_lines`` did: the seqs of the stored lines; the refused ones
    as (line number, error)."""

    seqs: list[int]
    refused: list[tuple[int, ChatError]]


async def send_lines(
    endpoint: str | Sequence[str],
    nick: str,
    room: str,
    texts: Sequence[str],
    *,
    curve_key: str | None = None,
    curve_server_key: str | None = None,
    timeout: float = 10.0,
) -> SendReport:
    """Say each non-blank text in ``room``, in order, pipelined through the outbox's
    window; a text the rules refuse is skipped and reported, the rest sent.
    Several endpoints are tried in order until one answers."""
    numbered = [(n, t) for n, t in enumerate(texts, start=1) if t.strip()]
    seqs: list[int] = []
    refused: list[tuple[int, ChatError]] = []
    if not numbered:
        return SendReport(seqs, refused)
    chat = Chat(endpoint, nick=nick, curve_key=curve_key, curve_server_key=curve_server_key,
                timeout=timeout, quit_wait=timeout, events=False)  # fmt: skip
    async with chat:
        said = [asyncio.ensure_future(chat.say(room, text)) for _, text in numbered]
        results = await asyncio.gather(*said, return_exceptions=True)
    if chat.exit_code not in (0, None):
        raise Closed("closed", chat._last_problem or "the session ended before every line went")
    for (number, _), result in zip(numbered, results, strict=True):
        if isinstance(result, InvalidRequest):
            refused.append((number, result))
        elif isinstance(result, BaseException):
            raise result
        else:
            seqs.append(result)
    return SendReport(seqs, refused)


def send(
    endpoint: str | Sequence[str],
    room: str,
    text: str | Iterable[str],
    *,
    nick: str = "zchat-send",
    curve_key: str | None = None,
    curve_server_key: str | None = None,
    timeout: float = 10.0,
) -> list[int]:
    """Blocking: connect, say ``text`` (or each text) in ``room``, wait until stored,
    leave. Returns the seqs. Raises ChatError (InvalidRequest for the first text
    the rules refuse, after sending the others)."""
    texts = [text] if isinstance(text, str) else list(text)
    report = _run(send_lines(endpoint, nick, room, texts, curve_key=curve_key,
                             curve_server_key=curve_server_key, timeout=timeout))  # fmt: skip
    if report.refused:
        raise report.refused[0][1]
    return report.seqs


async def fetch_stats(
    endpoint: str | Sequence[str],
    *,
    curve_key: str | None = None,
    curve_server_key: str | None = None,
    timeout: float = 10.0,
) -> Stats:
    """A broker's counters, without registering a session (STATS needs none).
    Several endpoints are tried in order until one answers; ``Stats.endpoint``
    says which."""
    chat = Chat(endpoint, nick="stats", curve_key=curve_key, curve_server_key=curve_server_key,
                timeout=timeout, events=False, register=False)  # fmt: skip
    run = chat.begin()
    try:
        async with asyncio.timeout(timeout):
            asking = asyncio.ensure_future(chat.stats())
            # Ended by the session's end after a timeout: its error is no news.
            asking.add_done_callback(lambda done: done.cancelled() or done.exception())
            await asyncio.wait({asking, run}, return_when=asyncio.FIRST_COMPLETED)
            if asking.done():
                return dataclasses.replace(asking.result(), endpoint=chat.endpoint)
            asking.cancel()
            raise chat._end_error()
    except TimeoutError:
        raise ConnectTimeout(
            "timeout", f"no answer from a broker at {_listed(chat.endpoints)}"
        ) from None
    finally:
        await chat._abort()


def stats(
    endpoint: str | Sequence[str],
    *,
    curve_key: str | None = None,
    curve_server_key: str | None = None,
    timeout: float = 10.0,
) -> Stats:
    """Blocking ``fetch_stats``."""
    return _run(fetch_stats(endpoint, curve_key=curve_key, curve_server_key=curve_server_key,
                            timeout=timeout))  # fmt: skip


T = TypeVar("T")


def _listed(endpoints: Sequence[str]) -> str:
    return ", ".join(endpoints)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("zchat.send()/stats() block: inside a running loop use the async API")
