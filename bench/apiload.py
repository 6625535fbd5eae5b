"""Load-generator workers on one asyncio loop: zchat through its public client API, and NATS.

``bench.loadgen`` hands specs with ``system`` "zchat" or "nats" to ``main`` here;
the line protocol with the harness is loadgen's (READY, PROGRESS, RESULT, FAIL
out; GO, STOP in), and so are the spec keys and the result fields.

* ``zchat``: every client is a real session, ``zchat.connect(endpoint, nick=...,
  rooms=[room])`` (docs/api.md), the code ``zchat client --plain``, ``zchat send``
  and bots run: the Transport's sockets, ``decode_broadcast``/``decode_from_broker``,
  the ClientCore's sequence checks, gap detection and dedupe, the outbox, the
  typed events. All sessions of a process share the API's one zmq context and
  this one asyncio loop (what docs/api.md's "Many sessions in one process"
  describes). A receiver is ready when ``start()`` returned (connected, registered,
  joined) and reads its events with ``async for event in chat``, counting each
  ``zchat.Message``; a sender is a session in no room that calls ``chat.say()``,
  which returns once the broker stored the message (the ACK), like ``zchat send``.
* ``nats``: nats-py connections (``nats.connect``), one per client; a receiver
  subscribes with a coroutine callback and is ready when ``flush()`` returned
  (the server has the subscription); a sender publishes and, at the end,
  ``flush()``es (the server has read everything).

Every await is bounded by the spec's ``deadline`` (seconds of worker life).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.loadgen import Fail, Tally, make_text

PROGRESS_EVERY = 0.5
STOP_GRACE = 3.0  # seconds the loop gets to answer STOP before the control thread does
NATS_SUBJECT = "bench.room"


class _NotOpened(Exception):
    """A client that did not get ready (counted in ``refused``)."""


class AsyncWorker:
    """The phases, the control lines and the bounds shared by both systems."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.n: int = spec["clients"]
        self.first: int = spec.get("first", 0)
        self.tag: str = spec.get("tag", "t")
        self.size: int = spec.get("size", 100)
        self.inflight: int = spec.get("inflight", 200)  # connects under way at once
        self.deadline = float(spec.get("deadline", 120))
        self.tally = Tally(self.n, spec.get("expect", 0), self.tag,
                           bool(spec.get("latency_file")))  # fmt: skip
        self.total: int = spec.get("messages", 0)
        self.rate: float = spec.get("rate", 0)
        self.window: int = spec.get("window", 5_000)
        self.t_start = self.t_ready = self.t_go = 0.0
        self.cpu_go = 0.0
        self.sent = self.acked = 0
        self.errors: dict[str, int] = {}
        self.lag = 0.0
        self.t_first_send = self.t_last_send = self.t_last_ack = 0.0
        self.opened = 0  # clients ready so far
        self.refused: dict[str, int] = {}  # W3 ("tolerate"): clients that never got ready
        self._out = threading.Lock()
        self._finished = False  # RESULT or FAIL written
        self.go = asyncio.Event()
        self.stopped = asyncio.Event()
        self.complete = asyncio.Event()  # every receiver of this worker got everything

    # ----------------------------------------------------------- lines
    #
    # The control lines live on a thread, not on the loop: while a zchat session
    # has a backlog on its SUB, the client's reader never yields to the loop
    # (pyzmq resolves a recv at once while a message is queued, so ``await``
    # does not suspend), and a loop-side stdin reader or PROGRESS timer would
    # starve for as long as the backlog lasts. The thread gets the GIL every
    # few milliseconds whatever the loop does.

    def emit(self, kind: str, payload: Any = None) -> None:
        line = kind if payload is None else f"{kind} {json.dumps(payload)}"
        with self._out:
            if self._finished:
                return
            if kind in ("RESULT", "FAIL"):
                self._finished = True
                _dump_profile()  # before the harness, having its line, stops us
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def _control(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: read GO/STOP from the harness, send PROGRESS while running."""
        progress = threading.Thread(target=self._progress, daemon=True)
        progress.start()
        for raw in sys.stdin:
            cmd = raw.strip()
            if cmd == "GO":
                loop.call_soon_threadsafe(self._go)
            elif cmd == "STOP":
                loop.call_soon_threadsafe(self.stopped.set)
                # The loop should report at once; if a backlog keeps it busy,
                # report from here what was counted so far, and exit.
                time.sleep(STOP_GRACE)
                with self._out:
                    done = self._finished
                if not done:
                    self.emit("RESULT", {**self.result(), "stopped_busy": True})
                    os._exit(0)
            # PROBE: not needed, both systems have an end-to-end ready signal
        loop.call_soon_threadsafe(self.stopped.set)  # the harness is gone

    def _go(self) -> None:
        if not self.go.is_set():
            self.t_go = time.time()
            self.cpu_go = time.process_time()
            self.go.set()

    def _progress(self) -> None:
        """PROGRESS lines: clients ready so far until READY, then messages counted."""
        sent = -1
        while not self._finished:
            time.sleep(PROGRESS_EVERY)
            count = self.tally.total if self.go.is_set() else self.opened
            if (self.t_ready == 0.0 or self.go.is_set()) and count != sent:
                sent = count
                self.emit("PROGRESS", sent)

    def hit(self, i: int, text: str) -> None:
        tally = self.tally
        tally.hit(i, text, time.time())
        if tally.complete == self.n and tally.expect > 0:
            self.complete.set()

    async def _first(self, *events: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # ----------------------------------------------------------- phases

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._control, args=(loop,), daemon=True).start()
        code = 0
        try:
            async with asyncio.timeout(self.deadline):
                self.t_start = time.time()
                await self._gated(self.setup())
                self.t_ready = time.time()
                self.emit("READY", {"t_start": self.t_start, "t_ready": self.t_ready,
                                    "opened": self.opened, "refused": self.refused})  # fmt: skip
                await self._first(self.go, self.stopped)
                if self.go.is_set():
                    await self._gated(self.workload())
                self.emit("RESULT", self.result())
        except Fail as exc:
            self.emit("FAIL", str(exc))
            code = 1
        except TimeoutError:
            self.emit("FAIL", f"deadline of {self.deadline:.0f} s passed")
            code = 1
        finally:
            try:
                async with asyncio.timeout(10):
                    await self.close()
            except (TimeoutError, Exception) as exc:  # leaving is best effort
                print(f"close: {exc!r}", file=sys.stderr)
        return code

    async def _gated(self, work: Awaitable[None]) -> None:
        """Run ``work`` until it ends or STOP comes (then cancel it)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.t_ready == 0.0:
                raise Fail("stopped before ready")
            return
        task.result()

    async def open_all(self, opener: Callable[[int], Awaitable[None]]) -> None:
        """Open every client, at most ``inflight`` at once; the first failure fails all."""
        sem = asyncio.Semaphore(self.inflight)

        async def one(i: int) -> None:
            async with sem:
                try:
                    await opener(i)
                except _NotOpened:
                    return
            self.opened += 1

        await asyncio.gather(*(one(i) for i in range(self.n)))

    async def setup(self) -> None:
        raise NotImplementedError

    async def workload(self) -> None:
        if self.mode == "recv":
            if self.tally.expect > 0:
                await self.complete.wait()
            else:
                await self.stopped.wait()
            return
        self.t_first_send = time.time()
        t0 = self.t_first_send
        for i in range(self.total):
            if self.rate > 0:
                delay = t0 + i / self.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.lag = max(self.lag, -delay)
            else:
                await self.room_for_more()
            self.sent += 1
            await self.send_one(i)
            self.t_last_send = time.time()
        await self.drain()

    async def room_for_more(self) -> None:
        """Rate 0: wait while the window of unacknowledged messages is full."""

    async def send_one(self, i: int) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        now_cpu = time.process_time()
        out: dict[str, Any] = {
            "clients": self.n,
            "t_start": self.t_start,
            "t_ready": self.t_ready,
            "t_go": self.t_go,
            # CPU seconds (all threads) from GO to now: the workload, not the connects
            "cpu": now_cpu - self.cpu_go if self.cpu_go else now_cpu,
            "cpu_total": now_cpu,
            "errors": self.errors,
            "opened": self.opened,
            "refused": self.refused,
        }
        if self.mode == "recv":
            out.update(self.tally.summary(self.spec.get("latency_file")))
        else:
            out.update(sent=self.sent, acked=self.acked, t_first=self.t_first_send,
                       t_last_send=self.t_last_send, t_last_ack=self.t_last_ack,
                       lag=self.lag)  # fmt: skip
        return out

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------------- zchat


class ZchatApiWorker(AsyncWorker):
    """Sessions of the real client: ``zchat.connect`` and its events."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import zchat  # the public API, loaded on first use

        self.zchat = zchat
        self.endpoint: str = spec["endpoint"]
        self.room: str = spec.get("room", "bench")
        self.chats: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.pending: set[asyncio.Future[int]] = set()
        self.ack_lat: list[float] = []
        self._more = asyncio.Event()

    async def setup(self) -> None:
        zchat = self.zchat
        recv = self.mode == "recv"
        self.chats = [
            zchat.connect(
                self.endpoint,
                nick=f"{self.spec.get('nick', 'b')}{self.first + i}",
                rooms=[self.room] if recv else [],  # a sender is in no room, like zchat send
                timeout=self.deadline,
                events=recv,
                quit_wait=2.0,
            )
            for i in range(self.n)
        ]

        async def open_one(i: int) -> None:
            chat = self.chats[i]
            try:
                await chat.start()
            except zchat.ChatError as exc:
                if not self.spec.get("tolerate"):
                    raise Fail(
                        f"{chat.nick}: {exc.code}: {exc.text} ({self.opened} ready)"
                    ) from None
                # W3: a client the broker refused or never answered is counted, not fatal
                self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
                raise _NotOpened from None
            if recv:
                self.readers.append(asyncio.ensure_future(self.read(i, chat)))

        await self.open_all(open_one)

    async def read(self, i: int, chat: Any) -> None:
        message = self.zchat.Message
        hit = self.hit
        async for event in chat:
            if type(event) is message:
                hit(i, event.text)

    async def room_for_more(self) -> None:
        while self.sent - self.acked - sum(self.errors.values()) >= self.window:
            self._more.clear()
            await self._more.wait()

    async def send_one(self, i: int) -> None:
        chat = self.chats[i % self.n]
        said = time.time()
        fut = asyncio.ensure_future(chat.say(self.room, make_text(self.tag, i, self.size)))
        self.pending.add(fut)
        fut.add_done_callback(lambda f: self._acked(f, said))
        if i % 64 == 63:
            await asyncio.sleep(0)  # let the says run and the acks come in

    def _acked(self, fut: asyncio.Future[int], said: float) -> None:
        self.pending.discard(fut)
        self._more.set()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            code = getattr(exc, "code", type(exc).__name__)
            self.errors[code] = self.errors.get(code, 0) + 1
            return
        self.acked += 1
        self.t_last_ack = time.time()
        self.ack_lat.append(self.t_last_ack - said)

    async def drain(self) -> None:
        while self.pending:
            await asyncio.wait(set(self.pending))

    def result(self) -> dict[str, Any]:
        out = super().result()
        if self.ack_lat:
            acks = sorted(self.ack_lat)
            out.update(ack_p50=acks[len(acks) // 2],
                       ack_p99=acks[min(len(acks) - 1, int(len(acks) * 0.99))],
                       ack_max=acks[-1])  # fmt: skip
        return out

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        # Leave cleanly (BYE), all sessions at once, bounded by run()'s timeout.
        await asyncio.gather(*(c.close() for c in self.chats), return_exceptions=True)


# ----------------------------------------------------------------------- NATS


class NatsWorker(AsyncWorker):
    """nats-py connections of nats-server, one subject."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import nats  # only this role needs nats-py

        self.nats = nats
        self.url = f"nats://127.0.0.1:{spec['port']}"
        self.conns: list[Any] = []

    async def setup(self) -> None:
        self.conns = [None] * self.n
        recv = self.mode == "recv"

        async def open_one(i: int) -> None:
            try:
                nc = await self.nats.connect(
                    self.url, name=f"{self.spec.get('nick', 'b')}{self.first + i}",
                    allow_reconnect=False, connect_timeout=30, max_reconnect_attempts=0,
                    pending_size=64 * 2**20,
                )  # fmt: skip
            except Exception as exc:
                raise Fail(f"nats client {i}: {exc!r}") from None
            self.conns[i] = nc
            if recv:
                hit = self.hit

                async def on_msg(msg: Any) -> None:
                    hit(i, msg.data.decode())

                await nc.subscribe(NATS_SUBJECT, cb=on_msg)
                await nc.flush(timeout=30)  # the server has the subscription

        await self.open_all(open_one)

    async def send_one(self, i: int) -> None:
        nc = self.conns[i % self.n]
        await nc.publish(NATS_SUBJECT, make_text(self.tag, i, self.size).encode())
        if i % 256 == 255:
            await asyncio.sleep(0)  # let the flusher write

    async def drain(self) -> None:
        for nc in self.conns:
            await nc.flush(timeout=60)  # the server has read all we published
        self.acked = self.sent
        self.t_last_ack = time.time()

    async def close(self) -> None:
        await asyncio.gather(*(nc.close() for nc in self.conns if nc is not None),
                             return_exceptions=True)  # fmt: skip


ROLES: dict[str, type[AsyncWorker]] = {"zchat": ZchatApiWorker, "nats": NatsWorker}


_profile: tuple[cProfile.Profile, str] | None = None


def _dump_profile() -> None:
    """Write the cProfile stats (once), if this worker runs under it."""
    global _profile
    if _profile is not None:
        prof, path = _profile
        _profile = None
        prof.disable()
        prof.dump_stats(path)


def main(spec: dict[str, Any]) -> int:
    """Run one worker; with ``spec["profile"]`` (a path) under cProfile, written
    when the worker reports its RESULT (the harness may stop it right after)."""
    global _profile

    async def go() -> int:
        worker = ROLES[spec["system"]](spec)
        return await worker.run()

    if spec.get("profile"):
        _profile = (cProfile.Profile(), spec["profile"])
        _profile[0].enable()
    try:
        return asyncio.run(go())
    finally:
        _dump_profile()
