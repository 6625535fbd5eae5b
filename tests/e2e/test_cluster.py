"""Several brokers on one Redis (§6.14): real redis-server, real brokers and
clients as processes over real sockets.

Receivers run with ``--json`` so every shown event carries its room seq, and
the checks are exact: the same seqs on every broker, every message once, in
order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reliability import (
    LONG,
    UNLIMITED,
    all_sent_and_shown_once,
    assert_exactly_once_in_order,
    chats,
    wait_chat_count,
)
from tests.procs import Broker, Proc, make_keys

OPTS = ("--heartbeat", "0.5", "--timeout", "3")

pytestmark = pytest.mark.timeout(120)


def brokers(tmp: Path, procs: list[Proc], redis_url: str, n: int = 3) -> list[Broker]:
    started = []
    for i in range(n):
        folder = tmp / f"b{i}"
        folder.mkdir(exist_ok=True)
        b = Broker(folder, *OPTS, "--cluster", redis_url, "--quiet", env=UNLIMITED)
        procs.append(b)
        started.append(b)
    return started


def json_client(procs: list[Proc], connect: str, nick: str, room: str, *extra: str) -> Proc:
    c = Proc(
        ["client", "--json", "--connect", connect, "--nick", nick, "--room", room, *extra],
        env={"ZCHAT_WAIT": "60"},
    )
    procs.append(c)
    c.wait_for(f'"event": "joined", "room": "{room}"')
    return c


def plain_client(procs: list[Proc], connect: str, nick: str, room: str = "dev") -> Proc:
    c = Proc(["client", "--plain", "--connect", connect, "--nick", nick, "--room", room])
    procs.append(c)
    c.wait_for(rf"^-- joined #{room}")
    return c


def across_two_brokers(tmp: Path, procs: list[Proc], redis_url: str) -> tuple[Proc, Proc]:
    """Two brokers on one Redis; a sender on the first and a receiver on the
    second, both in #dev: every delivery crosses brokers."""
    a, b = brokers(tmp, procs, redis_url, 2)
    recv = json_client(procs, b.endpoint, "recv", "dev")
    send = json_client(procs, a.endpoint, "send", "dev")
    return send, recv


def seqs_and_texts(proc: Proc) -> list[tuple[int, str]]:
    return [(int(str(ev["seq"])), str(ev["text"])) for ev in chats(proc)]


def test_clients_on_three_brokers_share_a_room_with_identical_sequences(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    bs = brokers(tmp_path, procs, redis_server.url)
    people = [json_client(procs, b.endpoint, f"p{i}", "dev") for i, b in enumerate(bs)]
    expected = set()
    for i, p in enumerate(people):
        lines = [f"from-p{i}-{n}" for n in range(50)]
        expected |= set(lines)
        p.send(*lines)
    for p in people:
        wait_chat_count(p, len(expected))
        p.drain(0.3)
        assert_exactly_once_in_order(p, expected)
    assert seqs_and_texts(people[0]) == seqs_and_texts(people[1]) == seqs_and_texts(people[2])


def test_nicks_who_dms_and_private_rooms_work_across_brokers(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    a, b, c = brokers(tmp_path, procs, redis_server.url)
    alice = plain_client(procs, a.endpoint, "alice")
    bob = plain_client(procs, b.endpoint, "bob")
    # A nick in use on one broker is taken on every broker.
    thief = Proc(["client", "--plain", "--connect", c.endpoint, "--nick", "alice"])
    procs.append(thief)
    thief.wait_for("taken")
    bob.send("/who")
    bob.wait_for(r"alice.*bob|bob.*alice")
    alice.send("/msg bob across the cluster")
    bob.wait_for(r"\[DM\] <alice> across the cluster")
    alice.send("/private #secret")  # invite-only: its traffic never goes on a broadcast
    alice.wait_for(r"^-- joined #secret")
    alice.send("/invite bob", "/who")
    alice.wait_for(r"^-- #secret: alice")  # a round trip after the invite
    bob.send("/join #secret")
    bob.wait_for(r"^-- joined #secret")
    carol = plain_client(procs, c.endpoint, "carol")
    carol.send("/whois bob")
    carol.wait_for(r"bob.*#dev")  # on another broker, seen with its public rooms
    alice.send("secret words")
    bob.wait_for("secret words")
    carol.send("/join #secret")
    carol.wait_for("invite-only")
    assert not any("secret words" in line for line in carol.lines)


def test_a_killed_brokers_clients_fail_over_and_every_message_arrives_once_in_order(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    """kill -9 of one broker in the middle of a 3,000-message stream from several
    senders: its clients fail over, and everyone ends with every message once."""
    bs = brokers(tmp_path, procs, redis_server.url)

    # Each client lists its own broker first, then the others.
    def connect(i: int) -> str:
        own = bs[i % 3].endpoint
        return ",".join([own, *(b.endpoint for b in bs if b.endpoint != own)])

    receivers = [json_client(procs, connect(i), f"recv{i}", "flood") for i in range(3)]
    senders = [json_client(procs, connect(i), f"send{i}", "flood") for i in range(3)]
    expected = {f"s{i}-{n:04d}" for i in range(3) for n in range(1000)}
    for i, s in enumerate(senders):
        s.send(*(f"s{i}-{n:04d}" for n in range(1000)))
    wait_chat_count(receivers[0], 300)  # under way, far from done
    bs[0].p.kill()
    bs[0].wait_exit()
    all_sent_and_shown_once(senders, receivers, expected)


def test_a_killed_pubsub_connection_loses_nothing(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    send, recv = across_two_brokers(tmp_path, procs, redis_server.url)
    expected = {f"m{n:04d}" for n in range(600)}
    send.send(*sorted(expected)[:300])
    wait_chat_count(recv, 100)
    with redis_server.client() as r:
        for _ in range(3):
            r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            time.sleep(0.2)
    send.send(*sorted(expected)[300:])
    wait_chat_count(recv, len(expected))
    recv.drain(0.5)
    assert_exactly_once_in_order(recv, expected)


def test_redis_restarted_empty_is_a_new_epoch_and_clients_are_told(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    a, b = brokers(tmp_path, procs, redis_server.url, 2)
    alice = plain_client(procs, a.endpoint, "alice")
    bob = plain_client(procs, b.endpoint, "bob")
    alice.send("before the reset")
    bob.wait_for("before the reset")
    joined = {p: p.count(r"^-- joined #dev") for p in (alice, bob)}
    redis_server.restart()  # no persistence: it comes back empty
    for person in (alice, bob):
        person.wait_for("history was reset", timeout=LONG)
        # Joined again after the reset (the first join's line matches too).
        person.wait_for(lambda _, p=person: p.count(r"^-- joined #dev") > joined[p], LONG)
    bob.send("after the reset")
    alice.wait_for("after the reset", timeout=LONG)


def test_redis_unavailable_refuses_sends_and_they_arrive_once_when_it_is_back(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    """Redis hung (SIGSTOP) then back: sends are refused as retryable meanwhile,
    kept in the outbox, and every message arrives once; clients stay connected."""
    send, recv = across_two_brokers(tmp_path, procs, redis_server.url)
    expected = {f"m{n:03d}" for n in range(200)}
    send.send(*sorted(expected)[:100])
    wait_chat_count(recv, 100)
    redis_server.pause()
    try:
        send.send(*sorted(expected)[100:])
        send.wait_for("store_unavailable|cannot store", timeout=LONG)
        time.sleep(1.5)  # refused for a while: the outbox holds them
    finally:
        redis_server.resume()
    all_sent_and_shown_once([send], [recv], expected)
    assert not any('"reconnecting' in line for line in recv.lines)


def test_a_dead_brokers_client_that_does_not_come_back_leaves_once(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    """A client of a SIGKILLed broker with nowhere to go: within the timeout (and
    a heartbeat) one surviving broker announces its leave, exactly once, and
    its nick is free again."""
    a, b, c = brokers(tmp_path, procs, redis_server.url)
    lonely = plain_client(procs, a.endpoint, "lonely")  # knows only broker a
    bob = plain_client(procs, b.endpoint, "bob")
    carol = plain_client(procs, c.endpoint, "carol")
    bob.wait_for("carol joined")
    started = time.monotonic()
    a.p.kill()
    a.wait_exit()
    for person in (bob, carol):
        person.wait_for(r"#dev -- lonely left #dev \(timed out\)", timeout=LONG)
    assert time.monotonic() - started < 3 + 0.5 + 5  # timeout + heartbeat + slack
    lonely.p.kill()
    bob.drain(2)  # a second survivor announcing it too would show by now
    assert bob.count(r"lonely left #dev") == 1 and carol.count(r"lonely left #dev") == 1
    again = plain_client(procs, c.endpoint, "lonely")  # the nick is free
    again.send("back")
    bob.wait_for("<lonely> back")


def test_brokers_sharing_one_curve_key_pair_let_a_client_fail_over_with_one_server_key(
    tmp_path: Path, procs: list[Proc], redis_server: Any
) -> None:
    keys = make_keys(tmp_path, ("broker", "alice", "bob"), ("alice", "bob"))
    conf = tmp_path / "broker.toml"
    conf.write_text(
        "[broker]\n"
        f'curve_secret_key = "{keys / "keys" / "broker.key_secret"}"\n'
        f'curve_clients = "{keys / "allowed"}"\n'
        f'cluster = "{redis_server.url}"\n'
    )
    bs = []
    for i in range(2):
        folder = tmp_path / f"b{i}"
        folder.mkdir()
        bs.append(Broker(folder, "--config", str(conf), *OPTS, "--quiet"))
        procs.append(bs[-1])

    def client(nick: str, connect: str) -> Proc:
        env = {
            "ZCHAT_CURVE_KEY": str(keys / "keys" / f"{nick}.key_secret"),
            "ZCHAT_CURVE_SERVER_KEY": str(keys / "keys" / "broker.key"),
        }
        c = Proc(["client", "--plain", "--connect", connect, "--nick", nick, "--room", "dev"],
                 env=env)  # fmt: skip
        procs.append(c)
        c.wait_for(r"^-- joined #dev")
        return c

    alice = client("alice", f"{bs[0].endpoint},{bs[1].endpoint}")
    bob = client("bob", bs[1].endpoint)
    alice.send("before")
    bob.wait_for("<alice> before")
    bs[0].p.kill()
    bs[0].wait_exit()
    alice.wait_for(rf"connected to {bs[1].endpoint} as alice", timeout=LONG)
    alice.send("after")
    bob.wait_for("<alice> after")
    bob.drain(0.5)
    assert bob.count("<alice> before") == 1 and bob.count("<alice> after") == 1
