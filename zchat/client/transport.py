"""The client's sockets: one DEALER, one SUB, one asyncio loop, no threads.

``Transport`` moves frames between the sockets and ClientCore and carries out
the core's actions. Input (the keyboard, a pipe or the public API) and output
(a UI, or the API's event stream) plug in from outside: ``feed()`` a line or
``apply()`` what a core call returned; ``on_event`` receives what to show and
``on_result`` the answers to API calls.

Every Transport in a process shares one zmq context (one libzmq I/O thread)
and runs on the caller's asyncio loop: a gateway holds a thousand sessions in
one process. A socket monitor on the DEALER reports a refused handshake (and
a missing CURVE setup) at once, and a dropped TCP connection before the
heartbeat timeout would.

Given several broker endpoints, it connects each new DEALER to the one the
core's rotation names (zchat/client/endpoints.py): the next one after a lost
broker, or after one the monitor saw refuse the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from zchat.client.core import (
    Action,
    ClientCore,
    ConnectSub,
    Done,
    Failed,
    Output,
    Quit,
    Reconnect,
    Request,
    Subscribe,
    Unsubscribe,
)
from zchat.client.endpoints import Rotation, split_endpoints
from zchat.client.endpoints import endpoint_host as endpoint_host
from zchat.client.events import Problem, UiEvent
from zchat.client.state import ConnectionState
from zchat.clock import steady_wall_clock
from zchat.keys import HANDSHAKE_FAILURES, MONITORED, ClientKeys, handshake_failure
from zchat.protocol import ProtocolError, decode_broadcast, decode_from_broker, encode
from zchat.protocol.rules import MAX_BODY_BYTES

#: How long a client that leaves before its first handshake waits to learn
#: whether the broker refused it (so a refused key still exits 3, not 0).
HANDSHAKE_GRACE = 2.0

#: Sockets the shared context may hold: ~16,000 sessions.
MAX_SOCKETS = 65_536
#: Any of the monitor events that say a handshake failed.
HANDSHAKE_FAILED = sum(HANDSHAKE_FAILURES)

_context: zmq.asyncio.Context | None = None


def shared_context() -> zmq.asyncio.Context:
    """The process's one zmq context for client sessions (created on first use)."""
    global _context
    if _context is None or _context.closed:
        _context = zmq.asyncio.Context()
        # A session holds 4 sockets (DEALER, SUB, the monitor pair): libzmq's
        # default of 1,023 sockets per context stops a gateway at ~250 sessions.
        _context.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
    return _context


class Transport:
    """Runs one client session until the core says Quit; returns the exit code."""

    def __init__(
        self,
        core: ClientCore,
        endpoint: str | Sequence[str],
        on_event: Callable[[UiEvent], None],
        clock: Callable[[], float] | None = None,
        keys: ClientKeys | None = None,
        on_result: Callable[[Done | Failed], None] | None = None,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.core = core
        self.keys = keys
        self.monitor: zmq.asyncio.Socket | None = None
        #: The brokers to try, in order (``"tcp://a:5555,tcp://b:5555"`` or a list).
        self.endpoints = split_endpoints(endpoint)
        core.rotation = Rotation(self.endpoints)
        self.on_event = on_event
        self.on_result = on_result or (lambda result: None)
        self.clock = clock or steady_wall_clock()
        self.ctx = ctx or shared_context()
        self.dealer: zmq.Socket[bytes] | None = None
        self.sub: zmq.Socket[bytes] | None = None
        self._readers: dict[zmq.Socket[bytes], int] = {}  # socket -> the FD the loop watches
        self._subs: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[int] | None = None
        self._wake = asyncio.Event()
        #: What the monitor learnt of the current DEALER's handshake: None (nothing
        #: yet), "ok", "unreachable" (nothing listens) or "failed".
        self._handshake: str | None = None
        self._failed_handshakes = 0  # in a row, on the current DEALER
        self._leaving: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- API

    async def run(self) -> int:
        """Connect and serve until the core quits; returns the exit code."""
        self._done = asyncio.get_running_loop().create_future()
        self._open_dealer()
        timer = asyncio.create_task(self._timer())
        timer.add_done_callback(self._task_done)  # a failing timer ends the client, loudly
        try:
            return await self._done
        finally:
            timer.cancel()
            self.close()

    def feed(self, line: str) -> None:
        """A line of input from the user or a script."""
        self._apply(self.core.command(line, self.clock()))

    def apply(self, call: Callable[[float], list[Action]]) -> None:
        """Run a core call (given the time now) and carry out its actions."""
        self._apply(call(self.clock()))

    @property
    def endpoint(self) -> str:
        """The endpoint connected to now, or tried next."""
        return self.core.rotation.current

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def quit(self, code: int) -> None:
        if self._done is None or self._done.done():
            return
        if code == 0 and self.core.state == ConnectionState.CONNECTING and (
            self._handshake is None and self.dealer is not None
        ):
            # Leaving before the broker ever answered: wait (briefly) for the
            # handshake, so a refused key or a CURVE broker still says so, exit 3.
            if self._leaving is None:
                loop = asyncio.get_running_loop()
                self._leaving = loop.call_later(HANDSHAKE_GRACE, self._finish, 0)
            return
        self._finish(code)

    def _finish(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def close(self) -> None:
        if self._leaving is not None:
            self._leaving.cancel()
        for task in self._tasks:
            task.cancel()
        self._close_monitor()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                self._close(sock)
        self.dealer = self.sub = None
        if self.core.state != ConnectionState.CLOSED:
            self.core.close()

    # ------------------------------------------------------------- sockets

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        # A plain socket, read from the loop's own selector (_watch): zmq.asyncio
        # costs a future and several callbacks per message.
        sock: zmq.Socket[bytes] = zmq.Socket(self.ctx, kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_BODY_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5_000)
        if self.keys is not None:
            self.keys.apply(sock)
        return sock

    def _open_dealer(self) -> None:
        self.dealer = self._socket(zmq.DEALER)
        # No send limit: what waits here is what the user typed (the outbox
        # holds it anyway), and a full queue would make NOBLOCK sends fail.
        self.dealer.setsockopt(zmq.SNDHWM, 0)
        # A refused handshake is otherwise silent retries, and a dead broker
        # silence until the heartbeat timeout: watch for both.
        self._handshake = None
        self._failed_handshakes = 0
        # The pair's other end comes from our (asyncio) context: read as a coroutine.
        self.monitor = cast("zmq.asyncio.Socket", self.dealer.get_monitor_socket(MONITORED))
        self._spawn(self._read_monitor(self.monitor))
        endpoint = self.endpoint
        self.dealer.connect(endpoint)
        self._watch(self.dealer, self._on_dealer)
        self._apply(self.core.connecting(endpoint, self.clock()))

    def _close_monitor(self) -> None:
        if self.monitor is not None and self.dealer is not None:
            self.dealer.disable_monitor()
            self.monitor.close(linger=0)
        self.monitor = None

    def _reconnect(self) -> None:
        self._close_monitor()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                self._close(sock)
        self.dealer = self.sub = None
        self._subs.clear()
        self._open_dealer()

    def _connect_sub(self, endpoint: str) -> None:
        if self.sub is not None:
            self._close(self.sub)
        self._subs.clear()
        self.sub = self._socket(zmq.SUB)
        self.sub.connect(endpoint)
        self._watch(self.sub, self._on_sub, self._sub_drained)

    def _watch(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[list[bytes]], None],
        drained: Callable[[], None] | None = None,
    ) -> None:
        """Read ``sock`` whenever the loop's selector says so. zmq's FD is
        edge-triggered: each wake-up reads until EAGAIN (or FAIR_BATCH messages,
        then continues after whatever else the loop has to run)."""
        fd = int(sock.getsockopt(zmq.FD))
        self._readers[sock] = fd
        read = functools.partial(self._read, sock, handle, drained)
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, read)
        loop.call_soon(read)  # anything already queued raised no edge

    def _read(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[list[bytes]], None],
        drained: Callable[[], None] | None,
    ) -> None:
        for _ in range(FAIR_BATCH):
            if sock not in self._readers:
                return  # closed meanwhile (a reconnect in handle())
            try:
                frames = _recv_frames(sock)
            except zmq.Again:
                if drained is not None:
                    drained()
                return
            except zmq.ZMQError:
                return
            handle(frames)
        # More may wait, and the FD will not say so again: come back after the
        # other sessions of the process (and their timers) had their turn.
        asyncio.get_running_loop().call_soon(self._read, sock, handle, drained)

    def _poke(self, sock: zmq.Socket[bytes]) -> None:
        """After a send or a (un)subscribe: libzmq may have taken in messages while
        it ran, and their edge is then gone. Read them if so."""
        if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            if sock is self.dealer:
                asyncio.get_running_loop().call_soon(self._read, sock, self._on_dealer, None)
            elif sock is self.sub:
                read = functools.partial(self._read, sock, self._on_sub, self._sub_drained)
                asyncio.get_running_loop().call_soon(read)

    def _close(self, sock: zmq.Socket[bytes]) -> None:
        fd = self._readers.pop(sock, None)
        if fd is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_reader(fd)
        sock.close(linger=0)

    def _on_dealer(self, frames: list[bytes]) -> None:
        try:
            msg = decode_from_broker(frames)
        except ProtocolError as exc:
            self.on_event(Problem(f"ignored a bad message from the broker: {exc}"))
            return
        self._apply(self.core.on_direct(msg, self.clock()))

    def _on_sub(self, frames: list[bytes]) -> None:
        try:
            msg = decode_broadcast(frames)
        except ProtocolError as exc:
            self.on_event(Problem(f"ignored a bad broadcast: {exc}"))
            return
        self._apply(self.core.on_broadcast(msg, self.clock()))

    def _sub_drained(self) -> None:
        self.core.sub_drained(self.clock())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.on_event(Problem(f"internal error: {exc!r}"))
            self.quit(70)

    async def _read_monitor(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return
            if sock is not self.monitor:
                return  # a monitor of a DEALER already replaced
            parsed = parse_monitor_message(frames)
            event, value = int(parsed["event"]), int(parsed["value"])
            if event & HANDSHAKE_FAILED:
                self._failed_handshakes += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._failed_handshakes = 0
            why = handshake_failure(
                event, value, self.keys is not None, self._failed_handshakes
            )
            if why is not None:
                self._handshake = "failed"
                self._apply(self.core.auth_failed(why))
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshake = "ok"
            elif event == zmq.EVENT_CONNECT_RETRIED and self._handshake is None:
                self._handshake = "unreachable"
                if self._leaving is None:  # else the quit below ends it all
                    self._apply(self.core.unreachable(self.clock()))
            elif event == zmq.EVENT_DISCONNECTED and self._handshake == "ok":
                self._handshake = None
                self._apply(self.core.link_down(self.clock()))
                continue
            else:
                continue
            if self._leaving is not None:  # a quit was waiting for this
                self.quit(0)

    async def _timer(self) -> None:
        assert self._done is not None
        while not self._done.done():
            delay = max(0.01, self.core.next_deadline() - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._done.done():
                return  # 3.11's wait_for may swallow run()'s cancel: never tick after close
            self._wake.clear()
            self._apply(self.core.tick(self.clock()))
            self._wake.clear()  # set by our own _apply; the deadline is read afresh above

    # ------------------------------------------------------------- actions

    def _apply(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Request):
                self._send(act)
            elif isinstance(act, Output):
                self.on_event(act.event)
            elif isinstance(act, Subscribe):
                if self.sub is not None and act.topic not in self._subs:
                    self._subs.add(act.topic)
                    self.sub.setsockopt(zmq.SUBSCRIBE, act.topic)
                    self._poke(self.sub)
            elif isinstance(act, Unsubscribe):
                if self.sub is not None and act.topic in self._subs:
                    self._subs.discard(act.topic)
                    self.sub.setsockopt(zmq.UNSUBSCRIBE, act.topic)
                    self._poke(self.sub)
            elif isinstance(act, ConnectSub):
                self._connect_sub(act.endpoint)
            elif isinstance(act, Reconnect):
                self._reconnect()
                return  # the rest belonged to the dead connection
            elif isinstance(act, Quit):
                self.quit(act.code)
            elif isinstance(act, Done | Failed):
                self.on_result(act)
        self._wake.set()  # deadlines may have moved

    def _send(self, act: Request) -> None:
        if self.dealer is None:
            return
        try:
            frames = encode(act.msg)
        except ProtocolError as exc:
            self.on_event(Problem(str(exc)))
            return
        # Again means the queue to the broker is full (it is not reading): the
        # outbox keeps our messages and the heartbeat timeout reconnects.
        with contextlib.suppress(zmq.Again):
            self.dealer.send_multipart(frames, zmq.NOBLOCK)
        self._poke(self.dealer)


_NOBLOCK = int(zmq.NOBLOCK)
_raw_recv = cast("Callable[[zmq.Socket[bytes], int, bool], zmq.Frame]", zmq.backend.Socket.recv)


def _recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """One whole message, read as frames whose ``more`` says whether another
    follows: asking the socket (RCVMORE) costs an option lookup per frame, and
    recv_multipart does that in Python. Raises zmq.Again if none waits; the
    frames after the first are there by then (a message arrives whole)."""
    frame = _raw_recv(sock, _NOBLOCK, False)
    frames = [frame.bytes]
    while frame.more:
        frame = _raw_recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


#: Messages a reader takes in a row before it lets the loop run something else:
#: a busy socket must not starve the other sessions of the process, their
#: timers and the application.
FAIR_BATCH = 64
