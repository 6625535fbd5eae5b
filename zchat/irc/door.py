"""The IRC door's socket edge: a listening socket and its connections behind one epoll fd.

Thin on purpose: it accepts, does TLS handshakes without blocking, splits the
byte stream into lines and writes bytes out; ``zchat.irc.protocol`` does the
IRC. Bounds, so that one client cannot cost the broker more than its share:

- input: a line (tags included) longer than ``lines.MAX_INPUT`` is answered
  417 and skipped up to its end, never buffered whole; at most ``READ_BYTES``
  are read per connection per wake-up, and none while the connection's
  requests wait out a rate limit (the kernel's buffer and TCP's window then
  hold the client back: an IRC server's flood delay, nothing dropped);
- output: a client whose unsent output passes ``MAX_OUTPUT`` bytes does not
  read what it is sent, and is disconnected ("SendQ exceeded");
- time: a connection has ``REGISTRATION_TIMEOUT`` seconds to register
  (slowloris), a TLS handshake ``HANDSHAKE_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zchat.accounts import Accounts, AccountsError, fingerprint
from zchat.broker.doors import DOOR_MARK, Door, DoorError, DoorRequest
from zchat.config import BrokerConfig
from zchat.irc import lines as L
from zchat.irc.hub import Hub
from zchat.irc.protocol import IrcConnection, Settings
from zchat.protocol import encode
from zchat.protocol import messages as m

#: Bytes read from one connection per wake-up.
READ_BYTES = 16 * 1024
#: Unsent bytes a connection may have before it is dropped as not reading.
MAX_OUTPUT = 1024 * 1024
#: Seconds for a TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Connections accepted per wake-up (the rest wait in the listen backlog).
ACCEPTS = 64
#: How often timers of all connections are looked at, in seconds.
TICK = 0.25
#: Password checks (scrypt) per second, for all connections together.
PASSWORD_CHECKS = 10
#: Connections from one address that have not registered yet (loopback: no limit).
PER_ADDRESS = 16
#: Seconds a closing connection gets to take its last lines.
LINGER = 2.0


@dataclass(eq=False, slots=True)
class _Socket:
    """One client connection: its socket, buffers and protocol object."""

    sock: socket.socket
    peer: bytes
    address: str
    conn: IrcConnection | None = None  # None until the TLS handshake is done
    handshake_until: float = 0.0
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside an overlong line: drop up to its end
    close_at: float = 0.0  # closing: give up writing at this time
    events: int = 0  # what the selector watches


class IrcDoor(Door):
    """IRC clients as broker sessions; see the module docstring."""

    prefix = DOOR_MARK + b"irc:"

    def __init__(
        self,
        listener: socket.socket,
        address: str,
        settings: Settings,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        tls_factory: Callable[[], ssl.SSLContext | None] | None = None,
        max_connections: int = 10_000,
    ) -> None:
        self.max_connections = max_connections
        self.listener = listener
        self.address = address
        self.settings = settings
        self.tls = tls
        self._tls_factory = tls_factory
        self.clock = clock
        self.hub = Hub()
        self.selector = selectors.EpollSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.socks: dict[bytes, _Socket] = {}
        self._ids = itertools.count(1)
        self._queued: list[DoorRequest] = []
        self._next_tick = 0.0
        self._now = clock()
        self._dirty: set[_Socket] = set()
        self._unread: set[_Socket] = set()  # TLS connections with bytes decrypted, not read

    # ------------------------------------------------------------- Door API

    def fileno(self) -> int:
        return self.selector.fileno()

    def describe(self) -> str:
        how = "TLS" if self.tls else "plain TCP, no TLS"
        sasl = "SASL required" if self.settings.require_sasl else "SASL optional"
        if not (self.settings.check_password or self.settings.check_cert):
            sasl = "no accounts"
        return f"IRC clients connect to {self.address} ({how}, {sasl})"

    def service(self, now: float) -> list[DoorRequest]:
        self._now = now
        for key, mask in self.selector.select(0):
            if key.fileobj is self.listener:
                self._accept(now)
                continue
            s = key.data
            assert isinstance(s, _Socket)
            if s.peer not in self.socks:
                continue
            if s.conn is None:
                self._handshake(s, now)
                continue
            if mask & selectors.EVENT_WRITE:
                self._flush(s)
            if mask & selectors.EVENT_READ and s.peer in self.socks:
                self._read(s, now)
        self._write_out()
        return self._take()

    def deliver(self, peer: bytes, msg: m.Reply | m.Push) -> None:
        s = self.socks.get(peer)
        if s is None or s.conn is None:
            return
        s.conn.reply(msg, self._now)
        self._after(s)

    def broadcast(self, msg: m.Broadcast) -> None:
        if isinstance(msg, m.Event):
            self.hub.observe(msg)
            room = self.hub.rooms.get(msg.room)
            if room is not None:
                now, socks, dirty = self._now, self.socks, self._dirty
                fast = msg.kind == "msg" or msg.kind == "action"
                for conn in list(room.watchers):
                    s = socks.get(conn.peer)
                    if fast and s is not None and conn.takes_fast(msg):
                        # The hot path: bytes rendered once, appended, sent at
                        # the end of the batch.
                        s.outbuf += conn.message_bytes(msg)
                        if len(s.outbuf) > MAX_OUTPUT:
                            self._drop(s, "SendQ exceeded: the client does not read")
                        else:
                            dirty.add(s)
                        continue
                    conn.event(msg, now)
                    if s is None:
                        continue
                    if conn.requests or conn.closing:
                        self._after(s)
                    elif conn.out:  # the common case: lines to write, nothing else
                        s.outbuf += b"".join(conn.out)
                        conn.out = []
                        if len(s.outbuf) > MAX_OUTPUT:
                            self._drop(s, "SendQ exceeded: the client does not read")
                        else:
                            self._dirty.add(s)
        elif isinstance(msg, m.Shutdown):
            for s in list(self.socks.values()):
                if s.conn is not None:
                    s.conn.shutdown(msg.reason)
                    self._after(s)

    def tick(self, now: float) -> list[DoorRequest]:
        self._now = now
        unread, self._unread = self._unread, set()
        for s in unread:
            if s.peer in self.socks and s.conn is not None:
                self._read(s, now)
        if now >= self._next_tick:
            self._next_tick = now + TICK
            for s in list(self.socks.values()):
                if s.conn is None:
                    if now >= s.handshake_until:
                        self._drop(s, "TLS handshake timed out")
                elif s.close_at and now >= s.close_at:
                    self._drop(s, "")
                elif now >= s.conn.next_deadline():
                    s.conn.tick(now)
                    self._after(s)
        self._write_out()
        return self._take()

    def next_deadline(self) -> float:
        if self._queued or self._dirty or self._unread or self.hub.touched:
            return 0.0
        return self._next_tick if self.socks else float("inf")

    def close(self) -> None:
        for s in list(self.socks.values()):
            if s.conn is not None and (s.outbuf or s.conn.out):
                s.outbuf += b"".join(s.conn.out)
                self._flush(s)
            self._drop(s, "")
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
        self.selector.close()

    # ------------------------------------------------------------ accepting

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try at the next wake-up
                self.show(f"! IRC door: cannot accept: {exc}")
                return
            host = str(addr[0])
            refusal = self._refusal(host)
            if refusal:
                with contextlib.suppress(OSError):
                    sock.send(f"ERROR :Closing link: {refusal}\r\n".encode())
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = self.prefix + next(self._ids).to_bytes(8, "big")
            s = _Socket(sock, peer, host)
            self.socks[peer] = s
            tls = self._tls_factory() if self._tls_factory is not None else self.tls
            if tls is not None:
                try:
                    s.sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    self._drop(s, "")
                    continue
                s.handshake_until = now + HANDSHAKE_TIMEOUT
                self._watch(s, selectors.EVENT_READ)
                self._handshake(s, now)
            else:
                self._start(s, now, secure=_loopback(host), cert="")

    def _refusal(self, host: str) -> str:
        """Why a new connection from ``host`` is refused ("" if it is not): the door
        holds at most ``max_connections``, and one address at most ``PER_ADDRESS``
        connections that have not registered yet (a slowloris stays small)."""
        if len(self.socks) >= self.max_connections:
            return "Too many connections"
        waiting = sum(
            1 for s in self.socks.values()
            if s.address == host and (s.conn is None or not s.conn.registered)
        )  # fmt: skip
        if waiting >= PER_ADDRESS and not _loopback(host):
            return "Too many unregistered connections from your address"
        return ""

    def _start(self, s: _Socket, now: float, secure: bool, cert: str) -> None:
        s.conn = IrcConnection(s.peer, self.settings, self.hub, now, secure=secure,
                               cert_fingerprint=cert)  # fmt: skip
        self._watch(s, selectors.EVENT_READ)

    def _handshake(self, s: _Socket, now: float) -> None:
        sock = s.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(s, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(s, selectors.EVENT_WRITE)
            return
        except (OSError, ValueError):
            self._drop(s, "")
            return
        der = sock.getpeercert(binary_form=True)
        self._start(s, now, secure=True, cert=fingerprint(der) if der else "")
        if sock.pending():
            self._read(s, now)

    # ---------------------------------------------------------------- bytes

    def _read(self, s: _Socket, now: float) -> None:
        conn = s.conn
        assert conn is not None
        if conn.paused or s.close_at:
            self._watch(s, selectors.EVENT_WRITE if s.outbuf else 0)
            return
        try:
            data = s.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self._drop(s, "")
            return
        if not data:
            self._drop(s, "")
            return
        self._lines(s, data, now)
        self._after(s)
        if isinstance(s.sock, ssl.SSLSocket) and s.peer in self.socks and s.sock.pending():
            # Decrypted bytes wait inside TLS, where epoll does not see them.
            self._unread.add(s)

    def _lines(self, s: _Socket, data: bytes, now: float) -> None:
        conn = s.conn
        assert conn is not None
        buf = s.inbuf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if s.skipping:
                s.skipping = False
            else:
                line = bytes(buf[start:end]).rstrip(b"\r")
                if len(line) > L.MAX_INPUT:
                    conn.too_long(now)
                elif line:
                    conn.receive(line, now)
            start = end + 1
        del buf[:start]
        if len(buf) > L.MAX_INPUT:
            # An overlong line without its end yet: refuse it now, drop the rest of it.
            del buf[:]
            if not s.skipping:
                s.skipping = True
                conn.too_long(now)

    def _after(self, s: _Socket) -> None:
        """Move the protocol's output to the socket, its requests to the queue."""
        conn = s.conn
        if conn is None:
            return
        if conn.requests:
            user = conn.user
            self._queued.extend(DoorRequest(s.peer, encode(r), user) for r in conn.requests)
            conn.requests = []
        if conn.out:
            for chunk in conn.out:
                s.outbuf += chunk
            conn.out = []
            if len(s.outbuf) > MAX_OUTPUT:
                self._drop(s, "SendQ exceeded: the client does not read")
                return
            # Written at the end of the broker's batch (tick): one send per
            # connection for many events, not one each.
            self._dirty.add(s)
        if conn.closing and not s.close_at:
            s.close_at = self._now + LINGER
        if s.close_at and not s.outbuf:
            self._drop(s, "")
            return
        if s not in self._dirty:
            want = 0 if conn.paused or s.close_at else selectors.EVENT_READ
            self._watch(s, want | (selectors.EVENT_WRITE if s.outbuf else 0))

    def _write_out(self) -> None:
        """Send what the connections were given since the last time."""
        touched, self.hub.touched = self.hub.touched, set()
        for conn in touched:
            s = self.socks.get(conn.peer)
            if s is not None:
                self._after(s)
        dirty, self._dirty = self._dirty, set()
        for s in dirty:
            if s.peer in self.socks and s.conn is not None:
                self._flush(s)
                if s.peer in self.socks:
                    want = 0 if s.conn.paused or s.close_at else selectors.EVENT_READ
                    self._watch(s, want | (selectors.EVENT_WRITE if s.outbuf else 0))

    def _flush(self, s: _Socket) -> None:
        while s.outbuf:
            try:
                sent = s.sock.send(s.outbuf[:65536])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError:
                self._drop(s, "")
                return
            if sent <= 0:
                break
            del s.outbuf[:sent]
        if not s.outbuf and s.close_at:
            self._drop(s, "")
        elif s.peer in self.socks and not s.outbuf and s.conn is not None:
            conn = s.conn
            conn.written()
            if conn.requests:
                self._queued.extend(
                    DoorRequest(s.peer, encode(r), conn.user) for r in conn.requests
                )
                conn.requests = []
            paused = conn.paused or bool(s.close_at)
            self._watch(s, 0 if paused else selectors.EVENT_READ)

    def _watch(self, s: _Socket, events: int) -> None:
        if events == s.events:
            return
        try:
            if s.events and events:
                self.selector.modify(s.sock, events, s)
            elif events:
                self.selector.register(s.sock, events, s)
            else:
                self.selector.unregister(s.sock)
        except (KeyError, ValueError, OSError):
            return
        s.events = events

    def _drop(self, s: _Socket, why: str) -> None:
        """Close a connection now; its session ends (BYE) if it had one."""
        if self.socks.pop(s.peer, None) is None:
            return
        if s.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(s.sock)
        if s.conn is not None:
            if why:
                self.show(f"! IRC door: dropped {s.conn.nick or s.address}: {why}")
            s.conn.gone(self._now)
            if s.conn.requests:
                user = s.conn.user
                self._queued.extend(DoorRequest(s.peer, encode(r), user) for r in s.conn.requests)
                s.conn.requests = []
        with contextlib.suppress(OSError):
            s.sock.close()

    def _take(self) -> list[DoorRequest]:
        out, self._queued = self._queued, []
        return out


def _loopback(host: str) -> bool:
    """True for a loopback address, IPv4-mapped ones (a dual-stack listener) included."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


# ------------------------------------------------------------------ opening


def _listen(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror as exc:
        raise DoorError(f"IRC door: cannot resolve {address}: {exc}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise DoorError(f"IRC door: cannot listen on {address}: {why}") from None
    return sock


def _tls_context(cert: str, key: str, trusted: list[bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise DoorError(f"IRC door: cannot load irc_tls_cert/irc_tls_key ({cert}): {exc}") from None
    if trusted:
        # Client certificates for SASL EXTERNAL: those the accounts file holds
        # are trusted as they are (self-signed ones included); the account is
        # then found by fingerprint.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.load_verify_locations(cadata=b"".join(trusted))
    return ctx


class _AccountBook:
    """The accounts file, re-read when it changes (``zchat passwd`` needs no restart)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.accounts = Accounts.load(path)
        self.clock = clock
        self._window = 0.0
        self._checks = 0

    def current(self) -> Accounts:
        if self.accounts.changed():
            # A broken file keeps the last good one; the next login tries again.
            with contextlib.suppress(AccountsError):
                self.accounts = Accounts.load(self.path)
        return self.accounts

    def check_password(self, name: str, password: str) -> str:
        # Each check is a scrypt (tens of ms of the broker's one thread): past
        # PASSWORD_CHECKS a second, logins fail at once instead of stalling
        # everyone (a login storm costs logins, not the chat).
        now = self.clock()
        if now - self._window >= 1.0:
            self._window, self._checks = now, 0
        self._checks += 1
        if self._checks > PASSWORD_CHECKS:
            return ""
        book = self.current()
        if not book.verify(name, password):
            return ""
        account = book.get(name)
        return account.name if account is not None else ""

    def check_cert(self, print_: str) -> str:
        return self.current().by_fingerprint(print_) or ""

    def is_account(self, nick: str) -> bool:
        return nick in self.current()


def open_door(config: BrokerConfig) -> Door:
    """The IRC door the configuration asks for, listening; DoorError if it cannot."""
    allow_list = bool(config.curve_secret_key) and not config.curve_open
    book: _AccountBook | None = None
    if config.accounts:
        try:
            book = _AccountBook(config.accounts)
        except AccountsError as exc:
            raise DoorError(f"IRC door: {exc}") from None
    elif allow_list:
        raise DoorError(
            "IRC door: this broker admits only known keys, so IRC users must log in: "
            "set accounts (zchat passwd NAME makes the file)"
        )
    if bool(config.irc_tls_cert) != bool(config.irc_tls_key) and not config.irc_tls_cert:
        raise DoorError("IRC door: irc_tls_key is set without irc_tls_cert")
    trusted = book.accounts.certificates() if book is not None else []
    tls = (
        _tls_context(config.irc_tls_cert, config.irc_tls_key, trusted)
        if config.irc_tls_cert
        else None
    )
    listener = _listen(config.irc)
    host = config.irc.rpartition(":")[0].strip("[]")
    if tls is None and not (host == "localhost" or _loopback(host)):
        print(
            f"warning: IRC door on {config.irc} without TLS: passwords and every room travel "
            "in clear; set irc_tls_cert and irc_tls_key (docs/irc.md)",
            file=sys.stderr,
        )
    settings = Settings(
        max_rooms=config.max_rooms_per_client,
        require_sasl=allow_list,
        check_password=book.check_password if book is not None else None,
        check_cert=book.check_cert if book is not None and tls is not None else None,
        is_account=book.is_account if book is not None else None,
        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    factory: Callable[[], ssl.SSLContext | None] | None = None
    if tls is not None and book is not None:
        state = {"mtime": book.accounts.mtime_ns, "ctx": tls}
        cert, key, b = config.irc_tls_cert, config.irc_tls_key, book

        def factory() -> ssl.SSLContext | None:
            # New client certificates in the accounts file: a new context for new connections.
            accounts = b.current()
            if accounts.mtime_ns != state["mtime"]:
                with contextlib.suppress(DoorError):
                    state["ctx"] = _tls_context(cert, key, accounts.certificates())
                state["mtime"] = accounts.mtime_ns
            ctx = state["ctx"]
            return ctx if isinstance(ctx, ssl.SSLContext) else None

    # Connections beyond the broker's sessions could never register anyway.
    return IrcDoor(listener, config.irc, settings, tls, tls_factory=factory,
                   max_connections=config.max_clients + 64)  # fmt: skip
