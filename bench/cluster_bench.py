"""W1 and W2 on a cluster: 1, 2 and 3 brokers on one Redis beside one broker on SQLite (issue 13).

    python3 bench/cluster_bench.py                 # W1 1→10, 1→100; W2 at 500 msg/s
    python3 bench/cluster_bench.py --quick         # a smoke run in seconds
    python3 bench/cluster_bench.py --markdown FILE # also write the table

Every configuration runs the same workloads of bench/workloads.py with the project's real client
(``zchat.connect`` sessions, many per process): one sender on the first broker, the receiver
processes spread over the brokers in turn, so with two or more brokers most deliveries cross from
one broker to another through Redis. Redis persists as docs/deploy.md advises (AOF, fsync every
second). Reported per case: deliveries/s, delivered/expected, the brokers' CPU per message (all
brokers together) and Redis's, and W2's latency percentiles. On a 2-core machine more brokers
cannot be faster; the point is what each one costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, workloads
from bench.harness import BenchError, Harness
from bench.workloads import ZCHAT, Sizes

#: (label, brokers): 0 is the single broker on SQLite.
SETUPS = (("1 broker, SQLite", 0), ("1 broker, Redis", 1), ("2 brokers, Redis", 2),
          ("3 brokers, Redis", 3))  # fmt: skip


def cases(sizes: Sizes) -> list[tuple[str, dict[str, Any]]]:
    """(name, pubsub arguments) of each workload."""
    out = [
        (f"W1 1→{k}", {"receivers": k, "senders": 1, "messages": n, "rate": 0, "latency": False})
        for k, n in zip(sizes.w1_subscribers, sizes.w1_messages, strict=True)
    ]
    rate = sizes.w2_rates[0]
    out.append((
        f"W2 {rate} msg/s",
        {"receivers": sizes.w2_listeners, "senders": sizes.w2_chatters,
         "messages": int(rate * sizes.w2_seconds), "rate": rate, "latency": True},
    ))  # fmt: skip
    return out


def row(name: str, label: str, rec: dict[str, Any]) -> str:
    if "error" in rec:
        return f"| {name} | {label} | error: {rec['error'].splitlines()[0]} | | | | |"
    msgs = max(rec["messages"], 1)
    lat = rec.get("latency") or {}
    latency = f"{lat['p50'] * 1e3:.1f} / {lat['p99'] * 1e3:.1f}" if lat else ""
    redis = f"{rec['redis_cpu'] / msgs * 1e6:.0f}" if "redis_cpu" in rec else "–"
    return (
        f"| {name} | {label} | {report.num(rec['deliveries_per_s'])} | "
        f"{rec['delivered']:,}/{rec['expected']:,} | {rec['server_cpu'] / msgs * 1e6:.0f} | "
        f"{redis} | {latency} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    ap.add_argument("--brokers", default="0,1,2,3", help="setups to run (0: SQLite) [all]")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    args = ap.parse_args(argv)
    # Receiver processes on every broker: most deliveries cross brokers.
    sizes = replace(Sizes.quick() if args.quick else Sizes(), recv_procs=2 if args.quick else 3)
    wanted = {int(b) for b in args.brokers.split(",")}
    h = Harness(keep=args.keep)
    started = time.monotonic()
    info = report.machine()  # the load average at the start
    lines = [
        "| workload | setup | deliveries/s | delivered | brokers' CPU µs/msg | Redis CPU µs/msg "
        "| p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    records: list[dict[str, Any]] = []
    failed = False
    try:
        for name, kw in cases(sizes):
            for label, brokers in SETUPS:
                if brokers not in wanted:
                    continue
                print(f"  {name} {label} ...", end="", flush=True, file=sys.stderr)
                t = time.monotonic()
                try:
                    rec = workloads.pubsub(h, ZCHAT, sizes=sizes, brokers=brokers, **kw)
                except (BenchError, RuntimeError, KeyError, ValueError, OSError) as exc:
                    rec = {"error": f"{type(exc).__name__}: {exc}"}
                    failed = True
                print(f" ({time.monotonic() - t:.1f} s)", file=sys.stderr, flush=True)
                lines.append(row(name, label, rec))
                records.append({"workload": name, "setup": label, "brokers": brokers, **rec})
    finally:
        h.close()
    info["bench wall time"] = f"{time.monotonic() - started:.0f} s"
    text = "\n".join(["## Machine", report.bullets(info), "", "## Results", *lines])
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
