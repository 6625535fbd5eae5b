"""The web door's translation, without sockets (zchat/web/bridge.py, docs/web.md)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.protocol import decode_request
from zchat.protocol import messages as m
from zchat.web.bridge import MAX_HELD, MAX_LOGIN_FAILURES, Bridge, to_json

PEER = b"\xffweb:\x00\x00\x00\x00\x00\x00\x00\x01"


def page(bridge: Bridge, now: float = 0.0, **body: Any) -> tuple[list[m.Request], list[dict]]:
    """What the page sends: the requests it makes and the answers it gets at once."""
    reqs, texts = bridge.receive(json.dumps(body), now)
    if bridge.awaiting is not None:  # a login: the door checks it in a thread
        reqs, texts = bridge.check_now(now)
    assert all(r.peer == PEER for r in reqs)
    return [decode_request(r.frames) for r in reqs], [json.loads(t) for t in texts]


def answer(bridge: Bridge, msg: m.Reply | m.Push, now: float = 0.0) -> list[dict]:
    return [json.loads(t) for t in bridge.deliver(msg, now)]


def welcome(rid: int, nick: str = "alice", rooms: list[str] | None = None) -> m.Welcome:
    return m.Welcome(rid, nick, "ab" * 16, "tcp://*:1", "ep", 100.0, 5.0, 15.0, bool(rooms),
                     rooms or [])  # fmt: skip


def ev(
    seq: int, kind: str = "msg", nick: str = "bob", text: str = "hi", room: str = "dev"
) -> m.Event:
    return m.Event(room, seq, kind, nick, text, 1.0, f"id{seq}")


def logged_in(rooms: list[str] | None = None) -> Bridge:
    b = Bridge(PEER)
    (hello,), _ = page(b, type="hello", rid=7, nick="alice")
    answer(b, welcome(hello.rid, rooms=rooms))
    return b


def test_the_page_learns_first_whether_it_must_log_in() -> None:
    assert json.loads(Bridge(PEER).opened()[0]) == {
        "type": "door",
        "login": False,
        "max_text": 4000,
    }
    assert json.loads(Bridge(PEER, lambda n, p: True).opened()[0])["login"] is True


def test_hello_becomes_a_request_and_welcome_comes_back_with_the_pages_rid() -> None:
    b = Bridge(PEER)
    (hello,), answers = page(b, type="hello", rid=7, nick="alice", resume="")
    assert answers == []
    assert isinstance(hello, m.Hello) and hello.nick == "alice"
    (out,) = answer(b, welcome(hello.rid))
    assert out["type"] == "welcome" and out["rid"] == 7 and out["session"] == "ab" * 16
    assert "pub" not in out  # meaningless to a browser
    assert b.nick == "alice" and b.session == "ab" * 16


def test_each_request_gets_a_fresh_broker_rid_and_replies_keep_the_pages() -> None:
    b = logged_in()
    (j1,), _ = page(b, type="join", rid=5, room="#Dev")
    (j2,), _ = page(b, type="join", rid=5, room="ops", history=0)
    assert isinstance(j1, m.Join) and j1.room == "dev" and j1.history == 20
    assert isinstance(j2, m.Join) and j2.history == 0
    assert j1.rid != j2.rid
    (out,) = answer(b, m.Joined(j2.rid, "ops", "", ["alice"], 3))
    assert out["type"] == "joined" and out["rid"] == 5 and out["room"] == "ops"
    assert answer(b, m.Joined(j2.rid, "ops", "", ["alice"], 3)) == []  # answered already


def test_a_request_without_rid_is_answered_with_rid_null() -> None:
    b = logged_in()
    (who,), _ = page(b, type="who", room="dev")
    (out,) = answer(b, m.Names(who.rid, "dev", ["alice"]))
    # Fields added to the protocol later come along (§2: forward compatible).
    assert out.items() >= {"type": "names", "rid": None, "room": "dev", "members": ["alice"],
                           "more": 0}.items()  # fmt: skip


def test_what_is_not_a_message_gets_bad_request_and_no_request() -> None:
    b = logged_in()
    for text in ["nope", "[]", '{"type": "launch"}', '{"type": 3}', '{"type": "rooms", "rid": -1}',
                 '{"type": "rooms", "rid": true}', '{"type": "say", "room": "dev", "id": "x"}',
                 '{"type": "say", "room": "dev", "id": "x", "text": 5}',
                 '{"type": "join", "room": "dev", "history": "20"}',
                 '{"type": "join", "room": "dev", "private": 1}']:  # fmt: skip
        reqs, texts = b.receive(text, 0.0)
        assert reqs == [], text
        (out,) = (json.loads(t) for t in texts)
        assert out["type"] == "error" and out["code"] == "bad_request", text


def test_rule_violations_carry_the_rules_code() -> None:
    b = logged_in()
    _, (out,) = page(b, type="say", rid=3, room="dev", id="m1", text="   ")
    assert (out["code"], out["rid"]) == ("empty", 3)
    _, (out,) = page(b, type="join", rid=4, room="##bad")
    assert out["code"] == "bad_room"
    _, (out,) = page(b, type="tell", rid=5, to="bob", id="m2", text="a\x1b[2Jb")
    assert out["code"] == "bad_text"
    _, (out,) = page(b, type="say", rid=6, room="dev", id="m3", text="x" * 4001)
    assert out["code"] == "too_long"


def test_a_message_over_the_size_limit_is_refused_before_parsing() -> None:
    b = logged_in()
    reqs, (text,) = b.receive('{"type": "say", "text": "' + "x" * 40_000 + '"}', 0.0)
    assert reqs == [] and json.loads(text)["text"] == "message too long"


def test_html_is_carried_as_text() -> None:
    b = logged_in()
    (say,), _ = page(b, type="say", rid=1, room="dev", id="m1", text="<img src=x onerror=alert(1)>")
    assert isinstance(say, m.Say) and say.text == "<img src=x onerror=alert(1)>"
    assert json.loads(to_json(ev(1, text=say.text)))["text"] == "<img src=x onerror=alert(1)>"


def test_rate_limited_requests_are_held_and_resent_in_order_with_their_ids() -> None:
    b = logged_in()
    (s1,), _ = page(b, 10.0, type="say", rid=1, room="dev", id="m1", text="one")
    (s2,), _ = page(b, 10.0, type="say", rid=2, room="dev", id="m2", text="two")
    for s in (s1, s2):
        assert answer(b, m.Error(s.rid, "rate_limited", "slow down", 1.0), 10.0) == []
    assert b.next_deadline() == 11.0
    assert [r for r in b.tick(10.5) if not isinstance(decode_request(r.frames), m.Ping)] == []
    again = [decode_request(r.frames) for r in b.tick(11.0)]
    says = [r for r in again if isinstance(r, m.Say)]
    assert [(s.id, s.text) for s in says] == [("m1", "one"), ("m2", "two")]
    assert {s.rid for s in says}.isdisjoint({s1.rid, s2.rid})
    (out,) = answer(b, m.Ack(says[0].rid, "m1", 4))
    assert out.items() >= {"type": "ack", "rid": 1, "id": "m1", "seq": 4, "dup": False}.items()


def test_store_unavailable_is_held_too_but_other_errors_reach_the_page() -> None:
    b = logged_in()
    (s1,), _ = page(b, 0.0, type="say", rid=1, room="dev", id="m1", text="one")
    assert answer(b, m.Error(s1.rid, "store_unavailable", "disk", 2.0), 0.0) == []
    (again,) = [decode_request(r.frames) for r in b.tick(2.0) if r.frames[1] == b"SAY"]
    (out,) = answer(b, m.Error(again.rid, "not_member", "private"), 2.0)
    assert out["code"] == "not_member" and out["rid"] == 1


def test_the_session_is_kept_alive_and_pong_heads_reach_the_page() -> None:
    b = Bridge(PEER)
    assert b.next_deadline() == float("inf")  # no session, nothing to keep alive
    (hello,), _ = page(b, 100.0, type="hello", nick="alice")
    answer(b, welcome(hello.rid), 100.0)
    assert b.next_deadline() == 105.0
    assert b.tick(104.0) == []
    (ping,) = (decode_request(r.frames) for r in b.tick(105.0))
    assert isinstance(ping, m.Ping)
    assert b.next_deadline() == 110.0
    (out,) = answer(b, m.Pong(ping.rid, 105.0, 3, [m.Head("dev", 9)]))
    assert out["type"] == "pong" and out["rid"] is None
    assert out["heads"] == [{"room": "dev", "last": 9}]
    (ping,) = (decode_request(r.frames) for r in b.tick(110.0))
    assert answer(b, m.Pong(ping.rid, 110.0, 4, [])) == []  # nothing to check

    page(b, 112.0, type="rooms")
    assert b.next_deadline() == 117.0  # any request keeps the session alive
    b.rooms.add("dev")
    assert b.event(ev(9))  # the page was sent seq 9 on this connection
    (ping,) = (decode_request(r.frames) for r in b.tick(117.0) if r.frames[1] == b"PING")
    assert answer(b, m.Pong(ping.rid, 117.0, 4, [m.Head("dev", 9)])) == []  # nothing new


def test_published_events_reach_pages_in_the_room_only() -> None:
    b = logged_in()
    assert not b.event(ev(1))
    (join,), _ = page(b, type="join", room="dev")
    answer(b, m.Joined(join.rid, "dev", "", ["alice"], 1))
    assert b.event(ev(2)) and not b.event(ev(2, room="other"))
    (leave,), _ = page(b, type="leave", room="dev")
    answer(b, m.Ok(leave.rid))
    assert not b.event(ev(3))


def test_a_resumed_session_follows_its_rooms_at_once() -> None:
    b = logged_in(rooms=["dev"])
    assert b.event(ev(5))


def test_kicked_or_renamed_the_bridge_follows() -> None:
    b = logged_in(rooms=["dev", "ops"])
    assert b.event(ev(2, "nick", "alice", "alicia"))
    assert b.nick == "alicia"
    assert b.event(ev(3, "kick", "Alicia", "by bob"))
    assert not b.event(ev(4))
    out = answer(b, m.PrivateEvent(ev(9, "kick", "alicia", "by op", room="ops")))
    assert out[0]["type"] == "event" and out[0]["room"] == "ops"
    assert not b.event(ev(10, room="ops"))


def test_pushes_become_json() -> None:
    b = logged_in()
    (dm,) = answer(b, m.Dm("d1", "bob", "alice", "<b>psst</b>", 1.0, False, 4))
    want = {"type": "dm", "id": "d1", "sender": "bob", "to": "alice", "text": "<b>psst</b>",
            "ts": 1.0, "action": False, "seq": 4}  # fmt: skip
    assert dm.items() >= want.items()
    (inv,) = answer(b, m.Invited("ops", "bob"))
    assert inv.items() >= {"type": "invited", "room": "ops", "by": "bob"}.items()
    (pev,) = answer(b, m.PrivateEvent(ev(1, room="ops")))
    assert pev["type"] == "event" and pev["seq"] == 1 and "event" not in pev


def test_closing_the_page_ends_the_session_and_a_drop_keeps_it() -> None:
    b = logged_in()
    (bye,) = (decode_request(r.frames) for r in b.close(0.0))
    assert isinstance(bye, m.Bye)
    assert b.close(0.0) == []
    d = logged_in()
    d.drop()
    assert d.close(0.0) == [] and d.next_deadline() == float("inf")
    assert Bridge(PEER).close(0.0) == []  # no session: nothing to end


def test_logins_check_the_account_and_the_account_owns_its_nick() -> None:
    accounts = {"alice": "s3cret"}

    def verify(name: str, password: str) -> str:  # the file spells it "Alice"
        return "Alice" if accounts.get(name.lower()) == password else ""

    b = Bridge(PEER, verify)
    reqs, (out,) = page(b, type="hello", rid=1, nick="alice")
    assert reqs == [] and out["code"] == "bad_login"
    reqs, (out,) = page(b, type="hello", rid=2, nick="alice", password="wrong")
    assert reqs == [] and out["code"] == "bad_login" and b.user == ""
    (hello,), _ = page(b, type="hello", rid=3, nick="ALICE", password="s3cret")
    assert isinstance(hello, m.Hello) and hello.nick == "Alice"  # the account's own nick
    assert b.user == "account:Alice"
    reqs, _ = b.receive(json.dumps({"type": "rooms"}), 0.0)
    assert reqs[0].user == "account:Alice"  # every request carries the account
    reqs, (out,) = page(b, type="hello", rid=4, nick="bob", password="x")
    assert out["code"] == "bad_login"  # one connection, one account


def test_failed_logins_are_counted_and_stop_at_the_limit() -> None:
    b = Bridge(PEER, lambda name, pw: "alice" if pw == "right" else "")
    for _ in range(MAX_LOGIN_FAILURES):
        page(b, type="hello", nick="alice", password="wrong")
    assert b.failures == MAX_LOGIN_FAILURES
    reqs, (out,) = page(b, type="hello", nick="alice", password="right")
    assert reqs == [] and out["text"] == "too many failed logins"


def test_every_request_of_the_protocol_has_a_page_message() -> None:
    b = logged_in()
    reqs, _ = page(b, type="away", text="lunch")
    assert reqs == [m.Away(reqs[0].rid, "lunch")]
    (whois,), _ = page(b, type="whois", nick="bob")
    assert isinstance(whois, m.Whois) and whois.nick == "bob"
    (op,), _ = page(b, type="op", room="dev", nick="bob", op=False)
    assert isinstance(op, m.Op) and not op.op
    (search,), _ = page(b, type="search", room="dev", text="deploy", limit=5)
    assert isinstance(search, m.Search) and search.limit == 5
    (join,), _ = page(b, type="join", room="dev", history=0, rejoin=True)
    assert isinstance(join, m.Join) and join.rejoin
    (hello,), _ = page(Bridge(PEER), type="hello", nick="zed", id="reg1")
    assert isinstance(hello, m.Hello) and hello.id == "reg1"
    reachable = {type(r) for r in (whois, op, search, join, hello, reqs[0])}
    assert reachable <= set(m.REQUESTS)


def test_a_flood_is_not_held_without_end() -> None:
    b = logged_in()
    says = [page(b, type="say", rid=i, room="dev", id=f"m{i}", text="x")[0][0]
            for i in range(MAX_HELD + 2)]  # fmt: skip
    out = [answer(b, m.Error(s.rid, "rate_limited", "slow down", 1.0)) for s in says]
    assert out[:MAX_HELD] == [[]] * MAX_HELD
    assert [o[0]["code"] for o in out[MAX_HELD:]] == ["rate_limited"] * 2  # told, not held


def test_messages_wait_for_the_login_check_in_order() -> None:
    b = Bridge(PEER, lambda name, pw: "Alice" if pw == "pw" else "")
    reqs, texts = b.receive(json.dumps({"type": "hello", "nick": "alice", "password": "pw"}), 0.0)
    assert (reqs, texts) == ([], []) and b.awaiting == ("alice", "pw")
    assert b.receive(json.dumps({"type": "join", "room": "dev"}), 0.0) == ([], [])
    assert b.receive(json.dumps({"type": "rooms"}), 0.0) == ([], [])
    reqs, texts = b.checked("Alice", 0.0)
    assert [type(decode_request(r.frames)) for r in reqs] == [m.Hello, m.Join, m.Rooms]
    assert all(r.user == "account:Alice" for r in reqs)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
_TYPES = st.sampled_from(["hello", "join", "leave", "say", "tell", "nick", "topic", "who",
                          "rooms", "history", "seen", "invite", "kick", "ban", "away",
                          "whois", "op", "search", "ping", "bye", "nope", ""])  # fmt: skip
_FIELDS = st.sampled_from(["rid", "nick", "resume", "id", "room", "history", "private",
                           "rejoin", "text", "action", "to", "topic", "after", "before",
                           "limit", "seq", "reason", "ban", "op", "password"])  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_from_a_page_is_answered_never_raised(text: str) -> None:
    reqs, texts = logged_in().receive(text, 0.0)
    assert all(json.loads(t)["type"] == "error" for t in texts) or reqs


@settings(max_examples=200, deadline=None)
@given(_TYPES, st.dictionaries(_FIELDS, _JSON, max_size=6), st.booleans())
def test_any_message_of_any_type_is_a_request_or_an_error(
    kind: str, fields: dict[str, Any], login: bool
) -> None:
    b = Bridge(PEER, (lambda name, pw: "Alice") if login else None)
    reqs, texts = b.receive(json.dumps({**fields, "type": kind}), 0.0)
    if b.awaiting is not None:
        reqs, texts = b.check_now(0.0)
    for r in reqs:  # what reaches the broker is a valid request
        assert isinstance(decode_request(r.frames), m.Request)
    assert len(reqs) + len(texts) == 1
    for t in texts:
        assert json.loads(t)["type"] == "error"


def test_deep_nesting_is_refused_not_a_crash() -> None:
    reqs, (text,) = logged_in().receive("[" * 30_000, 0.0)
    assert reqs == [] and "nested too deep" in json.loads(text)["text"]
