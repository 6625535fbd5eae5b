"""The web door's socket edge on loopback, with a real broker core (zchat/web/door.py).

A pump thread plays the broker's loop: it waits on the door's one descriptor,
runs what the door returns through a ``BrokerCore`` on a memory store and
hands the effects back, as zchat/broker/server.py does. Tests talk to the
door with the ``websockets`` client and raw sockets; every wait has a deadline.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from zchat.broker.core import BrokerCore, CoreConfig, Publish, Send
from zchat.broker.doors import DoorError
from zchat.config import BrokerConfig
from zchat.protocol import messages as m
from zchat.store.memory import MemoryStore
from zchat.web import door as door_mod
from zchat.web.door import CSP, WebDoor, open_door, origin_allowed

WAIT = 5.0


class Pump:
    """The broker's loop for one door, in a thread; ``call`` runs code in it."""

    def __init__(self, door: WebDoor) -> None:
        self.door = door
        self.core = BrokerCore(MemoryStore(), CoreConfig("tcp://*:1"), time.time())
        self.requests: list[bytes] = []  # request types, in order
        self._stop = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            select.select([self.door.fileno()], [], [], 0.02)
            with self._lock:
                now = time.time()
                self._handle(self.door.service(now))
                if now >= self.door.next_deadline():
                    self._handle(self.door.tick(now))

    def _handle(self, requests: list[Any]) -> None:
        for r in requests:
            self.requests.append(r.frames[1])
            for fx in self.core.handle(r.peer, r.frames, time.time(), r.user):
                self.carry_out(fx)

    def carry_out(self, fx: object) -> None:
        if isinstance(fx, Send):
            self.door.deliver(fx.peer, fx.msg)
        elif isinstance(fx, Publish):
            self.door.broadcast(fx.msg)

    def publish(self, msg: m.Broadcast) -> None:
        with self._lock:
            self.door.broadcast(msg)

    def stop(self) -> None:
        self._stop = True
        self.thread.join(WAIT)
        self.door.close()


@pytest.fixture
def door() -> Iterator[WebDoor]:
    d = WebDoor("127.0.0.1:0", heartbeat=0.5, timeout=2.0)
    pump = Pump(d)
    d.pump = pump  # type: ignore[attr-defined]
    yield d
    pump.stop()


def origin(d: WebDoor) -> str:
    return f"http://127.0.0.1:{d.port}"


def ws(d: WebDoor, **kw: Any) -> ClientConnection:
    kw.setdefault("origin", origin(d))
    return connect(f"ws://127.0.0.1:{d.port}/ws", open_timeout=WAIT, **kw)


def recv(c: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` (others are skipped), within the deadline."""
    deadline = time.monotonic() + WAIT
    while True:
        msg = json.loads(c.recv(timeout=max(0.01, deadline - time.monotonic())))
        if msg["type"] == kind:
            return msg  # type: ignore[no-any-return]


def http_get(d: WebDoor, path: str, host: str = "") -> tuple[str, bytes]:
    with socket.create_connection(("127.0.0.1", d.port), timeout=WAIT) as s:
        host = host or f"127.0.0.1:{d.port}"
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


def wait_until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)  # polling a condition with a deadline, not synchronising


def test_the_page_and_its_files_are_served_with_a_strict_policy(door: WebDoor) -> None:
    head, body = http_get(door, "/")
    assert head.startswith("HTTP/1.1 200")
    assert f"Content-Security-Policy: {CSP}" in head
    assert "X-Content-Type-Options: nosniff" in head
    assert b'<script src="app.js" defer></script>' in body
    assert b"<script>" not in body and b"style=" not in body  # nothing inline: CSP allows none
    head, body = http_get(door, "/app.js")
    assert "Content-Type: text/javascript" in head and b"textContent" in body
    assert b"innerHTML" not in body
    head, _ = http_get(door, "/style.css")
    assert "Content-Type: text/css" in head
    head, _ = http_get(door, "/../../etc/passwd")
    assert head.startswith("HTTP/1.1 404")


def test_a_websocket_from_the_doors_own_origin_talks_json(door: WebDoor) -> None:
    with ws(door) as c:
        assert recv(c, "door") == {"type": "door", "login": False, "max_text": 4000}
        c.send(json.dumps({"type": "hello", "rid": 1, "nick": "alice"}))
        welcome = recv(c, "welcome")
        assert welcome["rid"] == 1 and welcome["nick"] == "alice"
        c.send(json.dumps({"type": "join", "rid": 2, "room": "dev"}))
        joined = recv(c, "joined")
        assert joined["members"] == ["alice"] and joined["history"][0]["kind"] == "join"
        c.send(json.dumps({"type": "say", "rid": 3, "room": "dev", "id": "m1", "text": "<b>hi"}))
        event = recv(c, "event")
        assert (event["seq"], event["text"]) == (2, "<b>hi")
        assert recv(c, "ack")["seq"] == 2


def test_other_origins_cannot_open_the_websocket(door: WebDoor) -> None:
    for bad in ["http://evil.example", f"http://localhost:{door.port + 1}", "null",
                f"https://127.0.0.1:{door.port}"]:  # fmt: skip
        with pytest.raises(InvalidStatus) as exc:
            ws(door, origin=bad)
        assert exc.value.response.status_code == 403, bad
    with pytest.raises(InvalidStatus):  # no Origin at all (not a browser page)
        connect(f"ws://127.0.0.1:{door.port}/ws", open_timeout=WAIT)
    assert door.by_peer == {}


def test_origin_rules() -> None:
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "http", True)
    assert origin_allowed("http://localhost:8080", "localhost:8080", "http", True)
    assert origin_allowed("http://[::1]:8080", "[::1]:8080", "http", True)
    # DNS rebinding: another name that resolves to loopback
    assert not origin_allowed("http://evil.example:8080", "evil.example:8080", "http", True)
    assert origin_allowed("https://chat.lan:443", "chat.lan:443", "https", False)
    assert not origin_allowed("http://chat.lan:443", "chat.lan:443", "https", False)
    assert not origin_allowed(None, "chat.lan", "http", False)


def test_the_page_saying_goodbye_ends_its_session_a_drop_does_not(door: WebDoor) -> None:
    pump: Pump = door.pump  # type: ignore[attr-defined]
    with ws(door) as c:
        c.send(json.dumps({"type": "hello", "rid": 1, "nick": "alice"}))
        recv(c, "welcome")
    wait_until(lambda: b"BYE" in pump.requests, "no BYE after a clean close")
    with ws(door) as raw:
        raw.send(json.dumps({"type": "hello", "rid": 1, "nick": "bob"}))
        token = recv(raw, "welcome")["session"]
        raw.socket.shutdown(socket.SHUT_RDWR)  # the network goes, no close frame
    wait_until(lambda: door.by_peer == {}, "the dropped connection was not noticed")
    assert pump.requests.count(b"BYE") == 1
    with ws(door) as c:  # the page comes back and resumes
        c.send(json.dumps({"type": "hello", "rid": 1, "nick": "bob", "resume": token}))
        assert recv(c, "welcome")["resumed"] is True


def test_messages_over_the_limit_close_the_connection(door: WebDoor) -> None:
    with ws(door, max_size=None) as c:
        recv(c, "door")
        c.send("x" * (door_mod.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as exc:
            recv(c, "never")
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009  # message too big
    assert door.by_peer == {}


def test_a_browser_that_does_not_read_is_disconnected(
    door: WebDoor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(door_mod, "MAX_OUTPUT_BYTES", 256 * 1024)
    pump: Pump = door.pump  # type: ignore[attr-defined]
    # The client's reader stops at max_queue messages: it no longer reads the socket.
    with ws(door, max_queue=4, close_timeout=0.1) as c:
        c.send(json.dumps({"type": "hello", "rid": 1, "nick": "slow"}))
        c.send(json.dumps({"type": "join", "rid": 2, "room": "dev"}))
        wait_until(lambda: any(b.rooms for b in _bridges(door)), "never joined")
        text = "y" * 3900  # the kernel's buffers fill, then the door's
        for seq in range(100, 20_000):
            pump.publish(m.Event("dev", seq, "msg", "bob", text, 1.0, f"id{seq}"))
            if not door.by_peer:
                break
        assert not door.by_peer, "the door kept a connection that does not read"


def _bridges(door: WebDoor) -> list[Any]:
    return [conn.bridge for conn in list(door.by_peer.values()) if conn.bridge]


def test_a_slow_http_request_is_dropped(door: WebDoor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(door_mod, "REQUEST_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", door.port), timeout=WAIT) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
        assert s.recv(100) == b""  # closed by the door


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_tls(certs: tuple[str, str]) -> None:
    cfg = BrokerConfig(web="127.0.0.1:0", web_tls_cert=certs[0], web_tls_key=certs[1])
    d = open_door(cfg)
    assert isinstance(d, WebDoor)
    assert "https://127.0.0.1:" in d.describe() and "(TLS" in d.describe()
    pump = Pump(d)
    try:
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        url = f"wss://127.0.0.1:{d.port}/ws"
        with connect(url, ssl=client, origin=f"https://127.0.0.1:{d.port}",
                     open_timeout=WAIT) as c:  # fmt: skip
            c.send(json.dumps({"type": "hello", "rid": 1, "nick": "alice"}))
            assert recv(c, "welcome")["nick"] == "alice"
        with pytest.raises(InvalidStatus):  # the plain-HTTP origin is another origin
            connect(url, ssl=client, origin=f"http://127.0.0.1:{d.port}", open_timeout=WAIT)
    finally:
        pump.stop()


def test_configuration_mistakes_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DoorError, match="both web_tls_cert and web_tls_key"):
        open_door(BrokerConfig(web="127.0.0.1:0", web_tls_cert="x.pem"))
    with pytest.raises(DoorError, match="TLS certificate"):
        open_door(BrokerConfig(web="127.0.0.1:0", web_tls_cert="/nope", web_tls_key="/nope"))
    d = WebDoor("127.0.0.1:0")
    try:
        with pytest.raises(DoorError, match="cannot listen"):
            WebDoor(f"127.0.0.1:{d.port}")
    finally:
        d.close()


def test_beyond_loopback_without_tls_the_operator_is_warned() -> None:
    d = WebDoor("0.0.0.0:0")
    try:
        assert "warning: the web door listens beyond this host without TLS" in d.describe()
    finally:
        d.close()
    d = WebDoor("127.0.0.1:0")
    try:
        assert "warning" not in d.describe()
    finally:
        d.close()


def test_an_allow_list_broker_wants_a_login_and_the_account_owns_its_nick(tmp_path: Path) -> None:
    from zchat.accounts import Accounts

    book = Accounts.load(tmp_path / "accounts", missing_ok=True)
    book.set("Alice", "s3cret")
    book.save()
    with pytest.raises(DoorError, match="set accounts"):
        open_door(BrokerConfig(web="127.0.0.1:0", curve_secret_key="broker.key"))
    cfg = BrokerConfig(web="127.0.0.1:0", curve_secret_key="broker.key",
                       accounts=str(tmp_path / "accounts"))  # fmt: skip
    d = open_door(cfg)
    assert isinstance(d, WebDoor) and "logins against the accounts file" in d.describe()
    pump = Pump(d)
    try:
        with ws(d) as c:
            assert recv(c, "door")["login"] is True
            c.send(json.dumps({"type": "hello", "rid": 1, "nick": "alice"}))
            assert recv(c, "error")["code"] == "bad_login"
            c.send(json.dumps({"type": "hello", "rid": 2, "nick": "alice", "password": "s3cret"}))
            welcome = recv(c, "welcome")
            assert welcome["nick"] == "Alice"  # as the accounts file spells it
        assert pump.core.store.get_state("~alice") == b"account:Alice"  # the nick is owned
        with ws(d) as c:  # three wrong passwords and the connection is closed
            for rid in range(3):
                c.send(json.dumps({"type": "hello", "rid": rid, "nick": "Alice",
                                   "password": "guess"}))  # fmt: skip
            with pytest.raises(ConnectionClosed) as exc:
                while True:
                    recv(c, "never")
            assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
    finally:
        pump.stop()


def test_a_silent_browser_is_pinged_then_dropped_and_a_live_one_kept(door: WebDoor) -> None:
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.typing import Origin
    from websockets.uri import parse_uri

    pump: Pump = door.pump  # type: ignore[attr-defined]
    with ws(door) as live:  # the websockets client answers pings by itself
        live.send(json.dumps({"type": "hello", "nick": "live"}))
        recv(live, "welcome")
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{door.port}/ws"),
                               origin=Origin(origin(door)))  # fmt: skip
        with socket.create_connection(("127.0.0.1", door.port), timeout=WAIT) as s:
            proto.send_request(proto.connect())
            s.sendall(b"".join(proto.data_to_send()))
            pings = 0
            while pings < 2:  # heartbeat 0.5 s: pings come, and are never answered
                proto.receive_data(s.recv(65536))
                pings += sum(isinstance(e, Frame) and e.opcode is Opcode.PING
                             for e in proto.events_received())  # fmt: skip
            wait_until(lambda: len(door.by_peer) == 1, "the silent browser was kept")
        pings_before = pump.requests.count(b"PING")
        wait_until(lambda: pump.requests.count(b"PING") > pings_before,
                   "the live page's session is not kept alive")  # fmt: skip
        assert len(door.by_peer) == 1


def test_binary_frames_close_the_connection_and_the_door_goes_on(door: WebDoor) -> None:
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.typing import Origin
    from websockets.uri import parse_uri

    pump: Pump = door.pump  # type: ignore[attr-defined]
    proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{door.port}/ws"),
                           origin=Origin(origin(door)))  # fmt: skip
    with socket.create_connection(("127.0.0.1", door.port), timeout=WAIT) as s:
        proto.send_request(proto.connect())
        s.sendall(b"".join(proto.data_to_send()))
        while proto.state is not State.OPEN:
            proto.receive_data(s.recv(65536))
        proto.send_binary(b"\x00\x01")
        proto.send_binary(b"\x02")  # in the same write: the second must not close again
        s.sendall(b"".join(proto.data_to_send()))
        closes = []
        while not closes:
            data = s.recv(65536)
            assert data, "closed without a close frame"
            proto.receive_data(data)
            closes = [e for e in proto.events_received()
                      if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]  # fmt: skip
        assert proto.close_rcvd is not None and proto.close_rcvd.code == 1003
    assert pump.thread.is_alive()
    with ws(door) as c:  # still serving
        assert recv(c, "door")["type"] == "door"
