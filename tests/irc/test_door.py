"""The IRC door's socket edge on loopback, driven by the test instead of the broker loop.

The test plays the server: it calls ``service``/``tick`` when the door's fd is
readable or a deadline passes, and answers requests with ``deliver``. Bounds
checked here: overlong lines without an end, a client that does not read
(SendQ), the registration and TLS handshake timeouts, the warning for a plain
bind beyond loopback, and refusals at open.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import free_port
from zchat.broker.doors import DoorError, DoorRequest
from zchat.config import BrokerConfig
from zchat.irc import door as door_mod
from zchat.irc.door import IrcDoor, open_door
from zchat.protocol import decode_request
from zchat.protocol import messages as m

WAIT = 10.0


@pytest.fixture
def door() -> Iterator[IrcDoor]:
    d = open_door(BrokerConfig(irc=f"127.0.0.1:{free_port()}"))
    assert isinstance(d, IrcDoor)
    d.show = lambda line: shown.append(line)
    shown.clear()
    yield d
    d.close()


shown: list[str] = []


def connect(d: IrcDoor) -> socket.socket:
    host, port = d.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=WAIT)
    return s


def spin(d: IrcDoor, until: object, timeout: float = WAIT) -> list[DoorRequest]:
    """Serve the door like the broker loop until ``until()`` is true; the requests it made."""
    got: list[DoorRequest] = []
    deadline = time.monotonic() + timeout
    while not until():  # type: ignore[operator]
        assert time.monotonic() < deadline, "door never got there"
        wait = max(0.0, min(0.05, d.next_deadline() - time.time()))
        if select.select([d.fileno()], [], [], wait)[0]:
            got += d.service(time.time())
        got += d.tick(time.time())
    return got


def recv_until(s: socket.socket, text: bytes) -> bytes:
    buf = b""
    deadline = time.monotonic() + WAIT
    while text not in buf:
        assert time.monotonic() < deadline, buf[-300:]
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def register(d: IrcDoor, s: socket.socket, nick: str) -> bytes:
    s.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :x\r\n".encode())
    got = spin(d, lambda: any(p.conn and p.conn.nick == nick and p.conn._pending
                              for p in d.socks.values()))  # fmt: skip
    hello = decode_request(got[-1].frames)
    assert isinstance(hello, m.Hello) and hello.nick == nick
    peer = got[-1].peer
    welcome = m.Welcome(hello.rid, nick, "t" * 32, "tcp://*:1", "e" * 32, time.time(), 5.0, 15.0)
    d.deliver(peer, welcome)
    d.tick(time.time())  # the end of the broker's batch: output goes out
    assert peer.startswith(b"\xffirc:")
    return peer


def exchange(d: IrcDoor, s: socket.socket, want: bytes) -> bytes:
    """Serve the door and read the client until ``want`` came; everything read."""
    buf = b""
    s.setblocking(False)
    deadline = time.monotonic() + WAIT
    while want not in buf:
        assert time.monotonic() < deadline, buf[-300:]
        if select.select([d.fileno()], [], [], 0.01)[0]:
            d.service(time.time())
        with contextlib.suppress(BlockingIOError):
            buf += s.recv(65536)
    return buf


def test_an_overlong_line_without_its_end_is_refused_and_skipped(door: IrcDoor) -> None:
    s = connect(door)
    register(door, s, "alice")
    recv_until(s, b" 376 ")
    s.sendall(b"PRIVMSG #x :" + b"y" * 20000)  # no end yet: more than any line may be
    assert b" 417 alice " in exchange(door, s, b" 417 ")
    s.sendall(b"y" * 5000 + b"\r\nPING :ok\r\n")  # the rest of it, then a good line
    got = exchange(door, s, b"PONG")
    assert b"PONG zchat ok" in got and b" 417 " not in got
    s.close()


def test_a_client_that_does_not_read_is_dropped_not_buffered(door: IrcDoor) -> None:
    s = connect(door)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer = register(door, s, "sleepy")
    text = "z" * 3900
    for i in range(4000):  # about 16 MB of DMs it never reads
        door.deliver(peer, m.Dm(f"id{i}", "bob", "sleepy", text, time.time(), seq=i + 1))
        if peer not in door.socks:
            break
    assert peer not in door.socks
    assert any("SendQ exceeded" in line for line in shown)
    s.close()


def test_registration_timeout(door: IrcDoor, monkeypatch: pytest.MonkeyPatch) -> None:
    s = connect(door)
    s.sendall(b"NICK slow\r\n")
    spin(door, lambda: len(door.socks) == 1)
    later = time.time() + 31
    door.tick(later)
    door._next_tick = 0
    door.tick(later + 1)
    assert b"Registration timed out" in recv_until(s, b"timed out")
    s.close()


def test_tls_handshake_timeout(tmp_path: Path) -> None:
    from tests.e2e.test_irc import _cert

    cert, key, _ = _cert(tmp_path, "server")
    d = open_door(BrokerConfig(irc=f"127.0.0.1:{free_port()}", irc_tls_cert=str(cert),
                               irc_tls_key=str(key)))  # fmt: skip
    try:
        assert "TLS" in d.describe()
        assert isinstance(d, IrcDoor)
        s = connect(d)  # never says ClientHello
        spin(d, lambda: len(d.socks) == 1)
        d.tick(time.time() + door_mod.HANDSHAKE_TIMEOUT + 1)
        assert not d.socks
        s.close()
    finally:
        d.close()


def test_open_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    first = open_door(BrokerConfig(irc=f"127.0.0.1:{port}"))
    try:
        with pytest.raises(DoorError, match="port in use"):
            open_door(BrokerConfig(irc=f"127.0.0.1:{port}"))
    finally:
        first.close()
    with pytest.raises(DoorError, match="irc_tls_cert"):
        open_door(BrokerConfig(irc=f"127.0.0.1:{free_port()}", irc_tls_cert=str(tmp_path / "no"),
                               irc_tls_key=str(tmp_path / "no")))  # fmt: skip
    with pytest.raises(DoorError, match="accounts"):
        open_door(BrokerConfig(irc=f"127.0.0.1:{free_port()}", curve_secret_key="x.key_secret"))
    wide = open_door(BrokerConfig(irc=f"0.0.0.0:{free_port()}"))
    wide.close()
    assert "without TLS" in capsys.readouterr().err


def test_connections_beyond_the_limit_are_refused(door: IrcDoor) -> None:
    door.max_connections = 2
    first, second, third = connect(door), connect(door), connect(door)
    spin(door, lambda: len(door.socks) == 2)
    assert b"Too many connections" in recv_until(third, b"\r\n")
    for s in (first, second, third):
        s.close()


def test_password_checks_are_limited_per_second(tmp_path: Path) -> None:
    from zchat.accounts import Accounts

    book_file = tmp_path / "accounts"
    accounts = Accounts.load(book_file, missing_ok=True)
    accounts.set("alice", "pw")
    accounts.save()
    now = [100.0]
    book = door_mod._AccountBook(str(book_file), clock=lambda: now[0])
    results = [book.check_password("alice", "pw") for _ in range(door_mod.PASSWORD_CHECKS + 2)]
    assert results[: door_mod.PASSWORD_CHECKS] == ["alice"] * door_mod.PASSWORD_CHECKS
    assert results[-1] == ""
    now[0] += 1.0
    assert book.check_password("alice", "pw") == "alice"


def test_loopback_addresses() -> None:
    assert door_mod._loopback("127.0.0.1") and door_mod._loopback("::1")
    assert door_mod._loopback("::ffff:127.0.0.1")  # a dual-stack listener's IPv4 peer
    assert not door_mod._loopback("192.0.2.1") and not door_mod._loopback("::ffff:192.0.2.1")
