"""The one table: measurements, ratios against the peers, issue-12 targets, verdicts.

Ratios are always zchat ÷ peer, from the same run: above 1 means zchat did
more (deliveries/s) or took longer (latency, time, memory, CPU); the target
column says which way is good. Targets are reported, never asserted.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYSTEMS = ("zchat", "proxy", "mqtt", "nats")
PEERS = SYSTEMS[1:]
TITLES = {"zchat": "zchat", "proxy": "zmq.proxy", "mqtt": "mosquitto", "nats": "NATS"}

Record = dict[str, Any]
#: A cell: the text shown and the number ratios and verdicts use.
Format = Callable[[Record], tuple[str, float] | None]
#: A verdict from every system's number (None: not measured): (met/missed/n/a, numbers).
Judge = Callable[[dict[str, float | None]], tuple[str, str]]


@dataclass
class Results:
    """Every case's record, keyed by (workload, parameter, system)."""

    cases: dict[tuple[str, Any, str], Record] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why
    notes: list[str] = field(default_factory=list)

    def put(self, w: str, param: Any, system: str, record: Record) -> None:
        self.cases[(w, param, system)] = record

    def get(self, w: str, param: Any, system: str) -> Record | None:
        rec = self.cases.get((w, param, system))
        return None if rec is None or "error" in rec else rec

    def errors(self) -> list[str]:
        return [
            f"{w} {param} {system}: {rec['error']}"
            for (w, param, system), rec in self.cases.items()
            if "error" in rec
        ]


# ------------------------------------------------------------------ formatting


def num(x: float) -> str:
    if x >= 100_000:
        return f"{x / 1000:,.0f}k"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def ms(seconds: float) -> str:
    v = seconds * 1000
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def us(seconds: float) -> str:
    v = seconds * 1e6
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isinf(a) or math.isinf(b):
        return "—"
    return f"{a / b:.2f}×"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "missed"


def f_rate(rec: Record) -> tuple[str, float]:
    return num(rec["deliveries_per_s"]), rec["deliveries_per_s"]


def f_delivered(rec: Record) -> tuple[str, float]:
    share = rec["delivered"] / rec["expected"]
    lost = f" ({1 - share:.2%} lost)" if share < 1 else ""
    if share < 1 and rec.get("cut"):
        lost = f" ({1 - share:.2%} not there {rec['cut']:.0f} s after the last send)"
    return f"{rec['delivered']:,}/{rec['expected']:,}{lost}", share


def f_latency(rec: Record) -> tuple[str, float] | None:
    pc = rec.get("latency") or {}
    if not pc:
        return None
    shown = " / ".join(ms(pc[k]) for k in ("p50", "p90", "p99", "max"))
    if rec.get("cut") and rec["delivered"] < rec["expected"]:
        shown = "≥ " + shown  # what never arrived would have been later still
        if rec["delivered"] < 0.99 * rec["expected"]:  # over 1% never came: p99 unknown
            return shown, float("inf")
    return shown, pc["p99"]


def f_ack(rec: Record) -> tuple[str, float] | None:
    if "ack_p99" not in rec:
        return None
    return f"{ms(rec['ack_p50'])} / {ms(rec['ack_p99'])}", rec["ack_p99"]


def f_server_cpu(rec: Record) -> tuple[str, float] | None:
    """The server process's CPU (/proc/PID/stat, all threads) from GO to the
    end, per message published."""
    if not rec.get("messages") or "server_cpu" not in rec:
        return None
    per = rec["server_cpu"] / rec["messages"]
    return us(per), per


def f_recv_cpu(rec: Record) -> tuple[str, float] | None:
    """The receiver processes' CPU from GO to the end, per delivered event."""
    if not rec.get("delivered"):
        return None
    if rec.get("cut") and rec["delivered"] < 0.99 * rec["expected"]:
        return None  # stopped mid-backlog: its CPU went into events not yet counted
    per = rec["recv_cpu"] / rec["delivered"]
    return us(per), per


def f_send_rate(rec: Record) -> tuple[str, float]:
    return f"{rec['send_rate']:,.0f}", rec["send_rate"]


def f_connect(rec: Record) -> tuple[str, float]:
    if rec["connect_s"] is None:  # not all ready within the limit
        return f"> {rec['ready_limit']:.0f} s ({rec['ready']:,} ready)", float("inf")
    refused = rec.get("refused") or {}
    if refused:  # these never got ready: the time is for the others
        why = ", ".join(f"{n:,} {code}" for code, n in refused.items())
        return f"{rec['connect_s']:.2f} s ({why})", float("inf")
    return f"{rec['connect_s']:.2f} s", rec["connect_s"]


def f_rss(rec: Record) -> tuple[str, float] | None:
    if "rss_per_client" not in rec:
        return None
    per = rec["rss_per_client"]
    return f"{per / 1000:.1f} KB ({rec['rss'] / 2**20:,.0f} MiB)", per


def f_broadcast(rec: Record) -> tuple[str, float] | None:
    if "broadcast_s" not in rec:
        return None
    if rec.get("missed"):  # not there when the bench stopped waiting
        return (
            f"{rec['missed']:,} not reached (the others by {ms(rec['broadcast_s'])} ms)",
            float("inf"),
        )
    return f"{ms(rec['broadcast_s'])} ms", rec["broadcast_s"]


# ------------------------------------------------------------------- verdicts


def _peers(v: dict[str, float | None], fmt: Callable[[float], str]) -> str:
    return ", ".join(f"{TITLES[s]} {fmt(x)}" for s in PEERS if (x := v.get(s)) is not None)


def j_w1(v: dict[str, float | None]) -> tuple[str, str]:
    z, p, q = v["zchat"], v["proxy"], v["mqtt"]
    if z is None or p is None:
        return "n/a", "not measured"
    nums = f"{z / p:.2f}× proxy" + (f", {z / q:.2f}× mosquitto" if q else "")
    return verdict(z >= 0.5 * p and (q is None or z >= 2 * q)), nums


def j_nothing_lost(v: dict[str, float | None]) -> tuple[str, str]:
    z = v["zchat"]
    if z is None:
        return "n/a", "not measured"
    return verdict(z == 1.0), f"zchat delivered {z:.2%}"


def j_broker_cpu(v: dict[str, float | None]) -> tuple[str, str]:
    z = v["zchat"]
    if z is None:
        return "n/a", "not measured"
    return verdict(z <= 15e-6), f"{us(z)} µs per message; " + _peers(v, lambda x: us(x) + " µs")


def j_client_cpu(v: dict[str, float | None]) -> tuple[str, str]:
    z = v["zchat"]
    if z is None:
        return "n/a", "not measured"
    return verdict(z <= 8e-6), f"{us(z)} µs per event; " + _peers(v, lambda x: us(x) + " µs")


def j_w2_500(v: dict[str, float | None]) -> tuple[str, str]:
    z, p = v["zchat"], v["proxy"]
    if z is None or p is None:
        return "n/a", "not measured"
    if math.isinf(z):
        return "missed", "over 1% of the messages never arrived"
    return verdict(z <= 2 * p), f"p99 {ms(z)} ms = {z / p:.2f}× proxy's {ms(p)} ms"


def j_w2_2000(v: dict[str, float | None]) -> tuple[str, str]:
    z, q, n = v["zchat"], v["mqtt"], v["nats"]
    if z is None or (q is None and n is None):
        return "n/a", "not measured"
    ok = (q is None or z < q) and (n is None or z < n)
    shown = "over 1% never arrived" if math.isinf(z) else f"{ms(z)} ms"
    return verdict(ok), f"p99 {shown}; " + _peers(
        v, lambda x: "—" if math.isinf(x) else ms(x) + " ms"
    )


def j_w3_time(v: dict[str, float | None]) -> tuple[str, str]:
    z, p = v["zchat"], v["proxy"]
    if z is None or p is None:
        return "n/a", "not measured"
    if math.isinf(z):
        return "missed", f"not all ready (refused, or not within the limit); proxy's {p:.2f} s"
    return verdict(z <= 2 * p), f"{z:.2f} s = {z / p:.2f}× proxy's {p:.2f} s"


def j_w3_rss(v: dict[str, float | None]) -> tuple[str, str]:
    z = v["zchat"]
    if z is None:
        return "n/a", "not measured"
    return verdict(z <= 40_000), f"{z / 1000:.1f} KB per idle client"


def j_w3_clients(rec: Record | None, asked: int) -> Judge:
    def judge(v: dict[str, float | None]) -> tuple[str, str]:
        if rec is None:
            return "n/a", "not measured"
        n = int(rec.get("ready", rec["clients"]))
        return verdict(n >= 10_000 and rec.get("missed") == 0), (
            f"{n:,} of {asked:,} clients ready in one room"
        )

    return judge


def j_w3_broadcast(rec: Record | None) -> Judge:
    def judge(v: dict[str, float | None]) -> tuple[str, str]:
        z = v["zchat"]
        if rec is None:
            return "n/a", "not measured"
        if z is None:
            return "missed", f"only {rec.get('ready', 0):,} clients were ready: nothing sent"
        n = int(rec["clients"]) - int(rec.get("missed", 0))
        if math.isinf(z):
            return "missed", f"{rec['missed']:,} of {rec['clients']:,} clients not reached"
        return verdict(z < 1.0 and n >= 10_000), f"{ms(z)} ms to {n:,} clients"

    return judge


# ---------------------------------------------------------------------- table


class Table:
    HEAD = (
        "workload", "metric", "zchat", "zmq.proxy", "mosquitto", "NATS", "zchat ÷ proxy",
        "zchat ÷ mosquitto", "zchat ÷ NATS", "issue-12 target", "verdict",
    )  # fmt: skip

    def __init__(self, res: Results, quick: bool = False) -> None:
        self.res = res
        self.quick = quick
        self.rows: list[tuple[str, ...]] = []
        self.verdicts: list[tuple[str, str, str]] = []  # (target, verdict, numbers)

    def _cell(self, w: str, param: Any, system: str, fmt: Format) -> tuple[str, float | None]:
        if system in self.res.skipped:
            return "skipped", None
        if (w, param, system) not in self.res.cases:
            return "—", None
        rec = self.res.get(w, param, system)
        shown = fmt(rec) if rec is not None else None
        if shown is None:
            return ("error" if rec is None else "—"), None
        return shown

    def row(
        self,
        workload: str,
        metric: str,
        w: str,
        param: Any,
        fmt: Format,
        target: str = "",
        judge: Judge | None = None,
    ) -> None:
        cells = {s: self._cell(w, param, s, fmt) for s in SYSTEMS}
        v = {s: cells[s][1] for s in SYSTEMS}
        z = v["zchat"]
        self.add(workload, metric, [cells[s][0] for s in SYSTEMS],
                 [ratio(z, v[s]) for s in PEERS], target,
                 judge(v) if judge else None)  # fmt: skip

    def add(
        self,
        workload: str,
        metric: str,
        cells: list[str],
        ratios: list[str],
        target: str = "",
        judged: tuple[str, str] | None = None,
    ) -> None:
        shown = ""
        if judged is not None:
            shown = "n/a (quick)" if self.quick else judged[0]
            self.verdicts.append((f"{workload}: {target}", shown, judged[1]))
        self.rows.append((workload, metric, *cells, *ratios, target, shown))

    def text(self) -> str:
        widths = [max(len(r[i]) for r in (self.HEAD, *self.rows)) for i in range(len(self.HEAD))]

        def line(r: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(self.HEAD), sep, *(line(r) for r in self.rows)])


def build(res: Results, sizes: Any, quick: bool = False) -> Table:
    """The table for ``res``; with ``quick`` the sizes are too small to judge
    targets, so every verdict reads "n/a (quick)"."""
    t = Table(res, quick)
    ran = {w for (w, _, _) in res.cases}
    for k, n in zip(sizes.w1_subscribers, sizes.w1_messages, strict=True):
        name = f"W1 fan-out 1→{k}, {n:,}×100 B"
        if "W1" in ran:
            t.row(name, "deliveries/s", "W1", k, f_rate,
                  "≥ 0.5× proxy, ≥ 2× mosquitto", j_w1)  # fmt: skip
            t.row(name, "delivered/expected", "W1", k, f_delivered, "nothing lost",
                  j_nothing_lost)  # fmt: skip
            t.row(name, "broker CPU µs per message", "W1", k, f_server_cpu,
                  "≤ 15 µs (store on)", j_broker_cpu)  # fmt: skip
            t.row(name, "client CPU µs per delivered event", "W1", k, f_recv_cpu,
                  "≤ 8 µs", j_client_cpu)  # fmt: skip
        if "W4" in ran:
            name = f"W4 durability 1→{k}"
            t.row(name, "deliveries/s, store off (:memory:)", "W4", k, f_rate)
            t.row(name, "broker CPU µs per message, store off", "W4", k, f_server_cpu)
    for rate in sizes.w2_rates if "W2" in ran else ():
        name = f"W2 {rate:,} msg/s, {sizes.w2_chatters}→{sizes.w2_listeners}"
        target, judge = "", None
        if rate == 500:
            target, judge = "p99 ≤ 2× proxy", j_w2_500
        elif rate == 2000:
            target, judge = "p99 < mosquitto's and NATS's", j_w2_2000
        t.row(name, "latency ms p50 / p90 / p99 / max", "W2", rate, f_latency, target, judge)
        t.row(name, "delivered/expected", "W2", rate, f_delivered, "nothing lost",
              j_nothing_lost)  # fmt: skip
        t.row(name, "send rate achieved, msg/s", "W2", rate, f_send_rate)
        t.row(name, "SAY → ACK ms p50 / p99 (broker)", "W2", rate, f_ack)
        t.row(name, "broker CPU µs per message", "W2", rate, f_server_cpu)
        t.row(name, "client CPU µs per delivered event", "W2", rate, f_recv_cpu)
    biggest = max(sizes.w3_clients)
    for n in sizes.w3_clients if "W3" in ran else ():
        rec = res.get("W3", n, "zchat")
        got = int(rec["clients"]) if rec else n  # fewer where the open-file limit is low
        name = f"W3 {got:,} idle clients, one room" + (f" (asked {n:,})" if got != n else "")
        last = n == biggest
        t.row(name, "time until all ready", "W3", n, f_connect,
              "≤ 2× proxy (5,000 in one room)" if n == 5_000 else "",
              j_w3_time if n == 5_000 else None)  # fmt: skip
        t.row(name, "server RSS per idle client (total)", "W3", n, f_rss,
              "≤ 40 KB per idle client" if last else "", j_w3_rss if last else None)  # fmt: skip
        t.row(name, "one broadcast reaches all", "W3", n, f_broadcast,
              "10,000 on one broker, all reached < 1 s" if last else "",
              j_w3_broadcast(rec) if last else None)  # fmt: skip
        if last:
            t.verdicts.append(("W3: 10,000 clients on one broker",
                               "n/a (quick)" if quick else j_w3_clients(rec, n)({})[0],
                               j_w3_clients(rec, n)({})[1]))  # fmt: skip
    _w5(t, res, sizes)
    return t


def _w5(t: Table, res: Results, sizes: Any) -> None:
    if ("W5", "oneshot", "all") not in res.cases:
        return
    w5 = res.get("W5", "oneshot", "all")
    name = f"W5 one-shot, median of {sizes.w5_reps}"
    blank = ["—"] * len(PEERS)
    if w5 is None:
        t.add(name, "whole process, ms", ["error", "—", "error", "—"], blank)
        return
    z = w5.get("zchat send")
    q = w5.get("paho publish.single qos0")
    judged = ("n/a", "not measured")
    if z is not None and q is not None:
        judged = (verdict(z <= 1.2 * q), f"{ms(z)} ms = {z / q:.2f}× paho's {ms(q)} ms")
    t.add(name, "whole process to ack, ms (paho: qos 0)",
          [ms(z) if z else "—", "—", ms(q) if q else "skipped", "—"],
          ["—", ratio(z, q), "—"], "≤ 1.2× paho publish.single", judged)  # fmt: skip
    q1 = w5.get("paho publish.single qos1")
    if q1 is not None:
        t.add(name, "paho publish.single qos 1 (acked), ms", ["—", "—", ms(q1), "—"],
              ["—", ratio(z, q1), "—"])  # fmt: skip
    py = w5.get("python -c pass")
    if py is not None:
        t.add(name, "python -c pass (the floor), ms", [ms(py), "—", "—", "—"], blank)


# ------------------------------------------------------------ machine, versions


def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _proc_field(path: str, key: str) -> str | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


class CpuWatch:
    """CPU seconds the whole machine spent busy since start, and how many of them
    were this process and its children (the bench): the rest is other load."""

    def __init__(self) -> None:
        self.busy0, self.ours0, self.t0 = _busy(), _ours(), time.monotonic()

    def summary(self) -> str:
        busy, ours = _busy() - self.busy0, _ours() - self.ours0
        wall = (time.monotonic() - self.t0) * (os.cpu_count() or 1)
        other = max(0.0, busy - ours)
        return (
            f"{other:,.0f} CPU-s of {wall:,.0f} available ({other / wall:.0%}); "
            f"the bench itself used {ours:,.0f} CPU-s ({ours / wall:.0%})"
        )


def _busy() -> float:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _ours() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine() -> dict[str, str]:
    mem = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or "?",
        "ram": f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem else "?",
        "kernel": platform.release(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions(repo: str) -> dict[str, str]:
    import msgpack
    import zmq

    from bench.harness import mosquitto_path, nats_path

    out = {
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
    }
    try:
        import paho.mqtt

        out["paho-mqtt"] = paho.mqtt.__version__
    except ImportError:
        out["paho-mqtt"] = "not installed"
    exe = mosquitto_path()
    out["mosquitto"] = _first_line([exe, "-h"]).replace("mosquitto version ", "") if exe else "-"
    try:
        out["nats-py"] = importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        out["nats-py"] = "not installed"
    exe = nats_path()
    out["nats-server"] = _first_line([exe, "--version"]).rpartition(" ")[2] if exe else "-"
    out["zchat"] = _first_line(["git", "-C", repo, "describe", "--always", "--dirty"])
    return out


def bullets(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def verdict_lines(t: Table) -> str:
    return "\n".join(f"- {what}: **{v}** ({nums})" for what, v, nums in t.verdicts)
