"""One IRC connection, sans I/O: IRC lines in, zchat requests out; zchat replies and events
in, IRC lines out.

``IrcConnection`` never touches a socket. The door (``zchat.irc.door``) feeds it
complete lines (``receive``), the broker's replies and pushes (``reply``), the
public events of its rooms (``event``) and the time (``tick``); it collects the
bytes to write in ``out`` and the requests for the broker in ``requests``.

Mapping (docs/irc.md has the user's view):

- registration: NICK + USER (+ CAP, SASL) -> HELLO; WELCOME -> 001-005 and MOTD;
- ``#x`` is the room ``x``; JOIN/PART/TOPIC/NAMES/WHO/WHOIS/LIST/KICK/INVITE/
  AWAY -> the request of the same meaning, MODE +o/+b -> OP/BAN; PRIVMSG/NOTICE
  -> SAY to a room, TELL to a nick;
- events -> JOIN, PART, QUIT, KICK, NICK, TOPIC, MODE, PRIVMSG lines, with IRCv3
  ``time`` and ``msgid`` tags when asked for; msgids name the room's seq, so
  draft/chathistory maps onto HISTORY by seq;
- ``rate_limited`` and ``store_unavailable`` are waited out and the requests
  resent in order (like an IRC server's flood delay, nothing dropped); while
  requests wait, the door stops reading the connection.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from zchat import __version__
from zchat.irc import lines as L
from zchat.irc.hub import IRC_HOST, Hub, kicker
from zchat.irc.lines import Line, LineError
from zchat.irc.state import PRE_REGISTRATION, ConnState, Input, next_state
from zchat.protocol import messages as m
from zchat.protocol.errors import ProtocolError
from zchat.protocol.rules import (
    MAX_HISTORY,
    MAX_NICK_CHARS,
    MAX_ROOM_CHARS,
    MAX_TOPIC_CHARS,
    check_nick,
    check_text,
    check_topic,
    nick_key,
    normalize_room,
)

#: Capabilities offered (IRCv3). ``sasl`` only when the door has accounts.
CAPS = (
    "message-tags",
    "server-time",
    "echo-message",
    "batch",
    "labeled-response",
    "away-notify",
    "multi-prefix",
    "draft/chathistory",
)
#: Seconds a connection may take to register (NICK, USER, CAP END, SASL).
REGISTRATION_TIMEOUT = 30.0
#: Seconds of silence from the client before the door PINGs it; twice that, it is gone.
IDLE_PING = 90.0
#: Requests waiting out a rate limit before the door stops reading the connection.
MAX_HELD = 64
#: Messages replayed on JOIN to clients with server-time and without chathistory.
AUTOREPLAY = 20
#: Commands kept while the broker's WELCOME is awaited (the rest: 451).
MAX_EARLY = 32
#: Failed SASL attempts before the connection is closed (each costs a scrypt).
MAX_SASL_FAILURES = 3
#: AWAY messages are cut to this many characters.
AWAY_LEN = MAX_TOPIC_CHARS
#: Message ids the door makes: NOTICE is marked so that IRC users see a NOTICE again.
NOTICE_ID = "notice-"
#: IRC formatting codes (bold, colour, italics...): zchat text has no controls (§3.3).
_FORMATTING = {0x02, 0x0F, 0x11, 0x16, 0x1D, 0x1E, 0x1F}
_CONTROLS = re.compile("[\x00-\x1f]")


@dataclass(frozen=True, slots=True)
class Settings:
    """What every connection of one door shares: names, limits, how logins work."""

    server: str = "zchat"
    network: str = "zchat"
    max_rooms: int = 100
    #: Only SASL-authenticated users may register (an allow-list broker).
    require_sasl: bool = False
    #: Returns the account name for (name, password), "" if wrong; None: no SASL.
    check_password: Callable[[str, str], str] | None = None
    #: Returns the account for a certificate fingerprint, "" if none.
    check_cert: Callable[[str], str] | None = None
    #: True if an unauthenticated user may not take this nick (an account owns it).
    is_account: Callable[[str], bool] | None = None
    created: str = ""


@dataclass(slots=True)
class RoomView:
    """One room of this connection: the position (last seq shown) and what waits for JOINED."""

    name: str
    joined: bool = False
    position: int = 0
    private: bool = False
    buffer: list[m.Event] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Labeled:
    """The answer to one labeled command (IRCv3 labeled-response), gathered until
    every request the command made is answered, then sent as one."""

    label: str
    lines: list[Line] = field(default_factory=list)
    waiting: int = 0  # requests of the command not answered yet


@dataclass(slots=True)
class Pending:
    """A request sent to the broker and not answered yet."""

    req: m.Request
    order: int  # when it was first made: resends keep this order
    command: str = ""  # the IRC command it answers (NOTICE, PRIVMSG, NAMES...)
    extra: tuple[str, ...] = ()
    labeled: Labeled | None = None  # the labeled command it belongs to


def irc_time(ts: float) -> str:
    """IRCv3 server-time: ISO 8601 UTC with milliseconds."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_irc_time(text: str) -> float | None:
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def strip_formatting(text: str) -> str:
    """IRC colours and styles out: mIRC colour codes (``\\x03NN,MM``) with their digits."""
    if not _CONTROLS.search(text):
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\x03":
            i += 1
            for _ in range(2):
                if i < n and text[i].isdigit():
                    i += 1
            if i + 1 < n and text[i] == "," and text[i + 1].isdigit():
                i += 2
                if i < n and text[i].isdigit():
                    i += 1
            continue
        if c == "\x04":  # hex colour: 6 hex digits
            i += 7
            continue
        if ord(c) not in _FORMATTING:
            out.append(c)
        i += 1
    return "".join(out)


def room_of(target: str) -> str | None:
    """The room an IRC channel name means (``#Dev`` -> ``dev``), None if it is not one."""
    if not target.startswith("#"):
        return None
    try:
        return normalize_room(target)
    except ProtocolError:
        return None


class IrcConnection:
    """The IRC protocol for one connection. See the module docstring."""

    def __init__(
        self,
        peer: bytes,
        settings: Settings,
        hub: Hub,
        now: float,
        *,
        secure: bool = False,
        cert_fingerprint: str = "",
    ) -> None:
        self.peer = peer
        self.settings = settings
        self.hub = hub
        self.secure = secure  # TLS, or a loopback connection: a password may be sent
        self.cert_fingerprint = cert_fingerprint
        self.state = ConnState.NEW
        self.out: list[bytes] = []
        self.requests: list[m.Request] = []
        #: Set when the connection should close once ``out`` is written.
        self.closing = False
        self.nick = ""  # the session's nick once registered; the wanted one before
        self.ident = ""
        self.realname = ""
        self.account = ""  # SASL account name, "" if none
        self.away = ""
        self.caps: set[str] = set()
        self.cap_version = 0
        self.connected_at = now
        self.heard = now
        self.sent_at = now
        self.pinged = False
        self.heartbeat = 5.0
        self.epoch = ""
        self.session = ""  # the broker's session token (a takeover resumes it)
        self.rooms: dict[str, RoomView] = {}
        self.private_wanted: set[str] = set()  # MODE #x +i before JOIN #x
        self._rid = 0
        self._order = 0
        self._pending: dict[int, Pending] = {}
        self._held: list[Pending] = []
        self._resume_at = 0.0
        self._by_msg_id: dict[str, Pending] = {}
        self._buf: list[Line] | None = None  # where output goes while a label gathers it
        self._labeled: Labeled | None = None  # the labeled command being handled
        self._sasl_mech = ""
        self._sasl_data = ""
        self._sasl_failures = 0
        self._seen_once: dict[tuple[str, str, str], float] = {}
        self._batch = 0
        self._user_given = False
        self._early: list[Line] = []  # commands sent before WELCOME came
        self._unconfirmed = 0  # the newest DM seq written but not confirmed yet
        self._id_prefix = secrets.token_hex(12)  # message ids: this, then a count
        self._said = 0
        self._now = now

    # ------------------------------------------------------------- properties

    @property
    def user(self) -> str:
        """What the broker binds the nick to: ``account:NAME`` after SASL, else ""."""
        return f"account:{nick_key(self.account)}" if self.account else ""

    @property
    def registered(self) -> bool:
        return self.state is ConnState.REGISTERED

    @property
    def paused(self) -> bool:
        """True while so many requests wait out a rate limit that reading should stop."""
        return len(self._held) >= MAX_HELD

    def source(self) -> str:
        return f"{self.nick}!{self.ident}@{IRC_HOST}"

    def _set_state(self, event: Input) -> None:
        self.state = next_state(self.state, event)

    # ----------------------------------------------------------------- output

    def _write(self, line: Line) -> None:
        if self._buf is not None:
            self._buf.append(line)
        else:
            self.out.append(line.render())

    def _num(self, code: str, *params: str) -> None:
        self._write(Line(code, (self.nick or "*", *params), self.settings.server))

    def _notice(self, text: str) -> None:
        self._write(Line("NOTICE", (self.nick or "*", text), self.settings.server))

    def _fail(self, command: str, code: str, *context: str) -> None:
        self._write(Line("FAIL", (command, code, *context), self.settings.server))

    def _tags(self, ts: float | None = None, msgid: str = "") -> dict[str, str]:
        tags: dict[str, str] = {}
        if ts is not None and "server-time" in self.caps:
            tags["time"] = irc_time(ts)
        if msgid and "message-tags" in self.caps:
            tags["msgid"] = msgid
        return tags

    def _flush_labeled(self, label: str, buf: list[Line]) -> None:
        """Labeled output (IRCv3 labeled-response): one line tagged, several in a batch,
        none as ACK."""
        if not label or "labeled-response" not in self.caps:
            self.out.extend(line.render() for line in buf)
            return
        if not buf:
            self.out.append(Line("ACK", (), self.settings.server, {"label": label}).render())
        elif len(buf) == 1 or _one_batch(buf):
            # One line, or one batch (chathistory): the label goes on its first line.
            one = buf[0]
            self.out.append(
                Line(one.command, one.params, one.source, {**one.tags, "label": label}).render()
            )
            self.out.extend(line.render() for line in buf[1:])
        else:
            ref = self._batch_ref()
            self.out.append(
                Line(
                    "BATCH", ("+" + ref, "labeled-response"), self.settings.server, {"label": label}
                ).render()
            )
            for line in buf:
                # Lines inside an inner batch stay in it; that batch's start goes in ours.
                tags = line.tags if "batch" in line.tags else {**line.tags, "batch": ref}
                self.out.append(Line(line.command, line.params, line.source, tags).render())
            self.out.append(Line("BATCH", ("-" + ref,), self.settings.server).render())

    def _batch_ref(self) -> str:
        self._batch += 1
        return f"z{self._batch}"

    # --------------------------------------------------------------- requests

    def _request(
        self,
        req_of: Callable[[int], m.Request],
        command: str = "",
        extra: tuple[str, ...] = (),
    ) -> Pending | None:
        """Build a request with a fresh rid and send it (or hold it behind a rate limit)."""
        self._rid += 1
        try:
            req = req_of(self._rid)
        except ProtocolError as exc:
            self._num("400", command or "*", f"{exc.text}")
            return None
        self._order += 1
        pending = Pending(req, self._order, command=command, extra=extra)
        if self._labeled is not None:
            pending.labeled = self._labeled
            self._labeled.waiting += 1
        if self._held:
            self._held.append(pending)
        else:
            self._send(pending)
        return pending

    def _send(self, pending: Pending) -> None:
        self._pending[pending.req.rid] = pending
        self.requests.append(pending.req)
        self.sent_at = self._now

    def _resend_held(self) -> None:
        held, self._held = sorted(self._held, key=lambda p: p.order), []
        for pending in held:
            self._rid += 1
            pending.req = _with_rid(pending.req, self._rid)
            self._send(pending)

    # ------------------------------------------------------------------ input

    def receive(self, raw: bytes, now: float) -> None:
        """One line from the client, without its line ending."""
        self._now = now
        self.heard = now
        self.pinged = False
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        try:
            line = L.parse(raw)
        except LineError as exc:
            if exc.numeric == "NOTICE":
                self._notice(exc.text)
            elif exc.numeric == "421":
                self._num("421", exc.command, exc.text)
            elif exc.numeric:
                self._num(exc.numeric, exc.text)
            return
        self._dispatch(line)

    def _dispatch(self, line: Line) -> None:
        handler = _COMMANDS.get(line.command)
        early = self.state is ConnState.HELLO_SENT and (handler is None or not handler[2])
        if early and len(self._early) < MAX_EARLY:
            # Sent right behind NICK/USER (bots pipeline JOIN): run after WELCOME.
            self._early.append(line)
            return
        if handler is None:
            if self.state in PRE_REGISTRATION:
                self._num("451", "You have not registered")
            else:
                self._num("421", line.command, "Unknown command")
            return
        fn, min_params, pre_reg = handler
        if self.state in PRE_REGISTRATION and not pre_reg:
            self._num("451", "You have not registered")
            return
        if len(line.params) < min_params:
            self._num("461", line.command, "Not enough parameters")
            return
        label = line.tags.get("label", "")[:64] if "labeled-response" in self.caps else ""
        labeled = Labeled(label) if label else None
        self._labeled, self._buf = labeled, (labeled.lines if labeled else None)
        try:
            fn(self, line)
        finally:
            self._labeled, self._buf = None, None
            if labeled is not None and not labeled.waiting:
                self._flush_labeled(labeled.label, labeled.lines)

    def written(self) -> None:
        """The door has handed everything in ``out`` so far to the kernel: confirm
        the DMs in it (§6.6), so that one lost with the connection comes again."""
        if self._unconfirmed and self.registered:
            seq, self._unconfirmed = self._unconfirmed, 0
            self._request(lambda rid: m.Seen(rid, seq))

    def too_long(self, now: float) -> None:
        """The door refused a line longer than the tags budget and 512 bytes together."""
        self._now = now
        self.heard = now
        self._num("417", "Input line was too long")

    def gone(self, now: float) -> None:
        """The socket closed (or the door gives up on it): end the session."""
        self._now = now
        if self.registered:
            self._request(lambda rid: m.Bye(rid, "connection closed"))
        self.hub.remove_user(self)
        self.state = next_state(self.state, Input.GONE)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        self._now = now
        if self.state in PRE_REGISTRATION and now - self.connected_at >= REGISTRATION_TIMEOUT:
            self._close("Registration timed out")
            return
        if self._held and now >= self._resume_at:
            self._resend_held()
        if self.registered and now - self.sent_at >= self.heartbeat:
            self._request(m.Ping)
        if self.state is not ConnState.CLOSED and now - self.heard >= IDLE_PING:
            if now - self.heard >= 2 * IDLE_PING:
                self._close(f"Ping timeout: {int(now - self.heard)} seconds")
            elif not self.pinged:
                self.pinged = True
                self._write(Line("PING", (self.settings.server,)))

    def next_deadline(self) -> float:
        if self.state in PRE_REGISTRATION:
            return self.connected_at + REGISTRATION_TIMEOUT
        deadline = self.heard + (2 * IDLE_PING if self.pinged else IDLE_PING)
        if self.registered:
            deadline = min(deadline, self.sent_at + self.heartbeat)
        if self._held:
            deadline = min(deadline, self._resume_at)
        return deadline

    def _close(self, why: str, bye: bool = True, reason: str | None = None) -> None:
        """Say ERROR and close once it is written; the session ends with BYE
        (``reason``, else ``why``: what the rooms see)."""
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        if bye and self.registered:
            said = why if reason is None else reason
            said = said[:MAX_TOPIC_CHARS] if _topic_ok(said) else ""
            self._request(lambda rid: m.Bye(rid, said))
        self.hub.remove_user(self)
        self._set_state(Input.QUIT)
        self._write(Line("ERROR", (f"Closing link: {why}",)))
        self.closing = True

    def shutdown(self, reason: str) -> None:
        """The broker is stopping."""
        self._write(Line("ERROR", (f"Closing link: {reason}",)))
        self.closing = True
        if self.state not in (ConnState.CLOSING, ConnState.CLOSED):
            self._set_state(Input.QUIT)

    # ---------------------------------------------------------- registration

    def _cmd_cap(self, line: Line) -> None:
        sub = line.params[0].upper()
        if sub == "LS":
            if self.state in PRE_REGISTRATION:
                self._set_state(Input.CAP_START)
            version = line.params[1] if len(line.params) > 1 else ""
            self.cap_version = max(self.cap_version, int(version) if version.isdigit() else 0)
            if self.cap_version >= 302:
                self.caps.add("cap-notify")
            self._write(
                Line(
                    "CAP", (self.nick or "*", "LS", " ".join(self._offered())), self.settings.server
                )
            )
        elif sub == "LIST":
            self._write(
                Line(
                    "CAP",
                    (self.nick or "*", "LIST", " ".join(sorted(self.caps))),
                    self.settings.server,
                )
            )
        elif sub == "REQ":
            if self.state in PRE_REGISTRATION:
                self._set_state(Input.CAP_START)
            asked = line.params[1].split() if len(line.params) > 1 else []
            offered = {c.split("=")[0] for c in self._offered()} | {"cap-notify"}
            names = [a.removeprefix("-") for a in asked]
            if not asked or any(n not in offered for n in names):
                self._write(
                    Line("CAP", (self.nick or "*", "NAK", " ".join(asked)), self.settings.server)
                )
                return
            for a in asked:
                if a.startswith("-"):
                    self.caps.discard(a[1:])
                else:
                    self.caps.add(a)
            self._write(
                Line("CAP", (self.nick or "*", "ACK", " ".join(asked)), self.settings.server)
            )
        elif sub == "END":
            self._set_state(Input.CAP_END)
            self._maybe_hello()
        else:
            self._num("410", sub[:20], "Invalid CAP command")

    def _offered(self) -> list[str]:
        caps = list(CAPS)
        if self.settings.check_password or self.settings.check_cert:
            mechs = []
            if self.settings.check_password:
                mechs.append("PLAIN")
            if self.settings.check_cert:
                mechs.append("EXTERNAL")
            caps.append("sasl=" + ",".join(mechs) if self.cap_version >= 302 else "sasl")
        return caps

    def _cmd_authenticate(self, line: Line) -> None:
        s = self.settings
        arg = line.params[0]
        if self.account:
            self._num("907", "You have already authenticated using SASL")
            return
        if self.state not in (ConnState.NEW, ConnState.NEGOTIATING):
            # The broker binds a session to what it logged in as, at HELLO.
            self._num("904", "SASL authentication failed: log in before registering")
            return
        if not self._sasl_mech:
            mech = arg.upper()
            if arg == "*":
                self._num("906", "SASL authentication aborted")
            elif mech == "PLAIN" and s.check_password is not None:
                if not self.secure:
                    self._num("904", "SASL PLAIN needs TLS: connect with TLS or use EXTERNAL")
                    return
                self._sasl_mech = mech
                self._write(Line("AUTHENTICATE", ("+",)))
            elif mech == "EXTERNAL" and s.check_cert is not None:
                self._sasl_mech = mech
                self._write(Line("AUTHENTICATE", ("+",)))
            else:
                mechs = [
                    x for x, ok in (("PLAIN", s.check_password), ("EXTERNAL", s.check_cert)) if ok
                ]
                self._num("908", ",".join(mechs) or "*", "are available SASL mechanisms")
                self._num("904", "SASL authentication failed")
            return
        if arg == "*":
            self._sasl_mech, self._sasl_data = "", ""
            self._num("906", "SASL authentication aborted")
            return
        if len(arg) > 400:
            self._sasl_mech, self._sasl_data = "", ""
            self._num("905", "SASL message too long")
            return
        if arg != "+":
            self._sasl_data += arg
        if len(self._sasl_data) > 1200:
            self._sasl_mech, self._sasl_data = "", ""
            self._num("905", "SASL message too long")
            return
        if len(arg) == 400:
            return  # more follows
        mech, data = self._sasl_mech, self._sasl_data
        self._sasl_mech, self._sasl_data = "", ""
        account = self._sasl_check(mech, data)
        if not account:
            self._sasl_failures += 1
            self._num("904", "SASL authentication failed")
            if self._sasl_failures >= MAX_SASL_FAILURES:
                self._close("Too many failed logins")
            return
        self.account = account
        if not self.nick or nick_key(self.nick) != nick_key(account):
            self.nick = account  # an account's nick is its name
        mask = f"{self.nick or '*'}!{self.ident or '*'}@{IRC_HOST}"
        self._num("900", mask, account, f"You are now logged in as {account}")
        self._num("903", "SASL authentication successful")

    def _sasl_check(self, mech: str, data: str) -> str:
        try:
            raw = base64.b64decode(data, validate=True) if data else b""
            text = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        if mech == "PLAIN":
            parts = text.split("\x00")
            if len(parts) != 3 or self.settings.check_password is None:
                return ""
            authzid, authcid, password = parts
            if authzid and nick_key(authzid) != nick_key(authcid):
                return ""
            return self.settings.check_password(authcid, password)
        if mech == "EXTERNAL" and self.settings.check_cert is not None and self.cert_fingerprint:
            account = self.settings.check_cert(self.cert_fingerprint)
            if text and account and nick_key(text) != nick_key(account):
                return ""
            return account
        return ""

    def _cmd_nick(self, line: Line) -> None:
        new = line.params[0] if line.params else ""
        if not new:
            self._num("431", "No nickname given")
            return
        try:
            check_nick(new)
        except ProtocolError:
            self._num(
                "432", new[:40], f"Erroneous nickname: 1-{MAX_NICK_CHARS} of A-Z a-z 0-9 _ . -"
            )
            return
        if self.account and nick_key(new) != nick_key(self.account):
            self._num("432", new, f"Your nick is your account's name, {self.account}")
            return
        if (
            not self.account
            and self.settings.is_account is not None
            and self.settings.is_account(new)
        ):
            self._num("433", new, "Nickname belongs to an account: log in with SASL")
            return
        if self.state in PRE_REGISTRATION:
            if self.state is not ConnState.HELLO_SENT:
                self.nick = new
                self._maybe_hello()
            return
        if new == self.nick:
            return
        self._request(lambda rid: m.Nick(rid, new), "NICK", extra=(new,))

    def _cmd_user(self, line: Line) -> None:
        if self._user_given:
            self._num("462", "You may not reregister")
            return
        ident = "".join(c for c in line.params[0] if c.isascii() and (c.isalnum() or c in "_-."))
        self.ident = ("~" + ident)[:11] if ident else "~user"
        self.realname = line.params[3][:100] if len(line.params) > 3 else ""
        self._user_given = True
        self._maybe_hello()

    def _maybe_hello(self) -> None:
        if self.state is not ConnState.NEW or not self.nick or not self._user_given:
            return
        if self.settings.require_sasl and not self.account:
            self._notice("This server admits only logged-in users: use SASL (docs/irc.md)")
            self._close("SASL authentication required", bye=False)
            return
        resume = ""
        if self.account:
            self.nick = self.account
            old = self.hub.user(self.account)
            if old is not None and old is not self and old.account and old.session:
                # The same account again (a client reconnecting before its old TCP
                # connection was noticed dead): this connection takes the session
                # over, rooms and all, instead of finding its nick taken.
                resume = old.session
                old.superseded()
        self._set_state(Input.IDENTIFIED)
        self._request(lambda rid: m.Hello(rid, self.nick, resume), "HELLO")

    def superseded(self) -> None:
        """The same account registered on another connection, which has this session now."""
        self.hub.remove_user(self)
        self._write(Line("ERROR", ("Closing link: logged in again on another connection",)))
        self.closing = True
        self._set_state(Input.QUIT)
        self.hub.touched.add(self)

    def _welcomed(self, msg: m.Welcome) -> None:
        self._set_state(Input.WELCOMED)
        self.nick = msg.nick
        self.heartbeat = max(0.5, msg.heartbeat * 0.8)
        self.epoch = msg.epoch
        self.session = msg.session
        self.hub.add_user(self)
        s = self.settings
        self._num("001", f"Welcome to the {s.network} IRC door, {self.source()}")
        self._num("002", f"Your host is {s.server}, running zchat {__version__}")
        self._num("003", f"This server was created {s.created or 'at some point'}")
        self._num("004", s.server, f"zchat-{__version__}", "i", "bit")
        tokens = [
            f"AWAYLEN={AWAY_LEN}",
            "CASEMAPPING=ascii",
            f"CHANLIMIT=#:{s.max_rooms}",
            "CHANMODES=b,,,it",
            f"CHANNELLEN={MAX_ROOM_CHARS + 1}",
            "CHANTYPES=#",
            f"CHATHISTORY={MAX_HISTORY}",
            "ELIST=",
            f"KICKLEN={MAX_TOPIC_CHARS}",
            "MODES=1",
            "MSGREFTYPES=msgid,timestamp",
            f"NETWORK={s.network}",
            f"NICKLEN={MAX_NICK_CHARS}",
            "PREFIX=(o)@",
            "TARGMAX=JOIN:20,PART:,PRIVMSG:4,NOTICE:4,KICK:1,NAMES:1,WHOIS:1,LIST:",
            f"TOPICLEN={MAX_TOPIC_CHARS}",
            "UTF8ONLY",
        ]
        for i in range(0, len(tokens), 12):
            self._num("005", *tokens[i : i + 12], "are supported by this server")
        self._num("375", f"- {s.server} Message of the day -")
        self._num("372", "- zchat: rooms are channels (#x is room x); history: draft/chathistory")
        self._num("376", "End of /MOTD command")
        for room in msg.rooms if msg.resumed else []:  # a session taken over: its rooms
            self._join_room(room, "#" + room)
        early, self._early = self._early, []
        for line in early:
            self._dispatch(line)

    # -------------------------------------------------------- simple commands

    def _cmd_ping(self, line: Line) -> None:
        self._write(Line("PONG", (self.settings.server, line.params[0]), self.settings.server))

    def _cmd_pong(self, line: Line) -> None:
        pass  # hearing it was the point

    def _cmd_quit(self, line: Line) -> None:
        reason = strip_formatting(line.params[0]) if line.params else ""
        self._close(f"Quit: {reason}" if reason else "Quit", reason=reason)

    def _cmd_motd(self, line: Line) -> None:
        self._num("422", "MOTD File is missing")

    def _cmd_version(self, line: Line) -> None:
        self._num("351", f"zchat-{__version__}", self.settings.server, "IRC door of zchat")

    def _cmd_time(self, line: Line) -> None:
        self._num(
            "391", self.settings.server, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        )

    def _cmd_lusers(self, line: Line) -> None:
        self._num("251", f"There are {len(self.hub.users)} users on this IRC door")

    def _cmd_oper(self, line: Line) -> None:
        self._num("491", "No O-lines: zchat operators are room creators and the broker's admins")

    def _cmd_unsupported(self, line: Line) -> None:
        self._num("421", line.command, "Not supported by zchat's IRC door (docs/irc.md)")

    def _cmd_away(self, line: Line) -> None:
        text = strip_formatting(line.params[0])[:AWAY_LEN] if line.params else ""
        text = text if _topic_ok(text) else "away"
        self.away = text
        # The broker keeps it for WHOIS, WHO and DMs (§6.13); the door tells
        # its away-notify clients at once.
        self._request(partial(m.Away, text=text), "AWAY")
        self._num(
            "306" if text else "305",
            "You have been marked as being away"
            if text
            else "You are no longer marked as being away",
        )
        notify = {c for room in self.rooms for c in self.hub.room(room).watchers}
        for conn in notify - {self}:
            if "away-notify" in conn.caps and conn.registered:
                conn.out.append(Line("AWAY", (text,) if text else (), self.source()).render())
                self.hub.touched.add(conn)

    def _cmd_ison(self, line: Line) -> None:
        names = " ".join(line.params).split()
        self._num(
            "303", " ".join(self.hub.display_nick(n) for n in names if self.hub.is_present(n))
        )

    def _cmd_userhost(self, line: Line) -> None:
        found = []
        for n in " ".join(line.params).split()[:5]:
            if self.hub.is_present(n):
                conn = self.hub.user(n)
                mask = self.hub.hostmask(self.hub.display_nick(n)).split("!", 1)[1]
                found.append(
                    f"{self.hub.display_nick(n)}={'-' if conn and conn.away else '+'}{mask}"
                )
        self._num("302", " ".join(found))

    # ------------------------------------------------------------------ rooms

    def _cmd_join(self, line: Line) -> None:
        if line.params[0] == "0":
            for name in list(self.rooms):
                self._request(partial(m.Leave, room=name), "PART", extra=(name,))
            return
        for target in line.params[0].split(",")[:20]:
            room = room_of(target)
            if room is None:
                self._num(
                    "403", target[:70], "No such channel (channels are # and 1-64 of a-z 0-9 _ . -)"
                )
                continue
            self._join_room(room, target)

    def _join_room(self, room: str, target: str) -> None:
        if room in self.rooms:
            return
        if len(self.rooms) >= self.settings.max_rooms:
            self._num("405", target, "You have joined too many channels")
            return
        private = room in self.private_wanted
        self.private_wanted.discard(room)
        self.rooms[room] = RoomView(room)
        self.hub.watch(room, self)
        # A client with server-time but without chathistory gets the room's
        # latest messages replayed on join, with their times (like a zchat
        # client); one with chathistory asks for what it wants.
        replay = "server-time" in self.caps and "draft/chathistory" not in self.caps
        history = AUTOREPLAY if replay else 0
        self._request(
            partial(m.Join, room=room, history=history, private=private), "JOIN", extra=(room,)
        )

    def _on_joined(self, pending: Pending, msg: m.Joined) -> None:
        view = self.rooms.get(msg.room)
        if view is None:  # parted meanwhile
            return
        view.joined, view.position, view.private = True, msg.last, msg.private
        if isinstance(pending.req, m.Join) and pending.req.private and not msg.private:
            self._notice(f"#{msg.room} exists already and is not invite-only")
        self.hub.room(msg.room).private = msg.private
        if msg.members and not msg.more:
            self.hub.set_members(msg.room, msg.members, complete=True)
        else:
            self.hub.room(msg.room).members[nick_key(self.nick)] = self.nick
        if msg.last == 1 and msg.members == [self.nick]:
            self.hub.room(msg.room).ops.add(nick_key(self.nick))  # it made the room
        self._write(Line("JOIN", ("#" + msg.room,), self.source(), self._tags(self._now)))
        if msg.topic:
            self._num("332", "#" + msg.room, msg.topic)
        if msg.members and not msg.more:
            self._names_lines(msg.room, msg.members)
        else:
            self._request(lambda rid: m.Who(rid, msg.room), "NAMES", extra=(msg.room,))
        said = [e for e in msg.history if e.kind in ("msg", "action")]
        if said:
            self._replay("#" + msg.room, said)
        buffered, view.buffer = view.buffer, []
        for ev in sorted(buffered, key=lambda e: e.seq):
            self._room_event(ev)

    def _names_lines(self, room: str, members: list[str]) -> None:
        kind = "@" if self.hub.room(room).private else "="
        names = [("@" if self.hub.is_op(room, n) else "") + n for n in members]
        prefix = f":{self.settings.server} 353 {self.nick} {kind} #{room} :"
        budget = L.MAX_LINE - 2 - len(prefix.encode())
        chunk: list[str] = []
        size = 0
        for name in names:
            if chunk and size + len(name) + 1 > budget:
                self._num("353", kind, "#" + room, " ".join(chunk))
                chunk, size = [], 0
            chunk.append(name)
            size += len(name) + 1
        if chunk:
            self._num("353", kind, "#" + room, " ".join(chunk))
        self._num("366", "#" + room, "End of /NAMES list")

    def _cmd_part(self, line: Line) -> None:
        for target in line.params[0].split(","):
            name = room_of(target)
            if name is None or name not in self.rooms:
                self._num("442", target[:70], "You're not on that channel")
                continue
            self._request(partial(m.Leave, room=name), "PART", extra=(name,))

    def _parted(self, name: str, why: str = "") -> None:
        view = self.rooms.pop(name, None)
        if view is None:
            return
        self.hub.unwatch(name, self)
        self._write(
            Line(
                "PART", ("#" + name, *((why,) if why else ())), self.source(), self._tags(self._now)
            )
        )

    def _cmd_topic(self, line: Line) -> None:
        name = room_of(line.params[0])
        if name is None:
            self._num("403", line.params[0][:70], "No such channel")
            return
        if len(line.params) == 1:
            self._request(lambda rid: m.Topic(rid, name, None), "TOPIC", extra=(name,))
            return
        topic = strip_formatting(line.params[1])[:MAX_TOPIC_CHARS]
        self._request(lambda rid: m.Topic(rid, name, topic), "SETTOPIC", extra=(name,))

    def _cmd_names(self, line: Line) -> None:
        if not line.params:
            self._num("366", "*", "End of /NAMES list")
            return
        for target in line.params[0].split(",")[:1]:
            name = room_of(target)
            if name is None:
                self._num("366", target[:70], "End of /NAMES list")
                continue
            self._request(partial(m.Who, room=name), "NAMES", extra=(name,))

    def _cmd_who(self, line: Line) -> None:
        mask = line.params[0] if line.params else "*"
        name = room_of(mask)
        if name is not None:
            self._request(lambda rid: m.Who(rid, name), "WHO", extra=(mask,))
            return
        if self.hub.is_present(mask):
            self._who_line("*", self.hub.display_nick(mask))
        self._num("315", mask, "End of /WHO list")

    def _who_line(self, channel: str, nick: str, room: str = "", away: bool = False) -> None:
        conn = self.hub.user(nick)
        user, host = self.hub.hostmask(nick).split("!", 1)[1].split("@", 1)
        flags = ("G" if away or (conn is not None and conn.away) else "H") + (
            "@" if room and self.hub.is_op(room, nick) else ""
        )
        real = conn.realname if conn is not None else "zchat user"
        self._num("352", channel, user, host, self.settings.server, nick, flags, f"0 {real}")

    def _cmd_whois(self, line: Line) -> None:
        target = line.params[-1].split(",")[0]
        try:
            check_nick(target)
        except ProtocolError:
            self._num("401", target[:40], "No such nick/channel")
            self._num("318", target[:40], "End of /WHOIS list")
            return
        self._request(partial(m.Whois, nick=target), "WHOIS", extra=(target,))

    def _on_whois(self, p: Pending, msg: m.WhoisIs) -> None:
        nick = msg.nick
        if not msg.online:
            when = f"; last seen {irc_time(msg.seen)}" if msg.seen else ""
            self._num("401", nick, f"No such nick/channel (offline{when})")
            self._num("318", nick, "End of /WHOIS list")
            return
        conn = self.hub.user(nick)
        user, host = self.hub.hostmask(nick).split("!", 1)[1].split("@", 1)
        self._num("311", nick, user, host, "*", conn.realname if conn else "zchat user")
        rooms = [("@" if self.hub.is_op(r, nick) else "") + "#" + r for r in msg.rooms]
        if rooms:
            self._num("319", nick, " ".join(rooms))
        via = "the IRC door" if conn else "a zchat client"
        self._num("312", nick, self.settings.server, f"zchat, via {via}")
        if msg.away:
            self._num("301", nick, msg.away)
        if conn is not None and conn.account:
            self._num("330", nick, conn.account, "is logged in as")
        if conn is not None and conn.secure and conn.account:
            self._num("671", nick, "is using a secure connection")
        if msg.key:
            self._num("320", nick, f"owns its nick with the key {msg.key}")
        self._num("317", nick, str(int(msg.idle)), "seconds idle")
        self._num("318", nick, "End of /WHOIS list")

    def _cmd_list(self, line: Line) -> None:
        wanted = {room_of(t) for t in line.params[0].split(",")} if line.params else None
        self._request(m.Rooms, "LIST", extra=tuple(w for w in (wanted or ()) if w))

    def _cmd_kick(self, line: Line) -> None:
        name = room_of(line.params[0])
        if name is None:
            self._num("403", line.params[0][:70], "No such channel")
            return
        reason = strip_formatting(line.params[2])[:MAX_TOPIC_CHARS] if len(line.params) > 2 else ""
        reason = reason if _topic_ok(reason) else ""
        for nick in line.params[1].split(",")[:1]:
            self._request(
                partial(m.Kick, room=name, nick=nick, reason=reason), "KICK", extra=(name, nick)
            )

    def _cmd_invite(self, line: Line) -> None:
        nick, channel = line.params[0], line.params[1]
        name = room_of(channel)
        if name is None:
            self._num("403", channel[:70], "No such channel")
            return
        self._request(lambda rid: m.Invite(rid, name, nick), "INVITE", extra=(nick, name))

    def _cmd_mode(self, line: Line) -> None:
        target = line.params[0]
        name = room_of(target)
        if name is None:
            if nick_key(target) != nick_key(self.nick):
                self._num("502", "Can't change mode for other users")
            elif len(line.params) > 1 and line.params[1].strip("+-i"):
                self._num("501", "Unknown MODE flag")
            else:
                self._num("221", "+i")
            return
        view = self.rooms.get(name)
        if len(line.params) == 1:
            private = view.private if view else name in self.private_wanted
            self._num("324", "#" + name, "+it" if private else "+t")
            return
        change = line.params[1]
        if change in ("b", "+b") and len(line.params) == 2:
            self._num("368", "#" + name, "End of channel ban list (zchat does not list bans)")
            return
        if change in ("+i", "i") and view is None:
            self.private_wanted.add(name)
            self._notice(f"#{name} will be created invite-only when you JOIN it (if it is new)")
            return
        if change[:1] in "+-" and change[1:] == "b" and len(line.params) > 2:
            nick = line.params[2].split("!", 1)[0]
            ban = change[0] == "+"
            self._request(
                lambda rid: m.Ban(rid, name, nick, ban), "MODE", extra=(name, change, nick)
            )
            return
        if change in ("+o", "-o") and len(line.params) > 2:
            nick, grant = line.params[2], change == "+o"
            self._request(partial(m.Op, room=name, nick=nick, op=grant), "MODE", extra=(name, nick))
            return
        if change in ("+i", "-i", "+t", "-t"):
            self._num(
                "472",
                change[1],
                "zchat fixes a room's privacy when it is created "
                "(MODE #x +i before JOIN #x makes it invite-only)",
            )
            return
        self._num("472", change.lstrip("+-")[:1] or "?", "is unknown mode char to me")

    # --------------------------------------------------------------- messages

    def _cmd_privmsg(self, line: Line) -> None:
        self._message(line, notice=False)

    def _cmd_notice(self, line: Line) -> None:
        self._message(line, notice=True)

    def _message(self, line: Line, notice: bool) -> None:
        command = "NOTICE" if notice else "PRIVMSG"
        if len(line.params) < 2 or not line.params[1]:
            if not notice:
                self._num(
                    "412" if line.params else "411",
                    "No text to send" if line.params else f"No recipient given ({command})",
                )
            return
        text = line.params[1]
        action = False
        if text.startswith("\x01"):
            body = text.strip("\x01")
            ctcp, _, rest = body.partition(" ")
            if ctcp.upper() != "ACTION":
                return  # other CTCP (VERSION, PING...): zchat text carries no controls
            text, action = rest, True
        text = strip_formatting(text)
        try:
            check_text(text)
        except ProtocolError as exc:
            if not notice:
                self._num(
                    "404" if line.params[0].startswith("#") else "401",
                    line.params[0][:70],
                    f"Cannot send: {exc.text}",
                )
            return
        # Unique without a uuid per message: a random prefix per connection and a count.
        self._said += 1
        msg_id = f"{NOTICE_ID if notice else ''}{self._id_prefix}{self._said:x}"
        for target in line.params[0].split(",")[:4]:
            name = room_of(target)
            if target.startswith("#"):
                if name is None:
                    self._num("403", target[:70], "No such channel")
                    continue
                p = self._request(
                    partial(m.Say, room=name, id=msg_id, text=text, action=action),
                    command,
                    (target,),
                )
            else:
                try:
                    check_nick(target)
                except ProtocolError:
                    self._num("401", target[:40], "No such nick/channel")
                    continue
                p = self._request(
                    partial(m.Tell, to=target, id=msg_id, text=text, action=action),
                    command,
                    (target,),
                )
            if p is not None:
                self._by_msg_id[msg_id] = p

    def _message_lines(
        self, source: str, target: str, text: str, action: bool, notice: bool, tags: dict[str, str]
    ) -> list[Line]:
        """A zchat message as IRC lines, split to fit 512 bytes."""
        command = "NOTICE" if notice else "PRIVMSG"
        wrap = ("\x01ACTION ", "\x01") if action else ("", "")
        overhead = len(f":{source} {command} {target} :".encode()) + 2 + len(wrap[0]) + len(wrap[1])
        pieces = L.fit_utf8(text, max(64, L.MAX_LINE - overhead))
        return [Line(command, (target, wrap[0] + p + wrap[1]), source, tags) for p in pieces]

    # ----------------------------------------------------------------- history

    def _cmd_chathistory(self, line: Line) -> None:
        sub = line.params[0].upper()
        if sub == "TARGETS":
            ref = self._batch_ref()
            self._write(
                Line("BATCH", ("+" + ref, "draft/chathistory-targets"), self.settings.server)
            )
            self._write(Line("BATCH", ("-" + ref,), self.settings.server))
            return
        if len(line.params) < 4 and not (sub == "BETWEEN" and len(line.params) >= 5):
            self._fail("CHATHISTORY", "INVALID_PARAMS", sub[:20], "Not enough parameters")
            return
        target = line.params[1]
        name = room_of(target)
        args = line.params[2:]
        try:
            limit = max(0, min(MAX_HISTORY, int(args[-1])))
        except ValueError:
            self._fail("CHATHISTORY", "INVALID_PARAMS", sub[:20], "Bad limit")
            return
        if name is None:  # a nick: zchat keeps no DM history to read back
            ref = self._batch_ref()
            self._write(Line("BATCH", ("+" + ref, "chathistory", target), self.settings.server))
            self._write(Line("BATCH", ("-" + ref,), self.settings.server))
            return
        refs = [self._msgref(a, name) for a in args[:-1]]
        if any(r is None for r in refs):
            self._fail(
                "CHATHISTORY",
                "INVALID_MSGREFTYPE",
                sub[:20],
                target[:70],
                "Unknown message reference",
            )
            return
        # Each ref is ("seq", n) or ("ts", t) or ("*", 0).
        r = [x for x in refs if x is not None]
        # (after, before) of the HISTORY request (§6.5); after 0 means "the newest".
        # It asks for the most events it may: joins, leaves and the like are
        # left out of the batch, and ``limit`` counts messages.
        kinds = [k for k, _ in r]
        seqs = [int(v) for _, v in r]
        if sub == "LATEST":
            window = (0, 0)
        elif sub == "BEFORE" and kinds[0] == "seq":
            window = (0, seqs[0])
        elif sub == "AFTER" and kinds[0] == "seq":
            window = (seqs[0], 0)
        elif sub == "AROUND" and kinds[0] == "seq":
            window = (0, seqs[0] + limit // 2 + 1)
        elif sub == "BETWEEN" and kinds == ["seq", "seq"]:
            window = (min(seqs), 0) if min(seqs) else (0, max(seqs))
        elif sub in ("BEFORE", "AFTER", "AROUND", "BETWEEN"):
            window = (0, 0)  # by timestamp: look through the newest
        else:
            self._fail("CHATHISTORY", "INVALID_PARAMS", sub[:20], "Unknown subcommand")
            return
        after, before = window
        spec = (sub, target, str(limit), *(f"{k}={v}" for k, v in r))
        self._request(
            lambda rid: m.History(rid, name, after, before, MAX_HISTORY), "CHATHISTORY", extra=spec
        )

    def _msgref(self, text: str, room: str) -> tuple[str, float] | None:
        if text == "*":
            return ("*", 0)
        kind, _, value = text.partition("=")
        if kind == "msgid":
            seq = self._seq_of(value, room)
            return ("seq", seq) if seq is not None else None
        if kind == "timestamp":
            ts = parse_irc_time(value)
            return ("ts", ts) if ts is not None else None
        return None

    def _msgid(self, room: str, seq: int) -> str:
        return f"{self.epoch[:8]}-{room}-{seq}"

    def _seq_of(self, msgid: str, room: str) -> int | None:
        epoch, _, rest = msgid.partition("-")
        where, _, seq = rest.rpartition("-")
        if epoch != self.epoch[:8] or where != room or not seq.isdigit():
            return None
        return int(seq)

    def _on_events(self, pending: Pending, msg: m.Events) -> None:
        sub, target, limit_s, *refs = pending.extra
        limit = int(limit_s)
        parsed = [(k, float(v)) for k, _, v in (x.partition("=") for x in refs)]
        events = [e for e in msg.events if e.kind in ("msg", "action")]
        if sub == "LATEST" and parsed and parsed[0][0] == "seq":
            events = [e for e in events if e.seq > parsed[0][1]][-limit:] if limit else []
        elif sub == "LATEST" and parsed and parsed[0][0] == "ts":
            events = [e for e in events if e.ts > parsed[0][1]][-limit:] if limit else []
        elif sub == "LATEST":
            events = events[-limit:] if limit else []
        elif parsed and parsed[0][0] == "ts" and sub in ("BEFORE", "AFTER", "AROUND", "BETWEEN"):
            t = parsed[0][1]
            if sub == "BEFORE":
                events = [e for e in events if e.ts < t][-limit:]
            elif sub == "AFTER":
                events = [e for e in events if e.ts > t][:limit]
            elif sub == "AROUND":
                events = sorted(events, key=lambda e: abs(e.ts - t))[:limit]
                events.sort(key=lambda e: e.seq)
            else:
                t2 = parsed[1][1] if len(parsed) > 1 else t
                lo, hi = min(t, t2), max(t, t2)
                events = [e for e in events if lo < e.ts < hi][:limit]
        elif sub == "AROUND" and parsed:
            x = parsed[0][1]
            events = sorted(
                sorted(events, key=lambda e: abs(e.seq - x))[:limit], key=lambda e: e.seq
            )
        elif sub == "BETWEEN" and len(parsed) == 2:
            lo, hi = min(parsed[0][1], parsed[1][1]), max(parsed[0][1], parsed[1][1])
            events = [e for e in events if lo < e.seq < hi][:limit]
        elif sub == "BEFORE":
            events = events[-limit:] if limit else []
        else:
            events = events[:limit]
        ref = self._batch_ref()
        self._write(Line("BATCH", ("+" + ref, "chathistory", target), self.settings.server))
        for ev in events:
            self._write_past(ev, target, ref)
        self._write(Line("BATCH", ("-" + ref,), self.settings.server))

    def _write_past(self, ev: m.Event, target: str, batch: str) -> None:
        """A stored room message, with its own time (and msgid, batch when asked for)."""
        tags = {"time": irc_time(ev.ts)}
        if "message-tags" in self.caps or batch:
            tags["msgid"] = self._msgid(ev.room, ev.seq)
        if batch:
            tags["batch"] = batch
        notice, action = ev.id.startswith(NOTICE_ID), ev.kind == "action"
        src = (
            self.source()
            if nick_key(ev.nick) == nick_key(self.nick)
            else self.hub.hostmask(ev.nick)
        )
        for line in self._message_lines(src, target, ev.text, action, notice, tags):
            self._write(line)

    def _replay(self, target: str, events: list[m.Event]) -> None:
        """The messages a JOIN brought back, in a chathistory batch if the client takes batches."""
        ref = self._batch_ref() if "batch" in self.caps else ""
        if ref:
            self._write(Line("BATCH", ("+" + ref, "chathistory", target), self.settings.server))
        for ev in events:
            self._write_past(ev, target, ref)
        if ref:
            self._write(Line("BATCH", ("-" + ref,), self.settings.server))

    # ------------------------------------------------------- broker -> client

    def reply(self, msg: m.Reply | m.Push, now: float) -> None:
        """A reply or push from the broker for this connection's session."""
        self._now = now
        if isinstance(msg, m.PrivateEvent):
            self.hub.observe(msg.event)
            self.event(msg.event, now)
            return
        if isinstance(msg, m.Dm):
            self._dm(msg)
            return
        if isinstance(msg, m.Invited):
            self._write(Line("INVITE", (self.nick, "#" + msg.room), self.hub.hostmask(msg.by)))
            return
        if not isinstance(msg, m.Reply):
            return
        pending = self._pending.pop(msg.rid, None)
        if pending is None:
            return
        if isinstance(msg, m.Error) and msg.retry_after > 0:
            # Rate limit or a store that cannot write: wait and resend, in order.
            self._held.append(pending)
            self._resume_at = max(self._resume_at, now + msg.retry_after)
            return
        labeled = pending.labeled
        self._buf = labeled.lines if labeled is not None else None
        try:
            self._answer(pending, msg)
        finally:
            self._buf = None
            if labeled is not None:
                labeled.waiting -= 1
                if not labeled.waiting:  # the command's last answer: all of it goes out
                    self._flush_labeled(labeled.label, labeled.lines)
        if isinstance(pending.req, m.Say | m.Tell):
            self._by_msg_id.pop(pending.req.id, None)

    def _answer(self, p: Pending, msg: m.Reply) -> None:
        handler = _REPLIES.get(type(msg))
        if handler is not None:
            handler(self, p, msg)

    def _on_welcome(self, p: Pending, msg: m.Welcome) -> None:
        self._welcomed(msg)

    def _on_names(self, p: Pending, msg: m.Names) -> None:
        self.hub.set_members(msg.room, msg.members, complete=not msg.more)
        if p.command == "WHO":
            away = {nick_key(n) for n in msg.away}
            for nick in msg.members:
                self._who_line("#" + msg.room, nick, msg.room, nick_key(nick) in away)
            self._num("315", p.extra[0], "End of /WHO list")
        else:
            self._names_lines(msg.room, msg.members)

    def _on_topic(self, p: Pending, msg: m.TopicIs) -> None:
        if p.command != "TOPIC":  # setting it: the topic event says it to everyone
            return
        if msg.topic:
            self._num("332", "#" + msg.room, msg.topic)
        else:
            self._num("331", "#" + msg.room, "No topic is set")

    def _on_rooms(self, p: Pending, msg: m.RoomList) -> None:
        wanted = set(p.extra)
        self._num("321", "Channel", "Users  Name")
        for info in msg.rooms:
            if not wanted or info.name in wanted:
                self._num("322", "#" + info.name, str(info.members), info.topic)
        self._num("323", "End of /LIST")

    def _on_ack(self, p: Pending, msg: m.Ack) -> None:
        req = p.req
        if not isinstance(req, m.Tell):
            return  # a room message: its event is the echo
        notice = p.command == "NOTICE"
        if msg.away and not notice:
            self._num("301", req.to, msg.away)
        if "echo-message" in self.caps:
            lines = self._message_lines(self.source(), p.extra[0], req.text, req.action, notice,
                                        self._tags(self._now))  # fmt: skip
            for line in lines:
                self._write(line)

    def _on_ok(self, p: Pending, msg: m.Ok) -> None:
        req = p.req
        if isinstance(req, m.Leave):
            self._parted(req.room)
        elif isinstance(req, m.Nick):
            self._renamed(self.nick, req.nick)
        elif isinstance(req, m.Invite):
            self._num("341", req.nick, "#" + req.room)

    def _on_error(self, p: Pending, err: m.Error) -> None:
        req, code, text = p.req, err.code, err.text
        if isinstance(req, m.Hello):
            if code == "nick_taken":
                self._set_state(Input.REFUSED)
                wanted, self.nick = self.nick, ""
                self._num("433", wanted, f"Nickname is already in use ({text})")
            elif code == "bad_nick":
                self._set_state(Input.REFUSED)
                wanted, self.nick = self.nick, ""
                self._num("432", wanted, text)
            else:
                self._close(f"Cannot register: {text}", bye=False)
            return
        if code == "not_registered" and self.registered:
            # The broker ended the session (expired while the door was starved):
            # the client reconnects and registers afresh.
            self._close("Session ended by the broker; reconnect", bye=False)
            return
        target = p.extra[0] if p.extra else ""
        chan = "#" + target if target and not target.startswith("#") else target
        if isinstance(req, m.Join):
            self.rooms.pop(req.room, None)
            self.hub.unwatch(req.room, self)
            numeric = {"banned": "474", "invite_only": "473", "too_many_rooms": "405"}.get(
                code, "403"
            )
            self._num(numeric, chan, f"Cannot join channel ({text})")
        elif isinstance(req, m.Say):
            self._num("404", p.extra[0], f"Cannot send to channel ({text})")
        elif isinstance(req, m.Tell):
            self._num("401" if code == "no_such_nick" else "404", p.extra[0], text)
        elif isinstance(req, m.Nick):
            self._num("433" if code == "nick_taken" else "432", req.nick, text)
        elif isinstance(req, m.Whois):
            self._num("401", req.nick, "No such nick/channel")
            self._num("318", req.nick, "End of /WHOIS list")
        elif isinstance(req, m.Away):
            pass
        elif isinstance(req, (m.Topic, m.Kick, m.Invite, m.Ban, m.Op, m.Leave, m.Who, m.History)):
            if code == "not_op":
                self._num("482", chan, f"You're not channel operator ({text})")
            elif code == "not_member" and isinstance(req, m.Kick | m.Op) and len(p.extra) > 1:
                self._num("441", p.extra[1], chan, "They aren't on that channel")
            elif code == "not_member":
                self._num("442", chan, "You're not on that channel")
            elif code == "bad_nick" or code == "no_such_nick":
                self._num("401", p.extra[-1], "No such nick/channel")
            elif isinstance(req, m.History):
                self._fail("CHATHISTORY", "MESSAGE_ERROR", p.extra[0], text)
            else:
                self._num("400", p.command or "*", text)
        elif not isinstance(req, m.Bye | m.Ping):
            self._num("400", p.command or "*", text)

    def _dm(self, msg: m.Dm) -> None:
        # Confirmed (SEEN) once the door has written it out: see ``written``.
        self._unconfirmed = max(self._unconfirmed, msg.seq)
        text = msg.text
        tags = self._tags(
            msg.ts, f"{self.epoch[:8]}-@{nick_key(msg.to)}-{msg.seq}" if msg.seq else ""
        )
        if "server-time" not in self.caps and self._now - msg.ts > 60:
            stamp = datetime.datetime.fromtimestamp(msg.ts, datetime.UTC).strftime(
                "%Y-%m-%d %H:%M UTC"
            )
            text = f"[{stamp}] {text}"
        for line in self._message_lines(
            self.hub.hostmask(msg.sender),
            self.nick,
            text,
            msg.action,
            msg.id.startswith(NOTICE_ID),
            tags,
        ):
            self._write(line)

    def _renamed(self, old: str, new: str) -> None:
        if old == new:
            return
        self.nick = new
        self.hub.renamed(self, old)
        self._write(Line("NICK", (new,), f"{old}!{self.ident}@{IRC_HOST}", self._tags(self._now)))

    def event(self, ev: m.Event, now: float) -> None:
        """An event of one of this connection's rooms (public: from the door's broadcast)."""
        self._now = now
        view = self.rooms.get(ev.room)
        if view is None or not self.registered:
            return
        if not view.joined:
            view.buffer.append(ev)
            return
        self._room_event(ev)

    def takes_fast(self, ev: m.Event) -> bool:
        """True if ``ev`` (a room message from someone else) goes to this connection as
        ``message_bytes(ev)`` and nothing else; its position is then moved past it.
        The door's fan-out calls this for each receiver of a message (the hot path)."""
        view = self.rooms.get(ev.room)
        if (
            view is None
            or not view.joined
            or ev.seq <= view.position
            or self.state is not ConnState.REGISTERED
            or ev.nick.lower() == self.nick.lower()
        ):
            return False
        view.position = ev.seq
        return True

    def message_bytes(self, ev: m.Event) -> bytes:
        """A room message from someone else as this connection gets it, rendered once
        per tag set for all connections (those with the same caps get the same bytes)."""
        key = (ev.room, ev.seq, "server-time" in self.caps, "message-tags" in self.caps)
        cached = self.hub.rendered.get(key)
        if cached is None:
            if len(self.hub.rendered) >= 8:
                self.hub.rendered.clear()
            tags = self._tags(ev.ts, self._msgid(ev.room, ev.seq))
            src, notice = self.hub.hostmask(ev.nick), ev.id.startswith(NOTICE_ID)
            action = ev.kind == "action"
            lines = self._message_lines(src, "#" + ev.room, ev.text, action, notice, tags)
            cached = self.hub.rendered[key] = b"".join(line.render() for line in lines)
        return cached

    def _room_event(self, ev: m.Event) -> None:
        view = self.rooms.get(ev.room)
        if view is None or ev.seq <= view.position:
            return
        view.position = ev.seq
        me = ev.nick.lower() == self.nick.lower()  # nick_key, inlined: the hot path
        if not me and (ev.kind == "msg" or ev.kind == "action"):
            self.out.append(self.message_bytes(ev))
            return
        chan = "#" + ev.room
        src = self.source() if me else self.hub.hostmask(ev.nick)
        tags = self._tags(ev.ts, self._msgid(ev.room, ev.seq))
        if ev.kind in ("msg", "action"):
            pending = self._by_msg_id.get(ev.id) if me else None
            if me and "echo-message" not in self.caps:
                return
            lines = self._message_lines(
                src, chan, ev.text, ev.kind == "action", ev.id.startswith(NOTICE_ID), tags
            )
            if pending is not None and pending.labeled is not None:
                pending.labeled.lines.extend(lines)
            else:
                self.out.extend(line.render() for line in lines)
        elif ev.kind == "join":
            if not me:
                self.out.append(Line("JOIN", (chan,), src, tags).render())
        elif ev.kind == "leave":
            if ev.text.startswith("quit") or ev.text == "timed out":
                if not me and self._once("quit", ev.nick, ev.text):
                    reason = ev.text.partition(": ")[2] if ev.text.startswith("quit:") else ev.text
                    self.out.append(
                        Line(
                            "QUIT",
                            (
                                reason.capitalize()
                                if reason == "timed out"
                                else f"Quit: {reason}"
                                if reason and reason != "quit"
                                else "Quit",
                            ),
                            src,
                            tags,
                        ).render()
                    )
            elif me:
                self._parted(ev.room)
            else:
                self.out.append(Line("PART", (chan,), src, tags).render())
        elif ev.kind == "kick":
            op = kicker(ev.text)
            reason = ev.text.partition(": ")[2] or ev.nick
            self.out.append(
                Line(
                    "KICK",
                    (chan, ev.nick, reason),
                    self.hub.hostmask(op or self.settings.server),
                    tags,
                ).render()
            )
            if me:
                self.rooms.pop(ev.room, None)
                self.hub.unwatch(ev.room, self)
        elif ev.kind == "nick":
            if me or nick_key(ev.text) == nick_key(self.nick):
                if nick_key(ev.nick) == nick_key(self.nick):
                    self._renamed(self.nick, ev.text)
            elif self._once("nick", ev.nick, ev.text):
                self.out.append(
                    Line(
                        "NICK",
                        (ev.text,),
                        self._renamed_mask(ev.nick, ev.text),
                        tags,
                    ).render()
                )
        elif ev.kind == "topic":
            self.out.append(Line("TOPIC", (chan, ev.text), src, tags).render())
        elif ev.kind == "op":
            target, sign = (ev.text[1:], "-") if ev.text.startswith("-") else (ev.text, "+")
            self.out.append(Line("MODE", (chan, sign + "o", target), src, tags).render())

    def _renamed_mask(self, old: str, new: str) -> str:
        """The hostmask a NICK line comes from, whether the hub knows the user by
        the old nick or already by the new one."""
        conn = self.hub.user(new) or self.hub.user(old)
        return f"{old}!{conn.ident}@{IRC_HOST}" if conn else self.hub.hostmask(old)

    def _once(self, kind: str, nick: str, text: str) -> bool:
        """True the first time a quit or nick change is seen: it comes once per shared room."""
        key = (kind, nick_key(nick), text)
        now = self._now
        if len(self._seen_once) > 256:
            self._seen_once = {k: t for k, t in self._seen_once.items() if now - t < 10}
        if now - self._seen_once.get(key, -1e9) < 10:
            return False
        self._seen_once[key] = now
        return True


def _one_batch(buf: list[Line]) -> bool:
    """True if ``buf`` is exactly one batch: its start, lines in it, its end."""
    first, last = buf[0], buf[-1]
    if first.command != "BATCH" or last.command != "BATCH" or len(buf) < 2:
        return False
    ref = first.params[0][1:] if first.params else ""
    return (
        first.params[0].startswith("+")
        and last.params == ("-" + ref,)
        and all(line.tags.get("batch") == ref for line in buf[1:-1])
    )


def _topic_ok(text: str) -> bool:
    try:
        check_topic(text)
    except ProtocolError:
        return False
    return True


def _with_rid(req: m.Request, rid: int) -> m.Request:
    import dataclasses

    return dataclasses.replace(req, rid=rid)  # type: ignore[type-var]


#: One row per reply type: how it answers the request it belongs to.
_REPLIES: dict[type[m.Reply], Callable[[IrcConnection, Pending, Any], None]] = {
    m.Error: IrcConnection._on_error,
    m.Welcome: IrcConnection._on_welcome,
    m.Joined: IrcConnection._on_joined,
    m.Names: IrcConnection._on_names,
    m.TopicIs: IrcConnection._on_topic,
    m.RoomList: IrcConnection._on_rooms,
    m.Events: IrcConnection._on_events,
    m.WhoisIs: IrcConnection._on_whois,
    m.Ack: IrcConnection._on_ack,
    m.Ok: IrcConnection._on_ok,
}

Handler = Callable[[IrcConnection, Line], None]
#: One row per command: handler, fewest parameters, allowed before registration.
_COMMANDS: dict[str, tuple[Handler, int, bool]] = {
    "CAP": (IrcConnection._cmd_cap, 1, True),
    "AUTHENTICATE": (IrcConnection._cmd_authenticate, 1, True),
    "NICK": (IrcConnection._cmd_nick, 0, True),
    "USER": (IrcConnection._cmd_user, 4, True),
    "PING": (IrcConnection._cmd_ping, 1, True),
    "PONG": (IrcConnection._cmd_pong, 0, True),
    "QUIT": (IrcConnection._cmd_quit, 0, True),
    "PASS": (IrcConnection._cmd_pong, 0, True),  # ignored: logins are SASL
    "TAGMSG": (IrcConnection._cmd_pong, 0, False),  # client-only tags (typing): nowhere to go
    "JOIN": (IrcConnection._cmd_join, 1, False),
    "PART": (IrcConnection._cmd_part, 1, False),
    "PRIVMSG": (IrcConnection._cmd_privmsg, 0, False),
    "NOTICE": (IrcConnection._cmd_notice, 0, False),
    "TOPIC": (IrcConnection._cmd_topic, 1, False),
    "NAMES": (IrcConnection._cmd_names, 0, False),
    "WHO": (IrcConnection._cmd_who, 0, False),
    "WHOIS": (IrcConnection._cmd_whois, 1, False),
    "LIST": (IrcConnection._cmd_list, 0, False),
    "KICK": (IrcConnection._cmd_kick, 2, False),
    "INVITE": (IrcConnection._cmd_invite, 2, False),
    "AWAY": (IrcConnection._cmd_away, 0, False),
    "MODE": (IrcConnection._cmd_mode, 1, False),
    "ISON": (IrcConnection._cmd_ison, 1, False),
    "USERHOST": (IrcConnection._cmd_userhost, 1, False),
    "MOTD": (IrcConnection._cmd_motd, 0, False),
    "VERSION": (IrcConnection._cmd_version, 0, False),
    "TIME": (IrcConnection._cmd_time, 0, False),
    "LUSERS": (IrcConnection._cmd_lusers, 0, False),
    "OPER": (IrcConnection._cmd_oper, 0, False),
    "CHATHISTORY": (IrcConnection._cmd_chathistory, 1, False),
    **{
        name: (IrcConnection._cmd_unsupported, 0, False)
        for name in (
            "WHOWAS",
            "KILL",
            "SQUIT",
            "CONNECT",
            "LINKS",
            "STATS",
            "TRACE",
            "ADMIN",
            "INFO",
            "SERVLIST",
            "SQUERY",
            "REHASH",
            "DIE",
            "RESTART",
            "SUMMON",
            "USERS",
            "WALLOPS",
            "KNOCK",
            "SETNAME",
            "MONITOR",
            "WATCH",
        )
    },
}
