"""BrokerCore driven purely: frames and an explicit clock in, effects out.

No sockets, no sleeps, no real time. Every request goes in as wire frames built
with ``encode`` and every effect that comes back is pushed through the codec
again, so a test also proves that what the core asks the server to send can go
on the wire (docs/protocol.md §2). Sections cited: §4 requests (one reply
each), §5 broadcasts, §6.1 hello/resume, §6.2 join, §6.3 say/ack/dedupe, §6.4
store, §6.5 history, §6.6 DMs, §6.7 heartbeats, §7 errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.broker.core import BrokerCore, CoreConfig, Effect, Limits, Publish, Send, Show
from zchat.protocol import (
    PROTOCOL,
    ProtocolError,
    decode_broadcast,
    decode_from_broker,
    encode,
)
from zchat.protocol import messages as m
from zchat.protocol.rules import MAX_BODY_BYTES, MAX_NICK_CHARS, MAX_TEXT_BYTES, MAX_TOPIC_CHARS
from zchat.store import MemoryStore, Store, StoreUnavailable

PUB = "tcp://*:5556"
T0 = 1_700_000_000.0

# Routing ids as a ROUTER would make them up: opaque bytes.
A, B, C, D = b"\x00peer-a", b"\x00peer-b", b"\x00peer-c", b"\x00peer-d"

R = TypeVar("R", bound=m.Reply)


class Out:
    """What one call into the core returned, checked against the wire and sorted by kind."""

    def __init__(self, effects: list[Effect]) -> None:
        self.effects = effects
        self.sends: list[tuple[bytes, m.Reply | m.Push]] = []
        self.published: list[m.Broadcast] = []
        self.frames: list[list[bytes]] = []  # published frames, as they would be sent
        self.shows: list[str] = []
        for fx in effects:
            if isinstance(fx, Show):
                self.shows.append(fx.line)
                continue
            try:
                frames = encode(fx.msg)
            except ProtocolError as exc:
                # The server would log "cannot encode" and drop it: the peer waits forever.
                raise AssertionError(
                    f"the core produced a {type(fx.msg).__name__} that cannot go on the wire: "
                    f"{exc.code}: {exc}"
                ) from None
            if isinstance(fx, Send):
                back: m.Message = decode_from_broker(frames)
                assert back == fx.msg, "reply changed on its way through the codec"
                self.sends.append((fx.peer, fx.msg))
            else:
                back = decode_broadcast(frames)
                assert back == fx.msg, "broadcast changed on its way through the codec"
                self.published.append(fx.msg)
                self.frames.append(frames)

    def to(self, peer: bytes) -> list[m.Reply | m.Push]:
        return [msg for p, msg in self.sends if p == peer]

    @property
    def replies(self) -> list[tuple[bytes, m.Reply]]:
        return [(p, msg) for p, msg in self.sends if isinstance(msg, m.Reply)]

    @property
    def reply(self) -> m.Reply:
        (only,) = self.replies
        return only[1]

    def expect(self, cls: type[R]) -> R:
        """The one reply, which must be a ``cls``."""
        reply = self.reply
        assert isinstance(reply, cls), f"expected {cls.__name__}, got {reply!r}"
        return reply

    @property
    def error(self) -> str:
        """The code of the one reply, which must be an Error (§7)."""
        return self.expect(m.Error).code

    @property
    def events(self) -> list[m.Event]:
        return [b for b in self.published if isinstance(b, m.Event)]


class Harness:
    """A BrokerCore on a MemoryStore with a hand-moved clock and predictable tokens."""

    def __init__(
        self,
        *,
        heartbeat: float = 5.0,
        timeout: float = 15.0,
        limits: Limits | None = None,
        store: Store | None = None,
        now: float = T0,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        # No rate limit unless a test asks for one: tests send bursts on purpose.
        unmetered = Limits(rate=1e9, burst=10**9)
        self.config = CoreConfig(PUB, heartbeat, timeout, limits or unmetered)
        tokens = (f"tok{i}" for i in itertools.count(1))
        self.core = BrokerCore(
            self.store, self.config, now, new_token=lambda: next(tokens), boot="boot1"
        )
        self.now = now
        self.wire: list[list[bytes]] = []  # everything ever published, as frames
        self._rids = itertools.count(1)

    def rid(self) -> int:
        return next(self._rids)

    def _record(self, out: Out) -> Out:
        self.wire.extend(out.frames)
        return out

    def raw(self, peer: bytes, frames: Sequence[bytes]) -> Out:
        """Feed frames as they came off the ROUTER (envelope stripped)."""
        return self._record(Out(self.core.handle(peer, frames, self.now)))

    def send(self, peer: bytes, msg: m.Request) -> Out:
        """Feed one well-formed request; check §4: exactly one reply, to its sender."""
        out = self.raw(peer, encode(msg))
        replies = out.replies
        assert len(replies) == 1, f"{msg!r} got {len(replies)} replies: {replies!r}"
        to, reply = replies[0]
        assert to == peer, f"the reply to {msg!r} went to another peer"
        assert reply.rid == msg.rid
        return out

    def req(self, peer: bytes, cls: type[m.Request], *args: Any, **kwargs: Any) -> Out:
        """Build ``cls(rid, *args, **kwargs)`` with a fresh rid and send it."""
        return self.send(peer, cls(self.rid(), *args, **kwargs))

    def tick(self, now: float) -> Out:
        self.now = now
        return self._record(Out(self.core.tick(now)))

    # Short forms for the common verbs.

    def hello(self, peer: bytes, nick: str, resume: str = "") -> m.Welcome:
        return self.req(peer, m.Hello, nick, resume).expect(m.Welcome)

    def join(self, peer: bytes, room: str, history: int = 20) -> m.Joined:
        return self.req(peer, m.Join, room, history).expect(m.Joined)

    def say(
        self, peer: bytes, room: str, text: str, id: str | None = None, action: bool = False
    ) -> Out:
        rid = self.rid()
        return self.send(peer, m.Say(rid, room, id or f"say-{rid}", text, action))

    def who(self, peer: bytes, room: str) -> list[str]:
        return self.req(peer, m.Who, room).expect(m.Names).members

    def rooms(self, peer: bytes) -> list[m.RoomInfo]:
        return self.req(peer, m.Rooms).expect(m.RoomList).rooms


def brief(ev: m.Event) -> tuple[str, int, str, str, str]:
    """The parts of an event a test states; ids of join/leave events are random."""
    return (ev.room, ev.seq, ev.kind, ev.nick, ev.text)


def body(kind: bytes, fields: object) -> list[bytes]:
    """Request frames with an arbitrary (possibly invalid) body."""
    return [PROTOCOL, kind, msgpack.packb(fields)]


@pytest.fixture
def h() -> Harness:
    return Harness()


# ------------------------------------------------------------ §6.1 hello


def test_hello_is_answered_with_a_welcome() -> None:
    """§6.1: the Welcome carries the session, the PUB endpoint, the store's epoch and timers."""
    h = Harness(heartbeat=2.5, timeout=7.5)
    h.now = T0 + 1
    out = h.req(A, m.Hello, "Alice")
    w = out.expect(m.Welcome)
    assert w == m.Welcome(
        rid=w.rid,
        nick="Alice",  # display case kept
        session="tok1",
        pub=PUB,
        epoch=h.store.epoch,
        time=T0 + 1,
        heartbeat=2.5,
        timeout=7.5,
        resumed=False,
        rooms=[],
        boot="boot1",  # this broker process
    )
    assert out.published == []
    assert h.core.clients == 1
    assert any("Alice" in line for line in out.shows)


def test_nick_is_taken_whatever_its_case(h: Harness) -> None:
    """§6.1/§7: Alice and alice are one nick."""
    h.hello(A, "Alice")
    assert h.req(B, m.Hello, "alice").error == "nick_taken"
    assert h.req(B, m.Hello, "ALICE").error == "nick_taken"
    # The refused HELLO registered nothing.
    assert h.req(B, m.Ping).error == "not_registered"
    assert h.hello(B, "bob").nick == "bob"
    assert h.core.clients == 2


@pytest.mark.parametrize(
    "request_",
    [
        m.Ping(7),
        m.Join(7, "dev"),
        m.Leave(7, "dev"),
        m.Say(7, "dev", "id-1", "hi"),
        m.Tell(7, "bob", "id-2", "hi"),
        m.Nick(7, "bob"),
        m.Topic(7, "dev", "new topic"),
        m.Who(7, "dev"),
        m.Rooms(7),
        m.History(7, "dev"),
        m.Bye(7),
    ],
    ids=lambda r: type(r).__name__,
)
def test_request_before_hello_is_not_registered(h: Harness, request_: m.Request) -> None:
    """§6.1/§7: every request but HELLO needs a session."""
    h.hello(B, "bob")
    out = h.send(A, request_)
    assert out.error == "not_registered"
    assert out.published == []
    assert out.to(B) == []


def test_second_hello_on_the_same_peer_is_refused(h: Harness) -> None:
    w = h.hello(A, "alice")
    assert h.req(A, m.Hello, "alice").error == "already_registered"
    assert h.req(A, m.Hello, "bob").error == "already_registered"
    assert h.req(A, m.Hello, "alice", w.session).error == "already_registered"
    assert h.hello(B, "bob").nick == "bob"  # the refused HELLO did not take "bob"
    assert h.core.clients == 2


def test_resume_from_a_new_peer_keeps_nick_and_rooms(h: Harness) -> None:
    """§6.1: a reconnecting client presents its session token from a new routing id."""
    w = h.hello(A, "alice")
    h.join(A, "ops")
    h.join(A, "dev")
    h.now = T0 + 5
    out = h.req(B, m.Hello, "whoever", w.session)
    back = out.expect(m.Welcome)
    assert back.resumed
    assert (back.nick, back.session, back.rooms) == ("alice", w.session, ["dev", "ops"])
    assert back.time == T0 + 5
    assert out.published == []  # no leave/join churn for a reconnect
    assert h.core.clients == 1
    # The old routing id is dead; the new one is alice.
    assert h.req(A, m.Ping).error == "not_registered"
    assert h.who(B, "dev") == ["alice"]
    (ev,) = h.say(B, "dev", "back again").events
    assert (ev.nick, ev.text) == ("alice", "back again")
    # The nick is still held by the session.
    assert h.req(C, m.Hello, "Alice").error == "nick_taken"


def test_resume_with_an_unknown_token_registers_afresh(h: Harness) -> None:
    w = h.hello(A, "alice", resume="no-such-token")
    assert not w.resumed
    assert (w.nick, w.session, w.rooms) == ("alice", "tok1", [])


def test_resume_after_bye_registers_afresh(h: Harness) -> None:
    w = h.hello(A, "alice")
    h.join(A, "dev")
    h.req(A, m.Bye)
    again = h.hello(B, "alice", resume=w.session)
    assert not again.resumed
    assert again.session != w.session
    assert again.rooms == []


# ------------------------------------------------------------- §6.2 join


def test_join_publishes_a_join_event_and_replies_joined(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.now = T0 + 1
    out = h.req(A, m.Join, "#Dev")
    (ev,) = out.events
    assert brief(ev) == ("dev", 1, "join", "alice", "")
    assert ev.ts == T0 + 1
    assert ev.topic == b"#dev\x00"
    assert out.expect(m.Joined) == m.Joined(
        rid=out.reply.rid, room="dev", topic="", members=["alice"], last=1, history=[ev]
    )
    assert out.to(B) == []  # others learn of it on the broadcast socket only

    h.now = T0 + 2
    out = h.req(B, m.Join, "dev")
    (ev2,) = out.events
    assert brief(ev2) == ("dev", 2, "join", "bob", "")
    joined = out.expect(m.Joined)
    assert (joined.members, joined.last, joined.history) == (["alice", "bob"], 2, [ev, ev2])
    assert out.to(A) == []


def test_join_returns_as_much_history_as_asked(h: Harness) -> None:
    h.hello(A, "alice")
    h.join(A, "dev")  # seq 1
    for i in range(5):  # seqs 2..6
        h.say(A, "dev", f"line {i}")
    h.hello(B, "bob")
    joined = h.join(B, "dev", history=3)  # bob's join is seq 7
    assert [e.seq for e in joined.history] == [5, 6, 7]
    assert [e.text for e in joined.history[:2]] == ["line 3", "line 4"]
    assert joined.last == 7
    h.hello(C, "carol")
    joined = h.join(C, "dev", history=0)
    assert joined.history == []
    assert joined.last == 8


def test_join_twice_is_idempotent(h: Harness) -> None:
    h.hello(A, "alice")
    first = h.join(A, "dev")
    out = h.req(A, m.Join, "dev")
    assert out.published == []
    again = out.expect(m.Joined)
    assert (again.members, again.last, again.history) == (["alice"], 1, first.history)
    assert h.who(A, "dev") == ["alice"]


# ------------------------------------------------------------- §6.3 say


def test_say_publishes_an_event_and_acks_its_seq(h: Harness) -> None:
    h.hello(A, "alice")
    h.join(A, "dev")
    h.now = T0 + 3
    out = h.req(A, m.Say, "dev", "m-1", "hello there")
    assert out.published == [m.Event("dev", 2, "msg", "alice", "hello there", T0 + 3, "m-1")]
    assert out.frames[0][0] == b"#dev\x00"
    assert out.expect(m.Ack) == m.Ack(out.reply.rid, "m-1", 2, dup=False)
    assert "[#dev] <alice> hello there" in out.shows
    assert h.core.counters.messages == 1


def test_say_with_the_same_id_is_acked_as_a_duplicate_and_not_published(h: Harness) -> None:
    """§6.3: a client retries with the same id; the broker stores and publishes it once."""
    w = h.hello(A, "alice")
    h.join(A, "dev")
    h.say(A, "dev", "hello", id="m-1")
    h.now = T0 + 1
    again = h.req(A, m.Say, "dev", "m-1", "hello")
    assert again.expect(m.Ack) == m.Ack(again.reply.rid, "m-1", 2, dup=True)
    assert again.published == []
    # The usual retry comes after a reconnect, from a new routing id.
    h.hello(B, "alice", resume=w.session)
    retry = h.req(B, m.Say, "dev", "m-1", "hello")
    assert retry.expect(m.Ack).dup
    assert retry.published == []
    assert (h.core.counters.messages, h.core.counters.duplicates) == (1, 2)
    # Dedupe is per room log (§6.4): the same id elsewhere is a new message.
    h.join(B, "ops")
    other = h.say(B, "ops", "hello", id="m-1")
    assert not other.expect(m.Ack).dup
    assert len(other.events) == 1


def test_me_is_an_action_event(h: Harness) -> None:
    h.hello(A, "alice")
    h.join(A, "dev")
    out = h.say(A, "dev", "waves", action=True)
    (ev,) = out.events
    assert (ev.kind, ev.nick, ev.text) == ("action", "alice", "waves")
    assert "[#dev] * alice waves" in out.shows


def test_say_without_joining_is_accepted(h: Harness) -> None:
    """``zchat send`` says HELLO, SAY, BYE without a JOIN (zchat/client/oneshot.py)."""
    h.hello(A, "alice")
    out = h.say(A, "dev", "from a script")
    assert out.expect(m.Ack).seq == 1
    assert [brief(e) for e in out.events] == [("dev", 1, "msg", "alice", "from a script")]


# ------------------------------------------------------------------ leave


def test_leave_a_room_you_are_not_in_is_not_member(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(B, "dev")
    assert h.req(A, m.Leave, "dev").error == "not_member"  # exists, without alice
    assert h.req(A, m.Leave, "nowhere").error == "not_member"
    assert h.who(A, "dev") == ["bob"]


def test_leave_publishes_a_leave_event(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.join(B, "dev")
    h.now = T0 + 4
    out = h.req(A, m.Leave, "dev")
    out.expect(m.Ok)
    (ev,) = out.events
    assert brief(ev) == ("dev", 3, "leave", "alice", "left")
    assert ev.ts == T0 + 4
    assert h.who(B, "dev") == ["bob"]
    assert h.req(A, m.Leave, "dev").error == "not_member"


def test_rooms_with_no_members_disappear_from_the_listing(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.join(A, "ops")
    h.join(B, "ops")
    h.req(A, m.Leave, "dev")
    assert h.rooms(A) == [m.RoomInfo("ops", 2, "")]
    assert h.core.rooms == 1
    assert h.who(A, "dev") == []


def test_a_room_log_outlives_its_members(h: Harness) -> None:
    """§6.4: positions continue when an emptied room is joined again."""
    h.hello(A, "alice")
    h.join(A, "dev")  # 1
    h.say(A, "dev", "before")  # 2
    h.req(A, m.Leave, "dev")  # 3
    out = h.req(A, m.Join, "dev")
    assert [e.seq for e in out.events] == [4]
    joined = out.expect(m.Joined)
    assert joined.last == 4
    assert [e.text for e in joined.history] == ["", "before", "left", ""]


# ------------------------------------------------------------------ topic


def test_topic_set_by_a_non_member_is_refused(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(B, "dev")
    out = h.req(A, m.Topic, "dev", "mine now")
    assert out.error == "not_member"
    assert out.published == []
    assert h.req(A, m.Topic, "nowhere", "mine").error == "not_member"
    assert h.req(A, m.Topic, "dev").expect(m.TopicIs).topic == ""


def test_topic_set_by_a_member_is_published_and_returned(h: Harness) -> None:
    h.hello(A, "alice")
    h.join(A, "dev")
    h.now = T0 + 2
    out = h.req(A, m.Topic, "dev", "release friday")
    assert out.expect(m.TopicIs) == m.TopicIs(out.reply.rid, "dev", "release friday")
    (ev,) = out.events
    assert brief(ev) == ("dev", 2, "topic", "alice", "release friday")
    assert h.rooms(A) == [m.RoomInfo("dev", 1, "release friday")]
    h.hello(B, "bob")
    # Reading needs no membership and publishes nothing.
    read = h.req(B, m.Topic, "dev")
    assert read.expect(m.TopicIs).topic == "release friday"
    assert read.published == []
    assert h.join(B, "dev").topic == "release friday"


def test_topic_survives_the_room_emptying(h: Harness) -> None:
    """§6.4: the topic is room state in the store, not in the room's member list."""
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.req(A, m.Topic, "dev", "release friday")
    h.req(A, m.Leave, "dev")
    assert h.rooms(B) == []
    assert h.req(B, m.Topic, "dev").expect(m.TopicIs).topic == "release friday"
    assert h.join(B, "dev").topic == "release friday"
    assert h.rooms(B) == [m.RoomInfo("dev", 1, "release friday")]
    # Only the room's operator (its creator, alice) may change it (§6.11).
    assert h.req(B, m.Topic, "dev", "").error == "not_op"
    h.req(B, m.Leave, "dev")
    h.join(A, "dev")
    h.req(A, m.Topic, "dev", "").expect(m.TopicIs)  # clearing is remembered too
    h.req(A, m.Leave, "dev")
    assert h.join(B, "dev").topic == ""


# ------------------------------------------------------------ who / rooms


def test_who_lists_members_sorted(h: Harness) -> None:
    for peer, nick in [(A, "carol"), (B, "Bob"), (C, "alice"), (D, "dave")]:
        h.hello(peer, nick)
        h.join(peer, "dev")
    assert h.who(A, "dev") == ["alice", "Bob", "carol", "dave"]
    h.req(C, m.Leave, "dev")
    assert h.who(C, "dev") == ["Bob", "carol", "dave"]  # asking needs no membership
    assert h.who(A, "nowhere") == []


def test_rooms_lists_each_room_with_its_member_count(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.hello(C, "carol")
    h.join(C, "zoo")
    h.join(A, "ops")
    h.join(A, "dev")
    h.join(B, "dev")
    assert h.rooms(A) == [
        m.RoomInfo("dev", 2, ""),
        m.RoomInfo("ops", 1, ""),
        m.RoomInfo("zoo", 1, ""),
    ]


def test_rooms_listing_is_bounded(h: Harness) -> None:
    h = Harness(limits=Limits(max_listed_rooms=2))
    h.hello(A, "alice")
    for room in ["c", "a", "d", "b"]:
        h.join(A, room)
    assert [r.name for r in h.rooms(A)] == ["a", "b"]


# ---------------------------------------------------------- §6.5 history


def _room_with_messages(h: Harness) -> list[m.Event]:
    """alice in #dev (seq 1) and six messages (seqs 2..7); all published events."""
    h.hello(A, "alice")
    events = h.req(A, m.Join, "dev").events
    for i in range(2, 8):
        h.now = T0 + i
        events += h.say(A, "dev", f"msg {i}").events
    return events


def test_history_after_returns_later_events_oldest_first(h: Harness) -> None:
    published = _room_with_messages(h)
    out = h.req(A, m.History, "dev", after=3, limit=2)
    got = out.expect(m.Events)
    assert (got.room, got.last) == ("dev", 7)
    assert got.events == published[3:5]  # seqs 4, 5: exactly what was broadcast
    rest = h.req(A, m.History, "dev", after=3).expect(m.Events)
    assert [e.seq for e in rest.events] == [4, 5, 6, 7]
    assert h.req(A, m.History, "dev", after=7).expect(m.Events).events == []
    assert out.published == []


def test_history_before_returns_the_newest_below_the_bound(h: Harness) -> None:
    published = _room_with_messages(h)
    newest = h.req(A, m.History, "dev", limit=3).expect(m.Events)  # before=0: the end
    assert newest.events == published[4:7]
    older = h.req(A, m.History, "dev", before=5, limit=2).expect(m.Events)
    assert [e.seq for e in older.events] == [3, 4]
    assert older.last == 7
    assert h.req(A, m.History, "dev", limit=0).expect(m.Events).events == []


def test_history_of_an_unknown_room_is_empty(h: Harness) -> None:
    h.hello(A, "alice")
    got = h.req(A, m.History, "nowhere", after=1).expect(m.Events)
    assert (got.events, got.last) == ([], 0)


# ------------------------------------------------------------------- nick


def test_nick_change_is_announced_in_every_room(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "ops")
    h.join(A, "dev")
    h.join(B, "dev")
    h.now = T0 + 6
    out = h.req(A, m.Nick, "carol")
    out.expect(m.Ok)
    assert [brief(e) for e in out.events] == [
        ("dev", 3, "nick", "alice", "carol"),
        ("ops", 2, "nick", "alice", "carol"),
    ]
    assert all(e.ts == T0 + 6 for e in out.events)
    # The new nick is held, the old one free.
    assert h.req(C, m.Hello, "Carol").error == "nick_taken"
    assert h.req(B, m.Nick, "CAROL").error == "nick_taken"
    assert h.hello(C, "Alice").nick == "Alice"
    assert h.who(B, "dev") == ["bob", "carol"]
    (ev,) = h.say(A, "dev", "it is me").events
    assert ev.nick == "carol"


def test_nick_change_to_a_taken_nick_is_refused(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    out = h.req(A, m.Nick, "Bob")
    assert out.error == "nick_taken"
    assert out.published == []
    assert h.who(A, "dev") == ["alice"]


def test_nick_change_of_case_only_is_allowed(h: Harness) -> None:
    h.hello(A, "alice")
    h.req(A, m.Nick, "Alice").expect(m.Ok)
    assert h.req(B, m.Hello, "alice").error == "nick_taken"
    h.join(A, "dev")
    assert h.who(A, "dev") == ["Alice"]


# ------------------------------------------------------------- §6.6 DMs


def test_tell_an_online_nick_goes_to_that_peer_only(h: Harness) -> None:
    """§6.6: a DM is never broadcast, not even on a room topic the target listens to."""
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.hello(C, "carol")
    h.join(A, "dev")
    h.join(B, "dev")
    h.join(C, "dev")
    h.now = T0 + 2
    out = h.req(A, m.Tell, "Bob", "dm-1", "the secret plan")
    assert out.to(B) == [m.Dm("dm-1", "alice", "bob", "the secret plan", T0 + 2, False, 1)]
    assert out.to(A) == [m.Ack(out.reply.rid, "dm-1", 1, dup=False)]
    assert out.to(C) == []
    assert out.published == []
    assert not any(b"the secret plan" in frame for frames in h.wire for frame in frames)
    # The operator's traffic display names the DM but does not print it.
    assert out.shows
    assert not any("the secret plan" in line for line in out.shows)
    assert h.core.counters.dms == 1

    action = h.req(B, m.Tell, "alice", "dm-2", "nods", action=True)
    assert action.to(A) == [m.Dm("dm-2", "bob", "alice", "nods", T0 + 2, True, 1)]


def test_tell_with_the_same_id_is_delivered_once(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.req(A, m.Tell, "bob", "dm-1", "hi")
    again = h.req(A, m.Tell, "bob", "dm-1", "hi")
    assert again.expect(m.Ack).dup
    assert again.to(B) == []
    assert (h.core.counters.dms, h.core.counters.duplicates) == (1, 1)


def test_tell_an_unknown_nick_is_no_such_nick(h: Harness) -> None:
    h.hello(A, "alice")
    out = h.req(A, m.Tell, "nobody", "dm-1", "hello?")
    assert out.error == "no_such_nick"
    assert h.core.counters.dms == 0


def test_dm_to_a_departed_nick_is_stored_and_delivered_once(h: Harness) -> None:
    """§6.6: a nick seen before keeps an inbox; its next HELLO delivers what was
    not SEEN, and SEEN ends the delivery."""
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.req(B, m.Bye)
    h.now = T0 + 2
    out = h.req(A, m.Tell, "bob", "dm-1", "while you were out")
    assert out.expect(m.Ack).seq == 1
    assert [peer for peer, _ in out.sends] == [A]
    assert any("stored" in line for line in out.shows)

    h.now = T0 + 10
    out = h.req(C, m.Hello, "bob")
    welcome, dm = out.to(C)  # the Welcome first, then what waited
    assert isinstance(welcome, m.Welcome)
    assert dm == m.Dm("dm-1", "alice", "bob", "while you were out", T0 + 2, False, 1)
    h.req(C, m.Seen, 1).expect(m.Ok)
    h.req(C, m.Bye)

    h.req(A, m.Tell, "bob", "dm-2", "one more")
    out = h.req(D, m.Hello, "Bob")
    assert [x.id for x in out.to(D) if isinstance(x, m.Dm)] == ["dm-2"]
    h.req(D, m.Bye)  # gone without SEEN: delivered again next time
    out = h.req(D, m.Hello, "Bob")
    assert [x.id for x in out.to(D) if isinstance(x, m.Dm)] == ["dm-2"]
    h.req(D, m.Seen, 99).expect(m.Ok)  # past the end: capped at the inbox's last
    h.req(D, m.Bye)

    out = h.req(B, m.Hello, "bob")
    assert [type(x) for x in out.to(B)] == [m.Welcome]


def test_dm_delivered_live_is_not_delivered_again(h: Harness) -> None:
    h.hello(A, "alice")
    w = h.hello(B, "bob")
    assert len(h.req(A, m.Tell, "bob", "dm-1", "hi").to(B)) == 1
    h.req(B, m.Seen, 1).expect(m.Ok)
    resumed = h.req(C, m.Hello, "bob", w.session)
    assert [type(x) for x in resumed.to(C)] == [m.Welcome]
    h.req(C, m.Bye)
    fresh = h.req(D, m.Hello, "bob")
    assert [type(x) for x in fresh.to(D)] == [m.Welcome]


# -------------------------------------------------------------------- bye


def test_bye_leaves_every_room_and_frees_the_nick(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "ops")
    h.join(A, "dev")
    h.join(B, "dev")
    h.now = T0 + 9
    out = h.req(A, m.Bye, "lunch")
    out.expect(m.Ok)
    assert [brief(e) for e in out.events] == [
        ("dev", 3, "leave", "alice", "quit: lunch"),
        ("ops", 2, "leave", "alice", "quit: lunch"),
    ]
    assert h.core.clients == 1
    assert h.rooms(B) == [m.RoomInfo("dev", 1, "")]
    assert h.req(A, m.Ping).error == "not_registered"
    assert not h.hello(C, "ALICE").resumed

    h.join(C, "dev")
    (ev,) = h.req(C, m.Bye).events
    assert ev.text == "quit"


# ------------------------------------------------------- §6.7 heartbeats


def test_beats_go_out_at_start_and_every_heartbeat() -> None:
    h = Harness(heartbeat=5.0)
    assert h.core.next_deadline() == T0
    assert h.tick(T0).published == [m.Beat(1, T0, h.core.store.epoch)]
    assert h.tick(T0).effects == []  # one beat per due time
    assert h.tick(T0 + 4.9).effects == []
    assert h.core.next_deadline() == T0 + 5
    assert h.tick(T0 + 5).published == [m.Beat(2, T0 + 5, h.core.store.epoch)]
    late = h.tick(T0 + 11)  # a late tick beats once and counts from now
    assert late.published == [m.Beat(3, T0 + 11, h.core.store.epoch)]
    assert h.core.next_deadline() == T0 + 16
    assert all(frames[0] == m.CONTROL_TOPIC for frames in h.wire)
    h.hello(A, "alice")
    h.now = T0 + 12
    out = h.req(A, m.Ping)
    assert out.expect(m.Pong) == m.Pong(out.reply.rid, T0 + 12, 3)  # the latest beat


def test_pong_carries_the_head_of_every_room_the_session_is_in(h: Harness) -> None:
    """§6.7: a client compares the heads with what it saw to notice a lost tail."""
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(B, "zoo")
    h.join(A, "ops")  # ops: 1
    h.join(A, "dev")  # dev: 1
    h.say(A, "dev", "one")  # dev: 2
    h.join(B, "dev")  # dev: 3
    pong = h.req(A, m.Ping).expect(m.Pong)
    assert pong.heads == [m.Head("dev", 3), m.Head("ops", 1)]


def test_silent_sessions_expire_and_active_ones_stay() -> None:
    """§6.7: a session silent for longer than the timeout is ended; any request counts."""
    h = Harness(heartbeat=5.0, timeout=15.0)
    for peer, nick in [(A, "alice"), (B, "bob"), (C, "carol")]:
        h.hello(peer, nick)
        h.join(peer, "dev")  # seqs 1..3, all at T0
    h.tick(T0)
    h.now = T0 + 10
    h.req(B, m.Ping)
    h.say(C, "dev", "still here")  # seq 4
    assert h.tick(T0 + 14.9).events == []  # alice: silent 14.9 s, not yet 15
    out = h.tick(T0 + 15.5)
    assert [brief(e) for e in out.events] == [("dev", 5, "leave", "alice", "timed out")]
    assert out.events[0].ts == T0 + 15.5
    assert h.core.clients == 2
    assert h.req(A, m.Ping).error == "not_registered"
    assert h.hello(D, "alice").nick == "alice"  # the nick is free again
    assert h.who(D, "dev") == ["bob", "carol"]
    # bob and carol fall silent after T0 + 10 and go together; the new alice stays.
    out = h.tick(T0 + 25.5)
    assert sorted(e.nick for e in out.events) == ["bob", "carol"]
    assert h.core.clients == 1
    assert h.rooms(D) == []


def test_next_deadline_is_the_nearest_beat_or_expiry() -> None:
    h = Harness(heartbeat=100.0, timeout=15.0)
    h.tick(T0)
    assert h.core.next_deadline() == T0 + 100  # no sessions: the next beat
    h.now = T0 + 2
    h.hello(A, "alice")
    h.now = T0 + 4
    h.hello(B, "bob")
    assert h.core.next_deadline() == T0 + 17  # alice's expiry
    h.now = T0 + 10
    h.req(A, m.Ping)
    assert h.core.next_deadline() == T0 + 19  # now bob's
    assert h.tick(T0 + 18.9).effects == []
    out = h.tick(T0 + 19.1)
    assert any("bob" in line for line in out.shows)
    assert h.core.clients == 1
    assert h.core.next_deadline() == T0 + 25
    h.tick(T0 + 25.1)
    assert h.core.next_deadline() == T0 + 100


def test_shutdown_is_broadcast_on_the_control_topic(h: Harness) -> None:
    out = Out(h.core.shutdown("maintenance"))
    assert out.published == [m.Shutdown("maintenance")]
    assert out.frames[0][0] == m.CONTROL_TOPIC


# ------------------------------------------------------ §5.2 subscriptions


def test_sync_subscription_is_answered_on_its_topic(h: Harness) -> None:
    effects = h.core.subscribed(b"~tok42\x00")
    assert effects == [Publish(m.Synced("tok42"))]
    out = Out(effects)
    assert out.frames == [[b"~tok42\x00", b"SYNCED", out.frames[0][2]]]


@pytest.mark.parametrize("topic", [b"#dev\x00", b"!\x00", b"", b"~tok", b"#", b"\x00"])
def test_other_subscriptions_need_no_answer(h: Harness, topic: bytes) -> None:
    assert h.core.subscribed(topic) == []


@pytest.mark.parametrize(
    "topic",
    [b"~\xff\x00", b"~\x00", b"~a b\x00", b"~" + b"a" * 65 + b"\x00", b"~tok\x00more\x00"],
)
def test_bad_sync_subscription_is_shown_not_raised(h: Harness, topic: bytes) -> None:
    effects = h.core.subscribed(topic)
    assert all(isinstance(fx, Show) and fx.line.startswith("!") for fx in effects)


# ---------------------------------------------------------- §7 bad input

_BAD_UTF8_BODY = (
    b"\x82"  # a map of two
    + msgpack.packb("rid")
    + msgpack.packb(5)
    + msgpack.packb("nick")
    + b"\xa2\xff\xfe"  # a two-byte str that is not UTF-8
)

#: (frames, code, rid the Error reply carries or None for "no reply, a Show line")
BAD_INPUT: dict[str, tuple[list[bytes], str, int | None]] = {
    "no frames": ([], "bad_frame", None),
    "two frames": ([PROTOCOL, b"PING"], "bad_frame", None),
    "four frames": ([PROTOCOL, b"PING", msgpack.packb({"rid": 1}), b""], "bad_frame", None),
    "not msgpack": ([PROTOCOL, b"PING", b"\xc1"], "bad_frame", None),
    "trailing bytes": ([PROTOCOL, b"PING", msgpack.packb({"rid": 1}) + b"\x00"], "bad_frame", None),
    "not a map": (body(b"PING", [1, 2]), "bad_frame", None),
    "bad utf-8": ([PROTOCOL, b"HELLO", _BAD_UTF8_BODY], "bad_utf8", 5),
    "oversized": (
        body(b"SAY", {"rid": 4, "room": "dev", "id": "x", "text": "x" * MAX_BODY_BYTES}),
        "too_long",
        None,
    ),
    "rid not an int": (body(b"PING", {"rid": "9"}), "bad_request", None),
    "other protocol": ([b"ZCHAT/2", b"PING", msgpack.packb({"rid": 5})], "bad_version", 5),
    "unknown type": (body(b"FROB", {"rid": 6}), "unknown_type", 6),
    "unknown type, no rid": (body(b"FROB", {}), "unknown_type", 0),
    "missing field": (body(b"JOIN", {"rid": 7}), "bad_request", 7),
    "wrong field type": (body(b"JOIN", {"rid": 8, "room": 5}), "bad_request", 8),
    "bool for int": (body(b"JOIN", {"rid": 8, "room": "dev", "history": True}), "bad_request", 8),
    "negative history": (body(b"JOIN", {"rid": 9, "room": "dev", "history": -1}), "bad_request", 9),
    "invalid nick": (body(b"HELLO", {"rid": 10, "nick": "two words"}), "bad_nick", 10),
    "invalid room": (body(b"JOIN", {"rid": 11, "room": "#no way"}), "bad_room", 11),
    "empty text": (body(b"SAY", {"rid": 12, "room": "dev", "id": "a", "text": " "}), "empty", 12),
    "text too long": (
        body(b"SAY", {"rid": 13, "room": "dev", "id": "a", "text": "x" * (MAX_TEXT_BYTES + 1)}),
        "too_long",
        13,
    ),
    "control characters": (
        body(b"SAY", {"rid": 14, "room": "dev", "id": "a", "text": "hi\x1b[2J"}),
        "bad_text",
        14,
    ),
    "empty message id": (
        body(b"SAY", {"rid": 15, "room": "dev", "id": "", "text": "hi"}),
        "bad_request",
        15,
    ),
    "topic too long": (
        body(b"TOPIC", {"rid": 16, "room": "dev", "topic": "t" * (MAX_TOPIC_CHARS + 1)}),
        "too_long",
        16,
    ),
    "nick too long": (
        body(b"NICK", {"rid": 17, "nick": "n" * (MAX_NICK_CHARS + 1)}),
        "bad_nick",
        17,
    ),
}


@pytest.mark.parametrize("peer", [A, B], ids=["registered", "unregistered"])
@pytest.mark.parametrize(("frames", "code", "rid"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_answered_never_raised(
    h: Harness, peer: bytes, frames: list[bytes], code: str, rid: int | None
) -> None:
    """§7: an Error with the request's rid when it could be read, else a '!' line."""
    h.hello(A, "alice")
    h.join(A, "dev")
    before = h.core.counters.malformed
    out = h.raw(peer, frames)
    assert out.published == []
    assert any(line.startswith("!") and code in line for line in out.shows), out.shows
    if rid is None:
        assert out.sends == []
    else:
        (reply,) = out.sends
        assert reply[0] == peer
        assert isinstance(reply[1], m.Error)
        assert (reply[1].rid, reply[1].code) == (rid, code)
    assert h.core.counters.malformed == before + 1
    # Nothing changed for the peer: the session (or its absence) is intact.
    if peer == A:
        assert h.req(A, m.Ping).expect(m.Pong)
        assert h.who(A, "dev") == ["alice"]
    else:
        assert h.req(B, m.Ping).error == "not_registered"


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    frames=st.lists(st.binary(max_size=40), max_size=5)
    | st.tuples(
        st.sampled_from([PROTOCOL, b"ZCHAT/0"]),
        st.sampled_from([cls.TYPE for cls in m.REQUESTS] + [b"", b"WELCOME"]),
        st.dictionaries(
            st.sampled_from(["rid", "nick", "room", "id", "text", "to", "history", "topic"]),
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.floats()
            | st.text(max_size=20)
            | st.binary(max_size=8)
            | st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
            max_size=5,
        ).map(msgpack.packb),
    ).map(list)
)
def test_arbitrary_frames_never_raise(frames: list[bytes]) -> None:
    """§7: whatever arrives, handle() returns effects; garbage is never broadcast."""
    h = Harness()
    h.hello(A, "alice")
    for peer in (A, B):
        out = h.raw(peer, frames)
        assert all(p == peer for p, _ in out.sends)
        assert len(out.replies) <= 1


# ---------------------------------------------------------------- counters


def test_counters_move(h: Harness) -> None:
    c = h.core.counters
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.say(A, "dev", "one", id="m-1")
    h.say(A, "dev", "one", id="m-1")
    h.say(A, "dev", "two", id="m-2")
    h.req(A, m.Tell, "bob", "d-1", "psst")
    h.req(A, m.Tell, "bob", "d-1", "psst")
    h.raw(A, [b"junk"])
    h.req(A, m.Leave, "nowhere")  # not_member
    assert (c.messages, c.duplicates, c.dms, c.malformed, c.errors) == (2, 2, 1, 1, 1)
    assert c.requests == 10


# ------------------------------------------------------------------ limits


def test_max_clients_refuses_new_sessions_but_not_resumes() -> None:
    h = Harness(limits=Limits(max_clients=2))
    w = h.hello(A, "alice")
    h.hello(B, "bob")
    assert h.req(C, m.Hello, "carol").error == "full"
    assert h.hello(D, "alice", resume=w.session).resumed  # not a new client
    h.req(D, m.Bye)
    assert h.hello(C, "carol").nick == "carol"


def test_max_rooms_per_client_refuses_one_more_room() -> None:
    h = Harness(limits=Limits(max_rooms_per_client=2))
    h.hello(A, "alice")
    h.join(A, "dev")
    h.join(A, "ops")
    out = h.req(A, m.Join, "zoo")
    assert out.error == "too_many_rooms"
    assert out.published == []
    assert [r.name for r in h.rooms(A)] == ["dev", "ops"]
    assert h.join(A, "dev").members == ["alice"]  # already in: not one more room
    h.req(A, m.Leave, "ops")
    assert h.join(A, "zoo").room == "zoo"


# ------------------------------------------------------------ §6.4 store


def test_a_restarted_core_carries_on_from_the_store() -> None:
    """§6.4: positions, dedupe, history and topics live in the store, not the core."""
    store = MemoryStore()
    first = Harness(store=store)
    epoch = first.hello(A, "alice").epoch
    first.join(A, "dev")  # 1
    first.say(A, "dev", "before the restart", id="m-1")  # 2
    first.req(A, m.Topic, "dev", "release friday")  # 3

    second = Harness(store=store, now=T0 + 60)
    assert second.hello(B, "alice").epoch == epoch
    joined = second.join(B, "dev")
    assert (joined.topic, joined.last) == ("release friday", 4)
    assert [e.text for e in joined.history] == ["", "before the restart", "release friday", ""]
    retry = second.say(B, "dev", "before the restart", id="m-1")
    assert retry.expect(m.Ack) == m.Ack(retry.reply.rid, "m-1", 2, dup=True)
    assert retry.published == []


# ------------------------------------------- §2 every reply fits one frame
#
# encode() refuses a body over MAX_BODY_BYTES and the server then drops the
# reply (zchat/broker/server.py _send), so the client never hears back (§4).
# Out() turns such a reply into a test failure naming it.


def _chain(events: list[m.Event]) -> list[int]:
    """The seqs of ``events``, which must be consecutive (a trimmed reply leaves no holes)."""
    seqs = [e.seq for e in events]
    assert seqs, "an empty reply would stall a client paging through the log"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    return seqs


def _long_messages(h: Harness, count: int) -> None:
    h.hello(A, "alice")
    h.join(A, "dev")
    for i in range(count):
        h.say(A, "dev", "x" * MAX_TEXT_BYTES, id=f"long-{i}")


def test_joined_reply_fits_one_frame_however_long_the_history(h: Harness) -> None:
    _long_messages(h, 20)  # 20 x 4000 bytes > MAX_BODY_BYTES
    h.hello(B, "bob")
    joined = h.req(B, m.Join, "dev", history=20).expect(m.Joined)
    seqs = _chain(joined.history)
    assert seqs[-1] == joined.last  # whatever is cut, it is the oldest


def test_history_reply_fits_one_frame_however_long_the_events(h: Harness) -> None:
    _long_messages(h, 60)
    after = h.req(A, m.History, "dev", after=1, limit=50).expect(m.Events)
    assert _chain(after.events)[0] == 2  # gap recovery can continue from the end
    before = h.req(A, m.History, "dev", limit=50).expect(m.Events)
    assert _chain(before.events)[-1] == before.last


def test_room_list_reply_fits_one_frame(h: Harness) -> None:
    topic = "é" * MAX_TOPIC_CHARS  # 600 bytes of UTF-8
    for peer, nick in [(A, "alice"), (B, "bob")]:
        h.hello(peer, nick)
        for i in range(100):  # the default max_rooms_per_client
            room = f"{nick}-{i:03}"
            h.join(peer, room)
            h.req(peer, m.Topic, room, topic)
    assert h.rooms(A)  # 200 rooms x 600-byte topics > MAX_BODY_BYTES


def test_member_lists_fit_one_frame() -> None:
    """A room of a few thousand long nicks, well within Limits.max_clients."""
    h = Harness()
    for i in range(2100):  # 2100 x 33 bytes > MAX_BODY_BYTES
        peer = b"p%d" % i
        nick = f"{i:04}".ljust(MAX_NICK_CHARS, "n")
        # Straight into the core: the joins here are set-up, not under test.
        h.core.handle(peer, encode(m.Hello(1, nick)), h.now)
        h.core.handle(peer, encode(m.Join(2, "big", history=0)), h.now)
    h.hello(A, "alice")
    assert h.who(A, "big")
    h.req(A, m.Join, "big", history=0)


# ------------------------------------------------ sequences of requests

_NICKS = ["alice", "bob", "carol", "Alice"]
_ROOMS = ["dev", "ops", "zoo", "#Dev"]
_PEERS = [A, B, C, D]
_OPS = [
    "hello", "resume", "join", "leave", "say", "me", "tell", "nick",
    "topic", "who", "rooms", "history", "ping", "bye", "tick",
]  # fmt: skip


def _build(op: str, rid: int, a: int, b: int, n: int, tokens: list[str]) -> m.Request:
    nick, room = _NICKS[a], _ROOMS[a]
    if op == "hello":
        return m.Hello(rid, nick)
    if op == "resume":
        return m.Hello(rid, nick, tokens[b % len(tokens)] if tokens else "")
    if op == "join":
        return m.Join(rid, room, history=b * 2)
    if op == "leave":
        return m.Leave(rid, room)
    if op in ("say", "me"):
        return m.Say(rid, room, f"id-{b}", f"text {n}", action=op == "me")
    if op == "tell":
        return m.Tell(rid, nick, f"dm-{n}", f"dm secret {n}")
    if op == "nick":
        return m.Nick(rid, nick)
    if op == "topic":
        return m.Topic(rid, room, None if b == 0 else f"topic {b}")
    if op == "who":
        return m.Who(rid, room)
    if op == "rooms":
        return m.Rooms(rid)
    if op == "history":
        return m.History(rid, room, after=b, limit=3)
    if op == "ping":
        return m.Ping(rid)
    assert op == "bye"
    return m.Bye(rid)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(range(len(_PEERS))),
            st.sampled_from(_OPS),
            st.integers(0, 3),
            st.integers(0, 3),
            st.sampled_from([0.0, 0.0, 0.0, 1.0, 4.0, 9.0]),
        ),
        max_size=60,
    )
)
def test_any_sequence_of_requests_keeps_the_invariants(
    steps: list[tuple[int, str, int, int, float]],
) -> None:
    """§4 one reply per request, §5 per-room seqs without gaps, §6.6 DMs never broadcast."""
    h = Harness(heartbeat=5.0, timeout=15.0)
    tokens: list[str] = []
    last: dict[str, int] = {}
    opening = [(p, op, p, 0, 0.0) for p in range(len(_PEERS)) for op in ("hello", "join")]
    for n, (p, op, a, b, dt) in enumerate(opening + steps):
        h.now += dt
        if op == "tick":
            out = h.tick(h.now)
        else:
            out = h.send(_PEERS[p], _build(op, h.rid(), a, b, n, tokens))
            tokens += [x.session for _, x in out.sends if isinstance(x, m.Welcome)]
        for ev in out.events:
            assert ev.seq == last.get(ev.room, 0) + 1, f"gap or repeat in #{ev.room}"
            last[ev.room] = ev.seq
    assert not any(b"dm secret" in frame for frames in h.wire for frame in frames)
    for room, seq in last.items():
        assert h.store.last("#" + room) == seq


def test_stats_needs_no_session_and_counts_traffic(h: Harness) -> None:
    """§6.10: STATS answers anyone, with gauges and every counter by name."""
    h.hello(A, "alice")
    h.join(A, "dev")
    h.say(A, "dev", "one", id="m1")
    h.say(A, "dev", "one", id="m1")  # a resend: counted as a duplicate
    h.raw(A, [b"junk"])
    h.now = T0 + 30
    stats = h.req(B, m.Stats).expect(m.StatsReply)  # B never said HELLO
    assert (stats.started, stats.time, stats.clients, stats.rooms) == (T0, T0 + 30, 1, 1)
    counters = {c.name: c.value for c in stats.counters}
    assert counters["messages"] == 1
    assert counters["duplicates"] == 1
    assert counters["malformed"] == 1
    assert counters["requests"] == 6
    assert {"published", "replies", "dropped", "expired", "errors", "dms"} <= set(counters)
    assert h.core.clients == 1  # asking made no session


# ----------------------------------------- §6.11 private rooms and moderation


def private_events(out: Out, peer: bytes) -> list[m.Event]:
    return [x.event for x in out.to(peer) if isinstance(x, m.PrivateEvent)]


def test_private_room_traffic_never_touches_the_broadcast_socket(h: Harness) -> None:
    """§6.11: invite-only; events go to members' DEALERs only."""
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.hello(C, "carol")
    created = h.req(A, m.Join, "secret", 20, True)
    created.expect(m.Joined)
    assert created.published == []
    assert [e.kind for e in private_events(created, A)] == ["join"]
    assert h.req(B, m.Join, "secret").error == "invite_only"
    h.req(A, m.Invite, "secret", "bob").expect(m.Ok)
    joined = h.req(B, m.Join, "secret")
    joined.expect(m.Joined)
    assert joined.published == []
    assert len(private_events(joined, A)) == len(private_events(joined, B)) == 1
    said = h.say(B, "secret", "the plan")
    assert said.published == []
    assert [e.text for e in private_events(said, A)] == ["the plan"]
    assert not any(b"the plan" in frame for frames in h.wire for frame in frames)
    # Outsiders learn nothing and cannot post.
    assert h.req(C, m.Who, "secret").error == "not_member"
    assert h.req(C, m.History, "secret").error == "not_member"
    assert h.req(C, m.Topic, "secret").error == "not_member"
    assert h.req(C, m.Say, "secret", "x1", "let me in").error == "not_member"
    assert h.rooms(C) == []
    assert [r.name for r in h.rooms(B)] == ["secret"]


def test_invited_push_reaches_an_online_invitee(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.req(A, m.Join, "secret", 20, True)
    out = h.req(A, m.Invite, "secret", "Bob")
    assert out.to(B) == [m.Invited("secret", "alice")]


def test_only_operators_invite_kick_ban_and_set_the_topic(h: Harness) -> None:
    """§6.11: the creator operates the room; configured admins operate every room."""
    admin_h = Harness()
    admin_h.core.config = CoreConfig(PUB, limits=admin_h.config.limits, admins=frozenset({"root"}))
    for hh in (h, admin_h):
        hh.hello(A, "alice")
        hh.hello(B, "bob")
        hh.join(A, "dev")
        hh.join(B, "dev")
    assert h.req(B, m.Topic, "dev", "mine now").error == "not_op"
    assert h.req(B, m.Kick, "dev", "alice").error == "not_op"
    assert h.req(B, m.Ban, "dev", "alice").error == "not_op"
    assert h.req(B, m.Invite, "dev", "carol").error == "not_op"
    admin_h.hello(C, "root")
    admin_h.join(C, "dev")
    admin_h.req(C, m.Topic, "dev", "set by root").expect(m.TopicIs)


def test_kick_removes_and_tells_the_room(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.join(B, "dev")
    out = h.req(A, m.Kick, "dev", "bob", "spam")
    out.expect(m.Ok)
    assert [brief(e) for e in out.events] == [("dev", 3, "kick", "bob", "by alice: spam")]
    assert h.who(A, "dev") == ["alice"]
    assert h.req(A, m.Kick, "dev", "bob").error == "not_member"
    h.join(B, "dev")  # a kick is not a ban


def test_ban_kicks_keeps_out_and_can_be_lifted(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.join(B, "dev")
    out = h.req(A, m.Ban, "dev", "bob")
    assert [(e.kind, e.nick, e.text) for e in out.events] == [("kick", "bob", "by alice: banned")]
    assert h.req(B, m.Join, "dev").error == "banned"
    assert h.req(B, m.Say, "dev", "b1", "from outside").error == "banned"
    h.req(A, m.Ban, "dev", "bob", False).expect(m.Ok)
    h.join(B, "dev")


def test_private_kick_tells_the_kicked_member_and_revokes_the_invite(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.req(A, m.Join, "secret", 20, True)
    h.req(A, m.Invite, "secret", "bob")
    h.join(B, "secret")
    out = h.req(A, m.Kick, "secret", "bob")
    assert [e.kind for e in private_events(out, B)] == ["kick"]
    assert h.req(B, m.Join, "secret").error == "invite_only"


def test_room_settings_survive_a_restart() -> None:
    """§6.4: operators, privacy, bans and invites are room state in the store."""
    store = MemoryStore()
    first = Harness(store=store)
    first.hello(A, "alice")
    first.req(A, m.Join, "secret", 20, True)
    first.req(A, m.Invite, "secret", "bob")
    first.req(A, m.Ban, "secret", "mallory")
    again = Harness(store=store)
    again.hello(B, "bob")
    again.hello(C, "mallory")
    again.join(B, "secret")
    assert again.req(C, m.Join, "secret").error == "banned"
    assert again.req(B, m.Kick, "secret", "bob").error == "not_op"


# -------------------------------------------------------- §6.12 rate limits


def test_rate_limit_throttles_with_retry_after_and_recovers() -> None:
    """§6.12: a burst is allowed, then refused with retry_after; the bucket refills."""
    h = Harness(limits=Limits(rate=10.0, burst=5))
    h.hello(A, "alice")
    h.hello(B, "bob")
    for i in range(5):
        h.say(A, "dev", f"burst {i}").expect(m.Ack)
    refused = h.say(A, "dev", "one too many").expect(m.Error)
    assert refused.code == "rate_limited"
    assert refused.retry_after == 0.5  # burst/rate, at most one second
    h.now = T0 + 0.25  # still inside the retry-after: refused even with tokens back
    assert h.say(A, "dev", "too early").error == "rate_limited"
    h.say(B, "dev", "others are not affected").expect(m.Ack)
    h.req(A, m.Ping).expect(m.Pong)  # liveness is never throttled
    h.now = T0 + 0.6
    h.say(A, "dev", "after the wait").expect(m.Ack)
    assert h.core.counters.throttled == 2


# ----------------------------------------------- §6.11 keys own their nicks


def test_with_curve_a_nick_belongs_to_its_first_key(h: Harness) -> None:
    def hello(peer: bytes, nick: str, user: str, resume: str = "") -> m.Reply:
        out = Out(h.core.handle(peer, encode(m.Hello(h.rid(), nick, resume)), h.now, user))
        return out.reply

    first = hello(A, "alice", "KEY-A")
    assert isinstance(first, m.Welcome)
    bye = Out(h.core.handle(A, encode(m.Bye(h.rid())), h.now, "KEY-A"))
    bye.expect(m.Ok)
    thief = hello(B, "Alice", "KEY-B")
    assert isinstance(thief, m.Error) and thief.code == "nick_taken"
    assert "another key" in thief.text
    back = hello(C, "alice", "KEY-A")
    assert isinstance(back, m.Welcome)
    # A stolen session token is useless with another key.
    stolen = hello(D, "alice", "KEY-B", resume=back.session)
    assert isinstance(stolen, m.Error) and stolen.code == "nick_taken"
    renamed = Out(h.core.handle(C, encode(m.Nick(h.rid(), "bob")), h.now, "KEY-A"))
    renamed.expect(m.Ok)
    assert hello(D, "bob", "KEY-B").code == "nick_taken"  # type: ignore[attr-defined]


def test_a_routing_id_reused_by_another_key_is_not_the_session(h: Harness) -> None:
    """§6.11: with CURVE every request is checked against the session's key."""
    hello = Out(h.core.handle(A, encode(m.Hello(h.rid(), "alice")), h.now, "KEY-A"))
    hello.expect(m.Welcome)
    # Another key arriving under the same routing id (a peer may pick its id).
    out = Out(h.core.handle(A, encode(m.Join(h.rid(), "dev")), h.now, "KEY-B"))
    assert out.error == "not_registered"
    out = Out(h.core.handle(A, encode(m.Join(h.rid(), "dev")), h.now, "KEY-A"))
    out.expect(m.Joined)


def test_with_curve_a_ban_follows_the_key_not_just_the_nick(h: Harness) -> None:
    def req(peer: bytes, key: str, msg: m.Request) -> Out:
        return Out(h.core.handle(peer, encode(msg), h.now, key))

    req(A, "KEY-A", m.Hello(h.rid(), "alice")).expect(m.Welcome)
    req(B, "KEY-B", m.Hello(h.rid(), "troll")).expect(m.Welcome)
    req(A, "KEY-A", m.Join(h.rid(), "dev")).expect(m.Joined)
    req(B, "KEY-B", m.Join(h.rid(), "dev")).expect(m.Joined)
    req(A, "KEY-A", m.Ban(h.rid(), "dev", "troll")).expect(m.Ok)
    req(B, "KEY-B", m.Nick(h.rid(), "innocent")).expect(m.Ok)
    assert req(B, "KEY-B", m.Join(h.rid(), "dev")).error == "banned"
    # And the operator stays operator under a new nick.
    req(A, "KEY-A", m.Nick(h.rid(), "alice2")).expect(m.Ok)
    req(A, "KEY-A", m.Topic(h.rid(), "dev", "still mine")).expect(m.TopicIs)


def test_a_refused_hello_claims_no_nick() -> None:
    h = Harness(limits=Limits(max_clients=1, rate=1e9, burst=10**9))
    Out(h.core.handle(A, encode(m.Hello(h.rid(), "first")), h.now, "KEY-A")).expect(m.Welcome)
    full = Out(h.core.handle(B, encode(m.Hello(h.rid(), "bob")), h.now, "KEY-B"))
    assert full.error == "full"
    Out(h.core.handle(A, encode(m.Bye(h.rid())), h.now, "KEY-A")).expect(m.Ok)
    Out(h.core.handle(C, encode(m.Hello(h.rid(), "bob")), h.now, "KEY-C")).expect(m.Welcome)


def test_a_bare_topic_in_the_store_is_read_as_the_topic(h: Harness) -> None:
    h.store.set_state("#dev", b"plain old topic")
    h.hello(A, "alice")
    assert h.join(A, "dev").topic == "plain old topic"


# ------------------------------------------------------ §6.4 a failing store


def test_while_the_store_fails_writes_are_refused_and_reads_served(h: Harness) -> None:
    """§6.4, §7: store_unavailable with a retry-after for every write; reads, pings,
    resumes and beats go on; nobody expires; writes are taken again on recovery."""
    h.hello(A, "alice")
    h.join(A, "dev")
    h.say(A, "dev", "before")
    h.hello(B, "bob")
    shows = Out(h.core.store_failed(h.now, "database or disk is full")).shows
    assert shows == ["! store failing, refusing writes until it recovers: database or disk is full"]
    assert h.core.store_failed(h.now, "again") == []  # one line per episode
    for msg in (
        m.Say(h.rid(), "dev", "id-1", "during"),
        m.Tell(h.rid(), "bob", "id-2", "psst"),
        m.Join(h.rid(), "ops"),
        m.Leave(h.rid(), "dev"),
        m.Nick(h.rid(), "alicia"),
        m.Topic(h.rid(), "dev", "new topic"),
        m.Seen(h.rid(), 1),
        m.Bye(h.rid()),
    ):
        err = h.send(A, msg).expect(m.Error)
        assert err.code == "store_unavailable" and err.retry_after > 0, msg
    assert h.req(C, m.Hello, "carol").error == "store_unavailable"  # a new session may write
    assert h.who(A, "dev") == ["alice"]
    assert [e.text for e in h.req(A, m.History, "dev").expect(m.Events).events][-1] == "before"
    assert h.req(A, m.Ping).expect(m.Pong)
    assert h.req(A, m.Topic, "dev").expect(m.TopicIs)
    # Timers: beats go on, nobody expires while a leave cannot be stored.
    out = h.tick(h.now + 60)
    assert [type(b) for b in out.published] == [m.Beat]
    assert h.core.clients == 2
    assert h.core.next_deadline() <= h.core.store_retry_at
    # Recovered: writes are taken again, and expiry resumes.
    assert Out(h.core.store_recovered(h.now)).shows[0].startswith("* store writing again")
    assert h.say(A, "dev", "after").expect(m.Ack).seq == 3


def test_reads_refused_while_the_store_is_down_do_not_put_off_its_retry(h: Harness) -> None:
    """A shared store refuses reads too; each refusal must not push the next
    retry later, or a busy broker would never try the store again."""
    h.core.store_failed(h.now, "down")
    due = h.core.store_retry_at
    for later in (0.2, 0.5, 0.9):
        h.core.store_failed(h.now + later, "a read failed")
        assert h.core.store_retry_at == due
    h.core.store_failed(due, "the retry failed")  # the retry itself: try again later
    assert h.core.store_retry_at > due


def test_a_resume_is_served_while_the_store_fails(h: Harness) -> None:
    w = h.hello(A, "alice")
    h.core.store_failed(h.now, "full")
    back = h.hello(B, "alice", resume=w.session)
    assert back.resumed and back.session == w.session


def test_a_write_that_fails_under_a_request_refuses_it_and_stops_writes() -> None:
    """A StoreUnavailable raised by the store mid-request becomes that request's
    store_unavailable error, with one line for the operator; writes stop."""

    class Full(MemoryStore):
        full = False

        def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Any:
            if self.full:
                raise StoreUnavailable("store x: database or disk is full")
            return super().append(log, msg_id, sender, body)

    store = Full()
    h = Harness(store=store)
    h.hello(A, "alice")
    h.join(A, "dev")
    store.full = True
    out = h.say(A, "dev", "lost?")
    assert out.error == "store_unavailable"
    assert out.events == [] and not any("lost?" in line for line in out.shows)
    assert any("store failing" in line for line in out.shows)
    assert h.core.store_down
    store.full = False
    h.core.store_recovered(h.now)
    assert h.say(A, "dev", "kept", id="k1").expect(m.Ack).seq == 2


# ------------------------------------------------- §6.1, §6.2 at scale


def test_a_hello_tried_again_after_a_late_welcome_gets_the_same_session(h: Harness) -> None:
    """§6.1: the first try registered the nick; the retry (same HELLO.id, a new
    connection, no token yet) gets that session instead of nick_taken."""
    first = h.send(A, m.Hello(h.rid(), "alice", id="reg-1")).expect(m.Welcome)
    again = h.send(B, m.Hello(h.rid(), "alice", id="reg-1")).expect(m.Welcome)
    assert again.session == first.session and not again.resumed
    assert h.core.clients == 1
    assert h.req(B, m.Ping).expect(m.Pong)  # the session lives on the new connection
    assert h.req(A, m.Ping).error == "not_registered"
    # The same HELLO on the same connection: the same answer, not already_registered.
    assert h.send(B, m.Hello(h.rid(), "alice", id="reg-1")).expect(m.Welcome).session == (
        first.session
    )
    # Another registration id is someone else wanting the nick.
    assert h.send(C, m.Hello(h.rid(), "alice", id="reg-2")).error == "nick_taken"
    assert h.send(D, m.Hello(h.rid(), "alice")).error == "nick_taken"


def test_a_thousand_joins_cost_linear_work_not_a_notice_per_pair() -> None:
    """§6.2: past announce_limit members a room announces no joins and leaves, and
    JOINED lists no members: 1,000 joins publish announce_limit notices, not 500,500."""
    h = Harness()
    limit = h.config.announce_limit
    published = 0
    replied_names = 0
    for i in range(1000):
        peer = f"peer-{i}".encode()
        h.hello(peer, f"user{i}")
        out = h.req(peer, m.Join, "big")
        published += len(out.events)
        joined = out.expect(m.Joined)
        replied_names += len(joined.members)
        if i >= limit:
            assert joined.members == [] and joined.more == i + 1
    assert published == limit
    assert replied_names == sum(range(1, limit + 1))
    # The member list stays exact on request.
    names = h.req(b"peer-0", m.Who, "big").expect(m.Names)
    assert len(names.members) + names.more == 1000
    # Leaving a big room announces nothing either; a kick still does.
    assert h.req(b"peer-5", m.Leave, "big").expect(m.Ok) and h.wire
    assert h.core.rooms == 1


def test_a_small_room_still_announces_joins_and_lists_members(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    out = h.req(B, m.Join, "dev")
    assert [brief(e)[2:] for e in out.events] == [("join", "bob", "")]
    assert out.expect(m.Joined).members == ["alice", "bob"]


# ------------------------------------------ §6.13 away, whois, search; §6.11 op


def test_away_shows_in_who_and_in_the_ack_of_a_dm_and_is_never_stored(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    h.join(B, "dev")
    before = h.store.last("#dev")
    out = h.req(B, m.Away, "lunch")
    out.expect(m.Ok)
    assert out.events == [] and h.store.last("#dev") == before
    names = h.req(A, m.Who, "dev").expect(m.Names)
    assert names.members == ["alice", "bob"] and names.away == ["bob"]
    assert h.req(A, m.Tell, "bob", "d1", "ping?").expect(m.Ack).away == "lunch"
    h.req(B, m.Away).expect(m.Ok)  # back
    assert h.req(A, m.Who, "dev").expect(m.Names).away == []
    assert h.req(A, m.Tell, "bob", "d2", "ping?").expect(m.Ack).away == ""


def test_whois_tells_rooms_away_idle_and_never_another_members_private_room(
    h: Harness,
) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(B, "dev")
    h.req(B, m.Join, "secret", 20, True)
    h.say(B, "dev", "hi")
    h.req(B, m.Away, "in a meeting")
    h.now += 30
    info = h.req(A, m.Whois, "BOB").expect(m.WhoisIs)
    assert (info.nick, info.online, info.rooms, info.away) == ("bob", True, ["dev"], "in a meeting")
    assert info.idle == 30.0 and info.key == ""
    assert h.req(B, m.Whois, "bob").expect(m.WhoisIs).rooms == ["dev", "secret"]
    # Gone: when it was last seen.
    h.req(B, m.Bye).expect(m.Ok)
    gone = h.req(A, m.Whois, "bob").expect(m.WhoisIs)
    assert (gone.online, gone.seen, gone.rooms) == (False, h.now, [])
    assert h.req(A, m.Whois, "nobody").error == "no_such_nick"


def test_an_operator_makes_another_member_operator_and_takes_it_back(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.hello(C, "carol")
    for peer in (A, B, C):
        h.join(peer, "dev")
    assert h.req(B, m.Op, "dev", "carol").error == "not_op"
    out = h.req(A, m.Op, "dev", "bob")
    out.expect(m.Ok)
    assert [(e.kind, e.nick, e.text) for e in out.events] == [("op", "alice", "bob")]
    h.req(B, m.Kick, "dev", "carol").expect(m.Ok)  # bob operates the room now
    out = h.req(A, m.Op, "dev", "bob", False)
    assert [(e.kind, e.text) for e in out.events] == [("op", "-bob")]
    assert h.req(B, m.Topic, "dev", "mine").error == "not_op"


def test_search_finds_messages_and_keeps_private_rooms_private(h: Harness) -> None:
    h.hello(A, "alice")
    h.hello(B, "bob")
    h.join(A, "dev")
    for text in ("deploy on friday", "lunch?", "Friday deploy is green", "ok"):
        h.say(A, "dev", text)
    found = h.req(B, m.Search, "dev", "DEPLOY friday").expect(m.Events)
    assert [e.text for e in found.events] == ["deploy on friday", "Friday deploy is green"]
    assert found.last == h.store.last("#dev")
    assert h.req(B, m.Search, "dev", "deploy", 1).expect(m.Events).events[0].text == (
        "Friday deploy is green"
    )
    h.req(A, m.Join, "secret", 20, True)
    h.say(A, "secret", "the deploy key is hunter2")
    assert h.req(B, m.Search, "secret", "deploy").error == "not_member"
    assert len(h.req(A, m.Search, "secret", "deploy").expect(m.Events).events) == 1


def test_rejoins_just_after_a_restart_are_not_announced() -> None:
    """§6.2: clients coming back into their rooms after a broker restart do not
    write a join event each into every room's history; later rejoins do."""
    h = Harness(timeout=15.0)
    h.hello(A, "alice")
    out = h.req(A, m.Join, "dev", 20, False, True)
    assert out.events == [] and out.expect(m.Joined).members == ["alice"]
    h.now += 31  # past twice the timeout: a rejoin is news again
    h.hello(B, "bob")
    assert [e.kind for e in h.req(B, m.Join, "dev", 20, False, True).events] == ["join"]


def test_an_owned_nick_is_refused_to_a_user_without_key_or_account() -> None:
    """§6.11: on a broker where some users have keys or door accounts and others
    none (curve_open, or a door without login), an owned nick stays its owner's."""
    h = Harness()
    h.core.handle(A, encode(m.Hello(h.rid(), "alice")), h.now, "key-alice")
    h.core.handle(A, encode(m.Bye(h.rid())), h.now, "key-alice")
    assert h.core.clients == 0
    assert h.req(B, m.Hello, "alice").error == "nick_taken"  # no key at all
    h.hello(C, "carol")  # nobody owns carol: anyone may use it
    assert h.req(C, m.Nick, "ALICE").error == "nick_taken"
