"""The five workloads (issues 6 and 12), each a function of the harness and a size.

Every case starts its own server (zchat broker, zmq.proxy or mosquitto) and
load-generator workers, runs, and stops them all in ``finally``. Each returns a
plain dict of measurements; bench/report.py turns them into the table.
"""

from __future__ import annotations

import math
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BenchError, Harness, Proc, cpu_seconds, rss_bytes

ZCHAT = "zchat"
PROXY = "proxy"
MQTT = "mqtt"
NATS = "nats"


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``quick()`` is the smoke-test version."""

    w1_subscribers: tuple[int, ...] = (10, 100)
    w1_messages: tuple[int, ...] = (20_000, 2_000)  # per subscriber count, same order
    w1_repeats: int = 1  # W1/W4 cells are the median of this many runs
    recv_procs: int = 2  # receiver processes for W1/W2 (the machine has 2 cores)
    w2_rates: tuple[int, ...] = (500, 2_000)
    w2_chatters: int = 20
    w2_listeners: int = 100
    w2_seconds: float = 5.0
    w3_clients: tuple[int, ...] = (1_000, 5_000, 10_000)  # every client in one room
    w3_per_worker: int = 2_500
    w5_reps: int = 15
    heartbeat: float = 5.0  # the zchat broker's --heartbeat (its default)
    w3_broadcast_limit: float = 30.0  # W3: clients the broadcast has not reached by then missed it
    case_timeout: float = 120.0  # seconds any one case may run
    drain: float = 30.0  # after the last send, receivers get this long, then are stopped
    w3_ready_limit: float = 120.0  # W3: clients not ready after this long count as missed

    @staticmethod
    def quick() -> Sizes:
        return Sizes(
            w1_subscribers=(3,),
            w1_messages=(300,),
            w1_repeats=1,
            recv_procs=1,
            w2_rates=(200,),
            w2_chatters=2,
            w2_listeners=4,
            w2_seconds=1.0,
            w3_clients=(20,),
            w3_per_worker=10,
            w5_reps=3,
            case_timeout=30.0,
            drain=15.0,
            w3_ready_limit=25.0,
        )


# -------------------------------------------------------------------- servers


def start_server(h: Harness, system: str, store: str = "file", max_clients: int = 10_000,
                 prefix: tuple[str, ...] = (), heartbeat: float = 5.0,
                 ) -> tuple[Proc, dict[str, Any]]:  # fmt: skip
    """Start one system's server; returns it and the connection keys for workers."""
    if system == ZCHAT:
        path = str(h.tmp / f"store-{uuid.uuid4().hex[:8]}.sqlite3") if store == "file" else store
        extra = ("--heartbeat", str(heartbeat))
        proc, endpoint = h.zchat_broker(path, max_clients=max_clients, prefix=prefix, extra=extra)
        return proc, {"system": ZCHAT, "endpoint": endpoint}
    if system == PROXY:
        proc, xsub, xpub = h.proxy()
        return proc, {"system": PROXY, "xsub": xsub, "xpub": xpub}
    if system == NATS:
        proc, port = h.nats()
        return proc, {"system": NATS, "port": port}
    proc, port = h.mosquitto()
    return proc, {"system": MQTT, "port": port}


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _cpu(proc: Proc) -> float:
    try:
        return cpu_seconds(proc.pid)
    except OSError:  # already gone
        return 0.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    n = len(values)

    def pick(q: float) -> float:
        return values[min(n - 1, int(q * n))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": values[-1]}


def _latencies(results: list[dict[str, Any]]) -> list[float]:
    out: list[float] = []
    for r in results:
        path = r.get("latency_file")
        if path and Path(path).exists():
            arr = array("d")
            arr.frombytes(Path(path).read_bytes())
            out.extend(arr)
    return out


# ---------------------------------------------------------------- W1, W2, W4


def pubsub(
    h: Harness,
    system: str,
    *,
    receivers: int,
    senders: int,
    messages: int,
    rate: float,
    latency: bool,
    sizes: Sizes,
    store: str = "file",
    window: int = 5_000,
    prefix: tuple[str, ...] = (),
    recv_profile: str | None = None,
    brokers: int = 0,
) -> dict[str, Any]:
    """Senders into one room/topic, ``receivers`` subscribers of it.

    ``rate`` 0: as fast as the system takes them (zchat: at most ``window``
    unacknowledged SAYs). Otherwise ``rate`` messages/s in total, round robin
    over the senders. Returns deliveries/s, delivered/expected, latencies.
    ``brokers`` N > 0 (zchat only): N brokers on one Redis (a cluster); the
    sender talks to the first, the receiver processes to each in turn, and
    the server CPU is the brokers' together (Redis's is ``redis_cpu``).
    """
    tag = secrets.token_hex(3)
    started: list[Proc] = []
    timeout = sizes.case_timeout
    redis: Proc | None = None
    try:
        if brokers:
            redis, url = h.redis()
            started.append(redis)
            servers = []
            for _ in range(brokers):
                extra = ("--heartbeat", str(sizes.heartbeat), "--cluster", url)
                proc, endpoint = h.zchat_broker("unused", extra=extra, prefix=prefix)
                started.append(proc)
                servers.append((proc, {"system": ZCHAT, "endpoint": endpoint}))
        else:
            server_keys = start_server(h, system, store, prefix=prefix, heartbeat=sizes.heartbeat)
            started.append(server_keys[0])
            servers = [server_keys]
        server, keys = servers[0]
        base = {**keys, "tag": tag, "size": 100, "deadline": timeout + 30}
        recvs: list[Proc] = []
        first = 0
        for k, count in enumerate(_split(receivers, sizes.recv_procs)):
            where = servers[k % len(servers)][1]
            spec = {**base, **where, "mode": "recv", "clients": count, "first": first,
                    "nick": "r", "expect": messages, "senders": senders}  # fmt: skip
            if latency:
                spec["latency_file"] = str(h.tmp / f"lat-{tag}-{k}.bin")
            if recv_profile and k == 0:  # the first receiver process under cProfile
                spec["profile"] = recv_profile
            recvs.append(h.worker(f"{system}-recv{k}", spec))
            first += count
        sender = h.worker(
            f"{system}-send",
            {**base, "mode": "send", "clients": senders, "nick": "s", "messages": messages,
             "rate": rate, "window": window},
        )  # fmt: skip
        workers = [*recvs, sender]
        started.extend(workers)
        h.wait(lambda: sender.ready is not None, timeout, f"{system} sender ready", workers)
        h.wait(lambda: all(r.ready for r in recvs), timeout, f"{system} receivers ready", workers)
        if system == PROXY:  # PUB/SUB has no handshake: probe until all hear all
            sender.send("PROBE")
            h.wait(lambda: all(r.probed for r in recvs), timeout, "probes heard", workers)
        cpu0 = sum(cpu_seconds(p.pid) for p, _ in servers)
        redis0 = cpu_seconds(redis.pid) if redis else 0.0
        for p in (*recvs, sender):
            p.send("GO")
        h.wait(lambda: sender.result is not None, timeout, f"{system} sender done", workers)
        sent_done = time.monotonic()

        busy: list[tuple[float, float]] = []  # (when, the receivers' CPU seconds)

        def settled() -> bool:
            """All complete, or the drain is over, or nothing new for 10 s while the
            receivers sat idle (a zchat receiver busy with a backlog may count
            nothing for a long time: its CPU says it is still working)."""
            if all(r.result is not None for r in recvs):
                return True
            now = time.monotonic()
            if now - sent_done > sizes.drain:
                return True
            busy.append((now, sum(_cpu(r) for r in recvs)))
            while len(busy) > 2 and now - busy[1][0] >= 10.0:
                busy.pop(0)
            last = max([sent_done, *(r.progress_at for r in recvs)])
            span = now - busy[0][0]
            idle = span >= 10.0 and busy[-1][1] - busy[0][1] < 0.1 * span
            return now - last > 10.0 and idle

        h.wait(settled, sizes.drain + 10, f"{system} receivers done", recvs)
        cut = time.monotonic() - sent_done > sizes.drain  # stopped while still receiving
        for r in recvs:
            if r.result is None:
                r.send("STOP")
        h.wait(lambda: all(r.result is not None for r in recvs), 30, "receiver results", recvs)
        cpu = sum(cpu_seconds(p.pid) for p, _ in servers) - cpu0
        redis_cpu = cpu_seconds(redis.pid) - redis0 if redis else 0.0
        rss = rss_bytes(server.pid)
    finally:
        h.stop_all(started)
    s = sender.result
    res = [r.result for r in recvs]
    delivered = sum(r["total"] for r in res)
    t0 = s["t_first"]
    t_end = max([r["t_last"] for r in res if r["t_last"]] or [t0])
    elapsed = max(t_end - t0, 1e-9)
    send_span = max(s["t_last_send"] - t0, 1e-9)
    out: dict[str, Any] = {
        "system": system,
        "receivers": receivers,
        "messages": messages,
        "expected": messages * receivers,
        "delivered": delivered,
        "dups": sum(r["dups"] for r in res),
        "deliveries_per_s": delivered / elapsed,
        # stopped ``drain`` s after the last send while deliveries still came in: the
        # rest counts as not delivered, and latencies cover only what arrived
        "cut": sizes.drain if cut else 0,
        "elapsed": elapsed,
        "sent": s["sent"],
        "acked": s["acked"],
        "errors": s.get("errors", {}),
        "send_rate": s["sent"] / send_span,
        "server_cpu": cpu,
        "recv_cpu": sum(r["cpu"] for r in res),
        "send_cpu": s["cpu"],
        "server_rss": rss,
    }
    if brokers:
        out["brokers"] = brokers
        out["redis_cpu"] = redis_cpu
    if system == ZCHAT and s.get("t_last_ack"):
        out["acks_per_s"] = s["acked"] / max(s["t_last_ack"] - t0, 1e-9)
        out.update({k: s[k] for k in ("ack_p50", "ack_p99", "ack_max", "lag") if k in s})
    if latency:
        out["latency"] = percentiles(_latencies(res))
    return out


# ------------------------------------------------------------------------- W3


def scale(h: Harness, system: str, clients: int, sizes: Sizes, prefix: tuple[str, ...] = (),
          recv_profile: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``clients`` connected and ready in one room/topic; the time that took, the
    server's RSS per client, and how long one message takes to reach them all.

    zchat clients are real sessions (``zchat.connect(..., rooms=["w3r"])``), ready
    once connected, registered and joined; the broadcast is one ``say`` by a
    sender in no room, timed from the send to the last client's Message event.
    Peers: ready on their own signal (XPUB welcome, SUBACK, flush), then one
    message published on the topic every subscriber has.
    """
    tag = secrets.token_hex(3)
    started: list[Proc] = []
    timeout = sizes.case_timeout + clients / 50
    workers: list[Proc] = []
    try:
        server, keys = start_server(
            h, system, max_clients=clients + 16, heartbeat=sizes.heartbeat, prefix=prefix
        )
        started.append(server)
        rss0 = rss_bytes(server.pid)
        cpu0 = cpu_seconds(server.pid)
        base = {**keys, "tag": tag, "size": 100, "deadline": timeout + 60, "room": "w3r"}
        sender = h.worker(f"{system}-w3send", {**base, "mode": "send", "clients": 1,
                                               "nick": "s", "messages": 1,
                                               "probe_every": 0.05})  # fmt: skip
        started.append(sender)
        h.wait(lambda: sender.ready is not None, timeout, "sender ready", [sender])
        first = 0
        n_workers = max(sizes.recv_procs, math.ceil(clients / sizes.w3_per_worker))
        for k, count in enumerate(_split(clients, n_workers)):
            spec = {**base, "mode": "recv", "clients": count, "first": first, "nick": "c",
                    "expect": 1, "senders": 1, "inflight": 200, "tolerate": True}  # fmt: skip
            if recv_profile and k == 0:
                spec["profile"] = recv_profile
            workers.append(h.worker(f"{system}-w3recv{k}", spec))
            first += count
        started.extend(workers)
        watch = [*workers, sender]
        t0 = time.time()
        try:
            h.wait(lambda: all(w.ready for w in workers), sizes.w3_ready_limit,
                   f"{clients} {system} clients", watch)  # fmt: skip
        except BenchError as exc:
            if "timed out" not in str(exc):
                raise
            shares = _split(clients, len(workers))  # as the workers were started
            ready = sum(n if w.ready else w.progress for n, w in zip(shares, workers, strict=True))
            return {
                "system": system, "clients": clients, "ready": ready, "missed": clients - ready,
                "connect_s": None, "ready_limit": sizes.w3_ready_limit,
                "rss": (rss := rss_bytes(server.pid)),
                "rss_per_client": (rss - rss0) / max(1, ready),
                "server_cpu_connect": cpu_seconds(server.pid) - cpu0,
                "since": time.time() - t0,
            }  # fmt: skip
        connect = max(w.ready["t_ready"] for w in workers) - min(
            w.ready["t_start"] for w in workers
        )
        rss1 = rss_bytes(server.pid)
        connect_cpu = cpu_seconds(server.pid) - cpu0
        if system == PROXY:  # the sender's PUB must have the subscription too
            sender.send("PROBE")
            h.wait(lambda: all(w.probed for w in workers), timeout, "probes heard", watch)
        for w in workers:
            w.send("GO")
        sender.send("GO")
        h.wait(lambda: sender.result is not None, 30, "the broadcast sent", watch)
        try:
            h.wait(lambda: all(w.result is not None for w in workers),
                   sizes.w3_broadcast_limit, "broadcast", watch)  # fmt: skip
        except BenchError as exc:
            if "timed out" not in str(exc):
                raise
            for w in workers:  # report what reached them so far
                if w.result is None:
                    w.send("STOP")
            h.wait(lambda: all(w.result is not None for w in workers), 30, "results", watch)
        t_sent = sender.result["t_first"]
        broadcast = max([w.result["t_last"] for w in workers if w.result["t_last"]] or [t_sent])
        broadcast -= t_sent
        missed = clients - sum(w.result["total"] for w in workers)
        refused: dict[str, int] = {}
        for w in workers:
            for code, count in (w.ready.get("refused") or {}).items():
                refused[code] = refused.get(code, 0) + count
        ready = sum(w.ready.get("opened", 0) for w in workers) or clients
    finally:
        h.stop_all(started)
    return {
        "system": system,
        "clients": clients,
        "ready": ready,  # the others were refused or timed out (``refused``)
        "refused": refused,
        "connect_s": connect,
        "rss_per_client": (rss1 - rss0) / clients,
        "rss": rss1,
        "broadcast_s": broadcast,
        "missed": missed,
        "server_cpu_connect": connect_cpu,
        "clients_cpu": sum(w.result["cpu_total"] for w in workers),
    }


# ------------------------------------------------------------------------- W5


def oneshot(h: Harness, reps: int, mqtt: bool) -> dict[str, Any]:
    """Whole-process one-shot sends, interleaved; medians in seconds."""
    started: list[Proc] = []
    text = "o" * 100
    py = sys.executable
    try:
        broker, keys = start_server(h, ZCHAT)
        started.append(broker)
        cmds: dict[str, Any] = {
            "python -c pass": lambda i: [py, "-c", "pass"],
            "zchat send": lambda i: [py, "-m", "zchat", "send", "--connect", keys["endpoint"],
                                     "--room", "oneshot", "--nick", f"os{i}", text],
        }  # fmt: skip
        if mqtt:
            mosq, port = h.mosquitto()
            started.append(mosq)
            for qos in (0, 1):
                code = (
                    "import paho.mqtt.publish as p;"
                    f"p.single('bench/oneshot', {text!r}, qos={qos}, hostname='127.0.0.1',"
                    f" port={port})"
                )
                cmds[f"paho publish.single qos{qos}"] = lambda i, c=code: [py, "-c", c]
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for i in range(reps + 1):  # the first round warms the page cache; not counted
            for name, make in cmds.items():
                t = time.perf_counter()
                done = subprocess.run(make(i), env=h.env, capture_output=True, timeout=30)
                took = time.perf_counter() - t
                if done.returncode != 0:
                    raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr[-500:]!r}")
                if i:
                    times[name].append(took)
    finally:
        h.stop_all(started)
    return {name: statistics.median(ts) for name, ts in times.items()}
