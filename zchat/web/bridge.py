"""The web door's translation, with no sockets: JSON from a page in, broker requests out.

One ``Bridge`` per WebSocket connection (docs/web.md). It turns the page's
JSON messages into requests, exactly as a DEALER would send them, and the
broker's replies, pushes and room events into JSON for the page. What it
does besides translating, so that the page stays simple and the broker sees
an ordinary client:

- request ids: the page numbers its requests as it likes (``rid``, optional);
  the bridge gives each request a fresh broker ``rid`` and puts the page's
  back on the reply;
- ``rate_limited`` and ``store_unavailable`` (docs/protocol.md §6.12, §6.4):
  the refused request is held and sent again after ``retry_after``, in the
  order it was first sent; the page never sees these errors;
- keep-alive: a ``PING`` every ``heartbeat`` seconds while the connection is
  open (§6.7), its ``PONG`` heads forwarded so the page can fetch gaps;
- room membership, to know which published events are this page's;
- logins: with an allow-list broker ``hello`` must carry the account's
  password, the nick is the account's name and the session's user is
  ``account:NAME`` (the account owns its nick, §6.11).

Every method returns the JSON texts to send to the page; the door moves them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zchat.broker.doors import DoorRequest
from zchat.protocol import Code, ProtocolError, encode
from zchat.protocol import messages as m
from zchat.protocol.rules import nick_key

#: A login check: (name, password) -> the account's name as the accounts file
#: spells it, or "" when they do not match an account.
Verify = Callable[[str, str], str]
#: Failed logins one connection may make; the door closes it at the next.
MAX_LOGIN_FAILURES = 3
#: Refused requests held for a resend per connection; past it the page gets the
#: error itself (a page keeps at most a few hundred in flight; a flood is not held).
MAX_HELD = 256

#: Largest JSON message a page may send (a 4,000-byte text escaped as \uXXXX fits).
MAX_MESSAGE_BYTES = 32 * 1024

_SAYING = frozenset({"msg", "action"})  # events that change nothing about the session
_RETRYABLE = frozenset({Code.RATE_LIMITED.value, Code.STORE_UNAVAILABLE.value})


class BadMessage(Exception):
    """What the page sent is not a message of docs/web.md (its fault)."""


@dataclass(frozen=True, slots=True)
class _Row:
    """How one page message type becomes a request: its class and its fields."""

    cls: type[m.Request]
    fields: tuple[str, ...]


_ROWS: dict[str, _Row] = {
    "hello": _Row(m.Hello, ("nick", "resume", "id")),
    "join": _Row(m.Join, ("room", "history", "private", "rejoin")),
    "leave": _Row(m.Leave, ("room",)),
    "say": _Row(m.Say, ("room", "id", "text", "action")),
    "tell": _Row(m.Tell, ("to", "id", "text", "action")),
    "nick": _Row(m.Nick, ("nick",)),
    "topic": _Row(m.Topic, ("room", "topic")),
    "who": _Row(m.Who, ("room",)),
    "rooms": _Row(m.Rooms, ()),
    "history": _Row(m.History, ("room", "after", "before", "limit")),
    "seen": _Row(m.Seen, ("seq",)),
    "invite": _Row(m.Invite, ("room", "nick")),
    "kick": _Row(m.Kick, ("room", "nick", "reason")),
    "ban": _Row(m.Ban, ("room", "nick", "ban")),
    "away": _Row(m.Away, ("text",)),
    "whois": _Row(m.Whois, ("nick",)),
    "op": _Row(m.Op, ("room", "nick", "op")),
    "search": _Row(m.Search, ("room", "text", "limit")),
    "ping": _Row(m.Ping, ()),
    "bye": _Row(m.Bye, ("reason",)),
}

#: Fields of broker messages the page has no use for.
_HIDDEN: dict[type[m.Message], tuple[str, ...]] = {m.Welcome: ("pub",)}


def to_json(msg: m.Message, rid: int | None = None) -> str:
    """A broker message as the page gets it: its fields plus ``type`` (docs/web.md)."""
    if isinstance(msg, m.PrivateEvent):
        msg = msg.event  # a private room's event reads like any other
    body: dict[str, Any] = {"type": msg.TYPE.decode().lower()}
    body.update(_plain(msg))
    for name in _HIDDEN.get(type(msg), ()):
        body.pop(name, None)
    if "rid" in body:
        body["rid"] = rid
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(record: object) -> dict[str, Any]:
    """A message's fields as JSON values; records inside lists become objects.

    Faster than ``dataclasses.asdict`` (no deep copies): every delivery to a
    page goes through here.
    """
    cls = type(record)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(record))  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [_plain(v) for v in value]
        elif dataclasses.is_dataclass(value):
            value = _plain(value)
        out[name] = value
    return out


def error_json(rid: int | None, code: str, text: str) -> str:
    body = {"type": "error", "rid": rid, "code": code, "text": text, "retry_after": 0.0}
    return json.dumps(body, separators=(",", ":"))


def parse(text: str) -> tuple[str, int | None, dict[str, Any]]:
    """The type, the page's rid and the fields of one page message; BadMessage if it is none."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise BadMessage("message too long")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    except RecursionError:  # "[[[[...": nested deeper than the parser goes
        raise BadMessage("not JSON: nested too deep") from None
    if not isinstance(body, dict):
        raise BadMessage("a message is a JSON object")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _ROWS:
        raise BadMessage(f"unknown type {str(kind)[:20]!r}")
    rid = body.get("rid")
    if rid is not None and (
        not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2**53
    ):
        raise BadMessage("rid must be an integer from 0 to 2^53")
    return kind, rid, body


def build(kind: str, rid: int, body: dict[str, Any]) -> m.Request:
    """The request for one page message; ProtocolError (its code) if a field is wrong."""
    row = _ROWS[kind]
    args: dict[str, Any] = {}
    for name in row.fields:
        if name in body:
            args[name] = body[name]
    hints = {f.name: f.type for f in dataclasses.fields(row.cls)}  # type: ignore[arg-type]
    for name, value in args.items():
        want = hints[name]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str | None": value is None or isinstance(value, str),
        }.get(str(want), False)
        if not ok:
            raise ProtocolError(Code.BAD_REQUEST, f"{kind}.{name} must be {want}")
    try:
        return row.cls(rid=rid, **args)  # type: ignore[call-arg]
    except TypeError:  # a field without a default is missing
        missing = [f for f in row.fields if f not in args]
        raise ProtocolError(Code.BAD_REQUEST, f"{kind} needs {', '.join(missing)}") from None


@dataclass(slots=True)
class _Held:
    """A request the broker refused for now (rate limit, store down): sent again at ``due``."""

    due: float
    page_rid: int | None
    req: m.Request


class Bridge:
    """One page's connection: JSON in and out, requests for the broker (docs/web.md)."""

    def __init__(self, peer: bytes, verify: Verify | None = None) -> None:
        """``verify``: the login check when the door requires logins, else None."""
        self.peer = peer
        self.verify = verify
        #: What the session authenticated as ("account:NAME"), "" without logins.
        self.user = ""
        self.nick = ""
        self.session = ""
        #: The rooms whose published events are this page's.
        self.rooms: set[str] = set()
        self.heartbeat = 5.0
        self._rid = 0
        self._pending: dict[int, tuple[int | None, m.Request]] = {}
        self._held: list[_Held] = []
        self._next_ping = float("inf")
        self._closed = False
        #: Failed logins so far; the door closes the connection past MAX_LOGIN_FAILURES.
        self.failures = 0
        #: (name, password) of a login hello whose check has not been answered yet.
        self.awaiting: tuple[str, str] | None = None
        self._checking: tuple[int | None, dict[str, Any]] | None = None
        self._later: list[str] = []
        #: Room -> the newest seq of an event sent to the page on this connection.
        self._sent: dict[str, int] = {}

    # ------------------------------------------------------------ from the page

    def opened(self) -> list[str]:
        """What the page gets first: whether it must log in."""
        info = {"type": "door", "login": self.verify is not None, "max_text": 4000}
        return [json.dumps(info, separators=(",", ":"))]

    def receive(self, text: str, now: float) -> tuple[list[DoorRequest], list[str]]:
        """One message from the page: requests for the broker, answers for the page.

        A ``hello`` that must log in leaves the password check in ``awaiting``
        (it is slow on purpose): the caller runs ``verify`` on it, where it
        likes, and gives the answer to ``checked``. Messages that come
        meanwhile wait for it, in order.
        """
        if self.awaiting is not None:
            self._later.append(text)
            return [], []
        try:
            kind, page_rid, body = parse(text)
        except BadMessage as exc:
            return [], [error_json(None, Code.BAD_REQUEST.value, str(exc))]
        if kind == "hello" and self.verify is not None:
            refused = self._precheck(body)
            if refused is not None:
                return [], [error_json(page_rid, "bad_login", refused)]
            self.awaiting = (str(body["nick"]), str(body["password"]))
            self._checking = (page_rid, body)
            return [], []
        return self._request(kind, page_rid, body, now)

    def _request(
        self, kind: str, page_rid: int | None, body: dict[str, Any], now: float
    ) -> tuple[list[DoorRequest], list[str]]:
        try:
            req = build(kind, self._next_rid(), body)
        except ProtocolError as exc:
            return [], [error_json(page_rid, str(exc.code), exc.text)]
        return [self._send(page_rid, req, now)], []

    def _precheck(self, body: dict[str, Any]) -> str | None:
        """Why a login hello is refused before its password is checked, or None."""
        name, password = body.get("nick"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name:
            return "log in with an account name and its password"
        if self.failures >= MAX_LOGIN_FAILURES:
            return "too many failed logins"
        return None

    def checked(self, account: str, now: float) -> tuple[list[DoorRequest], list[str]]:
        """The answer to ``awaiting``: the account's name, or "" for a wrong login.

        On success the hello's nick becomes the account's name as the file
        spells it: the session is ``account:NAME`` and the broker binds the
        nick to it (§6.11). Then the messages that waited are taken, in order.
        """
        assert self._checking is not None, "checked() without a login under way"
        (page_rid, body), self._checking, self.awaiting = self._checking, None, None
        if not account:
            self.failures += 1
            reqs: list[DoorRequest] = []
            texts = [error_json(page_rid, "bad_login", "wrong account name or password")]
        elif self.user and self.user != "account:" + account:
            reqs, texts = [], [error_json(page_rid, "bad_login", "this connection is logged "
                                          "in as another account")]  # fmt: skip
        else:
            self.user = "account:" + account
            body["nick"] = account
            reqs, texts = self._request("hello", page_rid, body, now)
        later, self._later = self._later, []
        for i, text in enumerate(later):
            more_reqs, more_texts = self.receive(text, now)
            reqs += more_reqs
            texts += more_texts
            if self.awaiting is not None:  # another login: the rest waits for it
                self._later += later[i + 1 :]
                break
        return reqs, texts

    def check_now(self, now: float) -> tuple[list[DoorRequest], list[str]]:
        """Run the awaited password check here and now (tests; the door uses a thread)."""
        assert self.verify is not None and self.awaiting is not None
        return self.checked(self.verify(*self.awaiting), now)

    # ---------------------------------------------------------- from the broker

    def deliver(self, msg: m.Reply | m.Push, now: float) -> list[str]:
        """A reply or push for this page's session: JSON for the page (maybe none)."""
        if isinstance(msg, m.Push):
            if isinstance(msg, m.PrivateEvent):
                self._follow(msg.event)
                ev = msg.event
                self._sent[ev.room] = max(self._sent.get(ev.room, 0), ev.seq)
            return [to_json(msg)]
        entry = self._pending.pop(msg.rid, None)
        if entry is None:
            return []  # not ours (a reply to a request from before a resume)
        page_rid, req = entry
        retryable = isinstance(msg, m.Error) and msg.code in _RETRYABLE and msg.retry_after > 0
        if retryable and len(self._held) < MAX_HELD:
            assert isinstance(msg, m.Error)
            self._held.append(_Held(now + msg.retry_after, page_rid, req))
            return []
        self._learn(req, msg, now)
        if isinstance(req, m.Ping) and page_rid is None:
            # The keep-alive's heads matter to the page only past what it was sent.
            if isinstance(msg, m.Pong) and any(
                h.last > self._sent.get(h.room, 0) for h in msg.heads
            ):
                return [to_json(msg)]
            return []
        return [to_json(msg, page_rid)]

    def event(self, msg: m.Event) -> bool:
        """Whether a published event is for this page; follows its own kicks and nick."""
        if msg.room not in self.rooms:
            return False
        self._follow(msg)
        if msg.seq > self._sent.get(msg.room, 0):
            self._sent[msg.room] = msg.seq
        return True

    def _follow(self, ev: m.Event) -> None:
        if ev.kind in _SAYING or nick_key(ev.nick) != nick_key(self.nick or "\x00"):
            return
        if ev.kind in ("kick", "leave"):
            self.rooms.discard(ev.room)
        elif ev.kind == "nick":
            self.nick = ev.text

    def _learn(self, req: m.Request, msg: m.Reply, now: float) -> None:
        """What a successful reply tells about the session."""
        if isinstance(msg, m.Welcome):
            self.nick, self.session, self.heartbeat = msg.nick, msg.session, msg.heartbeat
            self.rooms = set(msg.rooms)
            self._next_ping = now + self.heartbeat
        elif isinstance(msg, m.Joined):
            self.rooms.add(msg.room)
            self._sent[msg.room] = max(self._sent.get(msg.room, 0), msg.last)
        elif isinstance(msg, m.Ok) and isinstance(req, m.Leave):
            self.rooms.discard(req.room)
        elif isinstance(msg, m.Ok) and isinstance(req, m.Nick):
            self.nick = req.nick
        elif isinstance(msg, m.Ok) and isinstance(req, m.Bye):
            self.session, self.rooms, self._next_ping = "", set(), float("inf")

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float:
        due = min((h.due for h in self._held), default=float("inf"))
        return min(due, self._next_ping)

    def tick(self, now: float) -> list[DoorRequest]:
        """Held requests whose time has come, in their order; the keep-alive PING."""
        out: list[DoorRequest] = []
        if self._held and self._held[0].due <= now:
            # Refused as a block (§6.12), resent as a block, in the order first sent.
            due, self._held = self._held, []
            out.extend(self._send(h.page_rid, _renumbered(h.req, self._next_rid()), now)
                       for h in due)  # fmt: skip
        if now >= self._next_ping:
            out.append(self._send(None, m.Ping(self._next_rid()), now))
        return out

    def close(self, now: float) -> list[DoorRequest]:
        """The page went away: end its session (BYE) if it has one."""
        if self._closed:
            return []
        self._closed = True
        self._held = []
        self._next_ping = float("inf")
        if not self.session:
            return []
        return [self._send(None, m.Bye(self._next_rid(), "left the page"), now)]

    def drop(self) -> None:
        """The connection broke without a word: keep the session for a resume (§6.1)."""
        self._closed = True
        self._held = []
        self._next_ping = float("inf")

    # ----------------------------------------------------------------- helpers

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _send(self, page_rid: int | None, req: m.Request, now: float) -> DoorRequest:
        self._pending[req.rid] = (page_rid, req)
        if self.session:
            self._next_ping = now + self.heartbeat  # any request keeps the session alive
        return DoorRequest(self.peer, encode(req), self.user)


def _renumbered(req: m.Request, rid: int) -> m.Request:
    return dataclasses.replace(req, rid=rid)  # type: ignore[type-var]
