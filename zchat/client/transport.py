"""The client's sockets: one DEALER, one SUB, one asyncio loop, no threads.

``Transport`` moves frames between the sockets and ClientCore and carries out
the core's actions. Input (the keyboard or a pipe) and output (a UI) plug in
from outside: ``feed()`` a line, ``on_event`` receives what to show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from zchat.client.core import (
    Action,
    ClientCore,
    ConnectSub,
    Output,
    Quit,
    Reconnect,
    Request,
    Subscribe,
    Unsubscribe,
)
from zchat.client.events import Problem, UiEvent
from zchat.clock import steady_wall_clock
from zchat.keys import HANDSHAKE_FAILURES, ClientKeys
from zchat.protocol import ProtocolError, decode_broadcast, decode_from_broker, encode
from zchat.protocol.rules import MAX_BODY_BYTES


def endpoint_host(endpoint: str) -> str:
    """The host part of ``tcp://host:port`` (brackets kept for IPv6)."""
    rest = endpoint.partition("://")[2]
    return rest.rpartition(":")[0] or "127.0.0.1"


class Transport:
    """Runs one client session until the core says Quit; returns the exit code."""

    def __init__(
        self,
        core: ClientCore,
        endpoint: str,
        on_event: Callable[[UiEvent], None],
        clock: Callable[[], float] | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.core = core
        self.keys = keys
        self.monitor: zmq.asyncio.Socket | None = None
        self.endpoint = endpoint
        self.on_event = on_event
        self.clock = clock or steady_wall_clock()
        core.host = endpoint_host(endpoint)
        self.ctx = zmq.asyncio.Context()
        self.dealer: zmq.asyncio.Socket | None = None
        self.sub: zmq.asyncio.Socket | None = None
        self._subs: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[int] | None = None
        self._wake = asyncio.Event()

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

    def quit(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._close_monitor()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(linger=0)
        self.dealer = self.sub = None
        self.ctx.term()

    # ------------------------------------------------------------- sockets

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
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
        if self.keys is not None:
            # With CURVE a refused handshake is otherwise silent retries: watch for it.
            self.monitor = self.dealer.get_monitor_socket(sum(HANDSHAKE_FAILURES))
            self._spawn(self._read_monitor(self.monitor))
        self.dealer.connect(self.endpoint)
        self._spawn(self._read_dealer(self.dealer))
        self._apply(self.core.connecting(self.endpoint, self.clock()))

    def _close_monitor(self) -> None:
        if self.monitor is not None and self.dealer is not None:
            self.dealer.disable_monitor()
            self.monitor.close(linger=0)
        self.monitor = None

    def _reconnect(self) -> None:
        self._close_monitor()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(linger=0)  # its reader task ends with ENOTSOCK
        self.dealer = self.sub = None
        self._subs.clear()
        self._open_dealer()

    def _connect_sub(self, endpoint: str) -> None:
        if self.sub is not None:
            self.sub.close(linger=0)
        self._subs.clear()
        self.sub = self._socket(zmq.SUB)
        self.sub.connect(endpoint)
        self._spawn(self._read_sub(self.sub))

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

    async def _read_dealer(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return  # closed by _reconnect or close
            try:
                msg = decode_from_broker(frames)
            except ProtocolError as exc:
                self.on_event(Problem(f"ignored a bad message from the broker: {exc}"))
                continue
            self._apply(self.core.on_direct(msg, self.clock()))

    async def _read_monitor(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return
            event = parse_monitor_message(frames)["event"]
            why = HANDSHAKE_FAILURES.get(zmq.Event(event))
            if why is not None:
                self._apply(self.core.auth_failed(why))
                return

    async def _read_sub(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return
            try:
                msg = decode_broadcast(frames)
            except ProtocolError as exc:
                self.on_event(Problem(f"ignored a bad broadcast: {exc}"))
                continue
            self._apply(self.core.on_broadcast(msg, self.clock()))

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
            elif isinstance(act, Unsubscribe):
                if self.sub is not None and act.topic in self._subs:
                    self._subs.discard(act.topic)
                    self.sub.setsockopt(zmq.UNSUBSCRIBE, act.topic)
            elif isinstance(act, ConnectSub):
                self._connect_sub(act.endpoint)
            elif isinstance(act, Reconnect):
                self._reconnect()
                return  # the rest belonged to the dead connection
            elif isinstance(act, Quit):
                self.quit(act.code)
        self._wake.set()  # deadlines may have moved

    def _send(self, act: Request) -> None:
        if self.dealer is None:
            return
        try:
            frames = encode(act.msg)
        except ProtocolError as exc:
            self.on_event(Problem(str(exc)))
            return
        # With NOBLOCK the future is already settled. Again means the queue to
        # the broker is full (it is not reading): the outbox keeps our messages
        # and the heartbeat timeout reconnects, so nothing more to do here.
        sent = cast("asyncio.Future[object]", self.dealer.send_multipart(frames, zmq.NOBLOCK))
        sent.add_done_callback(_consume)


def _consume(fut: asyncio.Future[object]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log it as lost
