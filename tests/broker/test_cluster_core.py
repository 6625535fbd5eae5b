"""Brokers of one cluster, driven purely (§6.14): several BrokerCores on one
store and one registry, with a hand-carried feed and an explicit clock.

The store is a MemoryStore that records each append the way the Redis store
publishes it on the log's feed channel; ``Bus.carry`` hands each core what it
follows, and can lose messages on the way, as pub/sub may.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from zchat.broker.core import BrokerCore, CoreConfig, Effect, Follow, Limits, Publish, Send, Show
from zchat.broker.registry import LocalRegistry
from zchat.protocol import encode
from zchat.protocol import messages as m
from zchat.store import Appended, Entry, MemoryStore

T0 = 1_700_000_000.0
HEARTBEAT, TIMEOUT = 5.0, 15.0


class FeedStore(MemoryStore):
    """A MemoryStore that publishes every append, as the Redis store does."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, Entry]] = []

    def append(self, log: str, msg_id: str, sender: str, body: bytes) -> Appended:
        got = super().append(log, msg_id, sender, body)
        if not got.duplicate:
            self.published.append((log, Entry(got.seq, msg_id, sender, body)))
        return got


@dataclass
class Broker:
    core: BrokerCore
    follows: set[str] = field(default_factory=set)
    seen: int = 0  # feed messages looked at
    out: list[Effect] = field(default_factory=list)  # everything it did, in order

    def took(self, effects: list[Effect]) -> list[Effect]:
        for fx in effects:
            if isinstance(fx, Follow):
                (self.follows.add if fx.on else self.follows.discard)(fx.log)
            elif not isinstance(fx, Show):
                encode(fx.msg)  # everything must be able to go on the wire
        self.out.extend(effects)
        return effects

    def published(self, room: str) -> list[tuple[int, str, str]]:
        return [
            (fx.msg.seq, fx.msg.kind, fx.msg.nick)
            for fx in self.out
            if isinstance(fx, Publish) and isinstance(fx.msg, m.Event) and fx.msg.room == room
        ]

    def sent(self, peer: bytes) -> list[m.Reply | m.Push]:
        return [fx.msg for fx in self.out if isinstance(fx, Send) and fx.peer == peer]


class Cluster:
    def __init__(self, *names: str) -> None:
        self.now = T0
        self.store = FeedStore()
        self.registry = LocalRegistry(lambda: self.now)
        tokens = (f"tok{i}" for i in itertools.count(1))
        unmetered = Limits(rate=1e9, burst=10**9)
        config = CoreConfig("tcp://*:1", HEARTBEAT, TIMEOUT, unmetered, cluster=True)
        self.brokers = {
            name: Broker(
                BrokerCore(
                    self.store, config, T0, new_token=lambda: next(tokens), boot=name,
                    registry=self.registry,
                )
            )
            for name in names
        }  # fmt: skip
        self._rids = itertools.count(1)
        for b in self.brokers.values():
            b.took(b.core.tick(self.now))

    def __getitem__(self, name: str) -> Broker:
        return self.brokers[name]

    def send(self, name: str, peer: bytes, msg: m.Request) -> list[Effect]:
        b = self.brokers[name]
        return b.took(b.core.handle(peer, encode(msg), self.now))

    def rid(self) -> int:
        return next(self._rids)

    def hello(self, name: str, peer: bytes, nick: str, resume: str = "") -> m.Welcome:
        out = self.send(name, peer, m.Hello(self.rid(), nick, resume=resume))
        (welcome,) = [fx.msg for fx in out if isinstance(fx, Send) and fx.peer == peer]
        assert isinstance(welcome, m.Welcome), welcome
        return welcome

    def join(self, name: str, peer: bytes, room: str, private: bool = False) -> m.Joined:
        out = self.send(name, peer, m.Join(self.rid(), room, 0, private))
        (joined,) = [
            fx.msg for fx in out if isinstance(fx, Send) and isinstance(fx.msg, m.Joined)
        ]
        assert isinstance(joined, m.Joined)
        return joined

    def say(self, name: str, peer: bytes, room: str, text: str) -> None:
        self.send(name, peer, m.Say(self.rid(), room, f"id-{text}", text))

    def carry(self, lose: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """Hand each broker the feed messages of the logs it follows, except
        the ``lose`` positions of the feed (counted from 0)."""
        for b in self.brokers.values():
            for i in range(b.seen, len(self.store.published)):
                log, entry = self.store.published[i]
                if log in b.follows and i not in lose:
                    b.took(b.core.arrived(log, [entry], self.now))
            b.seen = len(self.store.published)

    def tick(self, seconds: float, *names: str) -> None:
        self.now += seconds
        for name in names or self.brokers:
            b = self.brokers[name]
            b.took(b.core.tick(self.now))


A1, B1, B2 = b"\x00a1", b"\x00b1", b"\x00b2"


def two_in_dev() -> Cluster:
    c = Cluster("A", "B")
    c.hello("A", A1, "alice")
    c.hello("B", B1, "bob")
    c.join("A", A1, "dev")
    c.join("B", B1, "dev")
    c.carry()
    return c


def secret_on_both() -> Cluster:
    """alice on A made the private #secret and let bob, on B, in."""
    c = Cluster("A", "B")
    c.hello("A", A1, "alice")
    c.hello("B", B1, "bob")
    c.join("A", A1, "secret", private=True)
    c.send("A", A1, m.Invite(c.rid(), "secret", "bob"))
    c.join("B", B1, "secret")
    return c


def test_clients_on_two_brokers_see_one_room_with_the_same_sequence() -> None:
    c = two_in_dev()
    for text in ("one", "two", "three"):
        c.say("A", A1, "dev", text)
    c.say("B", B1, "dev", "four")
    c.carry()
    a, b = c["A"].published("dev"), c["B"].published("dev")
    assert [seq for seq, kind, _ in a if kind == "msg"] == [3, 4, 5, 6]
    assert a[1:] == b  # the same events, seqs and order, once each (B came in at 2)


def test_a_lost_feed_message_is_read_from_the_store_before_the_next() -> None:
    c = two_in_dev()
    c.say("A", A1, "dev", "one")
    c.say("A", A1, "dev", "two")
    lost = len(c.store.published) - 2  # "one" never reaches B
    c.carry(lose={lost})
    assert [s for s, k, _ in c["B"].published("dev") if k == "msg"] == [3, 4]


def test_tail_loss_is_caught_by_the_head_check_within_a_heartbeat() -> None:
    c = two_in_dev()
    c.say("A", A1, "dev", "last")
    c.carry(lose={len(c.store.published) - 1})
    assert 3 not in [s for s, _, _ in c["B"].published("dev")]
    c.tick(HEARTBEAT)
    assert (3, "msg", "alice") in c["B"].published("dev")
    assert c["A"].published("dev")[1:] == c["B"].published("dev")


def test_own_appends_that_overtake_the_feed_keep_the_order() -> None:
    c = two_in_dev()
    c.say("A", A1, "dev", "from-a")  # seq 3: not yet carried to B
    c.say("B", B1, "dev", "from-b")  # seq 4: B reads 3 first
    assert [s for s, k, _ in c["B"].published("dev") if k == "msg"] == [3, 4]
    c.carry()  # 3 and 4 arrive at B again: nothing twice
    assert [s for s, k, _ in c["B"].published("dev") if k == "msg"] == [3, 4]
    assert [s for s, k, _ in c["A"].published("dev") if k == "msg"] == [3, 4]


def test_nicks_who_and_whois_span_the_cluster() -> None:
    c = two_in_dev()
    out = c.send("B", B2, m.Hello(c.rid(), "Alice"))
    assert isinstance(out[-1], Send) and isinstance(out[-1].msg, m.Error)
    assert out[-1].msg.code == "nick_taken"
    c.send("B", B1, m.Who(c.rid(), "dev"))
    names = c["B"].sent(B1)[-1]
    assert isinstance(names, m.Names) and names.members == ["alice", "bob"]
    c.send("A", A1, m.Away(c.rid(), "lunch"))
    c.send("B", B1, m.Whois(c.rid(), "alice"))
    whois = c["B"].sent(B1)[-1]
    assert isinstance(whois, m.WhoisIs) and whois.online and whois.away == "lunch"
    assert whois.rooms == ["dev"]
    c.send("B", B1, m.Rooms(c.rid()))
    listed = c["B"].sent(B1)[-1]
    assert isinstance(listed, m.RoomList) and [(r.name, r.members) for r in listed.rooms] == [
        ("dev", 2)
    ]


def test_a_dm_to_a_nick_on_another_broker_arrives_through_its_inbox_feed() -> None:
    c = two_in_dev()
    c.send("A", A1, m.Tell(c.rid(), "bob", "dm-1", "psst"))
    ack = c["A"].sent(A1)[-1]
    assert isinstance(ack, m.Ack) and ack.seq == 1
    c.carry()
    c.carry()  # twice: delivered once
    dms = [x for x in c["B"].sent(B1) if isinstance(x, m.Dm)]
    assert [(d.sender, d.text, d.seq) for d in dms] == [("alice", "psst", 1)]


def test_private_rooms_go_to_members_on_every_broker_and_never_on_a_broadcast() -> None:
    c = secret_on_both()
    c.say("A", A1, "secret", "hush")
    c.carry()
    pushed = [x for x in c["B"].sent(B1) if isinstance(x, m.PrivateEvent)]
    assert [(p.event.kind, p.event.text) for p in pushed][-1] == ("msg", "hush")
    assert c["A"].published("secret") == c["B"].published("secret") == []


def test_a_client_that_fails_over_resumes_its_session_and_rooms_elsewhere() -> None:
    c = two_in_dev()
    token = c.hello("A", b"\x00a-new", "carol").session  # another client on A
    c.join("A", b"\x00a-new", "dev")
    c.carry()
    welcome = c.hello("B", b"\x00moved", "carol", resume=token)
    assert welcome.resumed and welcome.rooms == ["dev"] and welcome.session == token
    c.say("B", b"\x00moved", "dev", "still-me")
    c.carry()
    assert (4, "msg", "carol") in c["A"].published("dev")
    # A times its old connection out later: no leave, the session lives on B.
    for _ in range(4):
        c.send("B", b"\x00moved", m.Ping(c.rid()))
        c.send("B", B1, m.Ping(c.rid()))
        c.send("A", A1, m.Ping(c.rid()))
        c.tick(HEARTBEAT)
    assert "leave" not in [k for _, k, n in c["A"].published("dev") if n == "carol"]
    c.send("A", A1, m.Who(c.rid(), "dev"))
    names = c["A"].sent(A1)[-1]
    assert isinstance(names, m.Names) and "carol" in names.members


def test_a_dead_brokers_clients_leave_once_announced_by_one_survivor() -> None:
    c = Cluster("A", "B", "C")
    c.hello("A", A1, "alice")
    c.hello("B", B1, "bob")
    c.join("A", A1, "dev")
    c.join("B", B1, "dev")
    c.carry()
    # A dies: it ticks no more. B and C go on beating (and bob keeps talking).
    for _ in range(4):
        c.send("B", B1, m.Ping(c.rid()))
        c.tick(HEARTBEAT, "B", "C")
        c.carry()
    leaves = [e for e in c["B"].published("dev") if e[1:] == ("leave", "alice")]
    assert len(leaves) == 1
    assert c.registry.holder("alice") is None  # the nick is free again
    welcome = c.hello("C", b"\x00c1", "alice")
    assert not welcome.resumed


def test_a_kick_from_another_broker_ends_the_membership_where_the_target_is() -> None:
    c = two_in_dev()
    c.send("A", A1, m.Kick(c.rid(), "dev", "bob", "spam"))
    assert isinstance(c["A"].sent(A1)[-1], m.Ok)
    c.carry()
    assert (3, "kick", "bob") in c["B"].published("dev")
    assert "#dev" not in c["B"].follows  # bob was its only member there
    out = c.send("B", B1, m.Say(c.rid(), "dev", "x1", "still here?"))
    ack = [fx.msg for fx in out if isinstance(fx, Send)][-1]
    assert isinstance(ack, m.Ack)  # a public room: posting from outside is allowed
    c.send("B", B1, m.Who(c.rid(), "dev"))
    names = c["B"].sent(B1)[-1]
    assert isinstance(names, m.Names) and names.members == ["alice"]


def test_a_reset_store_starts_positions_over_and_registers_everyone_again() -> None:
    c = two_in_dev()
    c.store.epoch = "new-epoch"
    c.registry.__init__(lambda: c.now)  # type: ignore[misc]  # Redis came back empty
    c.tick(HEARTBEAT)
    beats = [fx.msg for fx in c["A"].out if isinstance(fx, Publish) and isinstance(fx.msg, m.Beat)]
    assert beats[-1].epoch == "new-epoch"
    assert c.registry.holder("alice") is not None and c.registry.count("dev") == 2


def test_a_log_that_goes_back_under_the_same_epoch_gets_a_new_epoch() -> None:
    """Redis lost its last writes (appendfsync everysec, a host crash) but kept
    its epoch: the next append reuses a seq clients have seen; a new epoch
    makes them start over rather than drop the new messages."""
    c = two_in_dev()
    c.say("A", A1, "dev", "one")
    c.carry()
    log = c.store._logs["#dev"]
    log.last -= 1  # the store forgets "one"
    log.entries.pop()
    renewed: list[str] = []
    c.store.renew_epoch = lambda seen: renewed.append(seen)  # type: ignore[method-assign]
    c.say("B", B1, "dev", "two")  # lands at seq 3 again
    assert renewed == [c.store.epoch]
    assert (3, "msg", "bob") not in c["B"].published("dev")


def test_a_private_rooms_events_never_go_on_a_broadcast_even_with_nobody_here() -> None:
    """A dead broker's member of a private room is announced gone by a survivor
    that has no member in that room: the leave is stored, not published."""
    c = Cluster("A", "B")
    c.hello("A", A1, "alice")
    c.join("A", A1, "secret", private=True)
    c.hello("B", B1, "bob")
    for _ in range(4):  # A dies; B goes on
        c.send("B", B1, m.Ping(c.rid()))
        c.tick(HEARTBEAT, "B")
    left = [e for e in c.store.read("#secret", 0, 10) if e.seq > 1]
    assert len(left) == 1  # the leave was stored
    published = [fx.msg for fx in c["B"].out if isinstance(fx, Publish)]
    assert all(not isinstance(msg, m.Event) for msg in published), published


def test_feed_entries_that_arrive_after_the_last_member_left_are_dropped() -> None:
    c = secret_on_both()
    c.carry()
    c.send("B", B1, m.Leave(c.rid(), "secret"))  # B follows #secret no more
    c.say("A", A1, "secret", "after bob left")
    log, entry = c.store.published[-1]
    before = len(c["B"].out)
    c["B"].took(c["B"].core.arrived(log, [entry], c.now))  # pub/sub was slower than the leave
    assert c["B"].out[before:] == []
