"""The transport's failover over real sockets (docs/protocol.md §6.7): the socket
monitor and the core's rotation wired together.

The brokers here are hand-written stand-ins (a ROUTER and an XPUB on loopback,
answering HELLO), so a test can see which endpoint a client knocks at, with
which token, and where its SUB connects. Every wait is bounded; no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
import zmq
import zmq.asyncio

import zchat
from tests.procs import free_port
from zchat.client.api import fetch_stats
from zchat.protocol import decode_request, encode
from zchat.protocol import messages as m

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


class FakeBroker:
    """A ROUTER that answers HELLO with a WELCOME naming ``tcp://*:PORT`` as its
    broadcast socket (an XPUB on the same host), and records every HELLO."""

    def __init__(self, ctx: zmq.asyncio.Context, host: str, session: str) -> None:
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port(f"tcp://{host}")
        self.endpoint = f"tcp://{host}:{port}"
        self.xpub = ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 0)
        self.pub_port = self.xpub.bind_to_random_port(f"tcp://{host}")
        self.session = session
        self.hellos: asyncio.Queue[m.Hello] = asyncio.Queue()
        self.subscribed: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(self._serve()), asyncio.ensure_future(self._subs())]

    async def _serve(self) -> None:
        while True:
            peer, *frames = await self.router.recv_multipart()
            msg = decode_request(frames)
            if isinstance(msg, m.Hello):
                self.hellos.put_nowait(msg)
                welcome = m.Welcome(msg.rid, msg.nick, self.session, f"tcp://*:{self.pub_port}",
                                    "epoch", 0.0, 5.0, 15.0, boot=self.session)  # fmt: skip
                await self.router.send_multipart([peer, *encode(welcome)])
            elif isinstance(msg, m.Ping):
                await self.router.send_multipart([peer, *encode(m.Pong(msg.rid, 0.0, 0))])
            elif isinstance(msg, m.Bye):
                await self.router.send_multipart([peer, *encode(m.Ok(msg.rid))])

    async def _subs(self) -> None:
        while True:
            frame = await self.xpub.recv()
            if frame[:1] == b"\x01":
                self.subscribed.put_nowait(frame[1:])

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.router.close(linger=0)
        self.xpub.close(linger=0)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 25))


def test_a_refused_endpoint_gives_way_to_the_next_and_pub_uses_its_host() -> None:
    """Nothing listens at the first endpoint: the monitor sees it refused and the
    client tries the second at once (well within the 2 s retry delay). The
    broker there says ``tcp://*:PORT``: the SUB connects to that broker's host
    (127.0.0.2), not the first endpoint's."""

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        live = FakeBroker(ctx, "127.0.0.2", "s-live")
        dead = f"tcp://127.0.0.1:{free_port()}"
        try:
            loop = asyncio.get_running_loop()
            began = loop.time()
            chat = zchat.connect(f"{dead},{live.endpoint}", nick="alice", context=ctx,
                                 timeout=WAIT)  # fmt: skip
            async with chat:
                assert loop.time() - began < 1.9
                assert chat.endpoints == (dead, live.endpoint)
                assert chat.endpoint == live.endpoint
                assert chat.core.pub == f"tcp://127.0.0.2:{live.pub_port}"
                topic = await asyncio.wait_for(live.subscribed.get(), WAIT)
                assert topic == m.CONTROL_TOPIC  # the SUB reached the translated endpoint
        finally:
            live.close()
            ctx.destroy(linger=0)

    run(go())


def test_a_lost_broker_sends_the_client_to_the_next_with_its_token() -> None:
    """The first broker's sockets close (as a killed process's would): the
    client's monitor sees the connection drop and it says HELLO, resuming with
    its token, to the second endpoint."""

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        first = FakeBroker(ctx, "127.0.0.1", "s-first")
        second = FakeBroker(ctx, "127.0.0.2", "s-second")
        try:
            states: list[str] = []
            chat = zchat.connect([first.endpoint, second.endpoint], nick="bob", context=ctx,
                                 timeout=WAIT)  # fmt: skip
            async with chat:
                hello = await asyncio.wait_for(first.hellos.get(), WAIT)
                assert hello.resume == ""
                first.close()
                again = await asyncio.wait_for(second.hellos.get(), WAIT)
                assert (again.nick, again.resume, again.id) == ("bob", "s-first", hello.id)
                async with asyncio.timeout(WAIT):
                    async for event in chat:
                        if isinstance(event, zchat.StateChanged):
                            states.append(event.text)
                            if event.text == f"connected to {second.endpoint} as bob":
                                break
                assert chat.endpoint == second.endpoint
                assert states == [
                    f"connecting to {first.endpoint} ...",
                    f"connected to {first.endpoint} as bob",
                    "the connection to the broker dropped; reconnecting ...",
                    f"connected to {second.endpoint} as bob",
                ]
                assert chat.core.session == "s-second"
        finally:
            second.close()
            ctx.destroy(linger=0)

    run(go())


def test_stats_asks_the_next_endpoint_when_the_first_refuses() -> None:
    """``zchat.stats`` tries the endpoints in order until one answers, and says which."""

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        live = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
        dead = f"tcp://127.0.0.1:{free_port()}"

        async def answer() -> None:
            peer, *frames = await router.recv_multipart()
            ask = decode_request(frames)
            assert isinstance(ask, m.Stats)
            await router.send_multipart([peer, *encode(m.StatsReply(ask.rid, 1.0, 61.0, 2, 3, []))])

        server = asyncio.ensure_future(answer())
        try:
            got = await fetch_stats(f"{dead},{live}", timeout=WAIT)
            assert (got.clients, got.rooms, got.uptime, got.endpoint) == (2, 3, 60.0, live)
            await server
        finally:
            server.cancel()
            ctx.destroy(linger=0)

    run(go())
