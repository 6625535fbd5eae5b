"""End to end: a real broker and real clients, all started through the CLI.

Each test runs `zchat broker` and `zchat client --plain` as subprocesses over
TCP on loopback with a real SQLite store (see tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from tests.procs import Broker, Proc, free_port, raw_session, raw_subscriber
from zchat.protocol import decode_broadcast, decode_from_broker, encode
from zchat.protocol import messages as m

Start = Callable[..., Proc]


def test_three_clients_chat_see_presence_dm_and_exit(broker: Broker, client: Start) -> None:
    """The promise of the product: many clients, talking to each other, live."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    carol = client("carol", room="dev")
    carol.wait_for(r"^-- joined #dev")

    alice.wait_for(r"#dev -- bob joined #dev")
    alice.wait_for(r"#dev -- carol joined #dev")
    bob.wait_for(r"#dev -- carol joined #dev")

    alice.send("hello everyone")
    for c in (alice, bob, carol):  # the sender sees its own message too
        c.wait_for(r"#dev <alice> hello everyone$")
    bob.send("/me waves")
    carol.wait_for(r"#dev \* bob waves$")
    carol.send("hi both")
    alice.wait_for(r"#dev <carol> hi both$")
    bob.wait_for(r"#dev <carol> hi both$")

    carol.send("/msg alice just between us")
    alice.wait_for(r"\[DM\] <carol> just between us$")
    carol.wait_for(r"\[DM to alice\] just between us$")

    bob.send("/who")
    bob.wait_for(r"^-- #dev: alice, bob, carol$")

    carol.send("exit")
    assert carol.wait_exit() == 0
    alice.wait_for(r"#dev -- carol left #dev \(quit\)")
    bob.wait_for(r"#dev -- carol left #dev \(quit\)")

    # Nothing was shown twice, and bob never saw the DM.
    assert alice.count(r"<alice> hello everyone$") == 1
    assert bob.count("just between us") == 0
    for c in (alice, bob):
        c.send("exit")
        assert c.wait_exit() == 0

    # The broker showed the traffic: arrivals, room lines, the DM without its text.
    broker.wait_for(r"\+ alice arrived")
    broker.wait_for(r"\[#dev\] <alice> hello everyone")
    broker.wait_for(r"carol -> alice \(DM\)")
    broker.wait_for(r"- carol gone \(quit\)")
    assert broker.count("just between us") == 0


def test_dm_never_on_the_broadcast_socket(broker: Broker, client: Start, zctx: zmq.Context) -> None:
    """A raw SUB subscribed to everything sees room traffic but no DM (§6.6)."""
    spy_dealer, welcome = raw_session(zctx, broker.endpoint, "spy")
    spy = raw_subscriber(zctx, welcome.pub, b"")

    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice.send("/msg bob secret-dm-text", "public-room-text")
    bob.wait_for("secret-dm-text")
    bob.wait_for("public-room-text")

    # The broker publishes in order: once the spy has the room line that was
    # said after the DM, it has everything the broker published before it.
    blob = b""
    deadline = time.monotonic() + 10
    while b"public-room-text" not in blob and time.monotonic() < deadline:
        if spy.poll(500):
            blob += b"".join(spy.recv_multipart())
    assert b"public-room-text" in blob  # the spy did listen
    assert b"secret-dm-text" not in blob
    # Nor can a raw DEALER get at it.
    while spy_dealer.poll(200):
        assert b"secret-dm-text" not in b"".join(spy_dealer.recv_multipart())


def test_member_of_dev_does_not_get_devops(broker: Broker, client: Start) -> None:
    """Room topics end in NUL, so the prefix `#dev` never matches `#devops` (§5.1)."""
    dev = client("devfan", room="dev")
    dev.wait_for(r"^-- joined #dev")
    ops = client("opsfan", room="devops")
    ops.wait_for(r"^-- joined #devops")
    ops.send("only for devops")
    dev.send("only for dev")
    ops.wait_for("only for devops")
    dev.wait_for("only for dev")
    # Both lines were published before `dev` saw its own; give the SUB a round
    # trip more (a PING answered after everything queued before it).
    dev.send("/rooms")
    dev.wait_for(r"^-- #devops \(1\)")
    assert dev.count("only for devops") == 0
    assert ops.count("only for dev$") == 0


def test_bad_input_gets_errors_and_broker_keeps_serving(
    broker: Broker, client: Start, zctx: zmq.Context
) -> None:
    """Garbage of every kind is answered or dropped with a log line (§7)."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")

    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.endpoint)

    def ask(frames: list[bytes]) -> m.Message | None:
        raw.send_multipart(frames)
        if not raw.poll(3_000):
            return None
        return decode_from_broker(raw.recv_multipart())

    hello = encode(m.Hello(7, "rawuser"))
    cases = {
        "bad_frame": [b"just one frame"],
        "bad_version": [b"ZCHAT/9", b"PING", hello[2]],
        "unknown_type": [b"ZCHAT/1", b"FLY", b"\x81\xa3rid\x07"],
        "bad_utf8": [b"ZCHAT/1", b"HELLO", b"\x82\xa3rid\x07\xa4nick\xa2\xff\xfe"],
        "bad_nick": [b"ZCHAT/1", b"HELLO", b"\x82\xa3rid\x07\xa4nick\xa3a b"],
        "too_long": [b"ZCHAT/1", b"HELLO", b"\x81\xa3rid\x07" + b"x" * 70_000],
    }
    for code, frames in cases.items():
        reply = ask(frames)
        if reply is not None:  # dropped with a log line is fine too
            assert isinstance(reply, m.Error), (code, reply)
            assert reply.code == code, (code, reply)
    assert ask(hello) is not None
    reply = ask(encode(m.Join(8, "room-x")))  # valid now
    assert isinstance(reply, m.Joined)
    # Semantic errors, after registering.
    bad_room = [b"ZCHAT/1", b"JOIN", b"\x82\xa3rid\x09\xa4room\xa5#a b!"]
    reply = ask(bad_room)
    assert isinstance(reply, m.Error) and reply.code == "bad_room"
    long_text = "x" * 5000
    body = encode(m.Say(10, "dev", "id1", "ok"))[2].replace(
        b"\xa2ok", b"\xda\x13\x88" + long_text.encode()
    )
    reply = ask([b"ZCHAT/1", b"SAY", body])
    assert isinstance(reply, m.Error) and reply.code == "too_long"

    broker.wait_for(r"! dropped bad request")
    # Everyone else is still served.
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice.send("still here")
    bob.wait_for("<alice> still here")
    assert broker.p.poll() is None


def test_piped_client_waits_for_acks_then_exits(
    broker: Broker, client: Start, tmp_path: Path
) -> None:
    """`echo hi | zchat client --plain` delivers, then exits 0 (§6.3)."""
    watcher = client("watcher", room="lobby")
    watcher.wait_for(r"^-- joined #lobby")
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "zchat",
            "client",
            "--plain",
            "--connect",
            broker.endpoint,
            "--nick",
            "piper",
            "--room",
            "lobby",
        ],
        input="/join dev\nline one\nline two\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert "#dev <piper> line one" in one.stdout
    watcher.send("/join dev", "/history 5")
    watcher.wait_for(r"#dev <piper> line two")


def test_send_one_shot(broker: Broker, client: Start) -> None:
    """`zchat send` says its text (or each stdin line) and exits 0."""
    watcher = client("watcher", room="ops")
    watcher.wait_for(r"^-- joined #ops")
    base = [sys.executable, "-m", "zchat", "send", "--connect", broker.endpoint, "--room", "#ops"]
    done = subprocess.run([*base, "deploy finished"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    watcher.wait_for(r"#ops <\S+-send> deploy finished$")
    done = subprocess.run(
        [*base, "--nick", "cron"], input="a\nb\n", capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    watcher.wait_for(r"#ops <cron> a$")
    watcher.wait_for(r"#ops <cron> b$")
    # A line the rules refuse is skipped, the others still go, and the exit says so.
    done = subprocess.run(
        [*base, "--nick", "cron"],
        input="good one\nbad \x1b[31mred\x1b[0m\ngood two\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert "1 not sent (line 2: message contains control" in done.stderr
    watcher.wait_for(r"#ops <cron> good two$")
    assert watcher.count("red") == 0
    # No broker: a one-line error and a non-zero exit.
    lonely = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zchat",
            "send",
            "--connect",
            lonely,
            "--room",
            "x",
            "--timeout",
            "0.5",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no answer" in done.stderr


def test_nick_taken_is_a_clear_error(broker: Broker, client: Start) -> None:
    first = client("alice")
    first.wait_for("connected as alice")
    second = client("Alice")
    second.wait_for(r"nick_taken: the nick Alice is taken")
    assert second.wait_exit() == 2


def test_client_started_before_broker_keeps_trying(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    early = Proc(["client", "--plain", "--connect", f"tcp://127.0.0.1:{port}", "--nick", "early",
                  "--room", "lobby"])  # fmt: skip
    procs.append(early)
    early.wait_for("connecting to")
    procs.append(Broker(tmp_path, port=port))
    early.wait_for("connected as early", timeout=20)
    early.wait_for(r"^-- joined #lobby")


def test_broker_sigterm_tells_clients_and_exits_zero(broker: Broker, client: Start) -> None:
    alice = client("alice")
    alice.wait_for(r"^-- joined #lobby")
    broker.signal(signal.SIGTERM)
    assert broker.wait_exit() == 0
    broker.wait_for("shutting down")
    alice.wait_for("the broker is going away")


def test_config_mistake_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broker.toml"
    bad.write_text('[broker]\nbind = "tcp://127.0.0.1:5555"\nheartbeet = 3\n')
    done = subprocess.run(
        [sys.executable, "-m", "zchat", "broker", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode != 0
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(bad) in err and "heartbeet" in err


def test_raw_subscriber_gets_nothing_before_subscribing(broker: Broker, zctx: zmq.Context) -> None:
    """The SYNCED handshake (§5.2) works for a hand-written client too."""
    dealer, welcome = raw_session(zctx, broker.endpoint, "handmade")
    sub = raw_subscriber(zctx, welcome.pub, m.room_topic("dev"), m.sync_topic("tok123"))
    assert sub.poll(10_000)
    synced = decode_broadcast(sub.recv_multipart())
    assert synced == m.Synced("tok123")
    dealer.send_multipart(encode(m.Join(2, "dev")))
    assert sub.poll(10_000)
    event = decode_broadcast(sub.recv_multipart())
    assert isinstance(event, m.Event) and event.kind == "join" and event.nick == "handmade"


def test_stats_shows_the_counters(broker: Broker, client: Start) -> None:
    """`zchat stats` against a running broker (§6.10)."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    alice.send("counted")
    alice.wait_for("<alice> counted")
    base = [sys.executable, "-m", "zchat", "stats", "--connect", broker.endpoint]
    table = subprocess.run(base, capture_output=True, text=True, timeout=20)
    assert table.returncode == 0, table.stderr
    assert "1 clients, 1 rooms" in table.stdout
    assert re.search(r"^\s+messages\s+1$", table.stdout, re.M)
    as_json = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=20)
    data = json.loads(as_json.stdout)
    assert data["clients"] == 1 and data["messages"] == 1 and data["published"] >= 2
    assert data["uptime"] == round(data["uptime"], 1)  # not 14 decimals


def test_stats_and_send_without_a_broker_say_so_in_one_line() -> None:
    """No broker listening: one line, status 1, no traceback, about the timeout."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    for args in (["stats"], ["send", "--room", "x", "hi"]):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "zchat", *args, "--connect", endpoint, "--timeout", "1"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 1, done
        assert done.stderr.startswith("Error: no answer from a broker"), done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
        assert time.monotonic() - started < 6
