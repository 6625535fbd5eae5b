"""bench/web_bench.py --quick runs end to end (the figures themselves are in the report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_web_bench_quick_run() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "web_bench.py"), "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "W1 web fan-out 1→10, 500×100 B:" in done.stdout
    assert "5,000/5,000 delivered" in done.stdout  # nothing lost
    assert "W3 web 200 idle WebSocket clients" in done.stdout
