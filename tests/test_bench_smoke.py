"""The benchmark suite's quick mode, end to end, so bench/ cannot rot (issues 6, 12).

Each test runs ``bench/run.py --quick`` as a real process (a broker, the peers,
load-generator workers driving zchat through its real client API) and checks
that every case ran and that nothing was lost; it never judges speed (the
benchmark reports that, tests never time anything). The mosquitto and NATS
peers run only where bench/setup.sh installed them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.harness import have_nats_py, have_paho, mosquitto_path, nats_path

REPO = Path(__file__).resolve().parent.parent


def run_quick(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "| workload" in done.stdout  # the table was printed
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def check_cases(data: dict[str, Any], systems: set[str]) -> None:
    cases = data["cases"]
    assert cases
    assert [c for c in cases if "error" in c] == []
    assert {c["system"] for c in cases if c["workload"] != "W5"} == systems
    for c in cases:
        if c["workload"] in ("W1", "W2", "W4"):
            assert c["delivered"] == c["expected"], c
            assert c["dups"] == 0, c
            assert c["server_cpu"] >= 0 and c["recv_cpu"] > 0, c
        if c["workload"] == "W3":
            assert c["missed"] == 0, c
            assert c["connect_s"] > 0 and c["broadcast_s"] >= 0, c


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_run_zchat_and_proxy(tmp_path: Path) -> None:
    data = run_quick(tmp_path, "--systems", "zchat,proxy", timeout=50)
    check_cases(data, {"zchat", "proxy"})
    kinds = {(c["workload"], c["system"]) for c in data["cases"]}
    assert {("W1", "zchat"), ("W2", "proxy"), ("W3", "zchat"), ("W3", "proxy")} <= kinds
    oneshot = next(c for c in data["cases"] if c["workload"] == "W5")
    assert oneshot["zchat send"] > 0


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_quick_run_mosquitto_peer(tmp_path: Path) -> None:
    if mosquitto_path() is None or not have_paho():
        pytest.skip("the mosquitto peer needs mosquitto and paho-mqtt: run bench/setup.sh")
    data = run_quick(tmp_path, "--systems", "mqtt", "--only", "W1,W2,W3", timeout=25)
    check_cases(data, {"mqtt"})


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_quick_run_nats_peer(tmp_path: Path) -> None:
    if nats_path() is None or not have_nats_py():
        pytest.skip("the NATS peer needs nats-server and nats-py: run bench/setup.sh")
    data = run_quick(tmp_path, "--systems", "nats", "--only", "W1,W2,W3", timeout=25)
    check_cases(data, {"nats"})


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_cluster_bench_quick_run_loses_nothing_across_brokers(tmp_path: Path) -> None:
    """bench/cluster_bench.py: two brokers on a real redis-server, receivers on both."""
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cluster_bench.py"), "--quick", "--brokers", "2",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80,
    )  # fmt: skip
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    records = json.loads(out.read_text())
    assert {r["brokers"] for r in records} == {2}
    for r in records:
        assert "error" not in r, r
        assert r["delivered"] == r["expected"] and r["dups"] == 0, r
        if r["brokers"]:
            assert r["redis_cpu"] > 0, r
