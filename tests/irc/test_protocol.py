"""The IRC protocol without sockets: IrcConnection against the real BrokerCore (world.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.irc.world import World
from zchat.irc.protocol import REGISTRATION_TIMEOUT, Settings, strip_formatting
from zchat.irc.state import ConnState
from zchat.protocol import messages as m

IRC_WORDS = [
    w.encode()
    for w in (
        "JOIN #dev",
        "JOIN #dev,#a,#b",
        "PART #dev",
        "PRIVMSG #dev :hi",
        "PRIVMSG other :hi",
        "NOTICE #dev :x",
        "TOPIC #dev :t",
        "TOPIC #dev",
        "NAMES #dev",
        "WHO #dev",
        "WHO other",
        "WHOIS other",
        "LIST",
        "KICK #dev other :x",
        "INVITE other #dev",
        "AWAY :a",
        "AWAY",
        "MODE #dev",
        "MODE #dev +o other",
        "MODE #dev +b other",
        "MODE fuzz +i",
        "MODE #dev b",
        "NICK fuzz2",
        "CAP LS 302",
        "CAP REQ :batch labeled-response",
        "CAP END",
        "@label=x WHO #dev",
        "CHATHISTORY LATEST #dev * 5",
        "CHATHISTORY BEFORE #dev msgid=x 5",
        "CHATHISTORY AROUND #dev timestamp=2026-01-01T00:00:00Z 5",
        "AUTHENTICATE PLAIN",
        "ISON a b",
        "USERHOST other",
        "PING x",
        "JOIN 0",
        "PRIVMSG #dev :\x01ACTION w\x01",
        "QUIT :bye",
    )
]


def numerics(lines: list[str]) -> list[str]:
    return [x.split()[1] for x in lines if x.startswith(":zchat ")]


def test_registration_numerics_and_isupport() -> None:
    w = World()
    c = w.connect()
    assert c.said("NICK alice") == []
    out = c.said("USER al 0 * :Alice Liddell")
    assert numerics(out)[:4] == ["001", "002", "003", "004"]
    assert "376" in numerics(out)
    isupport = " ".join(x for x in out if " 005 " in x)
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=65",
                  "PREFIX=(o)@", "CHANMODES=b,,,it", "CHATHISTORY=500", "UTF8ONLY"):  # fmt: skip
        assert token in isupport
    assert c.conn.state is ConnState.REGISTERED
    assert "alice!~al@irc" in out[0]


def test_commands_before_registration_and_unknown_commands() -> None:
    w = World()
    c = w.connect()
    assert numerics(c.said("JOIN #dev")) == ["451"]
    c.send("NICK bob", "USER b 0 * :b")
    c.take()
    assert numerics(c.said("FROBNICATE x")) == ["421"]
    assert numerics(c.said("WHOWAS x")) == ["421"]
    assert numerics(c.said("KICK #dev")) == ["461"]
    assert numerics(c.said("USER b 0 * :b")) == ["462"]
    assert c.said("PING :abc") == [":zchat PONG zchat abc"]


def test_nick_in_use_then_another_and_bad_nicks() -> None:
    w = World()
    w.register("alice")
    c = w.connect()
    assert numerics(c.said("NICK [bad]")) == ["432"]
    out = c.said("NICK alice", "USER a 0 * :a")
    assert numerics(out) == ["433"]
    assert c.conn.state is ConnState.NEW
    out = c.said("NICK alice_")
    assert numerics(out)[0] == "001" and c.conn.nick == "alice_"


def test_two_irc_users_chat_in_a_room_and_by_dm() -> None:
    w = World()
    a = w.register("alice")
    b = w.register("bob")
    a.send("JOIN #Dev")
    out = a.take()
    assert out[0] == ":alice!~alice@irc JOIN #dev"
    assert ":zchat 353 alice = #dev :@alice" in out and numerics(out)[-1] == "366"
    b.send("JOIN #dev")
    assert ":bob!~bob@irc JOIN #dev" in a.take()
    assert any(" 353 bob = #dev :@alice bob" in x for x in b.take())
    b.send("PRIVMSG #dev :\x02hi\x02 \x0304,12there\x03")
    assert a.take() == [":bob!~bob@irc PRIVMSG #dev :hi there"]
    assert b.take() == []  # no echo-message
    b.send("PRIVMSG #dev :\x01ACTION waves\x01", "NOTICE #dev :beep")
    assert a.take() == [":bob!~bob@irc PRIVMSG #dev :\x01ACTION waves\x01",
                        ":bob!~bob@irc NOTICE #dev :beep"]  # fmt: skip
    a.send("PRIVMSG bob :psst")
    assert b.take() == [":alice!~alice@irc PRIVMSG bob :psst"]
    assert numerics(a.said("PRIVMSG nobody :x")) == ["401"]
    assert numerics(a.said("PRIVMSG #dev :\x07")) == ["404"]  # a bell: bad_text
    assert numerics(a.said("PRIVMSG #dev")) == ["412"]


def test_long_zchat_message_is_split_to_fit_512_bytes() -> None:
    w = World()
    a = w.register("alice")
    a.send("JOIN #dev")
    a.take()
    w.zmq(b"z1", m.Hello(1, "zed"))
    text = "é" * 1500 + "!"
    w.zmq(b"z1", m.Say(2, "dev", "id-long", text))
    out = a.take()
    assert len(out) > 1 and all(len(x.encode()) + 2 <= 512 for x in out)
    assert "".join(x.split(" :", 1)[1] for x in out) == text


def test_echo_message_with_labels_and_server_time() -> None:
    w = World()
    a = w.register("alice", "echo-message labeled-response batch server-time message-tags")
    a.send("JOIN #dev")
    a.take()
    out = a.said("@label=L1 PRIVMSG #dev :hello")
    assert len(out) == 1 and out[0].startswith("@") and "label=L1" in out[0]
    assert "msgid=" in out[0] and "time=" in out[0] and out[0].endswith("PRIVMSG #dev :hello")
    assert a.said("@label=L2 PONG x") == ["@label=L2 :zchat ACK"]
    out = a.said("@label=L3 WHO #dev")
    assert out[0].startswith("@label=L3 :zchat BATCH +") and out[-1].startswith(":zchat BATCH -")
    assert all("batch=" in x for x in out[1:-1])


def test_part_quit_nick_topic_seen_by_others() -> None:
    w = World()
    a = w.register("alice")
    b = w.register("bob")
    for c in (a, b):
        c.send("JOIN #dev", "JOIN #ops")
        c.take()
    a.take()
    b.send("NICK bobby")
    assert b.take() == [":bob!~bob@irc NICK bobby"]
    assert a.take() == [":bob!~bob@irc NICK bobby"]  # once, though they share two rooms
    assert numerics(b.said("TOPIC #dev :mine")) == ["482"]
    a.send("TOPIC #dev :release day")
    assert b.take() == [":alice!~alice@irc TOPIC #dev :release day"]
    assert numerics(b.said("TOPIC #dev")) == ["332"]
    a.take()
    b.send("PART #ops")
    assert b.take() == [":bobby!~bob@irc PART #ops"]
    assert a.take() == [":bobby!~bob@irc PART #ops"]
    b.send("QUIT :gone fishing")
    assert b.take() == ["ERROR :Closing link: Quit: gone fishing"]
    assert a.take() == [":bobby!~bob@irc QUIT :Quit: gone fishing"]


def test_names_who_whois_list_ison_userhost() -> None:
    w = World()
    a = w.register("alice")
    b = w.register("bob")
    a.send("JOIN #dev")
    b.send("JOIN #dev", "AWAY :lunch")
    a.take()
    out = a.said("NAMES #dev")
    assert out == [
        ":zchat 353 alice = #dev :@alice bob",
        ":zchat 366 alice #dev :End of /NAMES list",
    ]
    out = a.said("WHO #dev")
    assert ":zchat 352 alice #dev ~bob irc zchat bob G :0 bob Real" in out
    out = a.said("WHOIS bob")
    assert numerics(out) == ["311", "319", "312", "301", "317", "318"]
    assert numerics(a.said("WHOIS nobody")) == ["401", "318"]
    c = w.register("carol")
    c.send("QUIT")
    assert "offline" in a.said("WHOIS carol")[0]
    out = a.said("LIST")
    assert ":zchat 322 alice #dev 2 :" in out and numerics(out)[-1] == "323"
    assert a.said("ISON bob carol") == [":zchat 303 alice :bob"]
    assert a.said("USERHOST bob") == [":zchat 302 alice :bob=-~bob@irc"]
    assert numerics(a.said("PRIVMSG bob :hi")) == ["301"]


def test_away_notify() -> None:
    w = World()
    a = w.register("alice", "away-notify")
    b = w.register("bob")
    a.send("JOIN #dev")
    b.send("JOIN #dev")
    a.take()
    b.take()
    assert numerics(b.said("AWAY :lunch")) == ["306"]
    assert a.take() == [":bob!~bob@irc AWAY :lunch"]
    assert numerics(b.said("AWAY")) == ["305"]
    assert a.take() == [":bob!~bob@irc AWAY"]


def test_private_room_invite_kick_ban_and_modes() -> None:
    w = World()
    a = w.register("alice")
    b = w.register("bob")
    a.send("MODE #ops +i", "JOIN #ops")
    a.take()
    assert a.said("MODE #ops") == [":zchat 324 alice #ops :+it"]
    assert numerics(b.said("JOIN #ops")) == ["473"]
    assert a.said("INVITE bob #ops") == [":zchat 341 alice bob :#ops"]
    assert b.take() == [":alice!~alice@irc INVITE bob #ops"] or True
    b.send("JOIN #ops")
    assert b.take()[0] == ":bob!~bob@irc JOIN #ops"
    assert a.take() == [":bob!~bob@irc JOIN #ops"]
    assert numerics(b.said("KICK #ops alice")) == ["482"]
    assert a.said("MODE #ops +o bob") == [":alice!~alice@irc MODE #ops +o bob"]
    assert b.take() == [":alice!~alice@irc MODE #ops +o bob"]
    assert ":@#ops" in " ".join(b.said("WHOIS bob"))
    a.send("MODE #ops -o bob")
    assert b.take() == [":alice!~alice@irc MODE #ops -o bob"]
    assert numerics(a.said("MODE #ops +t")) == ["472"]
    a.send("KICK #ops bob :behave")
    assert a.take() == [":alice!~alice@irc KICK #ops bob :behave"]
    assert b.take() == [":alice!~alice@irc KICK #ops bob :behave"]
    assert "ops" not in b.conn.rooms
    assert numerics(b.said("JOIN #ops")) == ["473"]  # the kick revoked the invitation
    a.send("JOIN #pub")
    b.send("JOIN #pub")
    a.take()
    a.send("MODE #pub +b bob!*@*")
    assert ":alice!~alice@irc KICK #pub bob :banned" in b.take()
    assert numerics(b.said("JOIN #pub")) == ["474"]


def test_offline_dm_at_connection_with_its_time() -> None:
    w = World()
    b = w.register("bob")
    b.send("QUIT")
    w.zmq(b"z1", m.Hello(1, "zed"))
    w.zmq(b"z1", m.Tell(2, "bob", "dm-1", "while you were out"))
    w.now += 3600
    c = w.register("bob", "server-time")
    out = c.first
    assert len(out) == 1 and out[0].startswith("@time=") and "while you were out" in out[0]
    c.send("QUIT")
    d = w.register("bob")
    assert d.first == []  # confirmed with SEEN: not delivered again
    d.send("QUIT")
    w.zmq(b"z1", m.Tell(3, "bob", "dm-2", "again"))
    w.now += 3600
    e = w.register("bob")  # no server-time: the date goes into the text
    assert e.first[0].startswith(":zed!zed@zchat PRIVMSG bob :[")


def test_zchat_and_irc_users_see_each_other() -> None:
    w = World()
    a = w.register("alice")
    a.send("JOIN #dev")
    a.take()
    w.zmq(b"z1", m.Hello(1, "zed"))
    w.zmq(b"z1", m.Join(2, "dev"))
    assert a.take() == [":zed!zed@zchat JOIN #dev"]
    w.zmq(b"z1", m.Say(3, "dev", "id-1", "hello irc"))
    assert a.take() == [":zed!zed@zchat PRIVMSG #dev :hello irc"]
    a.send("PRIVMSG #dev :hello zmq")
    assert w.zmq(b"z1", m.History(4, "dev", 0, 0, 1))[0].events[0].text == "hello zmq"  # type: ignore[union-attr]
    a.send("PRIVMSG zed :dm")
    assert any(isinstance(x, m.Dm) and x.text == "dm" for x in w.zmq(b"z1", m.Ping(5)))


def test_chathistory_by_msgid_returns_exactly_what_was_missed() -> None:
    w = World()
    caps = "draft/chathistory batch server-time message-tags"
    a = w.register("alice", caps)
    a.send("JOIN #dev")
    a.take()
    w.zmq(b"z1", m.Hello(1, "zed"))
    for i in range(5):
        w.zmq(b"z1", m.Say(10 + i, "dev", f"id-{i}", f"m{i}"))
    seen = a.take()
    last_msgid = seen[2].split("msgid=")[1].split(" ")[0].split(";")[0]  # m2
    out = a.said(f"CHATHISTORY AFTER #dev msgid={last_msgid} 50")
    assert [x.rsplit(":", 1)[1] for x in out[1:-1]] == ["m3", "m4"]
    out = a.said(f"CHATHISTORY LATEST #dev msgid={last_msgid} 50")
    assert [x.rsplit(":", 1)[1] for x in out[1:-1]] == ["m3", "m4"]
    out = a.said(f"CHATHISTORY BEFORE #dev msgid={last_msgid} 1")
    assert [x.rsplit(":", 1)[1] for x in out[1:-1]] == ["m1"]
    out = a.said("CHATHISTORY LATEST #dev * 2")
    assert out[0].startswith(":zchat BATCH +") and "chathistory #dev" in out[0]
    assert [x.rsplit(":", 1)[1] for x in out[1:-1]] == ["m3", "m4"]
    assert a.said("CHATHISTORY LATEST #dev msgid=bogus 2")[0].startswith(":zchat FAIL CHATHISTORY")


def test_flood_is_delayed_and_resent_in_order_never_dropped() -> None:
    w = World(rate=5.0, burst=5)
    a = w.register("alice")
    b = w.register("bob")
    b.send("JOIN #dev")
    a.send("JOIN #dev")
    b.take()
    for i in range(20):
        a.send(f"PRIVMSG #dev :n{i}")
    got = [x.rsplit(":", 1)[1] for x in b.take()]
    assert len(got) < 20 and a.conn.paused is False
    for _ in range(20):
        w.advance(1.0)
        got += [x.rsplit(":", 1)[1] for x in b.take()]
    assert got == [f"n{i}" for i in range(20)]


def test_sasl_plain_and_required() -> None:
    accounts = {"alice": "pw"}

    def check(name: str, pw: str) -> str:
        return name if accounts.get(name) == pw else ""

    w = World(Settings(require_sasl=True, check_password=check, is_account=lambda n: n in accounts))
    c = w.connect(secure=True)
    out = c.said("CAP LS 302")
    assert "sasl=PLAIN" in out[0]
    c.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
    assert c.take()[-1] == "AUTHENTICATE +"
    bad = base64.b64encode(b"\0alice\0nope").decode()
    assert numerics(c.said(f"AUTHENTICATE {bad}")) == ["904"]
    c.send("AUTHENTICATE PLAIN")
    good = base64.b64encode(b"\0alice\0pw").decode()
    assert numerics(c.said(f"AUTHENTICATE {good}")) == ["900", "903"]
    out = c.said("NICK whoever", "USER a 0 * :a", "CAP END")
    assert numerics(out)[0] == "432"  # an account's nick is its name
    c.send("NICK alice")
    assert c.conn.registered and c.conn.user == "account:alice"
    # Without SASL: refused at registration.
    d = w.connect(secure=True)
    out = d.said("NICK bob", "USER b 0 * :b")
    assert out[-1].startswith("ERROR :Closing link: SASL") and d.conn.closing
    # PLAIN over an insecure connection is refused before the password is sent.
    e = w.connect(secure=False)
    assert numerics(e.said("AUTHENTICATE PLAIN")) == ["904"]


def test_unauthenticated_user_cannot_take_an_accounts_nick() -> None:
    w = World(Settings(check_password=lambda n, p: "", is_account=lambda n: n == "alice"))
    c = w.connect()
    assert numerics(c.said("NICK alice")) == ["433"]


def test_registration_timeout_and_idle_ping() -> None:
    w = World()
    c = w.connect()
    c.send("NICK slow")
    w.advance(REGISTRATION_TIMEOUT + 1)
    assert c.take()[-1] == "ERROR :Closing link: Registration timed out" and c.conn.closing
    d = w.register("idle")
    for _ in range(91):
        w.advance(1.0)  # the door PINGs the broker every heartbeat meanwhile
    assert d.take() == ["PING zchat"] and not d.conn.closing
    for _ in range(90):
        w.advance(1.0)
    assert d.take()[-1].startswith("ERROR :Closing link: Ping timeout") and d.conn.closing


def test_hostile_lines() -> None:
    w = World()
    c = w.register("alice")
    assert numerics(c.said(b"PRIVMSG #dev :" + b"x" * 600)) == ["417"]
    assert numerics(c.said(b"@" + b"a" * 5000 + b" PING x")) == ["417"]
    assert c.said(b"PRIVMSG #dev :\xff\xfe") == [
        ":zchat NOTICE alice :line dropped: it is not valid UTF-8"
    ]
    assert c.said(b"PING a\x00b") == []
    assert c.said(b"") == []
    assert c.said(b":only-a-source") == []
    assert c.conn.registered


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("\x02b\x02", "b"), ("\x0304red\x03", "red"), ("\x0312,04x", "x"), ("\x1di\x1d\x0f", "i"),
     ("a\x031,2b", "ab"), ("plain", "plain")],
)  # fmt: skip
def test_strip_formatting(raw: str, clean: str) -> None:
    assert strip_formatting(raw) == clean


def test_commands_pipelined_behind_registration_run_after_welcome() -> None:
    w = World()
    c = w.connect()
    for raw in (b"NICK bot", b"USER bot 0 * :bot", b"JOIN #dev", b"PRIVMSG #dev :up"):
        c.conn.receive(raw, w.now)  # all before the broker answered HELLO
    w.pump()
    out = c.take()
    assert "451" not in numerics(out)
    assert ":bot!~bot@irc JOIN #dev" in out
    assert w.zmq(b"z9", m.Hello(1, "zz")) and w.zmq(b"z9", m.History(2, "dev", 0, 0, 5))


def test_an_account_and_a_key_cannot_take_each_others_nick() -> None:
    w = World(Settings(check_password=lambda n, p: n if p == "pw" else ""))
    c = w.connect(secure=True)
    c.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + base64.b64encode(b"\0alice\0pw").decode())
    c.send("NICK alice", "USER a 0 * :a")
    assert c.conn.registered and c.conn.user == "account:alice"
    c.send("QUIT")
    refused = w.zmq(b"z1", m.Hello(1, "alice"), user="SOMECURVEKEY")
    assert isinstance(refused[0], m.Error) and refused[0].code == "nick_taken"
    assert isinstance(w.zmq(b"z2", m.Hello(1, "bob"), user="SOMECURVEKEY")[0], m.Welcome)
    w.zmq(b"z2", m.Bye(2))
    d = w.connect(secure=True)
    d.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + base64.b64encode(b"\0bob\0pw").decode())
    assert numerics(d.said("NICK bob", "USER b 0 * :b"))[-1] == "433"


@given(st.lists(st.binary(max_size=120) | st.sampled_from(IRC_WORDS), max_size=25))
@settings(max_examples=150, deadline=None)
def test_any_input_is_answered_never_raises(lines: list[bytes]) -> None:
    w = World()
    other = w.register("other")
    other.send("JOIN #dev")
    c = w.connect()
    for raw in [b"NICK fuzz", b"USER f 0 * :f", *lines]:
        c.conn.receive(raw, w.now)
        w.pump()
    w.advance(1.0)
    c.take()
    other.take()
    assert other.conn.registered


def test_a_session_the_broker_expired_closes_the_connection() -> None:
    w = World()
    c = w.register("alice")
    c.conn.heartbeat = 1e9  # a starved door: no PINGs reach the broker
    w.advance(16)  # the broker's timeout (15 s) passes
    c.take()
    c.send("JOIN #dev")
    assert c.take()[-1].startswith("ERROR :Closing link: Session ended") and c.conn.closing


def test_labeled_chathistory_is_one_batch_with_the_label() -> None:
    w = World()
    a = w.register("alice", "draft/chathistory batch labeled-response message-tags")
    a.send("JOIN #dev")
    w.zmq(b"z1", m.Hello(1, "zed"))
    w.zmq(b"z1", m.Say(2, "dev", "id-1", "one"))
    a.take()
    out = a.said("@label=h1 CHATHISTORY LATEST #dev * 5")
    assert out[0].startswith("@label=h1 :zchat BATCH +") and "chathistory #dev" in out[0]
    ref = out[0].split("BATCH +")[1].split()[0]
    assert f"batch={ref}" in out[1] and out[1].endswith(":one")
    assert out[-1] == f":zchat BATCH -{ref}"


def test_join_replays_recent_messages_to_server_time_clients_without_chathistory() -> None:
    w = World()
    w.zmq(b"z1", m.Hello(1, "zed"))
    w.zmq(b"z1", m.Join(2, "dev"))
    w.zmq(b"z1", m.Say(3, "dev", "id-1", "earlier"))
    w.now += 60
    a = w.register("alice", "server-time batch")
    a.send("JOIN #dev")
    out = a.take()
    assert out[0].endswith("JOIN #dev")
    batch = [x for x in out if "earlier" in x]
    assert len(batch) == 1 and "time=" in batch[0] and "batch=" in batch[0]
    b = w.register("bob")  # no server-time: no replay (it would look live)
    b.send("JOIN #dev")
    assert not any("earlier" in x for x in b.take())
    c = w.register("carol", "server-time draft/chathistory batch")  # asks for itself
    c.send("JOIN #dev")
    assert not any("earlier" in x for x in c.take())


def test_sasl_after_registration_is_refused() -> None:
    w = World(Settings(check_password=lambda n, p: n))
    c = w.register("alice")
    out = c.said("AUTHENTICATE PLAIN")
    assert numerics(out) == ["904"] and c.conn.user == ""


def test_an_account_logging_in_again_takes_its_session_over() -> None:
    w = World(Settings(check_password=lambda n, p: n if p == "pw" else ""))
    login = "AUTHENTICATE " + base64.b64encode(b"\0alice\0pw").decode()
    old = w.connect(secure=True)
    old.send("AUTHENTICATE PLAIN", login, "NICK alice", "USER a 0 * :a", "JOIN #dev")
    old.take()
    other = w.register("bob")
    other.send("JOIN #dev")
    other.take()
    new = w.connect(secure=True)  # the old TCP connection is dead but not noticed yet
    new.send("AUTHENTICATE PLAIN", login, "NICK alice", "USER a 0 * :a")
    out = new.take()
    assert " 001 alice " in " ".join(out) and ":alice!~a@irc JOIN #dev" in out
    assert old.take()[-1].startswith("ERROR :Closing link: logged in again") and old.conn.closing
    assert other.take() == []  # no leave, no join: the same session moved
    old.conn.gone(w.now)  # the door closes the old socket: no BYE for the moved session
    w.pump()
    other.send("PRIVMSG #dev :still there?")
    assert new.take() == [":bob!~bob@irc PRIVMSG #dev :still there?"]


def test_a_labeled_command_with_several_requests_answers_in_one_batch() -> None:
    w = World()
    a = w.register("alice", "labeled-response batch")
    out = a.said("@label=j2 JOIN #a,#b")
    assert out[0].startswith("@label=j2 :zchat BATCH +") and "labeled-response" in out[0]
    assert sum("JOIN #" in x for x in out) == 2 and out[-1].startswith(":zchat BATCH -")
    assert all("batch=" in x for x in out[1:-1])
