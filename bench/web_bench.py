"""W1 and W3 for the web door: WebSocket clients against ``zchat broker --web`` (issue 15).

    python3 bench/web_bench.py            # W1 with K = 10 and 100, W3 with 1,000 and 5,000
    python3 bench/web_bench.py --quick    # a smoke run in seconds

- **W1 fan-out**: one WebSocket sender says N 100-byte messages into one room as fast as the
  broker takes them (at most 5,000 unacknowledged, like bench/'s zchat sender); K WebSocket
  receivers in that room (split over 2 processes) each count every message. Reported:
  deliveries/s = N × K ÷ (last delivery − first send), and delivered/expected.
- **W3 idle connections**: M WebSocket clients (1,000 per process, 100 of them connecting at a
  time) connect, say ``hello`` and join rooms of 100, then stay idle. Reported: time until the
  last one has its ``joined``, and the broker's RSS growth divided by M.

W1's clients speak websockets' sans-I/O protocol over blocking sockets and count the sender's
events by substring rather than parsing each JSON (as bench/'s receivers skip decoding), so the
numbers measure the broker; W3's are the asyncio client, which answers pings by itself. The
broker's CPU time is reported too (µs per delivery; seconds for all of W3's connections).

Every client is the page's protocol (docs/web.md): JSON text messages, the door's Origin. The
broker runs with a real SQLite store and its rate limit lifted (ZCHAT_RATE, ZCHAT_BURST), as in
bench/run.py; the same workloads over ZeroMQ are in bench/RESULTS.md. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_seconds, free_port, rss_bytes

DEADLINE = 180.0
TEXT = "x" * 100


# ------------------------------------------------------------------ workers


async def _open(url: str, origin: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, origin=origin, max_size=2**20, open_timeout=120,  # type: ignore[arg-type]
                         ping_interval=None, max_queue=None)  # fmt: skip


async def _expect(conn: Any, kind: str) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(conn.recv(), DEADLINE))
        if msg["type"] == kind:
            return msg  # type: ignore[no-any-return]
        if msg["type"] == "error":
            raise RuntimeError(f"error waiting for {kind}: {msg}")


async def _session(url: str, origin: str, nick: str, room: str | None) -> Any:
    conn = await _open(url, origin)
    await conn.send(json.dumps({"type": "hello", "nick": nick}))
    await _expect(conn, "welcome")
    if room:
        await conn.send(json.dumps({"type": "join", "room": room, "history": 0}))
        await _expect(conn, "joined")
    return conn


class Raw:
    """A WebSocket client on a blocking socket with websockets' sans-I/O protocol.

    W1's sender and receivers use it rather than the asyncio client: it writes a
    window of messages in one ``sendall`` and reads in large chunks, so the
    clients (Python, on the broker's cores) cost less of the measurement.
    """

    def __init__(self, url: str, origin: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.typing import Origin
        from websockets.uri import parse_uri

        uri = parse_uri(url)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=DEADLINE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.proto = ClientProtocol(uri, origin=Origin(origin), max_size=None)
        self.proto.send_request(self.proto.connect())
        self.flush()
        self.texts: list[str] = []
        while self.proto.handshake_exc is None and not self._opened():
            pass
        if self.proto.handshake_exc is not None:
            raise self.proto.handshake_exc

    def _opened(self) -> bool:
        from websockets.http11 import Response

        events = self._pump()
        done = any(isinstance(e, Response) for e in events)
        self.texts += self._texts(events)
        return done

    def flush(self) -> None:
        data = b"".join(self.proto.data_to_send())
        if data:
            self.sock.sendall(data)

    def _pump(self) -> list[Any]:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("the door closed the connection")
        self.proto.receive_data(chunk)
        events = self.proto.events_received()
        self.flush()  # pongs
        return events

    @staticmethod
    def _texts(events: list[Any]) -> list[str]:
        from websockets.frames import Frame, Opcode

        return [bytes(e.data).decode() for e in events
                if isinstance(e, Frame) and e.opcode is Opcode.TEXT]  # fmt: skip

    def read(self) -> list[str]:
        """What one recv brings, as the text messages in it (pings are answered)."""
        return self._texts(self._pump())

    def send(self, *bodies: dict[str, Any]) -> None:
        for body in bodies:
            self.proto.send_text(json.dumps(body).encode())
        self.flush()

    def expect(self, kind: str) -> dict[str, Any]:
        while True:
            for text in self.texts:
                msg = json.loads(text)
                if msg["type"] == kind:
                    self.texts = self.texts[self.texts.index(text) + 1 :]
                    return msg  # type: ignore[no-any-return]
                if msg["type"] == "error":
                    raise RuntimeError(f"error waiting for {kind}: {msg}")
            self.texts = []
            self.texts = self.read()


def receivers(url: str, origin: str, count: int, room: str, n: int, tag: str) -> None:
    conns = []
    for i in range(count):
        c = Raw(url, origin)
        c.send({"type": "hello", "nick": f"r{tag}x{i}"})
        c.expect("welcome")
        c.send({"type": "join", "room": room, "history": 0})
        c.expect("joined")
        conns.append(c)
        # Read what the others got meanwhile: it answers the door's pings, as a
        # browser does at once (the door drops a connection silent for too long).
        ready, _, _ = select.select([x.sock for x in conns], [], [], 0)
        for x in conns:
            if x.sock in ready:
                x.read()
    print("READY", flush=True)
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, i)
    got = [0] * count
    first, last = 0.0, 0.0
    deadline = time.monotonic() + DEADLINE
    while sum(got) < n * count and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            i = key.data
            try:
                texts = conns[i].read()
            except BlockingIOError:
                continue
            now = time.time()
            # Counted without parsing each JSON (bench/README.md: the receivers
            # measure the server, not their own decoding).
            k = sum(1 for t in texts if '"nick":"sender"' in t and '"type":"event"' in t)
            if k:
                got[i] += k
                first = first or now
                last = now
    print("RESULT " + json.dumps({"got": sum(got), "last": last, "first": first}), flush=True)


def sender(url: str, origin: str, room: str, n: int, window: int) -> None:
    c = Raw(url, origin)
    c.send({"type": "hello", "nick": "sender"})
    c.expect("welcome")
    acked = sent = 0
    t0 = time.time()
    deadline = time.monotonic() + DEADLINE
    while acked < n and time.monotonic() < deadline:
        room_left = min(n - sent, window - (sent - acked))
        if room_left > 0:
            c.send(*({"type": "say", "room": room, "id": f"m{sent + i}", "text": TEXT}
                     for i in range(room_left)))  # fmt: skip
            sent += room_left
        for text in c.read():
            if '"type":"ack"' in text:
                acked += 1
            elif '"type":"error"' in text:
                raise RuntimeError(text)
    print("RESULT " + json.dumps({"t0": t0, "acked": acked, "t_acked": time.time()}), flush=True)


async def idle(url: str, origin: str, count: int, start: int, room_size: int) -> None:
    sem = asyncio.Semaphore(100)  # connect in waves, as many browsers would

    async def one(i: int) -> Any:
        async with sem:
            return await _session(url, origin, f"idle{i}", f"room{i // room_size}")

    conns = await asyncio.gather(*(one(start + i) for i in range(count)))
    print("READY " + json.dumps({"t": time.time()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in conns:
        c.transport.abort()


def worker(argv: list[str]) -> None:
    kind, url, origin, *rest = argv
    if kind == "recv":
        receivers(url, origin, int(rest[0]), rest[1], int(rest[2]), rest[3])
    elif kind == "send":
        sender(url, origin, rest[0], int(rest[1]), int(rest[2]))
    else:
        asyncio.run(idle(url, origin, int(rest[0]), int(rest[1]), int(rest[2])))


# ------------------------------------------------------------------ harness


class Run:
    """The broker and the worker processes of one case; stopped on the way out."""

    def __init__(self, tmp: Path, max_clients: int) -> None:
        self.web = free_port()
        self.url = f"ws://127.0.0.1:{self.web}/ws"
        self.origin = f"http://127.0.0.1:{self.web}"
        env = {**os.environ, "ZCHAT_RATE": "1000000", "ZCHAT_BURST": "1000000",
               "ZCHAT_MAX_CLIENTS": str(max_clients)}  # fmt: skip
        store = tmp / f"store-{self.web}.sqlite3"
        self.log = tmp / f"broker-{self.web}.log"  # a file: a pipe nobody reads would block it
        with self.log.open("w") as out:
            self.broker = subprocess.Popen(
                [sys.executable, "-m", "zchat", "broker", "--bind",
                 f"tcp://127.0.0.1:{free_port()}", "--store", str(store), "--web",
                 f"127.0.0.1:{self.web}", "--quiet"],
                stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
        self.workers: list[subprocess.Popen[str]] = []
        deadline = time.monotonic() + 20
        while "web:" not in self.log.read_text():
            if time.monotonic() > deadline or self.broker.poll() is not None:
                raise RuntimeError("the broker did not start: " + self.log.read_text())
            time.sleep(0.05)  # polling a file with a deadline

    def problems(self) -> str:
        """The broker's own lines about trouble (dropped connections and such)."""
        return "".join(line for line in self.log.read_text().splitlines(True) if "!" in line)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, __file__, "--worker", args[0], self.url,
                              self.origin, *args[1:]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.workers.append(p)
        return p

    @staticmethod
    def line(p: subprocess.Popen[str], prefix: str) -> str:
        assert p.stdout is not None
        while True:
            text = p.stdout.readline()
            if not text:
                raise RuntimeError(f"a worker exited before {prefix}")
            if text.startswith(prefix):
                return text[len(prefix) :].strip()

    def close(self) -> None:
        for p in [*self.workers, self.broker]:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def w1(tmp: Path, k: int, n: int) -> dict[str, Any]:
    run = Run(tmp, k + 10)
    try:
        parts = [k // 2 + k % 2, k // 2] if k > 1 else [k]
        recv = [run.spawn("recv", str(c), "bench", str(n), str(i)) for i, c in enumerate(parts)
                if c]  # fmt: skip
        for p in recv:
            run.line(p, "READY")
        cpu0 = cpu_seconds(run.broker.pid)
        send = run.spawn("send", "bench", str(n), "5000")
        sent = json.loads(run.line(send, "RESULT "))
        results = [json.loads(run.line(p, "RESULT ")) for p in recv]
        cpu = cpu_seconds(run.broker.pid) - cpu0
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; the broker said:\n{run.problems()}") from None
    finally:
        run.close()
    got = sum(r["got"] for r in results)
    last = max(r["last"] for r in results)
    return {"k": k, "n": n, "delivered": got, "expected": n * k,
            "deliveries_per_s": got / (last - sent["t0"]) if last > sent["t0"] else 0.0,
            "acks_per_s": n / (sent["t_acked"] - sent["t0"]),
            "broker_cpu_us_per_delivery": cpu / max(1, got) * 1e6}  # fmt: skip


def w3(tmp: Path, m: int, per_proc: int = 1000, room_size: int = 100) -> dict[str, Any]:
    run = Run(tmp, m + 10)
    try:
        time.sleep(0.5)  # let the broker settle before the baseline (not synchronisation)
        base = rss_bytes(run.broker.pid)
        cpu0 = cpu_seconds(run.broker.pid)
        t0 = time.time()
        procs, start = [], 0
        while start < m:
            count = min(per_proc, m - start)
            procs.append(run.spawn("idle", str(count), str(start), str(room_size)))
            start += count
        ready = max(json.loads(run.line(p, "READY "))["t"] for p in procs)
        cpu = cpu_seconds(run.broker.pid) - cpu0
        time.sleep(1.0)  # idle: what the connections hold, not what joining them cost
        rss = rss_bytes(run.broker.pid)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
    finally:
        run.close()
    return {"m": m, "connect_s": ready - t0, "rss_base": base, "rss": rss, "broker_cpu_s": cpu,
            "rss_per_conn": (rss - base) / m}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--w1", help="W1 cases as K:N,... [10:20000,100:5000]")
    ap.add_argument("--w3", help="W3 cases as M,... [1000,5000]; 0 for none")
    args = ap.parse_args()
    cases_w1 = [(10, 500)] if args.quick else [(10, 20_000), (100, 5_000)]
    cases_w3 = [200] if args.quick else [1_000, 5_000]
    if args.w1:
        cases_w1 = [(int(c.split(":")[0]), int(c.split(":")[1])) for c in args.w1.split(",")]
    if args.w3:
        cases_w3 = [int(c) for c in args.w3.split(",") if int(c)]
    out: dict[str, Any] = {"w1": [], "w3": []}
    with tempfile.TemporaryDirectory(prefix="zchat-web-bench-") as tmp:
        for k, n in cases_w1:
            r = w1(Path(tmp), k, n)
            out["w1"].append(r)
            print(f"W1 web fan-out 1→{k}, {n:,}×100 B: {r['deliveries_per_s'] / 1000:,.1f}k "
                  f"deliveries/s, {r['delivered']:,}/{r['expected']:,} delivered, "
                  f"{r['acks_per_s']:,.0f} SAY acks/s, broker CPU "
                  f"{r['broker_cpu_us_per_delivery']:.1f} µs per delivery", flush=True)  # fmt: skip
        for m in cases_w3:
            r = w3(Path(tmp), m)
            out["w3"].append(r)
            print(f"W3 web {m:,} idle WebSocket clients: connected and joined in "
                  f"{r['connect_s']:.2f} s, broker RSS {r['rss_per_conn'] / 1024:.1f} KiB per "
                  f"connection ({r['rss'] / 2**20:.0f} MiB total), broker CPU "
                  f"{r['broker_cpu_s']:.1f} s", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
