"""Three hosts on one machine: the shipped configs/multihost files, run unchanged.

Each host is a Linux network namespace with its own address; the broker host
is joined to each client host by a veth pair, and the client hosts resolve
the broker by name (`chat-broker.lan`, via `ip netns exec`'s per-namespace
/etc/hosts). Needs root and iproute2; skipped, saying why, where it cannot.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
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
        for ns in (self.broker, *self.clients.values()):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, ns in enumerate(self.clients.values(), start=1):
            host_if, peer_if = f"vb{i}-{tag}", f"vc{i}-{tag}"
            _ip("link", "add", host_if, "netns", self.broker, "type", "veth",
                "peer", "name", peer_if, "netns", ns)  # fmt: skip
            _ip("-n", self.broker, "addr", "add", f"10.77.{i}.1/24", "dev", host_if)
            _ip("-n", ns, "addr", "add", f"10.77.{i}.2/24", "dev", peer_if)
            _ip("-n", self.broker, "link", "set", host_if, "up")
            _ip("-n", ns, "link", "set", peer_if, "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n10.77.{i}.1 chat-broker.lan\n")
            self.etc.append(etc)

    def run(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

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


def test_three_hosts_from_config_files(hosts: Hosts, tmp_path: Path, procs: list[Proc]) -> None:
    """Broker bound to 0.0.0.0 on one host; clients on two others find it by name."""
    broker = Proc(
        ["broker", "--config", str(CONFIGS / "broker.toml")],
        stdin=False,
        prefix=hosts.run(hosts.broker),
        cwd=tmp_path,
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
    alice.wait_for(r"#dev -- bob joined #dev")

    alice.send("hello from host a")
    bob.wait_for(r"#dev <alice> hello from host a$")
    bob.send("/msg alice hi from host c")
    alice.wait_for(r"\[DM\] <bob> hi from host c$")
    broker.wait_for(r"\[#dev\] <alice> hello from host a")
    assert (tmp_path / "zchat-broker.sqlite3").exists()  # the store named in the file

    bob.send("exit")
    assert bob.wait_exit() == 0
    alice.wait_for(r"#dev -- bob left #dev \(quit\)")
