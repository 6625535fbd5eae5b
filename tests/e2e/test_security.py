"""Security end to end (docs/security.md): CURVE, privacy, limits, hostile input.

Real broker and client processes; raw pyzmq sockets play the attacker.
"""

from __future__ import annotations

import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq

from tests.procs import Broker, Proc, free_port, make_keys, raw_session, raw_subscriber
from tests.procs import curve_broker as start_curve_broker
from zchat.protocol import decode_from_broker, encode
from zchat.protocol import messages as m

Start = Callable[..., Proc]


class Relay:
    """A TCP relay that records every byte it passes: our wire tap."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.captured = bytearray()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._target = target_port
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        pairs: list[tuple[socket.socket, socket.socket]] = []
        while not self._stop:
            try:
                inner, _ = self._server.accept()
                outer = socket.create_connection(("127.0.0.1", self._target))
                pairs.append((inner, outer))
            except TimeoutError:
                pass
            socks = [s for pair in pairs for s in pair]
            if not socks:
                continue
            ready, _, _ = select.select(socks, [], [], 0.05)
            for a, b in pairs:
                for src, dst in ((a, b), (b, a)):
                    if src in ready:
                        data = src.recv(65536)
                        if data:
                            self.captured += data
                            dst.sendall(data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._server.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """broker, alice and bob key pairs; an allow-list directory with alice's and bob's."""
    return make_keys(tmp_path, ("broker", "alice", "bob", "mallory"), ("alice", "bob"))


@pytest.fixture
def curve_broker(keys: Path, procs: list[Proc]) -> Broker:
    b = start_curve_broker(keys)
    procs.append(b)
    b.wait_for(r"\(CURVE, 2 client keys\)")
    return b


def curve_client(
    procs: list[Proc], keys: Path, endpoint: str, nick: str, key: str, server: str = "broker"
) -> Proc:
    conf = keys / f"{nick}-{key}.toml"
    conf.write_text(
        "[client]\n"
        f'curve_key = "{keys / "keys" / f"{key}.key_secret"}"\n'
        f'curve_server_key = "{keys / "keys" / f"{server}.key"}"\n'
    )
    c = Proc(["client", "--plain", "--config", str(conf), "--connect", endpoint,
              "--nick", nick, "--room", "dev"])  # fmt: skip
    procs.append(c)
    return c


def test_curve_encrypts_and_authenticates(
    curve_broker: Broker, keys: Path, procs: list[Proc]
) -> None:
    """Listed keys chat; the bytes on the wire never show the text."""
    tap = Relay(curve_broker.port)
    try:
        alice = curve_client(procs, keys, f"tcp://127.0.0.1:{tap.port}", "alice", "alice")
        bob = curve_client(procs, keys, curve_broker.endpoint, "bob", "bob")
        alice.wait_for(r"^-- joined #dev")
        bob.wait_for(r"^-- joined #dev")
        alice.send("attack at dawn", "/msg bob the password is swordfish")
        bob.wait_for("<alice> attack at dawn")
        bob.wait_for(r"\[DM\] <alice> the password is swordfish")
    finally:
        tap.close()
    assert len(tap.captured) > 500  # the tap did see the conversation
    assert b"attack at dawn" not in tap.captured
    assert b"swordfish" not in tap.captured
    assert b"alice" not in tap.captured  # not even the nick in HELLO


def test_unknown_key_is_refused_with_a_clear_message(
    curve_broker: Broker, keys: Path, procs: list[Proc]
) -> None:
    mallory = curve_client(procs, keys, curve_broker.endpoint, "mallory", "mallory")
    mallory.wait_for(r"authentication failed: the broker refused this client's key")
    assert mallory.wait_exit() == 3
    curve_broker.wait_for(r"! refused .*unknown key")


def test_handshakes_without_keys_are_logged_once_not_per_try(curve_broker: Broker) -> None:
    """A keyless peer retries its handshake every reconnect interval: the broker
    says once that it refused a client without keys, and keeps serving."""
    ctx = zmq.Context.instance()
    peers = []
    try:
        for _ in range(5):
            peer = ctx.socket(zmq.DEALER)
            peer.setsockopt(zmq.LINGER, 0)
            peer.setsockopt(zmq.RECONNECT_IVL, 20)
            peer.connect(curve_broker.endpoint)
            peer.send_multipart([b"x", b"y", b"z"], zmq.NOBLOCK)
            peers.append(peer)
        curve_broker.wait_for(r"! refused a client without CURVE keys$")
        # Dozens of retries (every 20 ms, from 5 peers) later, still one line:
        # the next may come after 10 s. Absence can only be read over a while.
        curve_broker.drain(1.0)
        assert curve_broker.count(r"refused a client without CURVE keys") == 1
    finally:
        for peer in peers:
            peer.close(linger=0)


def test_wrong_broker_key_is_a_clear_error(
    curve_broker: Broker, keys: Path, procs: list[Proc]
) -> None:
    lost = curve_client(procs, keys, curve_broker.endpoint, "alice", "alice", server="bob")
    lost.wait_for(r"authentication failed: the handshake failed: wrong broker key")
    assert lost.wait_exit() == 3
    curve_broker.wait_for(r"! refused a client with the wrong broker key")


def test_allow_list_is_reloaded_without_restart(
    curve_broker: Broker, keys: Path, procs: list[Proc]
) -> None:
    key = (keys / "keys" / "mallory.key").read_bytes()
    (keys / "allowed" / "mallory.key").write_bytes(key)  # the operator admits mallory
    late = curve_client(procs, keys, curve_broker.endpoint, "mallory", "mallory")
    late.wait_for(r"^-- joined #dev")


def test_a_nick_stays_with_its_key(curve_broker: Broker, keys: Path, procs: list[Proc]) -> None:
    """bob's key cannot take alice's nick, not even after alice has left."""
    alice = curve_client(procs, keys, curve_broker.endpoint, "alice", "alice")
    alice.wait_for(r"^-- joined #dev")
    alice.send("exit")
    assert alice.wait_exit() == 0
    impostor = curve_client(procs, keys, curve_broker.endpoint, "Alice", "bob")
    impostor.wait_for(r"nick_taken: the nick Alice belongs to another key")
    assert impostor.wait_exit() == 2


def test_send_and_stats_speak_curve_too(curve_broker: Broker, keys: Path) -> None:
    env = {
        **os.environ,
        "ZCHAT_CURVE_KEY": str(keys / "keys" / "bob.key_secret"),
        "ZCHAT_CURVE_SERVER_KEY": str(keys / "keys" / "broker.key"),
        "ZCHAT_CONNECT": curve_broker.endpoint,
    }
    base = [sys.executable, "-m", "zchat"]
    sent = subprocess.run([*base, "send", "--room", "dev", "--nick", "bob", "hi"],
                          env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    env["ZCHAT_CURVE_KEY"] = str(keys / "keys" / "mallory.key_secret")
    refused = subprocess.run([*base, "stats", "--timeout", "2"],
                             env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode == 3  # AUTH_FAILED, as for zchat client
    assert "authentication failed" in refused.stderr


def test_private_room_and_dms_are_invisible_to_raw_sockets(
    broker: Broker, client: Start, zctx: zmq.Context
) -> None:
    """A raw SUB on b"" and a raw DEALER get nothing of a private room or a DM (§6.11)."""
    spy, welcome = raw_session(zctx, broker.endpoint, "spy")
    sub = raw_subscriber(zctx, welcome.pub, b"")

    alice = client("alice", room="lobby")
    alice.wait_for(r"^-- joined #lobby")
    alice.send("/private secret")
    alice.wait_for(r"^-- joined #secret")
    # The spy also tries the front door.
    spy.send_multipart(encode(m.Join(2, "secret")))
    spy.send_multipart(encode(m.History(3, "secret")))
    bob = client("bob", room="lobby")
    bob.wait_for(r"^-- joined #lobby")
    alice.send("/invite bob")
    bob.wait_for(r"alice invited you to #secret")
    bob.send("/join secret")
    bob.wait_for(r"^-- joined #secret")
    alice.wait_for(r"#secret -- bob joined #secret")
    bob.send("private-room-words", "/msg alice private-dm-words")
    alice.wait_for("<bob> private-room-words")
    alice.wait_for("private-dm-words")
    bob.send("/switch lobby", "public-marker")
    alice.wait_for("<bob> public-marker")

    blob = b""
    deadline = time.monotonic() + 10
    while b"public-marker" not in blob and time.monotonic() < deadline:
        if sub.poll(500):
            blob += b"".join(sub.recv_multipart())
    assert b"public-marker" in blob  # the spy's SUB did work
    assert b"private-room-words" not in blob and b"private-dm-words" not in blob
    answers = b""
    while spy.poll(300):
        answers += b"".join(spy.recv_multipart())
    assert b"invite_only" in answers and b"not_member" in answers
    assert b"private-room-words" not in answers and b"private-dm-words" not in answers


def test_operators_kick_and_ban(broker: Broker, client: Start) -> None:
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    troll = client("troll", room="dev")
    troll.wait_for(r"^-- joined #dev")
    troll.send("/kick alice")
    troll.wait_for(r"not_op: only operators of #dev")
    alice.send("/ban troll")
    troll.wait_for(r"troll was removed from #dev \(by alice: banned\)")
    troll.send("/join dev")
    troll.wait_for(r"banned: you are banned from #dev")
    alice.wait_for(r"troll was removed from #dev")


def test_flood_is_throttled_while_others_chat(tmp_path: Path, procs: list[Proc]) -> None:
    """§6.12: a flood is slowed to the rate, loses nothing, and does not slow others."""
    broker = Broker(tmp_path, "--quiet", env={"ZCHAT_RATE": "100", "ZCHAT_BURST": "100"})
    procs.append(broker)
    base = ["client", "--plain", "--connect", broker.endpoint, "--room", "dev"]
    alice = Proc([*base, "--nick", "alice"])
    bob = Proc([*base, "--nick", "bob"])
    flooder = Proc([*base, "--nick", "flooder"], env={"ZCHAT_WAIT": "60"})
    procs += [alice, bob, flooder]
    for c in (alice, bob, flooder):
        c.wait_for(r"^-- joined #dev")
    started = time.monotonic()
    flooder.send(*(f"flood {i:04d}" for i in range(600)))
    flooder.wait_for("sending too fast")
    # Meanwhile a normal conversation is not held up behind the flood.
    for i in range(3):
        sent = time.monotonic()
        alice.send(f"normal {i}")
        bob.wait_for(f"<alice> normal {i}$")
        assert time.monotonic() - sent < 1.5
    flooder.close_stdin()
    assert flooder.wait_exit(60) == 0
    bob.wait_for("<flooder> flood 0599", timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed > (600 - 100) / 100 * 0.8  # slowed to about the rate after the burst
    flood = [line for line in bob.lines if "<flooder> flood" in line]
    assert [line[-4:] for line in flood] == [f"{i:04d}" for i in range(600)]  # all, in order


def test_hostile_frames_do_not_hurt_the_broker(
    broker: Broker, client: Start, zctx: zmq.Context
) -> None:
    """Thousands of random and mutated messages from several raw sockets: the broker
    stays up, its memory stays bounded, and honest clients still get everything."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    rss_before = _rss_kib(broker.p.pid)
    rng = random.Random(4)
    valid = [
        encode(m.Hello(1, "x")),
        encode(m.Join(2, "dev")),
        encode(m.Say(3, "dev", "abc", "hi")),
        encode(m.History(4, "dev", after=1)),
    ]
    attackers = []
    for _ in range(4):
        raw = zctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.SNDHWM, 0)
        raw.connect(broker.endpoint)
        attackers.append(raw)
    for n in range(4000):
        raw = attackers[n % len(attackers)]
        raw.send_multipart(_hostile(rng, valid))
        if n % 500 == 0:
            alice.send(f"during attack {n}")
    for raw in attackers:
        while raw.poll(200):  # drain the answers so nothing piles up on our side
            raw.recv_multipart()
    alice.send("after the attack")
    for n in range(0, 4000, 500):
        bob.wait_for(f"<alice> during attack {n}$", timeout=30)
    bob.wait_for("<alice> after the attack$", timeout=30)
    assert broker.p.poll() is None
    growth = _rss_kib(broker.p.pid) - rss_before
    assert growth < 50_000, f"broker RSS grew by {growth} KiB"


def _hostile(rng: random.Random, valid: list[list[bytes]]) -> list[bytes]:
    choice = rng.random()
    if choice < 0.3:
        return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 5))]
    frames = [bytearray(f) for f in rng.choice(valid)]
    if choice < 0.6:  # flip bytes in a valid message
        for _ in range(rng.randint(1, 4)):
            frame = rng.choice(frames)
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
    elif choice < 0.8:  # a valid frame shape with a random map
        junk = {rng.choice(["rid", "room", "nick", "text", "id", "x"]): rng.choice(
            [rng.randint(-(2**40), 2**40), "é" * rng.randint(0, 9), None, [], b"\xff", 1.5]
        ) for _ in range(rng.randint(0, 5))}  # fmt: skip
        frames[2] = bytearray(msgpack.packb(junk))
    else:  # truncated or extended
        frames[-1] = frames[-1][: rng.randint(0, len(frames[-1]))] + rng.randbytes(3)
    return [bytes(f) for f in frames]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_escape_sequences_never_reach_a_screen(
    broker: Broker, client: Start, zctx: zmq.Context
) -> None:
    """The broker refuses control characters (§3.3); the client escapes what it prints."""
    watcher = client("watcher", room="dev")
    watcher.wait_for(r"^-- joined #dev")
    raw, _ = raw_session(zctx, broker.endpoint, "sneaky")
    # Built by hand: the codec's rules would refuse to build this SAY at all.
    body = msgpack.packb({"rid": 2, "room": "dev", "id": "e1", "text": "\x1b[2J\x1b]0;pwned\x07"})
    raw.send_multipart([b"ZCHAT/1", m.Say.TYPE, body])
    assert raw.poll(10_000)
    reply = decode_from_broker(raw.recv_multipart())
    assert isinstance(reply, m.Error) and reply.code == "bad_text"
    watcher.send("/who")
    watcher.wait_for(r"^-- #dev:")
    assert not any("\x1b" in line for line in watcher.lines)


def test_binding_beyond_loopback_without_curve_warns(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    b = Proc(
        ["broker", "--bind", f"tcp://0.0.0.0:{port}", "--store", str(tmp_path / "s.db")],
        stdin=False,
    )
    procs.append(b)
    b.wait_for(r"warning: listening beyond this host without CURVE")


def test_a_routing_id_reserved_for_doors_is_refused(
    broker: Broker, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A ZeroMQ peer that chooses an id in the doors' space (broker/doors.py) is
    dropped with a log line: it can never act as an IRC or web user."""
    poser = zctx.socket(zmq.DEALER)
    poser.setsockopt(zmq.LINGER, 0)
    poser.setsockopt(zmq.ROUTING_ID, b"\xffirc:1")
    poser.connect(broker.endpoint)
    poser.send_multipart(encode(m.Hello(1, "poser")))
    broker.wait_for(r"! dropped a request from ff6972633a31: id reserved for doors")
    assert not poser.poll(200)
    _, welcome = raw_session(zctx, broker.endpoint, "poser")  # the nick was never taken
    assert welcome.nick == "poser"
