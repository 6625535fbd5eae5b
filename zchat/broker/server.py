"""The broker's sockets and poll loop: a thin edge around BrokerCore.

One ROUTER takes every client request, one XPUB broadcasts room traffic (its
subscription messages drive the join handshake, docs/protocol.md §5.2). One
thread, one ``zmq.Poller``; each wake-up drains up to ``BATCH`` requests, runs
them through the core inside one store transaction, commits, and only then
sends and publishes what the core asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TextIO, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from zchat.broker.auth import DOMAIN, HANDSHAKE_FAILURES, KeyRing, zap_reply
from zchat.broker.core import BrokerCore, CoreConfig, Effect, Follow, Limits, Publish, Send
from zchat.broker.display import Display
from zchat.broker.doors import DOOR_MARK, Door, DoorRequest
from zchat.broker.quiet import QuietLog
from zchat.broker.registry import Registry
from zchat.clock import steady_wall_clock
from zchat.cluster.feed import Feed
from zchat.config import BrokerConfig
from zchat.keys import load_secret
from zchat.protocol import ProtocolError, encode
from zchat.protocol.messages import MAX_TOPIC_BYTES
from zchat.protocol.rules import MAX_BODY_BYTES, nick_key
from zchat.store import Store, StoreLost, StoreUnavailable

#: Requests handled per wake-up and per store transaction.
BATCH = 512
#: Queue bounds per peer. High enough that a burst never drops at the broker;
#: a client that falls further behind recovers by sequence number (§6.4).
HWM = 100_000
_WILDCARDS = ("*", "0.0.0.0", "[::]", "::")
#: Frames of a request, routing id included (§2); a longer one is dropped unread.
_REQUEST_FRAMES = 4
#: A dropped request this big is followed by a malloc_trim: glibc keeps freed
#: memory otherwise, and one hostile request would stay in the broker's RSS.
_TRIM_BYTES = 4 * 1024 * 1024
#: The largest subscription message: the ZMTP 3.1 SUBSCRIBE command's name
#: ("\x09SUBSCRIBE") and the longest topic. A longer one drops that connection
#: in libzmq before it costs memory (docs/security.md).
_MAX_SUBSCRIPTION = 10 + MAX_TOPIC_BYTES
#: Subscriptions queued per subscriber before libzmq stops reading its socket.
_SUBSCRIPTION_HWM = 200
#: (Un)subscriptions read from the broadcast socket per wake-up, at most.
_XPUB_DRAIN = 20_000

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None)
except OSError:  # pragma: no cover - not a glibc/musl system
    _libc = None


def seed_routing_ids() -> None:
    """Make the routing ids libzmq generates unpredictable.

    A ROUTER numbers id-less peers from a counter that starts at libc's
    ``rand()``, which nothing seeds: the first id is the same on every start,
    and a peer that claims the next id as its own makes libzmq abort the
    process when the counter reaches it (docs/security.md). Seeding from the
    OS makes the ids a peer would have to claim unknowable. Call before the
    ROUTER is created.
    """
    if _libc is not None:
        _libc.srand(int.from_bytes(os.urandom(4), "little"))


def _trim_memory() -> None:
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def announce_endpoint(bound: str) -> str:
    """What to tell clients about a bound endpoint: a wildcard host becomes ``*``,
    which a client replaces with the host it connected to (§6.1)."""
    scheme, _, rest = bound.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in _WILDCARDS:
        return f"tcp://*:{port}"
    return bound


def is_local(endpoint: str) -> bool:
    """True for endpoints no other host can reach: loopback TCP, ipc, inproc."""
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return True
    host = rest.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _bound(asked: str, sock: zmq.Socket[bytes]) -> str:
    """The endpoint as configured, with the port the OS picked for ``*``.

    Not LAST_ENDPOINT as it is: with IPv6 on, libzmq reports an IPv4 wildcard
    as ``[::ffff:0.0.0.0]``, which is neither what was asked nor announceable.
    """
    scheme, _, rest = asked.partition("://")
    if scheme != "tcp":
        return asked
    port = sock.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2]
    return f"tcp://{rest.rpartition(':')[0]}:{port}"


def _pub_default(bind: str) -> str:
    """Bind the broadcast socket on the request socket's host, on a port the OS picks."""
    scheme, _, rest = bind.partition("://")
    if scheme != "tcp":
        return f"{bind}.pub"
    host = rest.rpartition(":")[0]
    return f"tcp://{host}:*"


class BrokerServer:
    """Owns the context and sockets; ``run()`` serves until ``stop()`` or a signal."""

    def __init__(
        self,
        config: BrokerConfig,
        store: Store,
        out: TextIO | None = None,
        clock: Callable[[], float] | None = None,
        doors: Sequence[Door] = (),
        registry: Registry | None = None,
        feed: Feed | None = None,
    ) -> None:
        """Bind everything; raises zmq.ZMQError (bind) or KeyFileError (CURVE keys).

        ``registry`` and ``feed``: this broker is one of a cluster (§6.14).
        """
        self.store = store
        self.registry = registry
        self.cluster = feed
        self.doors = list(doors)
        self._door_of = {door.prefix: door for door in self.doors}
        level = "warning" if config.quiet else config.log_level
        self.clock = clock = clock or steady_wall_clock()
        self.display = Display(out or sys.stdout, config.log_format, level, clock)
        for door in self.doors:
            door.show = self._show
        self.curve = bool(config.curve_secret_key)
        # Key files first: a typo must not leave half-bound sockets behind.
        if self.curve:
            public, secret = load_secret(config.curve_secret_key)
            self.keyring = KeyRing(config.curve_clients or None, config.curve_open)
        self.ctx = zmq.Context()
        seed_routing_ids()
        self.router = self.ctx.socket(zmq.ROUTER)
        self._curve_keys = (public, secret) if self.curve else None
        self._hwm = config.hwm
        self.xpub = self._broadcast_socket()
        self.zap: zmq.Socket[bytes] | None = None
        self.monitor: zmq.Socket[bytes] | None = None
        self.quiet = QuietLog()
        self._stopping = False
        #: Why the broker cannot go on (the store is lost); None while it can.
        self.failure: str | None = None
        #: Effects of a batch whose writes the store could not commit yet: they
        #: go out once it has (nothing is shown or sent that is not stored).
        self._held: list[Effect] = []
        self._next_check = 0.0
        #: Topics subscribed on the broadcast socket now (rooms in use, sync
        #: tokens of joins under way, the control topic: §5.2), and how many
        #: before the broker takes it for a flood.
        self._topics = 0
        self._max_topics = config.max_topics or 1000 + 2 * config.max_clients
        self._trim_at = float("inf")
        self._trims = 0
        self._feed_fd: int | None = None
        try:
            if self.curve:
                # The ZAP handler must exist before anything is bound: a CURVE
                # server without one accepts every key (docs/security.md).
                self.zap = self.ctx.socket(zmq.ROUTER)
                self.zap.setsockopt(zmq.LINGER, 0)
                self.zap.bind("inproc://zeromq.zap.01")
                self._curve(self.router)
                # Handshakes that never reach ZAP (no keys, the wrong broker
                # key) show only here; every client talks to the ROUTER first.
                self.monitor = self.router.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
                self.monitor.setsockopt(zmq.LINGER, 0)
            # Options first: they only apply to later bind() calls.
            _common_options(self.router)
            self.router.setsockopt(zmq.RCVHWM, HWM)
            # Replies must not be dropped: a client would wait for them.
            self.router.setsockopt(zmq.SNDHWM, HWM)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.router.setsockopt(zmq.ROUTER_HANDOVER, 0)
            # Headroom over the body limit for the other frames; anything bigger
            # is hostile and libzmq drops that connection before we see it.
            self.router.setsockopt(zmq.MAXMSGSIZE, MAX_BODY_BYTES + 1024)
            self.router.bind(config.bind)
            self.endpoint = _bound(config.bind, self.router)
            pub = config.pub or _pub_default(config.bind)
            self.xpub.bind(pub)
            self.pub_endpoint = _bound(pub, self.xpub)
            #: Where the broadcast socket is bound again after a reset: the same port.
            self._pub_bind = pub.rpartition(":")[0] + ":" + self.pub_endpoint.rpartition(":")[2]
        except zmq.ZMQError:
            self.close()
            raise
        self.core = BrokerCore(
            store,
            CoreConfig(
                announce_endpoint(self.pub_endpoint),
                config.heartbeat,
                config.timeout,
                Limits(
                    config.max_clients,
                    config.max_rooms_per_client,
                    rate=config.rate,
                    burst=config.burst,
                ),
                frozenset(nick_key(n) for n in config.admins),
                config.announce_limit,
                cluster=feed is not None,
            ),
            clock(),
            registry=registry,
        )

    def _curve(self, sock: zmq.Socket[bytes]) -> None:
        assert self._curve_keys is not None
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self._curve_keys
        sock.zap_domain = DOMAIN

    def _broadcast_socket(self) -> zmq.Socket[bytes]:
        """A new, unbound broadcast socket with every option it needs."""
        xpub = self.ctx.socket(zmq.XPUB)
        if self._curve_keys is not None:
            self._curve(xpub)
        _common_options(xpub)
        # A subscriber sends a few subscriptions; libzmq applies what it has
        # queued at the next touch of the socket, in this thread.
        xpub.setsockopt(zmq.RCVHWM, _SUBSCRIPTION_HWM)
        # Room traffic may be dropped per subscriber: clients recover it by seq (§6.5).
        xpub.setsockopt(zmq.SNDHWM, self._hwm)
        # It only ever receives subscriptions. Under CURVE the limit also applies
        # to the handshake's commands (INITIATE is a few hundred bytes), and only
        # allow-listed keys get that far.
        xpub.setsockopt(zmq.MAXMSGSIZE, 1024 if self._curve_keys else _MAX_SUBSCRIPTION)
        return xpub

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Serve until stop() or SIGINT/SIGTERM, then tell clients and return."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._poller = poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        for extra in (self.zap, self.monitor):
            if extra is not None:
                poller.register(extra, zmq.POLLIN)
        doors = {door.fileno(): door for door in self.doors}
        for fd in doors:
            poller.register(fd, zmq.POLLIN)
        try:
            self._tick()
            while not self._stopping:
                self._poll_feed()
                deadline = min(
                    [self.core.next_deadline(), *(d.next_deadline() for d in doors.values())]
                )
                wait = min(3600.0, max(0.0, deadline - self.clock()))
                ready = dict(poller.poll(int(wait * 1000) + 1))
                if self.router in ready:
                    self._drain_router()
                if self.xpub in ready:
                    self._drain_xpub()
                if self.zap is not None and self.zap in ready:
                    self._answer_zap()
                if self.monitor is not None and self.monitor in ready:
                    self._read_monitor()
                if wake_r.fileno() in ready:
                    _drain_fd(wake_r)
                for fd, door in doors.items():
                    if fd in ready:
                        self._run_requests(door.service(self.clock()))
                if self.cluster is not None:
                    # Every wake-up: redis-py may hold read messages in its buffer.
                    self._read_feed()
                self._tick()
            self._carry_out(self.core.shutdown(self.failure or "broker stopped"))
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)
            wake_r.close()
            wake_w.close()

    def _poll_feed(self) -> None:
        """Keep the poller on the feed's current socket (it changes on reconnects)."""
        if self.cluster is None:
            return
        fd = self.cluster.fileno()
        if fd != self._feed_fd:
            if self._feed_fd is not None:
                with contextlib.suppress(KeyError):
                    self._poller.unregister(self._feed_fd)
            if fd is not None:
                self._poller.register(fd, zmq.POLLIN)
            self._feed_fd = fd

    def _read_feed(self) -> None:
        """Deliver what the other brokers appended to the logs we follow (§6.14)."""
        assert self.cluster is not None
        got = self.cluster.read()
        if got.problem and (line := self.quiet.note(f"! {got.problem}", self.clock())):
            self._show(line)
        core, now = self.core, self.clock()
        steps: list[Callable[[], list[Effect]]] = [
            functools.partial(core.arrived, log, e, now) for log, e in got.entries.items()
        ]
        if got.synced:
            steps.append(functools.partial(core.check_heads, got.synced))
        if steps:
            self._transact(steps)

    def _tick(self) -> None:
        now = self.clock()
        if self.cluster is not None and not self.cluster.connected:
            problem = self.cluster.connect()
            if problem and (line := self.quiet.note(f"! {problem}", now)):
                self._show(line)
        if time.monotonic() >= self._trim_at:
            # Again a little later: the reaper may still have been freeing.
            self._trim_at = float("inf") if self._trims >= 2 else time.monotonic() + 2.0
            self._trims += 1
            _trim_memory()
        effects: list[Effect] = []
        try:
            if now >= self._next_check:
                self._next_check = now + 1.0
                self.store.check()
            if self.core.store_down and now >= self.core.store_retry_at:
                if self.store.retry():
                    effects = [*self.core.store_recovered(now), *self._held]
                    self._held = []
                else:
                    self.core.store_failed(now, "still failing")
        except StoreLost as exc:
            self._lose_store(str(exc))
            return
        self._carry_out(effects)
        if now >= self.core.next_deadline():
            # Expiries write leave events: one batch, held like any other if it fails.
            self._transact([lambda: self.core.tick(self.clock())])
        for door in self.doors:
            if now >= door.next_deadline():
                self._run_requests(door.tick(now))

    def _run_requests(self, requests: list[DoorRequest]) -> None:
        """Requests from a door's users, through the core like the ROUTER's."""
        if requests:
            handle, now = self.core.handle, self.clock()
            self._transact(
                [functools.partial(handle, r.peer, r.frames, now, r.user) for r in requests]
            )

    def _transact(self, steps: list[Callable[[], list[Effect]]]) -> None:
        """Run ``steps`` in one store transaction, then carry out their effects.

        If the store cannot commit, the effects of the steps that wrote are
        held until it can (the store keeps their writes pending) and the rest
        go out now: replies to reads and refusals do not wait for the disk.
        """
        store = self.store
        done: list[tuple[bool, list[Effect]]] = []
        try:
            with store.batch():
                for step in steps:
                    before = store.writes
                    effects = step()
                    done.append((store.writes != before, effects))
        except StoreLost as exc:
            # Nothing of this batch is durable: tell no one anything of it.
            self._carry_out([fx for wrote, effects in done if not wrote for fx in effects])
            self._lose_store(str(exc))
            return
        except StoreUnavailable as exc:
            now = self.clock()
            self._held.extend(fx for wrote, effects in done if wrote for fx in effects)
            now_fx = [fx for wrote, effects in done if not wrote for fx in effects]
            self._carry_out([*self.core.store_failed(now, str(exc)), *now_fx])
            return
        self._carry_out([fx for _, effects in done for fx in effects])

    def _lose_store(self, why: str) -> None:
        """The store cannot go on: tell clients, stop, and let the CLI exit non-zero."""
        self.failure = f"store lost: {why}"
        self._show(f"! {self.failure}; stopping")
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _drain_router(self) -> None:
        handle = self.core.handle
        now = self.clock()
        steps: list[Callable[[], list[Effect]]] = []
        for _ in range(BATCH):
            try:
                request = self._recv_request()
            except zmq.Again:
                break
            if request is not None:
                steps.append(functools.partial(handle, *request[:2], now, request[2]))
        if steps:
            self._transact(steps)

    def _recv_request(self) -> tuple[bytes, list[bytes], str] | None:
        """One request from the ROUTER: routing id, frames and CURVE key.

        Frame by frame, so that a hostile request of thousands of frames is
        dropped as it is read, never copied whole (libzmq has buffered it
        already; docs/security.md). Raises zmq.Again when there is none.
        """
        router = self.router
        # Frames, not bytes: a frame says whether another follows (asking the
        # socket costs an option lookup per frame) and carries the CURVE key.
        frame = _raw_recv(router, _NOBLOCK, False)
        user = str(frame.get("User-Id") or "") if self.curve else ""
        frames = [frame.bytes]
        while frame.more:
            if len(frames) == _REQUEST_FRAMES:
                self._drop_long_request(frames[0])
                return None
            frame = _raw_recv(router, _NOBLOCK, False)
            frames.append(frame.bytes)
        if frames[0][:1] == DOOR_MARK:
            # A peer-chosen routing id posing as a door's user (doors.py).
            self.core.counters.requests += 1
            self.core.counters.malformed += 1
            self._show(f"! dropped a request from {frames[0].hex()}: id reserved for doors")
            return None
        return frames[0], frames[1:], user

    def _drop_long_request(self, peer: bytes) -> None:
        count, size = _REQUEST_FRAMES, 0
        while self.router.getsockopt(zmq.RCVMORE):
            size += len(self.router.recv(copy=False))
            count += 1
        self.core.counters.requests += 1
        self.core.counters.malformed += 1
        self._show(f"! dropped a request of {count} frames ({size:,} bytes) from {peer.hex()}")
        if size >= _TRIM_BYTES:
            _trim_memory()

    def _answer_zap(self) -> None:
        assert self.zap is not None
        for _ in range(BATCH):
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply, refused = zap_reply(request, self.keyring)
            if reply:
                self.zap.send_multipart(reply)
            if refused and (line := self.quiet.note(f"refused {refused}", self.clock())):
                self._show(line)

    def _read_monitor(self) -> None:
        assert self.monitor is not None
        for _ in range(BATCH):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            what = HANDSHAKE_FAILURES.get(int(event["value"]), f"a handshake ({event['value']})")
            if line := self.quiet.note(f"refused {what}", self.clock()):
                self._show(line)

    def _drain_xpub(self) -> None:
        effects: list[Effect] = []
        # Far more than a batch: every recv lets libzmq apply more subscriptions,
        # and the count must keep up with what it applied. Bounded all the same:
        # subscribing and cancelling one topic forever must not hold the loop.
        for _ in range(_XPUB_DRAIN):
            try:
                msg = self.xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            # A non-manual XPUB reports a topic when its first subscriber comes
            # and when its last one goes: the count of live topics is exact.
            if msg[:1] == b"\x01":
                self._topics += 1
                effects.extend(self.core.subscribed(msg[1:]))
            elif msg[:1] == b"\x00":
                self._topics -= 1
            if self._topics > self._max_topics:
                self._reset_broadcast()
                break
        self._carry_out(effects)

    def _reset_broadcast(self) -> None:
        """More topics are subscribed than honest clients can use: someone is
        flooding. Drop every subscriber by binding a new broadcast socket on the
        same port; libzmq's SUBs reconnect and subscribe again, and clients fetch
        what they missed meanwhile by seq (§6.5). The flood's memory goes with
        the old socket (docs/security.md)."""
        flood = (
            f"a subscription flood: more than {self._max_topics:,} topics (max_topics) on the "
            "broadcast socket; every subscriber dropped (they reconnect)"
        )
        if line := self.quiet.note(flood, self.clock()):
            self._show(line)
        self._poller.unregister(self.xpub)
        self.xpub.close(linger=0)
        self.xpub = self._broadcast_socket()
        deadline = time.monotonic() + 2.0
        while True:  # the old listener closes in libzmq's I/O thread, soon
            try:
                self.xpub.bind(self._pub_bind)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self._poller.register(self.xpub, zmq.POLLIN)
        self._topics = 0
        self.core.counters.resets += 1
        # libzmq frees the old socket's subscriptions in its reaper thread: give
        # the memory back to the system once it has.
        self._trim_at = time.monotonic() + 1.0
        self._trims = 0

    def _carry_out(self, effects: list[Effect]) -> None:
        lines = []
        for fx in effects:
            if isinstance(fx, Publish):
                _send_frames(self.xpub, encode(fx.msg), 0)
                self.core.counters.published += 1
                for door in self.doors:
                    door.broadcast(fx.msg)
            elif isinstance(fx, Send):
                if fx.peer[:1] == DOOR_MARK:
                    self._deliver_to_door(fx)
                else:
                    self._send(fx)
            elif isinstance(fx, Follow):
                if self.cluster is not None and (problem := self.cluster.follow(fx.log, fx.on)):
                    lines.append(f"! {problem}")
            else:
                lines.append(fx.line)
        if lines:
            self.display.show(lines)

    def _deliver_to_door(self, fx: Send) -> None:
        for prefix, door in self._door_of.items():
            if fx.peer.startswith(prefix):
                door.deliver(fx.peer, fx.msg)
                self.core.counters.replies += 1
                return
        self.core.counters.dropped += 1

    def _send(self, fx: Send) -> None:
        try:
            frames = encode(fx.msg)
        except ProtocolError as exc:  # our own reply is too big: a bug, not the peer's fault
            self._show(f"! cannot encode reply to {fx.peer.hex()}: {exc}")
            return
        try:
            _send_frames(self.router, [fx.peer, *frames], _NOBLOCK)
            self.core.counters.replies += 1
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the peer disconnected; EAGAIN: its queue is full.
            # Either way the broker must not block; heartbeats expire the session.
            self.core.counters.dropped += 1
            why = "gone" if exc.errno == zmq.EHOSTUNREACH else "not reading"
            self._show(f"! dropped {fx.msg.TYPE.decode()} to {fx.peer.hex()}: peer {why}")

    def _show(self, line: str) -> None:
        self.display.show([line])

    def close(self) -> None:
        for door in self.doors:
            door.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.registry is not None:
            self.registry.close()
        if self.monitor is not None:
            self.router.disable_monitor()
            self.monitor.close(linger=0)
        if self.zap is not None:
            self.zap.close(linger=0)
        self.router.close(linger=0)
        # A moment for SHUTDOWN to leave; a stuck subscriber cannot hold us longer.
        self.xpub.close(linger=250)
        self.ctx.term()


def _common_options(sock: zmq.Socket[bytes]) -> None:
    # Options first: they only apply to later bind() calls.
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)  # tcp://[::]:5555 and IPv6 peers too
    sock.setsockopt(zmq.BACKLOG, 4096)


_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_raw_send = cast("Callable[[zmq.Socket[bytes], bytes, int], None]", zmq.backend.Socket.send)
_raw_recv = cast("Callable[[zmq.Socket[bytes], int, bool], zmq.Frame]", zmq.backend.Socket.recv)


def _send_frames(sock: zmq.Socket[bytes], frames: list[bytes], flags: int) -> None:
    """send_multipart without its per-frame Python overhead: the backend's send
    with plain int flags (0.5 µs for three frames against 2.9, measured). An
    error can only come from the first frame, so a refused message is whole."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _raw_send(sock, frame, flags | _SNDMORE if i < last else flags)


def _drain_fd(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
