"""Client failover across several broker endpoints (docs/protocol.md §6.7), with
real brokers and clients as processes over real sockets.

The brokers here are independent single brokers, each with its own SQLite
store: history is not shared, so the broker a client fails over to has another
epoch and the client starts its positions over. (Brokers sharing one store,
where nothing is lost or repeated across the failover, are tests/e2e/test_cluster.py.)
``several_brokers`` (tests/conftest.py) starts N brokers for either.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.procs import Broker, Proc, endpoints, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
#: Short heartbeats: a client notices a silent broker within 3 s (a killed
#: one at once: its TCP connection drops).
OPTS = ("--heartbeat", "0.5", "--timeout", "3")
Start = Callable[..., list[Broker]]


def plain_client(procs: list[Proc], connect: str, nick: str, room: str = "dev") -> Proc:
    c = Proc(["client", "--plain", "--connect", connect, "--nick", nick, "--room", room],
             env={"ZCHAT_WAIT": "30"})  # fmt: skip
    procs.append(c)
    return c


def since(proc: Proc, mark: int, pattern: str) -> Callable[[str], bool]:
    """A wait_for condition: a line matching ``pattern`` after the first ``mark`` lines."""
    rx = re.compile(pattern)
    return lambda _line: any(rx.search(line) for line in proc.lines[mark:])


def test_killed_broker_clients_move_to_the_next_and_carry_on(
    several_brokers: Start, procs: list[Proc]
) -> None:
    """Broker A is SIGKILLed while a sender streams into #dev. Both clients move to
    B at once (its endpoint is next in --connect), where the history is another
    one: they say so and start over. What the sender typed while A died waits in
    its outbox and goes to B; lines typed after the failover reach the receiver
    once each; the sender leaves with everything acknowledged (exit 0)."""
    a, b = several_brokers(2, *OPTS)
    both = endpoints([a, b])
    recv = plain_client(procs, both, "recv")
    send = plain_client(procs, both, "send")
    for c, nick in ((recv, "recv"), (send, "send")):
        c.wait_for(rf"^-- connected to {re.escape(a.endpoint)} as {nick}$")
        c.wait_for(r"^-- joined #dev")

    send.send(*(f"before {n:02d}" for n in range(40)))
    recv.wait_for(r"#dev <send> before 39$")
    marks = {c: len(c.lines) for c in (recv, send)}
    a.p.kill()
    send.send(*(f"during {n:02d}" for n in range(40)))  # while the client finds out
    a.wait_exit()

    for c, nick in ((recv, "recv"), (send, "send")):
        mark = marks[c]
        c.wait_for(since(c, mark, r"^-- the connection to the broker dropped; reconnecting"))
        c.wait_for(since(c, mark, rf"^-- connected to {re.escape(b.endpoint)} as {nick}$"))
        c.wait_for(since(c, mark, r"^!! the broker's history was reset; positions start over$"))
        c.wait_for(since(c, mark, r"^-- joined #dev"))
    b.wait_for(r"\[#dev\] <send> during 39$")  # the outbox went to B, in order

    after = [f"after {n}" for n in range(5)]
    send.send(*after)
    for text in after:
        recv.wait_for(rf"#dev <send> {text}$")
    send.close_stdin()
    assert send.wait_exit(40) == 0  # every line acknowledged, by A or by B
    recv.send("exit")
    assert recv.wait_exit(20) == 0
    b.wait_for(rf"\[#dev\] <send> {after[-1]}$")
    b.drain(0.3)
    for text in after:
        assert recv.count(rf"#dev <send> {text}$") == 1, text
        assert b.count(rf"\[#dev\] <send> {text}$") == 1, text
    assert recv.count(r"^-- connected to ") == 2  # A, then B: no flapping


def test_send_and_stats_try_the_endpoints_in_order(
    several_brokers: Start, procs: list[Proc]
) -> None:
    """§6.7: nothing listens at the first endpoint; ``zchat send`` and ``zchat
    stats`` go on to the next, and stats names the broker that answered."""
    (live,) = several_brokers(1, *OPTS)
    dead = f"tcp://127.0.0.1:{free_port()}"
    both = f"{dead},{live.endpoint}"

    def zchat(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zchat", *args], capture_output=True,
                              text=True, timeout=30)  # fmt: skip

    sent = zchat("send", "--connect", both, "--nick", "script", "--room", "ops", "deployed")
    assert sent.returncode == 0, sent.stderr
    live.wait_for(r"\[#ops\] <script> deployed$")
    stats = zchat("stats", "--connect", both)
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.startswith(f"broker at {live.endpoint}: up ")
    nowhere = zchat("stats", "--connect", f"{dead},{dead}", "--timeout", "3")
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip() == f"Error: no answer from a broker at {dead}, {dead}"
