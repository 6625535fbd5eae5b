"""The broker's logic: (peer, frames, now) in, effects out. It never sees a socket.

The server (zchat/broker/server.py) feeds it what the ROUTER and XPUB sockets
receive and carries out the effects it returns: ``Send`` to one peer's DEALER,
``Publish`` on the broadcast socket, ``Show`` a line on the operator's terminal.
Writes go to the injected Store; the server wraps each batch in one store
transaction and carries out the effects only after it commits, so nothing is
acknowledged or published that could still be lost (docs/protocol.md §6.4).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from zchat.broker.quiet import QuietLog
from zchat.broker.registry import LocalRegistry, Member, Registry, SessionRecord
from zchat.protocol import ProtocolError, decode_request
from zchat.protocol import messages as m
from zchat.protocol.codec import Frames
from zchat.protocol.errors import Code
from zchat.protocol.rules import MAX_HISTORY, nick_key
from zchat.store import Entry, Store, StoreUnavailable
from zchat.store.records import DmRecord, RoomRecord


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to the DEALER behind routing id ``peer``."""

    peer: bytes
    msg: m.Reply | m.Push


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``msg`` on the broadcast socket under its topic."""

    msg: m.Broadcast


@dataclass(frozen=True, slots=True)
class Show:
    """A line for the broker's own terminal (the traffic display)."""

    line: str


@dataclass(frozen=True, slots=True)
class Follow:
    """Follow (``on``) or stop following a log's feed from the other brokers of
    a cluster (§6.14); never emitted by a single broker."""

    log: str
    on: bool


Effect = Send | Publish | Show | Follow


class StoreHealth(enum.Enum):
    """Whether the broker writes to its store (docs/protocol.md §6.4)."""

    WRITING = "writing"
    REFUSING = "refusing writes"  # a write failed; retried from store_retry_at on


@dataclass(frozen=True, slots=True)
class Limits:
    """What one broker allows; every per-client structure is bounded by these."""

    max_clients: int = 10_000
    max_rooms_per_client: int = 100
    max_listed_rooms: int = 1_000
    rate: float = 50.0  # requests per second per session, sustained
    burst: int = 200  # requests a session may send at once
    max_room_list: int = 1_000  # invites or bans one room keeps


@dataclass(frozen=True, slots=True)
class CoreConfig:
    pub_endpoint: str
    heartbeat: float = 5.0
    timeout: float = 15.0
    limits: Limits = field(default_factory=Limits)
    admins: frozenset[str] = frozenset()  # nick keys that operate every room
    announce_limit: int = 200  # rooms this big announce no ordinary joins and leaves
    cluster: bool = False  # other brokers share the store and registry (§6.14)


@dataclass(eq=False, slots=True)
class Session:
    token: str
    nick: str
    peer: bytes
    last_seen: float
    user: str = ""  # the CURVE public key it authenticated with ("" without CURVE)
    hello_id: str = ""  # HELLO.id of the registration that made it (§6.1)
    away: str = ""  # the away message; "" while here (§6.13)
    active: float = 0.0  # when it last said something (SAY, TELL): WHOIS idle time
    rooms: set[str] = field(default_factory=set)
    tokens: float = 0.0  # rate-limit bucket, refilled from `refilled` on
    refilled: float = 0.0
    blocked_until: float = 0.0


@dataclass(eq=False, slots=True)
class Room:
    """A room's live members and its settings; the settings persist in the store."""

    name: str
    topic: str = ""
    private: bool = False
    ops: set[str] = field(default_factory=set)  # nick keys
    bans: set[str] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)
    members: set[Session] = field(default_factory=set)


@dataclass(slots=True)
class Counters:
    """Traffic counters since start; STATS reports them by these names (§6.10)."""

    requests: int = 0  # in: every message on the ROUTER
    malformed: int = 0  # in: dropped or refused as undecodable
    errors: int = 0  # out: ERROR replies to requests that decoded
    messages: int = 0  # room messages stored
    dms: int = 0  # direct messages stored
    duplicates: int = 0  # resends recognised by id and not stored again
    expired: int = 0  # sessions ended by the heartbeat timeout
    throttled: int = 0  # requests refused by the rate limit
    published: int = 0  # out: broadcasts (counted by the server)
    replies: int = 0  # out: replies and pushes handed to the ROUTER (by the server)
    dropped: int = 0  # out: replies the ROUTER could not deliver (by the server)
    resets: int = 0  # the broadcast socket rebuilt against a subscription flood (by the server)


def _inbox(nick: str) -> str:
    return "@" + nick_key(nick)


def _room_log(room: str) -> str:
    return "#" + room


def _ids(s: Session) -> set[str]:
    """The names a session answers to in ops, bans and invites: its nick, and its key."""
    return _ids_of(s.nick, s.user)


def _ids_of(nick: str, user: str) -> set[str]:
    return {nick_key(nick), "key:" + user} if user else {nick_key(nick)}


def _settings(raw: bytes) -> dict[str, Any] | None:
    """A room's stored settings map, or None for anything else (a bare topic)."""
    try:
        data = msgpack.unpackb(raw)
    except ValueError:
        return None
    keys = {"topic", "private", "ops", "bans", "invited"}
    return data if isinstance(data, dict) and keys <= data.keys() else None


def _last_seen(nick: str) -> str:
    """The store state that records when a nick's last session ended (WHOIS)."""
    return "%" + nick_key(nick)


def _fingerprint(key: str) -> str:
    """A short, stable name for a CURVE public key, to compare out of band."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def _owner(nick: str) -> str:
    """The store state that records which CURVE key a nick belongs to."""
    return "~" + nick_key(nick)


def _throttled(lim: Limits, wait: float) -> ProtocolError:
    return ProtocolError(
        "rate_limited",
        f"slow down: more than {lim.rate:g} requests a second; try again in {wait:.1f} s",
        retry_after=round(wait, 3),
    )


class BrokerCore:
    """All broker state: sessions, rooms, nicks. Single-threaded, clock injected."""

    def __init__(
        self,
        store: Store,
        config: CoreConfig,
        now: float,
        new_token: Callable[[], str] = lambda: secrets.token_hex(16),
        boot: str = "",
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.registry = registry or LocalRegistry()
        self.config = config
        self.counters = Counters()
        self._new_token = new_token
        self._by_peer: dict[bytes, Session] = {}
        self._by_token: dict[str, Session] = {}
        self._quietest: OrderedDict[str, Session] = OrderedDict()  # longest silent first
        self._rooms: dict[str, Room] = {}
        self._beat = 0
        self._next_beat = now
        self.started = now
        self._caller_key = ""  # the CURVE key of the request being handled
        self._quiet = QuietLog()  # bad requests: a line per kind per 10 s, not each
        self.boot = boot or secrets.token_hex(8)  # names this broker process in WELCOME (§6.1)
        #: Whether the store takes writes; while it does not, writes are refused
        #: and retried from `store_retry_at` on (docs/protocol.md §6.4).
        self.store_health = StoreHealth.WRITING
        self._store_failed_at = 0.0
        self.store_retry_at = 0.0
        #: In a cluster, the logs this broker follows (rooms with members here,
        #: its sessions' inboxes) and the last position of each it delivered.
        self._heads: dict[str, int] = {}
        self._epoch = store.epoch

    # ------------------------------------------------------------ entry points

    def handle(self, peer: bytes, frames: Frames, now: float, user: str = "") -> list[Effect]:
        """One message from the ROUTER, envelope stripped. Never raises on peer input.

        ``user`` is the CURVE public key the connection authenticated with, or
        "" without CURVE; with it, nicks and sessions belong to keys.
        """
        self.counters.requests += 1
        try:
            req = decode_request(frames)
        except ProtocolError as exc:
            self.counters.malformed += 1
            what = f"dropped bad request from {peer.hex()}: {exc.code}: {exc}"
            line = self._quiet.note(what, now, kind=f"bad request {exc.code}")
            bad: list[Effect] = [Show(line)] if line else []
            if exc.rid is not None or exc.code in (Code.BAD_VERSION, Code.UNKNOWN_TYPE):
                bad.append(Send(peer, m.Error(exc.rid or 0, exc.code, exc.text)))
            return bad
        verb = _VERBS[type(req)]
        self._caller_key = user
        session = self._by_peer.get(peer)
        if session is not None and session.user != user:
            # A routing id reused by another key (a peer may choose its id):
            # that is not this session, whatever the id says.
            session = None
        if session is not None:
            self._heard(session, now)
        out: list[Effect] = []
        try:
            if verb.needs_session and session is None:
                raise ProtocolError(Code.NOT_REGISTERED, "say HELLO with a nick first")
            read = verb.reads_room(req)
            if read is not None and session is not None:
                self._require_readable(session, read)
            if self.store_down and verb.writes(req):
                raise self._store_unavailable(now)
            if verb.metered and session is not None:
                self._spend(session, now)
            verb.handler(self, peer, session, req, now, out)
        except ProtocolError as exc:
            self.counters.errors += 1
            out.append(Send(peer, m.Error(req.rid, exc.code, exc.text, exc.retry_after)))
        except StoreUnavailable as exc:
            # A write failed under this request: nothing of it is shown or sent;
            # the sender is told to try again, and writes stop until the store
            # takes them again (docs/protocol.md §6.4).
            out = self.store_failed(now, str(exc))
            out.append(Send(peer, _error(req.rid, self._store_unavailable(now))))
        return out

    def _spend(self, s: Session, now: float) -> None:
        """Take one token from the session's bucket or refuse with a retry-after (§6.12).

        Once refused, a session stays refused until the retry-after has passed,
        so what it pipelined meanwhile is refused too and, resent in order,
        keeps its order.
        """
        lim = self.config.limits
        if now < s.blocked_until:
            self.counters.throttled += 1
            raise _throttled(lim, s.blocked_until - now)
        s.tokens = min(float(lim.burst), s.tokens + (now - s.refilled) * lim.rate)
        s.refilled = now
        if s.tokens < 1.0:
            wait = max(1.0 / lim.rate, min(1.0, lim.burst / lim.rate))
            s.blocked_until = now + wait
            self.counters.throttled += 1
            raise _throttled(lim, wait)
        s.tokens -= 1.0

    def subscribed(self, topic: bytes) -> list[Effect]:
        """A subscription arrived on the XPUB socket (§5.2)."""
        if topic[:1] == b"~" and topic.endswith(b"\x00"):
            try:
                token = topic[1:-1].decode("ascii")
                return [Publish(m.Synced(token))]
            except (UnicodeDecodeError, ProtocolError):
                return [Show(f"! ignored bad sync subscription {topic[:40]!r}")]
        return []

    def tick(self, now: float) -> list[Effect]:
        """Timers: heartbeats out, silent sessions expired (§6.7)."""
        out: list[Effect] = []
        if self.store.epoch != self._epoch:
            self._store_reset(out)
        if now >= self._next_beat:
            self._beat += 1
            self._next_beat = now + self.config.heartbeat
            out.append(Publish(m.Beat(self._beat, now, self.store.epoch)))
            if self.config.cluster and not self.store_down:
                self._cluster_beat(now, out)
        if self.store_down:
            return out  # a leave is a stored event: expiries wait for the store
        deadline = now - self.config.timeout
        while self._quietest and (s := next(iter(self._quietest.values()))).last_seen <= deadline:
            self.counters.expired += 1
            self._end(s, "timed out", now, out)
        return out

    def next_deadline(self) -> float:
        """When tick() next has work: the next beat or the next session expiry
        (or, while the store is down, the next time to try it again)."""
        if self.store_down:
            return min(self._next_beat, self.store_retry_at)
        if not self._quietest:
            return self._next_beat
        quietest = next(iter(self._quietest.values()))
        return min(self._next_beat, quietest.last_seen + self.config.timeout)

    # ---------------------------------------------------------------- cluster

    def arrived(self, log: str, entries: list[Entry], now: float) -> list[Effect]:
        """Entries of a followed log from its feed: appended by another broker,
        or by this one (delivered already, skipped). Delivered once, in order;
        a hole is read from the store first (§6.14)."""
        out: list[Effect] = []
        for entry in entries:
            if log not in self._heads:
                break  # no longer followed (its last member here left): not ours
            if self._in_order(log, entry.seq, out):
                self._deliver_entry(log, entry, out)
        return out

    def check_heads(self, logs: list[str] | None = None) -> list[Effect]:
        """Compare the followed logs (or ``logs``) with the store and deliver
        what the feed did not bring: tail loss, a resubscription (§6.14)."""
        wanted = [log for log in (self._heads if logs is None else logs) if log in self._heads]
        out: list[Effect] = []
        for log, last in self.store.heads(wanted).items():
            head = self._heads.get(log)
            if head is None:
                continue
            if last < head:
                self._went_back(log, last)
            elif last > head:
                self._fill(log, head, last, out)
                if log in self._heads:
                    self._heads[log] = last
        return out

    def _went_back(self, log: str, last: int) -> None:
        """A followed log went back under the same epoch: the shared store lost
        its last writes, and the positions clients hold may now name other
        messages. A new epoch makes everyone start over (§6.14)."""
        self._heads[log] = last
        if self.store.epoch == self._epoch:
            self.store.renew_epoch(self._epoch)

    def _cluster_beat(self, now: float, out: list[Effect]) -> None:
        """Every heartbeat: say this broker lives, end the sessions of brokers
        that died (one survivor gets each), and catch up the followed logs."""
        self.registry.alive(self.boot, self.config.timeout)
        for rec in self.registry.orphans(self.boot):
            self._end_orphan(rec, now, out)
        out.extend(self.check_heads())

    def _store_reset(self, out: list[Effect]) -> None:
        """The shared store came back empty (a new epoch): positions start over,
        and the registry forgot everyone here; tell it again (§6.14)."""
        self._epoch = self.store.epoch
        # Every followed log starts over: the next check delivers what the new
        # epoch holds already. (A store that kept its entries under a new epoch,
        # §6.4, sends up to MAX_HISTORY of each again; clients skip them by seq.)
        self._heads = dict.fromkeys(self._heads, 0)
        for s in self._by_token.values():
            self.registry.claim(nick_key(s.nick), s.token)
            self._save(s)
            for name in s.rooms:
                self.registry.enter(name, s.token, Member(s.nick, bool(s.away)))
        out.append(Show(f"! the store was reset (epoch {self._epoch}): history starts over"))

    def _in_order(self, log: str, seq: int, out: list[Effect]) -> bool:
        """Whether entry ``seq`` of ``log`` is new here; what is missing before
        it is read from the store and delivered first. Single brokers and
        unfollowed logs deliver everything as it is appended."""
        head = self._heads.get(log)
        if head is None:
            return True
        if seq <= head:
            return False
        self._fill(log, head, seq - 1, out)
        if log not in self._heads:
            return False  # what was filled in ended our following of it (a kick)
        self._heads[log] = seq
        return True

    def _fill(self, log: str, head: int, upto: int, out: list[Effect]) -> None:
        """Deliver entries ``head`` + 1 .. ``upto`` of a followed log from the
        store: the newest MAX_HISTORY of them, and clients fetch anything older
        by seq themselves (§6.5)."""
        if upto <= head:
            return
        for entry in self.store.read(log, max(head, upto - MAX_HISTORY), MAX_HISTORY):
            if entry.seq > upto or log not in self._heads:
                break
            self._deliver_entry(log, entry, out)

    def _deliver_entry(self, log: str, entry: Entry, out: list[Effect]) -> None:
        if log.startswith("#"):
            room = log[1:]
            event = _event_of(room, entry)
            self._apply_remote(event, out)
            self._deliver(room, event, out)
        else:
            s = self._local(log[1:])
            if s is not None:
                msg_id, sender, to, text, ts, action = DmRecord.unpack(entry.body)
                out.append(Send(s.peer, m.Dm(msg_id, sender, to, text, ts, action, entry.seq)))

    def _apply_remote(self, event: m.Event, out: list[Effect]) -> None:
        """What an event from another broker changes here: a kick of a member
        of ours ends its membership; a new topic or operator, the room's settings."""
        room = self._rooms.get(event.room)
        if room is None:
            return
        if event.kind == "kick":
            s = self._local(event.nick)
            if s is not None and s in room.members:
                s.rooms.discard(room.name)
                room.members.discard(s)
                self._drop_room_if_empty(room, out)
        elif event.kind in ("topic", "op"):
            self._refresh(room)

    def _follow(self, log: str, out: list[Effect]) -> None:
        if self.config.cluster and log not in self._heads:
            self._heads[log] = self.store.last(log)
            out.append(Follow(log, True))

    def _unfollow(self, log: str, out: list[Effect]) -> None:
        if self._heads.pop(log, None) is not None:
            out.append(Follow(log, False))

    def _end_orphan(self, rec: SessionRecord, now: float, out: list[Effect]) -> None:
        """End a session whose broker died and whose client did not come back
        elsewhere: its leaves, as its broker's expiry would have said them."""
        current = self.registry.get(rec.token)
        if current is None or current.broker != rec.broker:
            return  # gone or moved meanwhile
        self.store.set_state(_last_seen(rec.nick), repr(now).encode())
        for name in sorted(rec.rooms):
            if self.registry.count(name) < self.config.announce_limit:
                self._event(name, "leave", rec.nick, "timed out", now, out)
            self.registry.leave(name, rec.token)
        self.registry.release(nick_key(rec.nick), rec.token)
        self.registry.drop(rec.token)
        self.counters.expired += 1
        out.append(Show(f"- {rec.nick} gone (timed out: its broker was lost)"))

    def _adopt(
        self, token: str, user: str, peer: bytes, now: float, out: list[Effect]
    ) -> Session | None:
        """A session another broker served, resumed here by its client (§6.14)."""
        rec = self.registry.get(token)
        if rec is None or rec.user != user:
            return None
        lim = self.config.limits
        s = Session(rec.token, rec.nick, peer, now, rec.user, rec.hello_id, rec.away)
        s.tokens, s.refilled = float(lim.burst), now
        self._by_token[s.token] = s
        self._quietest[s.token] = s
        self._follow(_inbox(s.nick), out)
        for name in rec.rooms:
            room = self._rooms.get(name)
            if room is None:
                room = self._rooms[name] = self._load_room(name)
                self._follow(_room_log(name), out)
            room.members.add(s)
            s.rooms.add(name)
        self._save(s)
        return s

    def _save(self, s: Session) -> None:
        """Tell the registry what another broker would need to resume ``s``."""
        rec = SessionRecord(s.token, s.nick, s.user, s.hello_id, self.boot, s.away, sorted(s.rooms))
        self.registry.put(rec)

    def _local(self, nick: str) -> Session | None:
        """The session of this broker holding ``nick``, if any."""
        token = self.registry.holder(nick_key(nick))
        return self._by_token.get(token) if token else None

    def _refresh(self, room: Room) -> None:
        """Reload a live room's settings: another broker may have changed them."""
        if self.config.cluster:
            fresh = self._load_room(room.name)
            room.topic, room.private = fresh.topic, fresh.private
            room.ops, room.bans, room.invited = fresh.ops, fresh.bans, fresh.invited

    def _drop_room_if_empty(self, room: Room, out: list[Effect]) -> None:
        if not room.members:
            del self._rooms[room.name]  # its log and topic stay in the store
            self._unfollow(_room_log(room.name), out)

    def _heard(self, s: Session, now: float) -> None:
        # Kept in order of last_seen, so expiry looks at the front only: the loop
        # runs tick() and next_deadline() on every wake-up, whatever the number
        # of sessions.
        s.last_seen = now
        self._quietest.move_to_end(s.token)

    @property
    def store_down(self) -> bool:
        return self.store_health is StoreHealth.REFUSING

    def store_failed(self, now: float, why: str) -> list[Effect]:
        """The store could not write: refuse writes until ``store_retry_at``.

        Returns one line for the operator per episode, not one per refusal.
        """
        first = not self.store_down
        if first:
            self.store_health = StoreHealth.REFUSING
            self._store_failed_at = now
        # Try again soon at first, then less often: 1 s doubling to 16 s. A
        # request refused meanwhile (a read, with a shared store) is no reason
        # to try later.
        if first or now >= self.store_retry_at:
            down_for = now - self._store_failed_at
            self.store_retry_at = now + min(16.0, max(1.0, down_for))
        if not first:
            return []
        return [Show(f"! store failing, refusing writes until it recovers: {why}")]

    def store_recovered(self, now: float) -> list[Effect]:
        """The store wrote again: accept writes."""
        if not self.store_down:
            return []
        down_for = now - self._store_failed_at
        self.store_health = StoreHealth.WRITING
        return [Show(f"* store writing again after {down_for:.1f} s")]

    def _store_unavailable(self, now: float) -> ProtocolError:
        wait = max(0.5, self.store_retry_at - now)
        return ProtocolError(
            Code.STORE_UNAVAILABLE,
            f"the broker cannot store anything right now; try again in {wait:.1f} s",
            retry_after=round(wait, 3),
        )

    def shutdown(self, reason: str) -> list[Effect]:
        return [Publish(m.Shutdown(reason)), Show(f"* shutting down: {reason}")]

    # ---------------------------------------------------------------- queries

    @property
    def clients(self) -> int:
        return len(self._by_token)

    @property
    def rooms(self) -> int:
        return len(self._rooms)

    # ----------------------------------------------------------------- verbs

    def _ping(self, peer: bytes, s: Session, req: m.Ping, now: float, out: list[Effect]) -> None:
        heads = [m.Head(r, self.store.last(_room_log(r))) for r in sorted(s.rooms)]
        out.append(Send(s.peer, m.Pong(req.rid, now, self._beat, heads)))

    def _leave(self, peer: bytes, s: Session, req: m.Leave, now: float, out: list[Effect]) -> None:
        if req.room not in s.rooms:
            raise ProtocolError(Code.NOT_MEMBER, f"you are not in #{req.room}")
        self._part(s, req.room, "left", now, out)
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _who(self, peer: bytes, s: Session, req: m.Who, now: float, out: list[Effect]) -> None:
        here = self.registry.members(req.room)
        members, more = _fit_names(_nicks(here), _LIST_BUDGET)
        away = sorted(x.nick for x in here if x.away)
        out.append(Send(s.peer, m.Names(req.rid, req.room, members, more, away)))

    def _rooms_req(
        self, peer: bytes, s: Session, req: m.Rooms, now: float, out: list[Effect]
    ) -> None:
        out.append(Send(s.peer, self._room_list(req.rid, s)))

    def _seen(self, peer: bytes, s: Session, req: m.Seen, now: float, out: list[Effect]) -> None:
        log = _inbox(s.nick)
        cursor = max(self._cursor(s.nick), min(req.seq, self.store.last(log)))
        self.store.set_state(log, str(cursor).encode())
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _bye(self, peer: bytes, s: Session, req: m.Bye, now: float, out: list[Effect]) -> None:
        self._end(s, f"quit: {req.reason}" if req.reason else "quit", now, out)
        out.append(Send(peer, m.Ok(req.rid)))

    def _away(self, peer: bytes, s: Session, req: m.Away, now: float, out: list[Effect]) -> None:
        s.away = req.text
        for name in s.rooms:
            self.registry.enter(name, s.token, Member(s.nick, bool(s.away)))
        self._save(s)
        out.append(Show(f"* {s.nick} is away: {req.text}" if req.text else f"* {s.nick} is back"))
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _whois(self, peer: bytes, s: Session, req: m.Whois, now: float, out: list[Effect]) -> None:
        target = self._local(req.nick)
        holder = self.registry.holder(nick_key(req.nick)) if target is None else None
        remote = self.registry.get(holder) if holder else None
        owner = self.store.get_state(_owner(req.nick))
        key = _fingerprint(owner.decode()) if owner else ""
        if target is not None:
            rooms = sorted(
                name
                for name in target.rooms
                if name in s.rooms or not self._rooms[name].private  # never another's secret
            )
            idle = round(now - (target.active or target.last_seen), 1)
            reply = m.WhoisIs(req.rid, target.nick, True, rooms, target.away, idle, 0.0, key)
        elif remote is not None:  # on another broker of the cluster: no idle time here
            rooms = sorted(
                name
                for name in remote.rooms
                if name in s.rooms or not (self._rooms.get(name) or self._load_room(name)).private
            )
            reply = m.WhoisIs(req.rid, remote.nick, True, rooms, remote.away, 0.0, 0.0, key)
        else:
            seen = self.store.get_state(_last_seen(req.nick))
            if seen is None and self.store.get_state(_inbox(req.nick)) is None:
                raise ProtocolError(Code.NO_SUCH_NICK, f"nobody is called {req.nick}")
            reply = m.WhoisIs(req.rid, req.nick, False, seen=float(seen or 0.0), key=key)
        out.append(Send(s.peer, reply))

    def _op(self, peer: bytes, s: Session, req: m.Op, now: float, out: list[Effect]) -> None:
        room = self._live_room_for_op(s, req.room)
        ids = self._target_ids(req.nick)
        if req.op:
            if len(room.ops | ids) > self.config.limits.max_room_list:
                raise ProtocolError(
                    Code.TOO_MANY, f"#{room.name} has as many operators as it keeps"
                )
            room.ops |= ids
        else:
            room.ops -= ids
        self._save_room(room)
        self._event(room.name, "op", s.nick, ("" if req.op else "-") + req.nick, now, out)
        verb = "made" if req.op else "removed"
        out.append(Show(f"* {s.nick} {verb} {req.nick} an operator of #{room.name}"))
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _search(
        self, peer: bytes, s: Session, req: m.Search, now: float, out: list[Effect]
    ) -> None:
        log = _room_log(req.room)
        events = [_event_of(req.room, e) for e in self.store.search(log, req.text, req.limit)]
        found = m.Events(req.rid, req.room, _fit_events(events, newest=True), self.store.last(log))
        out.append(Send(s.peer, found))

    def _stats_req(
        self, peer: bytes, s: Session | None, req: m.Stats, now: float, out: list[Effect]
    ) -> None:
        out.append(Send(peer, self._stats(req.rid, now)))

    def _hello(
        self, peer: bytes, current: Session | None, req: m.Hello, now: float, out: list[Effect]
    ) -> None:
        user = self._caller_key
        if current is not None:
            if req.id and req.id == current.hello_id:  # the same HELLO again: same answer
                self._welcome(current, req.rid, False, now, out)
                return
            raise ProtocolError("already_registered", f"already registered as {current.nick}")
        session = self._by_token.get(req.resume) if req.resume else None
        if session is None and req.resume and self.config.cluster:
            session = self._adopt(req.resume, user, peer, now, out)  # failed over to us
        held_by = self.registry.holder(nick_key(req.nick))
        holder = self._by_token.get(held_by) if held_by else None
        retried = (
            session is None and bool(req.id) and holder is not None and holder.hello_id == req.id
        )
        if retried:
            # A HELLO tried again on a new connection after a late WELCOME: the
            # session the first try made is this client's (§6.1).
            session = holder
        if session is not None and session.user == user:  # a token alone is not enough
            # The same client on a new connection: its old routing id is dead.
            if self._by_peer.get(session.peer) is session:
                del self._by_peer[session.peer]
            session.peer = peer
            self._heard(session, now)
            self._by_peer[peer] = session
            out.append(Show(f"+ {session.nick} reconnected"))
            self._welcome(session, req.rid, not retried, now, out)
            return
        if held_by is not None:
            raise ProtocolError("nick_taken", f"the nick {req.nick} is taken; pick another")
        if len(self._by_token) >= self.config.limits.max_clients:
            raise ProtocolError("full", "the broker has as many clients as it takes; try later")
        if self.store_down:  # a new session may write (its nick's key, its inbox cursor)
            raise self._store_unavailable(now)
        self._claim(req.nick, user)
        lim = self.config.limits
        session = Session(self._new_token(), req.nick, peer, now, user, req.id, tokens=lim.burst)
        if self.registry.claim(nick_key(req.nick), session.token) != session.token:
            # Another broker of the cluster registered it a moment ago.
            raise ProtocolError("nick_taken", f"the nick {req.nick} is taken; pick another")
        session.refilled = now
        self._by_peer[peer] = session
        self._by_token[session.token] = session
        self._quietest[session.token] = session
        self._save(session)
        self._follow(_inbox(session.nick), out)
        out.append(Show(f"+ {session.nick} arrived"))
        self._welcome(session, req.rid, False, now, out)

    def _welcome(self, s: Session, rid: int, resumed: bool, now: float, out: list[Effect]) -> None:
        cfg = self.config
        out.append(
            Send(
                s.peer,
                m.Welcome(
                    rid, s.nick, s.token, cfg.pub_endpoint, self.store.epoch, now,
                    cfg.heartbeat, cfg.timeout, resumed, sorted(s.rooms), self.boot,
                ),
            )
        )  # fmt: skip
        self._deliver_inbox(s, now, out)

    def _claim(self, nick: str, user: str) -> None:
        """A nick belongs to the first key (or door account) that used it (§6.11);
        nobody else, with a key or without, may use it."""
        owner = self.store.get_state(_owner(nick))
        if owner is not None and owner.decode() != user:
            raise ProtocolError("nick_taken", f"the nick {nick} belongs to another key")
        if owner is None and user:
            self.store.set_state(_owner(nick), user.encode())

    def _join(self, peer: bytes, s: Session, req: m.Join, now: float, out: list[Effect]) -> None:
        room = self._rooms.get(req.room)
        if req.room in s.rooms:  # joined already: the same answer again
            assert room is not None  # a member's room always exists
            announced = self._announced(room)
        else:
            if len(s.rooms) >= self.config.limits.max_rooms_per_client:
                raise ProtocolError(
                    "too_many_rooms",
                    f"you are in {len(s.rooms)} rooms, the most allowed; leave one first",
                )
            if room is None:
                room = self._load_room(req.room)
                if not room.ops:  # a new room (or one made by `zchat send`): the joiner runs it
                    room.ops |= _ids(s)
                    room.private = req.private
                    self._save_room(room)
            else:
                self._refresh(room)
            if room.bans & _ids(s) and not self._is_op(s, room):
                raise ProtocolError("banned", f"you are banned from #{req.room}")
            if room.private and not (room.invited & _ids(s) or self._is_op(s, room)):
                raise ProtocolError("invite_only", f"#{req.room} is invite-only")
            self._rooms[req.room] = room  # before the event: it says whether to publish it
            self._follow(_room_log(req.room), out)
            announced = self._announced(room)
            # Just after a restart, clients come back into the rooms they were in:
            # their joins are no news, and would fill every room's history.
            quiet = req.rejoin and now < self.started + 2 * self.config.timeout
            room.members.add(s)  # before the event: a private room tells s too
            if announced and not quiet:
                try:
                    self._event(req.room, "join", s.nick, "", now, out)
                except StoreUnavailable:  # not stored: not joined either
                    room.members.discard(s)
                    self._drop_room_if_empty(room, out)
                    raise
            s.rooms.add(req.room)
            self.registry.enter(req.room, s.token, Member(s.nick, bool(s.away)))
            self._save(s)
            out.append(Show(f"+ {s.nick} joined #{req.room}"))
        history = _fit_events(self._read(req.room, 0, req.history, before=True), newest=True)
        if announced:
            members, more = _fit_names(_nicks(self.registry.members(req.room)), _LIST_BUDGET // 4)
        else:  # a big room: members follow no joins, and WHO lists them on request
            members, more = [], self.registry.count(req.room)
        last = self.store.last(_room_log(req.room))
        joined = m.Joined(req.rid, req.room, room.topic, members, last, history, more, room.private)
        out.append(Send(s.peer, joined))

    def _part(
        self, s: Session, name: str, reason: str, now: float, out: list[Effect], kind: str = "leave"
    ) -> None:
        room = self._rooms.get(name)
        if room is None:
            s.rooms.discard(name)
            return
        # The event first: a private room tells s too, and if the store cannot
        # take it, s is still a member (an expiry tries again later).
        if kind != "leave" or self._announced(room):
            self._event(name, kind, s.nick, reason, now, out)
        s.rooms.discard(name)
        room.members.discard(s)
        self.registry.leave(name, s.token)
        self._save(s)
        out.append(Show(f"- {s.nick} left #{name} ({reason})"))
        self._drop_room_if_empty(room, out)

    def _announced(self, room: Room) -> bool:
        """Whether joins and leaves of ``room`` are events: not in a big room, where
        announcing each to every member would cost N² (§6.2)."""
        return self.registry.count(room.name) < self.config.announce_limit

    def _end(self, s: Session, reason: str, now: float, out: list[Effect]) -> None:
        if self.config.cluster:
            rec = self.registry.get(s.token)
            if rec is None or rec.broker != self.boot:
                # Its client failed over to another broker, which serves it now
                # (or ended it there): nothing to announce from here.
                self._forget(s, out)
                out.append(Show(f"- {s.nick} moved to another broker"))
                return
        # First: if the store cannot take it, the session is still whole.
        self.store.set_state(_last_seen(s.nick), repr(now).encode())
        for name in sorted(s.rooms):
            self._part(s, name, reason, now, out)
        self.registry.release(nick_key(s.nick), s.token)
        self.registry.drop(s.token)
        self._forget(s, out)
        out.append(Show(f"- {s.nick} gone ({reason})"))

    def _forget(self, s: Session, out: list[Effect]) -> None:
        """Drop ``s`` from this broker's own tables (not from the registry)."""
        for name in s.rooms:
            room = self._rooms.get(name)
            if room is not None:
                room.members.discard(s)
                self._drop_room_if_empty(room, out)
        s.rooms.clear()
        self._by_token.pop(s.token, None)
        self._quietest.pop(s.token, None)
        self._unfollow(_inbox(s.nick), out)
        if self._by_peer.get(s.peer) is s:
            del self._by_peer[s.peer]

    def _say(self, peer: bytes, s: Session, req: m.Say, now: float, out: list[Effect]) -> None:
        room = self._rooms.get(req.room)
        if req.room not in s.rooms:
            # Posting from outside (zchat send) is for public rooms one is not banned from.
            settings = room or self._load_room(req.room)
            if settings.private:
                raise ProtocolError("not_member", f"join #{req.room} to talk there")
            if settings.bans & _ids(s):
                raise ProtocolError("banned", f"you are banned from #{req.room}")
        kind = "action" if req.action else "msg"
        seq, dup = self._event(req.room, kind, s.nick, req.text, now, out, req.id)
        if dup:
            self.counters.duplicates += 1
        else:
            self.counters.messages += 1
            star = "* " + s.nick if req.action else "<" + s.nick + ">"
            out.append(Show(f"[#{req.room}] {star} {req.text}"))
        out.append(Send(s.peer, m.Ack(req.rid, req.id, seq, dup)))
        s.active = now

    def _tell(self, peer: bytes, s: Session, req: m.Tell, now: float, out: list[Effect]) -> None:
        target = self._local(req.to)
        held_by = self.registry.holder(nick_key(req.to)) if target is None else None
        remote = self.registry.get(held_by) if held_by else None  # on another broker
        known = target or remote or self.store.get_state(_inbox(req.to)) is not None
        if not known:
            raise ProtocolError("no_such_nick", f"nobody is called {req.to}")
        to = target.nick if target else remote.nick if remote else req.to
        body = DmRecord(req.id, s.nick, to, req.text, now, req.action).pack()
        log = _inbox(req.to)
        stored = self.store.append(log, req.id, s.nick, body)
        if stored.duplicate:
            self.counters.duplicates += 1
        else:
            self.counters.dms += 1
            online = target or remote
            out.append(Show(f"{s.nick} -> {to} (DM{'' if online else ', stored'})"))
            # Another broker's session gets it from the inbox's feed (§6.14).
            if target is not None and self._in_order(log, stored.seq, out):
                dm = m.Dm(req.id, s.nick, to, req.text, now, req.action, stored.seq)
                out.append(Send(target.peer, dm))
        away = target.away if target else remote.away if remote else ""
        out.append(Send(s.peer, m.Ack(req.rid, req.id, stored.seq, stored.duplicate, away)))
        s.active = now

    def _deliver_inbox(self, s: Session, now: float, out: list[Effect]) -> None:
        """Send the DMs not yet SEEN by ``s.nick`` (§6.6); they stay until confirmed."""
        log = _inbox(s.nick)
        if self.store.get_state(log) is None:  # first login: the nick is now known
            self.store.set_state(log, str(self.store.last(log)).encode())
            return
        for entry in self.store.read(log, self._cursor(s.nick), MAX_HISTORY):
            msg_id, sender, to, text, ts, action = DmRecord.unpack(entry.body)
            out.append(Send(s.peer, m.Dm(msg_id, sender, to, text, ts, action, entry.seq)))

    def _cursor(self, nick: str) -> int:
        raw = self.store.get_state(_inbox(nick))
        return int(raw) if raw else 0

    def _nick(self, peer: bytes, s: Session, req: m.Nick, now: float, out: list[Effect]) -> None:
        old, new = s.nick, req.nick
        holder = self.registry.holder(nick_key(new))
        if holder is not None and holder != s.token:
            raise ProtocolError("nick_taken", f"the nick {new} is taken; pick another")
        self._claim(new, s.user)
        if self.registry.claim(nick_key(new), s.token) != s.token:
            raise ProtocolError("nick_taken", f"the nick {new} is taken; pick another")
        if nick_key(old) != nick_key(new):
            self.registry.release(nick_key(old), s.token)
            self._unfollow(_inbox(old), out)
        s.nick = new
        self._save(s)
        for name in s.rooms:
            self.registry.enter(name, s.token, Member(new, bool(s.away)))
        self._follow(_inbox(new), out)
        self._deliver_inbox(s, now, out)
        for name in sorted(s.rooms):
            self._event(name, "nick", old, new, now, out)
        out.append(Show(f"* {old} is now {new}"))
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _topic(self, peer: bytes, s: Session, req: m.Topic, now: float, out: list[Effect]) -> None:
        room = self._rooms.get(req.room)
        if req.topic is None:
            topic = (room or self._load_room(req.room)).topic
        else:
            if room is None or s not in room.members:
                raise ProtocolError("not_member", f"join #{req.room} to set its topic")
            self._require_op(s, room)
            room.topic = topic = req.topic
            self._save_room(room)
            self._event(req.room, "topic", s.nick, topic, now, out)
            out.append(Show(f"* {s.nick} set the topic of #{req.room}: {topic}"))
        out.append(Send(s.peer, m.TopicIs(req.rid, req.room, topic)))

    def _stats(self, rid: int, now: float) -> m.StatsReply:
        counters = [m.Stat(f.name, getattr(self.counters, f.name)) for f in fields(Counters)]
        return m.StatsReply(rid, self.started, now, len(self._by_token), len(self._rooms), counters)

    def _room_list(self, rid: int, s: Session) -> m.RoomList:
        budget = _LIST_BUDGET
        infos: list[m.RoomInfo] = []
        listed = self.registry.rooms(self.config.limits.max_listed_rooms)
        # Rooms served elsewhere in a cluster have their settings in the store.
        rooms = [(self._rooms.get(name) or self._load_room(name), n) for name, n in listed]
        visible = [(r, n) for r, n in rooms if not r.private or r.name in s.rooms]
        for room, members in visible:
            budget -= len(room.name) + len(room.topic.encode()) + 16
            if budget < 0:
                break
            infos.append(m.RoomInfo(room.name, members, room.topic))
        return m.RoomList(rid, infos, len(visible) - len(infos))

    # ------------------------------------------------------------ moderation

    def _is_op(self, s: Session, room: Room) -> bool:
        return bool(room.ops & _ids(s)) or nick_key(s.nick) in self.config.admins

    def _target_ids(self, nick: str) -> set[str]:
        """A nick and, with CURVE, the key that owns it: bans and invites name both,
        so a new nick does not escape a ban."""
        ids = {nick_key(nick)}
        owner = self.store.get_state(_owner(nick))
        if owner:
            ids.add("key:" + owner.decode())
        return ids

    def _require_readable(self, s: Session, name: str) -> None:
        """A private room's log is for its members only (§6.11)."""
        if name not in s.rooms and (self._rooms.get(name) or self._load_room(name)).private:
            raise ProtocolError(Code.NOT_MEMBER, f"#{name} is invite-only")

    def _require_op(self, s: Session, room: Room) -> None:
        if not self._is_op(s, room):
            raise ProtocolError("not_op", f"only operators of #{room.name} can do that")

    def _live_room_for_op(self, s: Session, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None or s not in room.members:
            raise ProtocolError("not_member", f"join #{name} first")
        self._refresh(room)
        self._require_op(s, room)
        return room

    def _invite(
        self, peer: bytes, s: Session, req: m.Invite, now: float, out: list[Effect]
    ) -> None:
        room = self._live_room_for_op(s, req.room)
        ids = self._target_ids(req.nick)
        if len(room.invited | ids) > self.config.limits.max_room_list:
            raise ProtocolError("too_many", f"#{room.name} has as many invites as it keeps")
        room.invited |= ids
        room.bans -= ids
        self._save_room(room)
        target = self._local(req.nick)  # one on another broker sees it on joining
        if target is not None:
            out.append(Send(target.peer, m.Invited(room.name, s.nick)))
        out.append(Show(f"* {s.nick} invited {req.nick} to #{room.name}"))
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _kick(self, peer: bytes, s: Session, req: m.Kick, now: float, out: list[Effect]) -> None:
        room = self._live_room_for_op(s, req.room)
        target = self._member(req.nick, room)
        if target is None:
            raise ProtocolError("not_member", f"{req.nick} is not in #{room.name}")
        self._remove(s, target, room, req.reason, now, out)
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _ban(self, peer: bytes, s: Session, req: m.Ban, now: float, out: list[Effect]) -> None:
        room = self._live_room_for_op(s, req.room)
        ids = self._target_ids(req.nick)
        if req.ban:
            if len(room.bans | ids) > self.config.limits.max_room_list:
                raise ProtocolError("too_many", f"#{room.name} has as many bans as it keeps")
            room.bans |= ids
            room.invited -= ids
        else:
            room.bans -= ids
        self._save_room(room)
        target = self._member(req.nick, room) if req.ban else None
        if target is not None:
            self._remove(s, target, room, "banned", now, out)
        out.append(
            Show(f"* {s.nick} {'banned' if req.ban else 'unbanned'} {req.nick} in #{room.name}")
        )
        out.append(Send(s.peer, m.Ok(req.rid)))

    def _member(self, nick: str, room: Room) -> Session | SessionRecord | None:
        """The member of ``room`` called ``nick``: a session here, or the record
        of one on another broker of the cluster."""
        local = self._local(nick)
        if local is not None:
            return local if local in room.members else None
        holder = self.registry.holder(nick_key(nick))
        rec = self.registry.get(holder) if holder else None
        return rec if rec is not None and room.name in rec.rooms else None

    def _remove(
        self,
        by: Session,
        target: Session | SessionRecord,
        room: Room,
        reason: str,
        now: float,
        out: list[Effect],
    ) -> None:
        if room.private:
            room.invited -= _ids_of(target.nick, target.user)
            self._save_room(room)
        why = f"by {by.nick}" + (f": {reason}" if reason else "")
        if isinstance(target, Session):
            self._part(target, room.name, why, now, out, kind="kick")
            return
        # On another broker: the kick event ends the membership there (§6.14).
        self._event(room.name, "kick", target.nick, why, now, out)
        self.registry.leave(room.name, target.token)
        target.rooms = [r for r in target.rooms if r != room.name]
        self.registry.put(target)

    def _history(
        self, peer: bytes, s: Session, req: m.History, now: float, out: list[Effect]
    ) -> None:
        if req.after:
            events = self._read(req.room, req.after, req.limit, before=False)
            events = _fit_events(events, newest=False)
        else:
            events = self._read(req.room, req.before, req.limit, before=True)
            events = _fit_events(events, newest=True)
        last = self.store.last(_room_log(req.room))
        out.append(Send(s.peer, m.Events(req.rid, req.room, events, last)))

    # ---------------------------------------------------------------- helpers

    def _event(
        self,
        room: str,
        kind: str,
        nick: str,
        text: str,
        now: float,
        out: list[Effect],
        msg_id: str = "",
    ) -> tuple[int, bool]:
        """Append one event to a room's log and deliver it unless it is a duplicate.

        Public rooms publish it; a private room's events go to each member's
        DEALER and never near the broadcast socket (§6.11).
        """
        msg_id = msg_id or uuid.uuid4().hex
        body = RoomRecord(kind, nick, text, now).pack()
        log = _room_log(room)
        stored = self.store.append(log, msg_id, nick, body)
        if self.store.epoch != self._epoch:  # this append found the store reset
            self._store_reset(out)
        if stored.duplicate:
            pass
        elif self._in_order(log, stored.seq, out):
            event = m.Event.trusted(room, stored.seq, kind, nick, text, now, msg_id)
            self._deliver(room, event, out)
        else:  # a new entry at a position delivered before
            self._went_back(log, stored.seq)
        return stored.seq, stored.duplicate

    def _deliver(self, room: str, event: m.Event, out: list[Effect]) -> None:
        live = self._rooms.get(room)
        # A room with nobody here (a dead broker's member leaving it, §6.14) has
        # its settings in the store: a private one must not go on the broadcast.
        private = live.private if live is not None else self._load_room(room).private
        if not private:
            out.append(Publish(event))
        elif live is not None:
            push = m.PrivateEvent(event)
            out.extend(Send(member.peer, push) for member in live.members)

    def _read(self, room: str, pos: int, limit: int, before: bool) -> list[m.Event]:
        log = _room_log(room)
        entries = (
            self.store.read_before(log, pos, limit) if before else self.store.read(log, pos, limit)
        )
        return [_event_of(room, e) for e in entries]

    def _load_room(self, name: str) -> Room:
        """A room's settings from the store (a fresh Room if it has none)."""
        room = Room(name)
        raw = self.store.get_state(_room_log(name))
        data = _settings(raw) if raw else None
        if raw and data is None:  # anything else there can only be a bare topic
            room.topic = raw.decode("utf-8", "replace")
        if data is not None:
            room.topic = data["topic"]
            room.private = data["private"]
            room.ops, room.bans, room.invited = (
                set(data["ops"]), set(data["bans"]), set(data["invited"])
            )  # fmt: skip
        return room

    def _save_room(self, room: Room) -> None:
        settings = {
            "topic": room.topic,
            "private": room.private,
            "ops": sorted(room.ops),
            "bans": sorted(room.bans),
            "invited": sorted(room.invited),
        }
        self.store.set_state(_room_log(room.name), msgpack.packb(settings))


#: Bytes of names or events one reply may carry, well under MAX_BODY_BYTES.
_LIST_BUDGET = 48 * 1024


def _event_of(room: str, entry: Entry) -> m.Event:
    kind, nick, text, ts = RoomRecord.unpack(entry.body)
    return m.Event.trusted(room, entry.seq, kind, nick, text, ts, entry.msg_id)


def _nicks(members: list[Member]) -> list[str]:
    return sorted((x.nick for x in members), key=str.lower)


def _fit_names(names: list[str], budget: int) -> tuple[list[str], int]:
    """As many names as fit in ``budget`` bytes, and how many were left out."""
    for i, name in enumerate(names):
        budget -= len(name) + 2
        if budget < 0:
            return names[:i], len(names) - i
    return names, 0


def _fit_events(events: list[m.Event], newest: bool) -> list[m.Event]:
    """A contiguous run of ``events`` that fits _LIST_BUDGET: the newest ones
    (``newest``) or the oldest ones. Never empty if ``events`` is not."""
    budget = _LIST_BUDGET
    order = reversed(events) if newest else iter(events)
    kept: list[m.Event] = []
    for ev in order:
        budget -= len(ev.text.encode()) + len(ev.nick) + len(ev.room) + len(ev.id) + 64
        if budget < 0 and kept:
            break
        kept.append(ev)
    return kept[::-1] if newest else kept


def _error(rid: int, exc: ProtocolError) -> m.Error:
    return m.Error(rid, exc.code, exc.text, exc.retry_after)


def _always(req: m.Request) -> bool:
    return True


def _never(req: m.Request) -> bool:
    return False


def _room(req: Any) -> str:
    return str(req.room)


@dataclass(frozen=True, slots=True)
class Verb:
    """One row of the request table: how the broker takes one request type.

    ``needs_session``: refused with ``not_registered`` without one (all but
    HELLO and STATS). ``metered``: costs a rate-limit token (§6.12).
    ``writes``: whether this request would write to the store, refused while
    the store is down (§6.4). ``reads_room``: the room it reads, if any, which
    a private room allows its members only (§6.11).
    """

    handler: Callable[[BrokerCore, bytes, Any, Any, float, list[Effect]], None]
    needs_session: bool = True
    metered: bool = True
    writes: Callable[[Any], bool] = _always
    reads_room: Callable[[Any], str | None] = lambda req: None


_VERBS: dict[type[m.Request], Verb] = {
    m.Hello: Verb(BrokerCore._hello, False, metered=False, writes=_never),  # checks inside
    m.Stats: Verb(BrokerCore._stats_req, False, metered=False, writes=_never),
    m.Ping: Verb(BrokerCore._ping, metered=False, writes=_never),
    m.Say: Verb(BrokerCore._say),
    m.Tell: Verb(BrokerCore._tell),
    m.Join: Verb(BrokerCore._join),
    m.Leave: Verb(BrokerCore._leave),
    m.Nick: Verb(BrokerCore._nick),
    m.Topic: Verb(
        BrokerCore._topic,
        writes=lambda req: req.topic is not None,
        reads_room=lambda req: req.room if req.topic is None else None,
    ),
    m.Who: Verb(BrokerCore._who, writes=_never, reads_room=_room),
    m.Rooms: Verb(BrokerCore._rooms_req, writes=_never),
    m.History: Verb(BrokerCore._history, writes=_never, reads_room=_room),
    m.Invite: Verb(BrokerCore._invite),
    m.Kick: Verb(BrokerCore._kick),
    m.Ban: Verb(BrokerCore._ban),
    m.Seen: Verb(BrokerCore._seen, metered=False),
    m.Bye: Verb(BrokerCore._bye, metered=False),
    m.Away: Verb(BrokerCore._away, writes=_never),
    m.Whois: Verb(BrokerCore._whois, writes=_never),
    m.Op: Verb(BrokerCore._op),
    m.Search: Verb(BrokerCore._search, writes=_never, reads_room=_room),
}
