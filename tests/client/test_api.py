"""The public API (zchat.connect, zchat.send, zchat.stats) against a real broker process.

Every wait is bounded (asyncio.timeout, pytest-timeout); none is a sleep.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

import zchat
from tests.procs import WAIT, Broker, Proc, free_port

T = TypeVar("T")
E = TypeVar("E")


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(4 * WAIT):
            return await coro

    return asyncio.run(bounded())


async def next_of(
    chat: zchat.Chat, kind: type[E], where: Callable[[E], bool] = lambda e: True
) -> E:
    """The next event of ``kind`` that ``where`` accepts (others are skipped)."""
    async with asyncio.timeout(WAIT):
        async for event in chat:
            if isinstance(event, kind) and where(event):
                return event
    raise AssertionError(f"the session ended before a {kind.__name__}")


def test_say_returns_the_seq_and_others_get_a_typed_message(broker: Broker) -> None:
    async def main() -> None:
        async with zchat.connect(broker.endpoint, nick="alice", rooms=["dev"]) as alice, \
                zchat.connect(broker.endpoint, nick="bob", rooms=["#Dev"]) as bob:  # fmt: skip
            assert bob.joined == ["dev"] and bob.state == zchat.ConnectionState.CONNECTED
            seq = await alice.say("dev", "hello bob")
            got = await next_of(bob, zchat.Message)
            assert (got.room, got.nick, got.text, got.seq) == ("dev", "alice", "hello bob", seq)
            assert got.id and got.time > 0 and got.mention and not got.history
            dm_seq = await alice.dm("bob", "psst")
            dm = await next_of(bob, zchat.Message, lambda e: e.room is None)
            assert (dm.nick, dm.to, dm.text, dm.seq) == ("alice", "bob", "psst", dm_seq)
            await alice.leave("dev")
            left = await next_of(bob, zchat.Left)
            assert (left.room, left.nick) == ("dev", "alice")

    run(main())


def test_reads_answer_with_typed_values(broker: Broker) -> None:
    async def main() -> None:
        async with zchat.connect(broker.endpoint, nick="alice", rooms=["dev"]) as alice:
            await alice.say("dev", "one")
            await alice.say("dev", "/me-less two", action=True)
            assert await alice.who("dev") == ["alice"]
            assert zchat.RoomInfo("dev", 1, "") in await alice.rooms()
            past = await alice.history("dev", 2)
            assert [(type(e).__name__, getattr(e, "text", "")) for e in past] == [
                ("Message", "one"), ("Message", "/me-less two")]  # fmt: skip
            assert all(isinstance(e, zchat.Message) and e.history for e in past)
            await alice.set_topic("dev", "release day")
            assert await alice.topic("dev") == "release day"
            state = await alice.join("ops")
            assert (state.name, state.members) == ("ops", ("alice",))
            await alice.away("lunch")
            me = await alice.whois("alice")
            assert (me.online, me.away, set(me.rooms)) == (True, "lunch", {"dev", "ops"})
            found = await alice.search("dev", "ONE")
            assert [getattr(e, "text", "") for e in found] == ["one"]

    run(main())


def test_failures_raise_chat_errors_with_the_protocol_code(broker: Broker) -> None:
    async def main() -> None:
        async with zchat.connect(broker.endpoint, nick="alice", rooms=["dev"]) as alice, \
                zchat.connect(broker.endpoint, nick="bob", rooms=["dev"]) as bob:  # fmt: skip
            with pytest.raises(zchat.InvalidRequest) as local:
                await alice.say("dev", "")
            assert local.value.code == "empty"
            with pytest.raises(zchat.InvalidRequest) as bad_room:
                await alice.join("no spaces")
            assert bad_room.value.code == "bad_room"
            with pytest.raises(zchat.Refused) as refused:
                await bob.kick("dev", "alice")  # alice made #dev: bob is no operator
            assert refused.value.code == "not_op"
            assert refused.value.fault is not None and refused.value.fault.name == "USER"
            with pytest.raises(zchat.Refused) as unknown:
                await alice.whois("nobody")
            assert unknown.value.code == "no_such_nick"
        with pytest.raises(zchat.Refused) as taken:
            async with zchat.connect(broker.endpoint, nick="carol"), \
                    zchat.connect(broker.endpoint, nick="Carol"):  # fmt: skip
                pass
        assert taken.value.code == "nick_taken"
        with pytest.raises(zchat.Closed):
            await alice.say("dev", "after the end")

    run(main())


def test_nothing_listening_is_a_connect_timeout() -> None:
    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(zchat.ConnectTimeout):
            async with zchat.connect(f"tcp://127.0.0.1:{free_port()}", nick="x", timeout=0.5):
                pass
        assert time.monotonic() - started < 3

    run(main())


def test_blocking_send_and_stats(broker: Broker) -> None:
    seqs = zchat.send(broker.endpoint, "dev", ["first", "second"], nick="script")
    assert seqs == [1, 2]
    with pytest.raises(zchat.InvalidRequest):
        zchat.send(broker.endpoint, "dev", ["fine", "bad\x1b[2J"], nick="script")
    stats = zchat.stats(broker.endpoint)
    assert stats.counters["messages"] == 3 and stats.uptime >= 0


def test_a_broker_restart_loses_and_repeats_nothing(tmp_path: Path, procs: list[Proc]) -> None:
    """Messages said while the broker is down are kept and sent after it is back; the
    listener sees every seq once, and the restart only as StateChanged events."""
    port = free_port()
    first = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3", port=port)
    procs.append(first)

    async def main() -> None:
        async with zchat.connect(first.endpoint, nick="alice", rooms=["dev"]) as alice, \
                zchat.connect(first.endpoint, nick="bob", rooms=["dev"]) as bob:  # fmt: skip
            await alice.say("dev", "before")
            first.stop()
            await next_of(alice, zchat.StateChanged, lambda e: e.state == "reconnecting")
            during = asyncio.ensure_future(alice.say("dev", "while away"))
            second = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3", port=port)
            procs.append(second)
            async with asyncio.timeout(4 * WAIT):
                await during
            await alice.say("dev", "after")
            texts: list[str] = []
            states: list[str] = []
            async with asyncio.timeout(4 * WAIT):
                async for event in bob:
                    if isinstance(event, zchat.StateChanged):
                        states.append(event.state)
                    if isinstance(event, zchat.Message):
                        texts.append(event.text)
                        if event.text == "after":
                            break
            assert texts == ["before", "while away", "after"]
            assert "reconnecting" in states and states[-1] == "connected"

    run(main())


SESSIONS = 500


@pytest.mark.timeout(240)
def test_500_sessions_in_one_process_share_one_context(broker: Broker) -> None:
    """A gateway's shape: hundreds of sessions, one zmq context, one loop, no thread each."""
    threads_before = threading.active_count()

    async def main() -> None:
        async with zchat.connect(broker.endpoint, nick="observer", rooms=["load"]) as observer:
            chats = [
                zchat.connect(broker.endpoint, nick=f"user{i}", timeout=120, events=False)
                for i in range(SESSIONS)
            ]
            for start in range(0, SESSIONS, 100):  # in waves: the broker's backlog is finite
                await asyncio.gather(*(c.start() for c in chats[start : start + 100]))
            assert len({id(c.transport.ctx) for c in chats}) == 1
            # libzmq's one I/O thread for the shared context, and nothing per session
            assert threading.active_count() <= threads_before + 2
            seqs = await asyncio.gather(*(c.say("load", f"hi from {c.nick}") for c in chats))
            assert sorted(seqs) == list(range(min(seqs), min(seqs) + SESSIONS))  # none lost
            seen: set[str] = set()
            async with asyncio.timeout(120):
                async for event in observer:
                    if isinstance(event, zchat.Message):
                        seen.add(event.nick)
                        if len(seen) == SESSIONS:
                            break
            await asyncio.gather(*(c.close() for c in chats))
            assert all(c.exit_code == 0 for c in chats)

    run(main())
    assert os.cpu_count()  # (the test ran on this machine's cores, see its duration)
