"""Run zchat's benchmark suite and print one table: ``python3 bench/run.py [--quick]``.

See bench/README.md for what each workload measures and how ratios are computed.
Exit status: 0 when every case ran (targets met or not), 1 when a case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, workloads
from bench.harness import (
    REPO,
    BenchError,
    Harness,
    have_nats_py,
    have_paho,
    mosquitto_path,
    nats_path,
)
from bench.report import Results
from bench.workloads import MQTT, NATS, ZCHAT, Sizes

#: File descriptors the zchat broker holds besides its clients' connections
#: (stdio, SQLite, libzmq's mailboxes and listeners), with room to spare.
BROKER_FD_RESERVE = 128


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    ap.add_argument("--only", default="W1,W2,W3,W5",
                    help="workloads to run [W1,W2,W3,W5; W4 on request]")  # fmt: skip
    ap.add_argument("--systems", default="zchat,proxy,mqtt,nats", help="systems to run [all]")
    ap.add_argument("--set", action="append", default=[], metavar="SIZE=VALUE",
                    help="override one of workloads.Sizes, e.g. --set w3_clients=1000,5000 "
                         "--set w1_repeats=1 (for trying things; reports say so)")  # fmt: skip
    ap.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="also write machine, versions and table")
    ap.add_argument("--profile", action="store_true",
                    help="afterwards, run W1 (largest K) once more with the broker and a "
                         "receiver process under cProfile, W3 (middle size) with the broker "
                         "under cProfile, time zchat send's imports, and print where the "
                         "time goes")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every process started")
    return ap.parse_args(argv)


def client_costs() -> dict[str, float]:
    """Microseconds per call of the client-side codec, for the notes under the table."""
    import uuid

    from zchat.protocol import decode_broadcast, encode
    from zchat.protocol import messages as m

    text = "x" * 100
    event = encode(m.Event("bench", 5, "msg", "alice", text, time.time(), uuid.uuid4().hex))
    n = 5_000
    return {
        "decode_broadcast(EVENT)": timeit.timeit(lambda: decode_broadcast(event), number=n) / n,
        "encode(Say(...))": timeit.timeit(
            lambda: encode(m.Say(rid=5, room="bench", id=uuid.uuid4().hex, text=text)), number=n
        )
        / n,
    }


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        try:
            self.sizes = override(Sizes.quick() if args.quick else Sizes(), args.set)
        except (AttributeError, ValueError, SyntaxError) as exc:
            raise SystemExit(f"bench: bad --set: {exc}") from None
        self.only = {w.strip().upper() for w in args.only.split(",")}
        self.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        self.h = Harness(keep=args.keep, verbose=args.verbose)
        self.res = Results()
        if MQTT in self.systems:
            if mosquitto_path() is None:
                self.res.skipped[MQTT] = "mosquitto not installed (run bench/setup.sh)"
            elif not have_paho():
                self.res.skipped[MQTT] = "paho-mqtt not installed (run bench/setup.sh)"
        if NATS in self.systems:
            if nats_path() is None:
                self.res.skipped[NATS] = "nats-server not installed (run bench/setup.sh)"
            elif not have_nats_py():
                self.res.skipped[NATS] = "nats-py not installed (run bench/setup.sh)"
        self.active = [s for s in self.systems if s not in self.res.skipped]

    def case(self, w: str, param: Any, system: str, fn: Any, label: str = "") -> dict[str, Any]:
        """Run one case, record it (an error too) and return its record."""
        label = label or f"{w} {param} {system}"
        t = time.monotonic()
        print(f"  {label} ...", end="", flush=True, file=sys.stderr)
        try:
            rec = fn()
        except (BenchError, RuntimeError, KeyError, ValueError, OSError) as exc:
            rec = {"error": f"{type(exc).__name__}: {exc}"}
            if self.args.verbose:
                traceback.print_exc()
        self.res.put(w, param, system, rec)
        status = "error: " + rec["error"].splitlines()[0] if "error" in rec else "ok"
        print(f" {status} ({time.monotonic() - t:.1f} s)", file=sys.stderr, flush=True)
        return rec

    def fanout(self) -> None:
        """W1 and W4, each case ``w1_repeats`` times, the systems interleaved in
        every round (zchat store on, store off, proxy, mosquitto) so drift in the
        machine's load hits them alike; each cell is the run with the median
        deliveries/s, delivered/expected adds up every run."""
        sz, h = self.sizes, self.h
        for k, n in zip(sz.w1_subscribers, sz.w1_messages, strict=True):
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            plan = [("W1", s, "file") for s in self.active if "W1" in self.only or s == ZCHAT]
            if ZCHAT in self.active and "W4" in self.only:
                plan.insert(1, ("W4", ZCHAT, ":memory:"))
            for rep in range(sz.w1_repeats):
                for w, system, store in plan:
                    label = f"{w} {k} {system} ({rep + 1}/{sz.w1_repeats})"

                    def once(s: str = system, st: str = store, k: int = k, n: int = n) -> Any:
                        return workloads.pubsub(
                            h, s, receivers=k, senders=1, messages=n, rate=0, latency=False,
                            sizes=sz, store=st,
                        )  # fmt: skip

                    rec = self.case(w, k, system, once, label)
                    runs.setdefault((w, system), []).append(rec)
            for (w, system), recs in runs.items():
                self.res.put(w, k, system, median_run(recs))

    def run(self) -> int:
        sz = self.sizes
        h = self.h
        started = time.monotonic()
        watch = report.CpuWatch()
        info = report.machine()
        vers = report.versions(str(REPO))
        print(f"zchat bench ({'quick' if self.args.quick else 'full'}), "
              f"temp dir {h.tmp}", file=sys.stderr)  # fmt: skip
        if {"W1", "W4"} & self.only:
            self.fanout()
        if "W2" in self.only:
            for rate in sz.w2_rates:
                n = int(rate * sz.w2_seconds)
                for system in self.active:
                    self.case("W2", rate, system, lambda s=system, r=rate, n=n: workloads.pubsub(
                        h, s, receivers=sz.w2_listeners, senders=sz.w2_chatters, messages=n,
                        rate=r, latency=True, sizes=sz))  # fmt: skip
        if "W3" in self.only:
            for n in sz.w3_clients:
                for system in self.active:
                    ran = self.w3_fit(system, n)
                    self.case("W3", n, system, lambda s=system, ran=ran: workloads.scale(
                        h, s, ran, sz))  # fmt: skip
        if "W5" in self.only and ZCHAT in self.active:
            self.case("W5", "oneshot", "all", lambda: workloads.oneshot(
                h, sz.w5_reps, MQTT in self.active))  # fmt: skip
        profile = ""
        if self.args.profile and ZCHAT in self.active:
            profile = self.profile()
        costs = client_costs()
        table = report.build(self.res, sz, self.args.quick)
        elapsed = time.monotonic() - started
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        info["bench wall time"] = f"{elapsed:.0f} s"
        info["CPU used by other processes during the run"] = watch.summary()
        spread = [
            f"{w} 1→{k} {title(s)}{' store off' if w == 'W4' else ''}: "
            + " / ".join(report.num(x) for x in rec["runs"])
            for (w, k, s), rec in self.res.cases.items()
            if w in ("W1", "W4") and len(rec.get("runs", ())) > 1
        ]
        if spread:
            self.res.notes.insert(
                0,
                f"W1/W4 cells are the median of {sz.w1_repeats} runs; deliveries/s of each: "
                + "; ".join(spread),
            )
        notes = [
            *(f"{title(s)} skipped: {why}" for s, why in self.res.skipped.items()),
            *self.res.notes,
            "client-side codec per call (this process): "
            + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in costs.items()),
        ]
        out = [
            "## Machine", report.bullets(info), "", "## Versions", report.bullets(vers), "",
            "## Results", table.text(), "", "## Targets (issue 12)", report.verdict_lines(table),
            "", "## Notes", *(f"- {n}" for n in notes),
        ]  # fmt: skip
        errors = self.res.errors()
        if errors:
            out += ["", "## Errors", *(f"- {e}" for e in errors)]
        if profile:
            out += ["", "## Profiles", "```", profile, "```"]
        text = "\n".join(out)
        print(text)
        if self.args.markdown:
            Path(self.args.markdown).write_text(text + "\n")
        if self.args.json:
            data = {
                "machine": info,
                "versions": vers,
                "sizes": sz.__dict__,
                "cases": [
                    {"workload": w, "param": p, "system": s, **rec}
                    for (w, p, s), rec in self.res.cases.items()
                ],
                "skipped": self.res.skipped,
            }
            Path(self.args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
        return 1 if errors else 0

    def w3_fit(self, system: str, asked: int) -> int:
        """The most clients this machine's open-file limit lets the server hold.

        A zchat client holds two connections to the broker (DEALER and SUB), so
        the broker needs two file descriptors per client; the peers need one.
        """
        per = 2 if system == ZCHAT else 1
        fit = (self.h.nofile - BROKER_FD_RESERVE) // per - 1  # the sender is a client too
        if asked <= fit:
            return asked
        self.res.notes.append(
            f"W3 {title(system)}: {asked:,} clients need {asked * per:,}+ file descriptors in "
            f"the server; the open-file limit here is {self.h.nofile:,} (the hard limit: raising "
            f"it towards fs.nr_open needs CAP_SYS_RESOURCE, which this process lacks), so "
            f"{fit:,} were run"
        )
        return fit

    def profile(self) -> str:
        """The broker and a receiver process under cProfile in W1, the broker in W3,
        and ``zchat send``'s imports."""
        sz = self.sizes
        k, n = sz.w1_subscribers[-1], sz.w1_messages[-1]
        parts = []
        prof = self.h.tmp / "broker-w1.prof"
        client = self.h.tmp / "client-w1.prof"
        self.case("profile W1", k, ZCHAT, lambda: workloads.pubsub(
            self.h, ZCHAT, receivers=k, senders=1, messages=n, rate=0, latency=False, sizes=sz,
            prefix=("-m", "cProfile", "-o", str(prof)), recv_profile=str(client)))  # fmt: skip
        parts.append(f"W1 1→{k}, {n:,} messages, broker under cProfile:\n" + _top(prof))
        parts.append(f"W1 1→{k}, {n:,} messages, one receiver process ({k // sz.recv_procs} "
                     "sessions of the real client) under cProfile:\n"
                     + _top(client))  # fmt: skip
        size = sz.w3_clients[len(sz.w3_clients) // 2]
        prof = self.h.tmp / "broker-w3.prof"
        client = self.h.tmp / "client-w3.prof"
        self.case("profile W3", size, ZCHAT, lambda: workloads.scale(
            self.h, ZCHAT, size, sz, prefix=("-m", "cProfile", "-o", str(prof)),
            recv_profile=str(client)))  # fmt: skip
        parts.append(f"W3 {size:,} clients, broker under cProfile:\n" + _top(prof))
        parts.append(f"W3 {size:,} clients, the first client process under cProfile:\n"
                     + _top(client))  # fmt: skip
        parts.append("zchat send, slowest imports (python -X importtime, self µs):\n"
                     + _importtime())  # fmt: skip
        return "\n\n".join(parts)


def _top(path: Path, limit: int = 22, only: str = "zchat/") -> str:
    """The functions with the most own time, and zchat's by cumulative time."""
    import pstats
    from io import StringIO

    if not path.exists():
        return "no profile written (the process did not exit cleanly)"
    out = []
    for order, pattern, count in (("tottime", "", limit), ("cumulative", only, 14)):
        buf = StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.sort_stats(order).print_stats(pattern, count)
        text = buf.getvalue()
        head = text.find("   ncalls")
        out.append(f"-- by {order}" + (f" ({pattern})" if pattern else "") + ":\n"
                   + (text[head:].rstrip() if head >= 0 else text.strip()))  # fmt: skip
    return "\n".join(out)


def _importtime(limit: int = 12) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import zchat.cli, zchat.client.api"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].strip().startswith("import time:"):
            try:
                rows.append((int(parts[0].split(":")[1]), int(parts[1]), parts[2].rstrip()))
            except ValueError:
                continue
    total = max((cum for _, cum, name in rows if name.strip() == "zchat.cli"), default=0)
    rows.sort(reverse=True)
    lines = [f"{own:>8} {cum:>8}  {name.strip()}" for own, cum, name in rows[:limit]]
    head = f"import zchat.cli: {total / 1000:.1f} ms in all\n    self  cumul.  module\n"
    return head + "\n".join(lines)


def override(sizes: Sizes, settings: list[str]) -> Sizes:
    """``sizes`` with ``name=value`` settings applied (a tuple as a comma list)."""
    import ast
    import dataclasses

    changes: dict[str, Any] = {}
    for item in settings:
        name, _, raw = item.partition("=")
        name = name.strip()
        old = getattr(sizes, name)  # AttributeError: no such size
        value = ast.literal_eval(raw)
        if isinstance(old, tuple) and not isinstance(value, tuple):
            value = (value,)
        changes[name] = value
    return dataclasses.replace(sizes, **changes)


def median_run(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median deliveries/s, carrying every run's rate and the
    deliveries of all runs; an error if no run succeeded."""
    ok = sorted((r for r in recs if "error" not in r), key=lambda r: r["deliveries_per_s"])
    if not ok:
        return recs[-1]
    out = dict(ok[(len(ok) - 1) // 2])
    out["runs"] = [r["deliveries_per_s"] for r in ok]
    out["delivered"] = sum(r["delivered"] for r in ok)
    out["expected"] = sum(r["expected"] for r in ok)
    out["failed_runs"] = len(recs) - len(ok)
    return out


def title(system: str) -> str:
    return report.TITLES.get(system, system)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runner = Runner(args)
    try:
        return runner.run()
    except KeyboardInterrupt as exc:
        print(f"\nbench: interrupted ({exc or 'Ctrl-C'}); every process it started is stopped",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        runner.h.close()


if __name__ == "__main__":
    sys.exit(main())
