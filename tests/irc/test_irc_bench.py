"""bench/irc_bench.py --quick end to end, so the IRC benchmark cannot rot.

It runs a real broker with --irc and real IRC clients in worker processes, and
checks that every case ran and nothing was lost; it never judges speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_irc_bench_quick_runs_every_case_and_loses_nothing() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "irc_bench.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=50)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split(" ", 1) for line in done.stdout.splitlines() if line[:2] in ("W1", "W3")]
    kinds = [kind for kind, _ in rows]
    assert kinds == ["W1", "W3"], done.stdout
    w1 = json.loads(rows[0][1])
    assert w1["delivered"] == 1.0 and w1["deliveries_per_s"] > 0
    w3 = json.loads(rows[1][1])
    assert w3["clients"] > 0 and w3["rss_mib"] > 0
