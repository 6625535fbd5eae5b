"""Nothing lost (docs/protocol.md §6): real processes, real kills, real SQLite.

Receivers run with ``--json`` so every shown event carries its room seq, and
the checks are exact: every message once, in seq order, no gaps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.procs import Broker, Proc

Start = Callable[..., Proc]
LONG = 60.0  # generous bound for bulk waits; a pass takes a few seconds
#: Bulk tests measure delivery, not the rate limit (tests/e2e/test_security.py does).
UNLIMITED = {"ZCHAT_RATE": "1000000", "ZCHAT_BURST": "1000000"}


def json_client(procs: list[Proc], broker: Broker, nick: str, room: str, *extra: str) -> Proc:
    c = Proc(
        ["client", "--json", "--connect", broker.endpoint, "--nick", nick, "--room", room, *extra],
        env={"ZCHAT_WAIT": "60"},
    )
    procs.append(c)
    c.wait_for(f'"event": "joined", "room": "{room}"')
    return c


def chats(proc: Proc) -> list[dict[str, object]]:
    out = []
    for line in proc.lines:
        if line.startswith("{"):
            ev = json.loads(line)
            if ev["event"] == "chat":
                out.append(ev)
    return out


def wait_chat_count(proc: Proc, n: int, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while len(chats(proc)) < n and time.monotonic() < deadline:
        proc.drain(0.5)
    assert len(chats(proc)) >= n, f"{proc.args[4]}: {len(chats(proc))} of {n} messages"


def all_sent_and_shown_once(senders: list[Proc], receivers: list[Proc], expected: set[str]) -> None:
    """Every sender's outbox drains (exit 0, nothing left unacknowledged) and
    every receiver shows every message exactly once, in seq order."""
    for s in senders:
        s.close_stdin()
    for s in senders:
        assert s.wait_exit(LONG) == 0, "\n".join(s.lines[-20:])
        assert not any("not acknowledged" in line for line in s.lines)
    for r in receivers:
        wait_chat_count(r, len(expected))
        r.drain(0.5)
        assert_exactly_once_in_order(r, expected)


def assert_exactly_once_in_order(proc: Proc, expected: set[str]) -> None:
    got = chats(proc)
    seqs = [int(str(ev["seq"])) for ev in got]
    assert seqs == sorted(set(seqs)), "shown out of seq order, or twice"
    texts = [str(ev["text"]) for ev in got]
    assert len(texts) == len(set(texts)), "a message was shown twice"
    assert set(texts) == expected


def test_broker_sigkill_mid_stream_loses_nothing(tmp_path: Path, procs: list[Proc]) -> None:
    """§6.3/§6.4: 5,000 messages from 4 senders; the broker is SIGKILLed in the
    middle and restarted on the same store; every receiver shows every message
    exactly once, in order, and every sender's outbox drains (exit 0)."""
    opts = ("--heartbeat", "0.5", "--timeout", "2", "--quiet")
    broker = Broker(tmp_path, *opts, env=UNLIMITED)
    procs.append(broker)
    receivers = [json_client(procs, broker, f"recv{i}", "flood") for i in range(3)]
    senders = [json_client(procs, broker, f"send{i}", "flood") for i in range(4)]
    expected = {f"s{i}-{n:04d}" for i in range(4) for n in range(1250)}
    for i, s in enumerate(senders):
        s.send(*(f"s{i}-{n:04d}" for n in range(1250)))

    wait_chat_count(receivers[0], 300)  # well under way, far from done
    broker.p.kill()
    broker.wait_exit()
    restarted = Broker(tmp_path, *opts, port=broker.port, env=UNLIMITED)
    procs.append(restarted)

    for r in receivers:
        r.wait_for('"reconnecting', timeout=LONG)
    all_sent_and_shown_once(senders, receivers, expected)


def test_paused_receiver_catches_up_by_gap_recovery(tmp_path: Path, procs: list[Proc]) -> None:
    """§6.5: a receiver stopped with SIGSTOP while 10,000 messages flow past a
    broker with a small queue bound misses many live; after SIGCONT it shows
    all of them, in order, fetched over the DEALER."""
    opts = ("--heartbeat", "0.5", "--timeout", "30", "--quiet")
    broker = Broker(tmp_path, *opts, env={"ZCHAT_HWM": "50", **UNLIMITED})  # tiny queue
    procs.append(broker)
    endpoint = broker.endpoint

    paused = Proc(["client", "--json", "--connect", endpoint, "--nick", "sleepy", "--room", "bulk"])
    procs.append(paused)
    paused.wait_for('"event": "joined", "room": "bulk"')
    paused.signal(signal.SIGSTOP)
    pad = "x" * 900  # big enough that socket buffers cannot hold the burst
    lines = "".join(f"m{n:05d} {pad}\n" for n in range(10_000))
    sent = subprocess.run(
        [sys.executable, "-m", "zchat", "send", "--connect", endpoint, "--room", "bulk",
         "--nick", "blaster", "--timeout", "60"],
        input=lines, capture_output=True, text=True, timeout=LONG,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    paused.signal(signal.SIGCONT)
    wait_chat_count(paused, 10_000)
    paused.drain(0.5)
    assert_exactly_once_in_order(paused, {f"m{n:05d} {pad}" for n in range(10_000)})


def test_client_rides_out_a_broker_outage(tmp_path: Path, procs: list[Proc]) -> None:
    """§6.7: the broker vanishes for longer than the timeout; the client says so,
    reconnects when it returns and carries on in the same rooms."""
    opts = ("--heartbeat", "0.5", "--timeout", "2")
    broker = Broker(tmp_path, *opts)
    procs.append(broker)
    base = ["client", "--plain", "--connect", broker.endpoint, "--room", "dev"]
    alice = Proc([*base, "--nick", "alice"])
    bob = Proc([*base, "--nick", "bob"])
    procs += [alice, bob]
    alice.wait_for(r"^-- joined #dev")
    bob.wait_for(r"^-- joined #dev")
    alice.send("before the outage")
    bob.wait_for("<alice> before the outage")

    broker.p.kill()
    broker.wait_exit()
    alice.wait_for("reconnecting")
    bob.wait_for("reconnecting")
    alice.send("typed during the outage")  # kept in the outbox meanwhile

    procs.append(Broker(tmp_path, *opts, port=broker.port))
    alice.wait_for(r"connected as alice", timeout=LONG)
    bob.wait_for("<alice> typed during the outage", timeout=LONG)
    bob.send("after it")
    alice.wait_for("<bob> after it")
    assert bob.count("<alice> before the outage") == 1


def test_vanished_client_is_announced_gone(broker: Broker, client: Start) -> None:
    """§6.7: a SIGKILLed client is announced as gone within the timeout (3 s here)."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    victim = client("victim", room="dev")
    victim.wait_for(r"^-- joined #dev")
    started = time.monotonic()
    victim.p.kill()
    alice.wait_for(r"#dev -- victim left #dev \(timed out\)", timeout=10)
    assert time.monotonic() - started < 3 + 2  # the timeout plus a heartbeat of slack
    broker.wait_for(r"- victim gone \(timed out\)")


def test_dm_to_offline_nick_is_delivered_once_on_next_login(broker: Broker, client: Start) -> None:
    """§6.6: stored while away, shown at the next login, not again after that."""
    bob = client("bob")
    bob.wait_for(r"^-- joined #lobby")
    bob.send("exit")
    assert bob.wait_exit() == 0
    alice = client("alice")
    alice.wait_for(r"^-- joined #lobby")
    alice.send("/msg bob are you there?")
    alice.wait_for(r"\[DM to bob\] are you there\?")

    again = client("bob")
    again.wait_for(r"\[DM\] <alice> are you there\?")
    again.wait_for(r"^-- joined #lobby")
    again.send("exit")
    assert again.wait_exit() == 0
    third = client("bob")
    third.wait_for(r"^-- joined #lobby")
    third.send("/rooms")  # a round trip after login: any stored DM came before it
    third.wait_for(r"^-- #lobby")
    assert third.count("are you there") == 0


def test_a_broker_whose_store_vanished_says_so_and_stops(
    broker: Broker, client: Start
) -> None:
    """§6.4: with its store file removed the broker cannot keep what it acknowledges:
    it tells its clients (SHUTDOWN with the reason) and exits 1 with one line."""
    alice = client("alice", room="dev")
    alice.wait_for(r"^-- joined #dev")
    broker.store.unlink()
    assert broker.wait_exit() == 1
    assert any(line.startswith("Error: store lost: ") for line in broker.lines), broker.lines
    alice.wait_for(r"store lost")
