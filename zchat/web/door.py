"""The web door's socket edge: HTTP for the page, a WebSocket for its JSON (docs/web.md).

One listening TCP socket (optionally TLS) and its connections behind one
epoll selector, served in the broker's loop (zchat/broker/doors.py). The
``websockets`` library's sans-I/O ``ServerProtocol`` parses every HTTP
request and does all WebSocket framing; this module only moves bytes:

- ``GET /``, ``/app.js``, ``/style.css``: the page, from the package's
  ``static/`` directory, with a strict Content-Security-Policy; one request
  per connection;
- ``GET /ws``: the WebSocket, only from a page of this door's own origin
  (the ``Origin`` header names the host and port the browser connected to,
  so a page from anywhere else is refused with 403);
- each WebSocket connection has a ``Bridge`` (bridge.py) that does the
  translating; the door queues what it says and closes a connection whose
  unsent output passes ``MAX_OUTPUT_BYTES`` (a browser that does not read).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import itertools
import queue
import selectors
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources

from websockets.datastructures import Headers
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from zchat.accounts import Accounts, AccountsError
from zchat.broker.doors import DOOR_MARK, Door, DoorError, DoorRequest
from zchat.config import BrokerConfig
from zchat.protocol import messages as m
from zchat.web.bridge import MAX_LOGIN_FAILURES, MAX_MESSAGE_BYTES, Bridge, Verify, to_json

PREFIX = DOOR_MARK + b"web:"
#: Unsent bytes a connection may have; past it the browser is not reading: closed.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
#: Open connections at once; more are closed at accept.
MAX_CONNECTIONS = 10_000
#: Seconds a connection may take to finish its HTTP request (slow clients hold sockets).
REQUEST_TIMEOUT = 10.0
#: Requests one ``service`` call returns at most (the ROUTER's batch too): the
#: broker stores, answers and fans out a batch before it reads more, so a burst
#: from one browser cannot hold the loop for long.
BATCH = 512
_READ_BYTES = 16384
_READS_PER_WAKE = 16  # per connection, so one busy browser cannot starve the others

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_PLAIN = "text/plain; charset=utf-8"
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files by URL path, read once from the package."""
    root = resources.files("zchat.web") / "static"
    return {url: (root.joinpath(name).read_bytes(), ctype) for url, (name, ctype) in _FILES.items()}


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def origin_allowed(origin: str | None, host: str | None, scheme: str, loopback_only: bool) -> bool:
    """Whether a WebSocket handshake comes from a page of this door (docs/web.md, Safety).

    The Origin must be exactly ``scheme://Host``: the page was loaded from the
    host and port the browser is now connecting to. A door on a loopback
    address also wants a loopback Host, so a DNS-rebinding page (another name
    resolving to 127.0.0.1) cannot pass.
    """
    if not origin or not host or origin != f"{scheme}://{host}":
        return False
    if loopback_only:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return _is_loopback(name)
    return True


def http_response(status: int, reason: str, body: bytes, ctype: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = ctype
    headers["Content-Length"] = str(len(body))
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    headers["Cache-Control"] = "no-cache"
    headers["Connection"] = "close"
    return Response(status, reason, headers, body)


@dataclass(eq=False)
class _Conn:
    """One accepted connection: HTTP first, then maybe a WebSocket."""

    sock: socket.socket
    proto: ServerProtocol
    started: float
    peer: bytes = b""
    bridge: Bridge | None = None
    out: bytearray = field(default_factory=bytearray)
    eof: bool = False  # the protocol is done writing: close once ``out`` is sent
    tls_done: bool = True
    writing: bool = False
    heard: float = 0.0
    pinged: float = 0.0
    rooms: set[str] = field(default_factory=set)  # as indexed in WebDoor.members
    due: float = float("inf")  # when its timers next run (WebDoor._timers)
    checking: bool = False  # a password check of its page is running


class WebDoor(Door):
    """Serves the page and its WebSocket on one address (docs/web.md)."""

    prefix = PREFIX

    def __init__(
        self,
        address: str,
        *,
        tls: ssl.SSLContext | None = None,
        verify: Verify | None = None,
        heartbeat: float = 5.0,
        timeout: float = 15.0,
    ) -> None:
        """Listen on ``address`` (host:port; port 0 picks one); DoorError if it cannot."""
        host, port = _split_host_port(address)
        self.tls = tls
        self.verify = verify
        self.heartbeat, self.timeout = heartbeat, timeout
        self.scheme = "https" if tls else "http"
        self.loopback = _is_loopback(host)
        self.static = load_static()
        try:
            info = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_PASSIVE)[0]  # fmt: skip
            self.listener = socket.socket(info[0], socket.SOCK_STREAM)
        except OSError as exc:
            raise DoorError(f"web door: cannot use {address}: {exc}") from None
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(info[4])
            self.listener.listen(1024)
            self.listener.setblocking(False)
        except OSError as exc:
            self.listener.close()
            raise DoorError(f"web door: cannot listen on {address}: {exc.strerror}") from None
        bound = self.listener.getsockname()
        self.port = int(bound[1])
        self.host = host
        self.selector = selectors.EpollSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        # Written to when output is queued: the loop wakes up and sends it.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._dirty: set[_Conn] = set()
        # Password checks run here, one at a time; answers come back through
        # the queue and the wake socket.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zchat-web-login")
        self._checked: queue.SimpleQueue[tuple[_Conn, str]] = queue.SimpleQueue()
        self.conns: dict[socket.socket, _Conn] = {}
        self.by_peer: dict[bytes, _Conn] = {}
        #: Room -> the connections whose session is in it (published events go there).
        self.members: dict[str, set[_Conn]] = {}
        self._ids = itertools.count(1)
        self._now = 0.0
        #: (when, tie-breaker, connection): each connection's next timer; an entry
        #: whose time is not the connection's ``due`` any more is stale.
        self._timers: list[tuple[float, int, _Conn]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------- Door API

    def fileno(self) -> int:
        return self.selector.fileno()

    def describe(self) -> str:
        where = f"{self.scheme}://{_netloc(self.host, self.port)}/"
        login = ", logins against the accounts file" if self.verify else ""
        line = f"web: the chat page at {where} ({'TLS' if self.tls else 'no TLS'}{login})"
        if not self.tls and not self.loopback:
            line += (
                "\nwarning: the web door listens beyond this host without TLS: anyone on the "
                "path can read the chat and take over sessions (set web_tls_cert and "
                "web_tls_key, docs/web.md)"
            )
        return line

    def service(self, now: float) -> list[DoorRequest]:
        self._now = now
        out: list[DoorRequest] = []
        for key, mask in self.selector.select(0):
            if key.fileobj is self.listener:
                self._accept(now)
                continue
            if key.fileobj is self._wake_r:
                out.extend(self._logins_checked(now))
                self._flush_dirty()
                continue
            conn = self.conns.get(key.fileobj)  # type: ignore[call-overload]
            if conn is None:
                continue
            if mask & selectors.EVENT_WRITE:
                self._write(conn)
            if mask & selectors.EVENT_READ and conn.sock in self.conns:
                if len(out) >= BATCH:
                    continue  # enough for one store transaction: the rest next time
                out.extend(self._read(conn, now, BATCH - len(out)))
        return out

    def _check_login(self, conn: _Conn, login: tuple[str, str]) -> None:
        """Check a password in the door's thread: scrypt is slow on purpose (50 ms),
        and the broker's loop must not wait for it."""
        assert self.verify is not None
        verify = self.verify
        conn.checking = True

        def job() -> None:
            try:
                account = verify(*login)
            except Exception:  # a broken accounts file must not lose the answer
                account = ""
            self._checked.put((conn, account))
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

        self._pool.submit(job)

    def _logins_checked(self, now: float) -> list[DoorRequest]:
        out: list[DoorRequest] = []
        while True:
            try:
                conn, account = self._checked.get_nowait()
            except queue.Empty:
                return out
            conn.checking = False
            if conn.bridge is None or self.by_peer.get(conn.peer) is not conn:
                continue  # the page left meanwhile
            reqs, texts = conn.bridge.checked(account, now)
            out.extend(reqs)
            self._send_texts(conn, texts)
            if conn.bridge.failures >= MAX_LOGIN_FAILURES and conn.proto.state is State.OPEN:
                conn.proto.send_close(1008, "too many failed logins")
                self._flush(conn)
            elif conn.bridge.awaiting is not None:
                self._check_login(conn, conn.bridge.awaiting)
            self._schedule(conn, conn.bridge.next_deadline())

    def _flush_dirty(self) -> None:
        """Write what was queued since the last wake-up: one send per connection."""
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            self._write(conn)

    def deliver(self, peer: bytes, msg: m.Reply | m.Push) -> None:
        conn = self.by_peer.get(peer)
        if conn is None or conn.bridge is None:
            return  # the page has gone; a resume will fetch what it missed
        self._send_texts(conn, conn.bridge.deliver(msg, self._now))
        self._sync_rooms(conn)
        self._schedule(conn, conn.bridge.next_deadline())

    def broadcast(self, msg: m.Broadcast) -> None:
        if isinstance(msg, m.Event):
            members = self.members.get(msg.room)
            if not members:
                return
            # One JSON text and one frame for every page in the room: a server's
            # frames are not masked, so the same bytes go to each connection.
            frame = _text_frame(to_json(msg))
            for conn in list(members):
                if conn.bridge is not None and conn.bridge.event(msg):
                    self._send_frame(conn, frame)
                    if msg.kind in ("kick", "leave"):
                        self._sync_rooms(conn)
        elif isinstance(msg, m.Beat | m.Shutdown):
            text = to_json(msg)
            for conn in list(self.by_peer.values()):
                self._send_texts(conn, [text])

    def next_deadline(self) -> float:
        while self._timers and self._timers[0][0] != self._timers[0][2].due:
            heapq.heappop(self._timers)  # stale: that connection was rescheduled or closed
        return self._timers[0][0] if self._timers else float("inf")

    def tick(self, now: float) -> list[DoorRequest]:
        """The timers that are due, each connection's from a heap: O(log n) per timer."""
        self._now = now
        out: list[DoorRequest] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, conn = heapq.heappop(self._timers)
            if when != conn.due or conn.sock not in self.conns:
                continue
            conn.due = float("inf")
            out.extend(self._timer(conn, now))
            if conn.sock in self.conns:
                self._schedule(conn, self._conn_deadline(conn))
        return out

    def _timer(self, conn: _Conn, now: float) -> list[DoorRequest]:
        if conn.bridge is None:
            if now - conn.started >= REQUEST_TIMEOUT:
                self._abort(conn)
            return []
        if now - conn.heard >= self.timeout + self.heartbeat and not _readable(conn.sock):
            # A browser gone without a word: its session stays for a resume.
            # (Bytes waiting unread mean the loop was busy, not the browser silent.)
            self.show(f"! web door: dropped a browser silent for {now - conn.heard:.0f} s")
            self._abort(conn)
            return []
        if now - conn.pinged >= self.heartbeat and conn.proto.state is State.OPEN:
            conn.pinged = now
            conn.proto.send_ping(b"")
            self._flush(conn)
        return conn.bridge.tick(now)

    def _conn_deadline(self, conn: _Conn) -> float:
        if conn.bridge is None:
            return conn.started + REQUEST_TIMEOUT
        return min(conn.bridge.next_deadline(), conn.pinged + self.heartbeat,
                   conn.heard + self.timeout + self.heartbeat)  # fmt: skip

    def _schedule(self, conn: _Conn, when: float) -> None:
        """Make sure the connection's timers run by ``when`` (later entries go stale)."""
        if when < conn.due:
            conn.due = when
            heapq.heappush(self._timers, (when, next(self._seq), conn))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self.conns.values()):
            self._forget(conn)
        if self.listener.fileno() >= 0:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.selector.unregister(self._wake_r)
            self._wake_r.close()
            self._wake_w.close()
        self.selector.close()

    # ------------------------------------------------------------ connections

    def _accept(self, now: float) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again at the next wake-up
                self.show(f"! web door: accept failed: {exc.strerror}")
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls_done = True
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)  # fmt: skip
                except (OSError, ssl.SSLError):
                    sock.close()
                    continue
                tls_done = False
            proto = ServerProtocol(max_size=MAX_MESSAGE_BYTES)
            conn = _Conn(sock, proto, now, heard=now, pinged=now, tls_done=tls_done)
            self.conns[sock] = conn
            self.selector.register(sock, selectors.EVENT_READ, None)
            self._schedule(conn, now + REQUEST_TIMEOUT)

    def _read(self, conn: _Conn, now: float, budget: int) -> list[DoorRequest]:
        if not conn.tls_done and not self._handshake(conn):
            return []
        requests: list[DoorRequest] = []
        for _ in range(_READS_PER_WAKE):
            if len(requests) >= budget:
                break  # the rest at the next wake-up (epoll says readable again)
            try:
                data = conn.sock.recv(_READ_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._want_write(conn, True)
                break
            except (OSError, ssl.SSLError):
                conn.proto.receive_eof()
                break
            if not data:
                conn.proto.receive_eof()
                break
            conn.heard = now
            conn.proto.receive_data(data)
            requests += self._events(conn, now)
        if conn.proto.close_rcvd is not None or conn.proto.state is State.CLOSED:
            requests.extend(self._closing(conn, now))
        self._flush(conn)
        return requests

    def _handshake(self, conn: _Conn) -> bool:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:
            self._want_write(conn, True)
            return False
        except (OSError, ssl.SSLError):
            self._forget(conn)
            return False
        conn.tls_done = True
        return True

    def _events(self, conn: _Conn, now: float) -> list[DoorRequest]:
        requests: list[DoorRequest] = []
        for event in conn.proto.events_received():
            if isinstance(event, Request):
                self._http(conn, event, now)
            elif isinstance(event, Frame) and conn.bridge is not None:
                if event.opcode is Opcode.TEXT:
                    text = bytes(event.data).decode("utf-8", "replace")
                    reqs, texts = conn.bridge.receive(text, now)
                    requests.extend(reqs)
                    self._send_texts(conn, texts)
                    if conn.bridge.awaiting is not None and not conn.checking:
                        self._check_login(conn, conn.bridge.awaiting)
                elif event.opcode is Opcode.BINARY and conn.proto.state is State.OPEN:
                    conn.proto.send_close(1003, "text frames only")
        if conn.bridge is not None:
            self._schedule(conn, conn.bridge.next_deadline())
        return requests

    def _closing(self, conn: _Conn, now: float) -> list[DoorRequest]:
        """The WebSocket is closing: a page that said goodbye ends its session."""
        bridge = conn.bridge
        if bridge is None or bridge.peer not in self.by_peer:
            return []
        del self.by_peer[bridge.peer]
        self._sync_rooms(conn)
        if conn.proto.close_rcvd is not None and _said_goodbye(conn.proto.close_rcvd):
            return bridge.close(now)
        bridge.drop()
        return []

    def _http(self, conn: _Conn, request: Request, now: float) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            host, origin = request.headers.get("Host"), request.headers.get("Origin")
            if not origin_allowed(origin, host, self.scheme, self.loopback):
                refused = b"WebSocket from another origin\n"
                conn.proto.send_response(http_response(403, "Forbidden", refused, _PLAIN))
                self.show(f"! web door: refused a WebSocket from origin {origin!r}")
                return
            response = conn.proto.accept(request)
            conn.proto.send_response(response)
            if response.status_code != 101:
                return
            conn.peer = PREFIX + next(self._ids).to_bytes(8, "big")
            conn.bridge = Bridge(conn.peer, self.verify)
            conn.heard = conn.pinged = now
            self._schedule(conn, now + self.heartbeat)
            self.by_peer[conn.peer] = conn
            self._send_texts(conn, conn.bridge.opened())
            return
        found = self.static.get(path)
        if found is None:
            body, ctype, status, reason = b"not found\n", _PLAIN, 404, "Not Found"
        else:
            (body, ctype), status, reason = found, 200, "OK"
        conn.proto.send_response(http_response(status, reason, body, ctype))

    # ---------------------------------------------------------------- output

    def _send_texts(self, conn: _Conn, texts: list[str]) -> None:
        if not texts or conn.proto.state is not State.OPEN:
            return
        for text in texts:
            conn.proto.send_text(text.encode())
        self._flush(conn)

    def _send_frame(self, conn: _Conn, frame: bytes) -> None:
        """A text frame serialized once for many connections (see broadcast)."""
        if conn.proto.state is not State.OPEN:
            return
        for chunk in conn.proto.data_to_send():  # whatever the protocol queued goes first
            conn.out += chunk
        conn.out += frame
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        for chunk in conn.proto.data_to_send():
            if chunk:
                conn.out += chunk
            else:
                conn.eof = True
        if len(conn.out) > MAX_OUTPUT_BYTES:
            self.show("! web door: closed a connection that does not read")
            self._abort(conn)
            return
        # Written at the next wake-up of the loop (the wake socket makes it come
        # at once): everything queued for a connection meanwhile goes in one send.
        if (conn.out or conn.eof) and not conn.writing and conn not in self._dirty:
            if not self._dirty:
                with contextlib.suppress(BlockingIOError):
                    self._wake_w.send(b"\0")
            self._dirty.add(conn)

    def _write(self, conn: _Conn) -> None:
        if conn.sock not in self.conns:
            return
        if not conn.tls_done:
            self._handshake(conn)
            if not conn.tls_done:
                return
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                break
            except ssl.SSLWantReadError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    self.show(f"! web door: send failed: {exc}")
                self._abort(conn)
                return
            del conn.out[:sent]
            if conn.writing:
                # Its buffers were full and it has read some: a browser busy
                # with its backlog is alive (a dead one never drains them).
                conn.heard = self._now
        if not conn.out and conn.eof:
            self._abort(conn, quiet=True)
            return
        self._want_write(conn, bool(conn.out))

    def _sync_rooms(self, conn: _Conn) -> None:
        """Index the rooms of a connection's session as its bridge now knows them."""
        live = conn.bridge is not None and self.by_peer.get(conn.peer) is conn
        now = conn.bridge.rooms if live and conn.bridge is not None else set()
        if now == conn.rooms:
            return
        for room in conn.rooms - now:
            members = self.members.get(room)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.members[room]
        for room in now - conn.rooms:
            self.members.setdefault(room, set()).add(conn)
        conn.rooms = set(now)

    def _want_write(self, conn: _Conn, want: bool) -> None:
        if want != conn.writing and conn.sock in self.conns:
            conn.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.selector.modify(conn.sock, events, None)

    def _abort(self, conn: _Conn, quiet: bool = False) -> None:
        """Close a connection; a session it had stays for a resume (or expires)."""
        if conn.bridge is not None and conn.bridge.peer in self.by_peer:
            del self.by_peer[conn.bridge.peer]
            self._sync_rooms(conn)
            conn.bridge.drop()
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        if self.conns.pop(conn.sock, None) is None:
            return
        self.by_peer.pop(conn.peer, None)
        self._dirty.discard(conn)
        self._sync_rooms(conn)
        self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()


def _readable(sock: socket.socket) -> bool:
    """Whether the peer has sent bytes not read yet (a TLS socket is peeked at TCP level)."""
    try:
        return bool(socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


def _text_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def _said_goodbye(close: Close) -> bool:
    """A close frame the page sent on purpose (leaving, reloading): its session ends."""
    return close.code in (1000, 1001)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_door(config: BrokerConfig) -> Door:
    """The web door the configuration asks for, listening (DoorError if it cannot)."""
    tls = None
    if bool(config.web_tls_cert) != bool(config.web_tls_key):
        raise DoorError("web door: set both web_tls_cert and web_tls_key, or neither")
    if config.web_tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(config.web_tls_cert, config.web_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise DoorError(f"web door: cannot load the TLS certificate or key: {exc}") from None
    verify: Verify | None = None
    if config.curve_secret_key and not config.curve_open:
        # An allow-list broker (as for the IRC door): browsers log in with an
        # account (zchat passwd), which owns its nick.
        verify = _accounts(config.accounts)
    return WebDoor(
        config.web, tls=tls, verify=verify, heartbeat=config.heartbeat, timeout=config.timeout
    )


def _accounts(path: str) -> Verify:
    if not path:
        raise DoorError(
            "web door: this broker admits only known keys, so browsers must log in: set "
            "accounts to a password file (zchat passwd NAME)"
        )
    try:
        return _Logins(path)
    except AccountsError as exc:
        raise DoorError(f"web door: {exc}") from None


class _Logins:
    """Password checks against the accounts file, re-read when it changes (zchat passwd)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.accounts = Accounts.load(path)

    def __call__(self, name: str, password: str) -> str:
        if self.accounts.changed():
            # A broken file keeps the last good one; the next login tries again.
            with contextlib.suppress(AccountsError):
                self.accounts = Accounts.load(self.path)
        if not self.accounts.verify(name, password):
            return ""
        account = self.accounts.get(name)
        return account.name if account is not None else ""
