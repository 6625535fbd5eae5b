"""Three hosts on one machine: the shipped configs/multihost files, run unchanged.

Each host is a Linux network namespace with its own address; the broker host
is joined to each client host by a veth pair, and the client hosts resolve
the broker by name (`chat-broker.lan`, via `ip netns exec`'s per-namespace
/etc/hosts). Needs root and iproute2; skipped, saying why, where it cannot.

The link-cut test takes one client host off the network (its veth down) long
enough for both sides to notice (docs/protocol.md §6.7), then puts it back and
checks the session picks up with nothing lost or doubled (§6.1, §6.3, §6.5).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import Proc

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "multihost"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """A broker namespace linked to two client namespaces, torn down on close()."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.broker = f"zcb-{tag}"
        self.clients = {"alice": f"zca-{tag}", "bob": f"zcc-{tag}"}
        self.made: list[str] = []
        self.etc: list[Path] = []
        self.links: dict[str, str] = {}  # client name -> its end of the veth pair
        try:
            self._build(tag)
        except BaseException:
            self.close()  # a half-built set of hosts must not outlive the test
            raise

    def _build(self, tag: str) -> None:
        for ns in (self.broker, *self.clients.values()):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, (name, ns) in enumerate(self.clients.items(), start=1):
            host_if, peer_if = f"vb{i}-{tag}", f"vc{i}-{tag}"
            self.links[name] = peer_if
            _ip("link", "add", host_if, "netns", self.broker, "type", "veth",
                "peer", "name", peer_if, "netns", ns)  # fmt: skip
            _ip("-n", self.broker, "addr", "add", f"10.77.{i}.1/24", "dev", host_if)
            _ip("-n", ns, "addr", "add", f"10.77.{i}.2/24", "dev", peer_if)
            _ip("-n", self.broker, "link", "set", host_if, "up")
            _ip("-n", ns, "link", "set", peer_if, "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            self.etc.append(etc)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n10.77.{i}.1 chat-broker.lan\n")

    def run(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def link(self, name: str, up: bool) -> None:
        """Take a client host off the network (its link down) or put it back."""
        _ip("-n", self.clients[name], "link", "set", self.links[name], "up" if up else "down")

    def close(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for etc in self.etc:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    try:
        made = Hosts()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    yield made
    made.close()


def start_deployment(
    hosts: Hosts, tmp_path: Path, procs: list[Proc], env: dict[str, str] | None = None
) -> tuple[Proc, Proc, Proc]:
    """The shipped configs/multihost files, each on its own host: broker, alice, bob."""
    broker = Proc(
        ["broker", "--config", str(CONFIGS / "broker.toml")],
        stdin=False,
        prefix=hosts.run(hosts.broker),
        cwd=tmp_path,
        env=env,
    )
    procs.append(broker)
    broker.wait_for("clients connect to tcp://0.0.0.0:5555")

    def start(name: str) -> Proc:
        c = Proc(
            ["client", "--plain", "--config", str(CONFIGS / f"{name}.toml")],
            prefix=hosts.run(hosts.clients[name]),
        )
        procs.append(c)
        c.wait_for(r"^-- joined #dev", timeout=20)
        return c

    alice = start("alice")
    bob = start("bob")
    alice.wait_for(r"#dev -- bob joined #dev$")
    return broker, alice, bob


def test_three_hosts_from_config_files(hosts: Hosts, tmp_path: Path, procs: list[Proc]) -> None:
    """Broker bound to 0.0.0.0 on one host; clients on two others find it by name."""
    broker, alice, bob = start_deployment(hosts, tmp_path, procs)

    alice.send("hello from host a")
    bob.wait_for(r"#dev <alice> hello from host a$")
    bob.send("/msg alice hi from host c")
    alice.wait_for(r"\[DM\] <bob> hi from host c$")
    broker.wait_for(r"\[#dev\] <alice> hello from host a")
    assert (tmp_path / "zchat-broker.sqlite3").exists()  # the store named in the file

    bob.send("exit")
    assert bob.wait_exit() == 0
    alice.wait_for(r"#dev -- bob left #dev \(quit\)")


def since(proc: Proc, mark: int, pattern: str) -> Callable[[str], bool]:
    """A wait_for condition: a line matching ``pattern`` among those after ``mark``.

    ``Proc.wait_for`` also looks at lines seen before; this one asks for a new
    line (a second ``connected as alice``, not the first).
    """
    rx = re.compile(pattern)
    return lambda _line: any(rx.search(line) for line in proc.lines[mark:])


def test_link_cut_and_restored(hosts: Hosts, tmp_path: Path, procs: list[Proc]) -> None:
    """Alice's host drops off the network and comes back: announced, resumed, nothing lost.

    The broker runs the shipped broker.toml with ZCHAT_HEARTBEAT/ZCHAT_TIMEOUT
    overriding the file's 5 s / 15 s (environment over file): a 15 s timeout
    would not expire alice within the waits below.
    """
    env = {"ZCHAT_HEARTBEAT": "0.5", "ZCHAT_TIMEOUT": "3"}
    broker, alice, bob = start_deployment(hosts, tmp_path, procs, env)
    alice.send("before the cut")
    bob.wait_for(r"#dev <alice> before the cut$")
    bob.send("seen you")
    alice.wait_for(r"#dev <bob> seen you$")

    # The cut. Both sides notice after `timeout` seconds of silence (§6.7): 3 s
    # from the environment, so well within 8 s; the file's 15 s would fail here.
    mark_a, mark_b, mark_k = len(alice.lines), len(bob.lines), len(broker.lines)
    hosts.link("alice", up=False)
    broker.wait_for(since(broker, mark_k, r" - alice gone \(timed out\)$"), timeout=8)
    bob.wait_for(since(bob, mark_b, r"#dev -- alice left #dev \(timed out\)$"), timeout=3)
    alice.wait_for(since(alice, mark_a, r"^-- .*; reconnecting \.\.\.$"), timeout=8)

    during = [f"while alice is away {i}" for i in range(1, 6)]
    bob.send(*during)
    bob.wait_for(rf"#dev <bob> {during[-1]}$")  # stored and published: the broker has them
    alice.send("typed while cut")  # no broker to take it: it waits in alice's outbox

    hosts.link("alice", up=True)
    # Her session expired, so the HELLO with her token registers afresh (§6.1);
    # the rejoin's JOINED.last shows the gap, which HISTORY fills (§6.5); the
    # outbox is resent and acknowledged (§6.3).
    alice.wait_for(since(alice, mark_a, r"^-- connected as alice$"), timeout=15)
    bob.wait_for(since(bob, mark_b, r"#dev -- alice joined #dev$"))
    bob.wait_for(r"#dev <alice> typed while cut$")
    alice.wait_for(rf"#dev <bob> {during[-1]}$")

    # A last round trip in each direction: anything doubled would have come by now.
    alice.send("back again")
    bob.wait_for(r"#dev <alice> back again$")
    bob.send("welcome back")
    alice.wait_for(r"#dev <bob> welcome back$")
    broker.wait_for(r"\[#dev\] <bob> welcome back$")

    for text in during:
        assert alice.count(rf"#dev <bob> {text}$") == 1, text
    assert alice.count(r"#dev -- alice left #dev \(timed out\)$") == 1  # her own absence, seen
    assert alice.count(r"#dev <alice> typed while cut$") == 1
    assert bob.count(r"#dev <alice> typed while cut$") == 1
    assert broker.count(r"\[#dev\] <alice> typed while cut$") == 1  # stored once
    assert bob.count(r"#dev -- alice joined #dev$") == 2  # in his join history, then live
    assert broker.count(r" \+ alice arrived$") == 2  # the expired session was not resumed
    assert broker.count(r" \+ alice joined #dev$") == 2
    # The order alice sees is the room's order: the gap before her own line.
    lines = alice.lines[mark_a:]
    shown = [next(i for i, ln in enumerate(lines) if ln.endswith(f"<bob> {t}")) for t in during]
    assert shown == sorted(shown)
    assert shown[-1] < next(
        i for i, ln in enumerate(lines) if ln.endswith("<alice> typed while cut")
    )
