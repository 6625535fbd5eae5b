"""W1 and W3 for the IRC door: IRC clients against ``zchat broker --irc`` (issue 14).

    python3 bench/irc_bench.py            # W1 with K = 10 and 100, W3 with 1,000 and 5,000
    python3 bench/irc_bench.py --quick    # a smoke run in seconds

- **W1 fan-out to IRC receivers**: one IRC sender says N 100-byte messages into one room as
  fast as its TCP connection takes them (the rate limit is lifted, as in bench/run.py); K IRC
  receivers in that room (over 2 processes) count every PRIVMSG. Reported: deliveries/s =
  N x K / (last delivery - first send), and delivered/expected.
- **W3 idle IRC connections**: M raw IRC clients (2,500 per process) register and join rooms of
  100, then stay idle. Reported: time until the last has its end of NAMES, and the broker's RSS
  growth divided by M.

Plain TCP on loopback, a real SQLite store, the broker's output off (--quiet). Every wait has a
deadline; every process started is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import free_port, raise_nofile, rss_bytes

DEADLINE = 180.0
TEXT = "x" * 100
PER_WORKER = 2_500


# ------------------------------------------------------------------ workers


class Conn:
    def __init__(self, port: int, nick: str, room: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setblocking(False)
        self.nick, self.room = nick, room
        self.buf = b""
        self.out = f"NICK {nick}\r\nUSER {nick} 0 * :bench\r\nJOIN #{room}\r\n".encode()
        self.joined = False
        self.count = 0
        self.last = 0.0


def worker(port: int, first: int, count: int, room_size: int, receive: int, prefix: str) -> None:
    """Open ``count`` connections; print READY when all joined; with ``receive`` > 0,
    count PRIVMSGs until each has ``receive`` and print the result as JSON."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    for i in range(first, first + count):
        c = Conn(port, f"{prefix}{i}", f"r{i // room_size}" if not receive else "w1")
        conns.append(c)
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    waiting = len(conns)
    deadline = time.monotonic() + DEADLINE
    ready_said = False
    while time.monotonic() < deadline:
        for key, mask in sel.select(1.0):
            c = key.data
            if mask & selectors.EVENT_WRITE and c.out:
                sent = c.sock.send(c.out)
                c.out = c.out[sent:]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit(f"{c.nick}: connection closed")
                c.buf += data
                *lines, c.buf = c.buf.split(b"\r\n")
                for line in lines:
                    if not c.joined and b" 366 " in line:
                        c.joined = True
                        waiting -= 1
                    elif b" PRIVMSG #" in line:
                        c.count += 1
                        c.last = time.time()
                    elif line.startswith(b"PING"):
                        c.out += b"PONG" + line[4:] + b"\r\n"
                        sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        if waiting == 0 and not ready_said:
            print("READY", flush=True)
            ready_said = True
            if not receive:
                break
        if receive and ready_said and all(c.count >= receive for c in conns):
            break
    if not receive:
        sys.stdin.readline()  # stay connected until the parent has measured
        return
    print(json.dumps({"counts": [c.count for c in conns], "last": max(c.last for c in conns)}),
          flush=True)  # fmt: skip


def sender(port: int, messages: int) -> None:
    raise_nofile()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"NICK w1sender\r\nUSER s 0 * :s\r\nJOIN #w1\r\n")
    buf = b""
    while b" 366 " not in buf:
        buf += sock.recv(65536)
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.time()
    payload = f"PRIVMSG #w1 :{TEXT}\r\n".encode()
    batch = payload * 500
    sent = 0
    sock.setblocking(True)
    while sent < messages:
        n = min(500, messages - sent)
        sock.sendall(batch if n == 500 else payload * n)
        sent += n
    print(json.dumps({"started": started}), flush=True)
    sys.stdin.readline()


# ------------------------------------------------------------------- runner


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "ZCHAT_RATE": "1000000", "ZCHAT_BURST": "1000000", "ZCHAT_CONFIG": ""}
        args = [sys.executable, "-m", "zchat", "broker", "--quiet", "--bind",
                f"tcp://127.0.0.1:{free_port()}", "--store", str(tmp / "bench.sqlite3"),
                "--irc", f"127.0.0.1:{self.port}"]  # fmt: skip
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env)  # fmt: skip
        assert self.p.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if "IRC clients connect to" in line:
                return
            if not line and self.p.poll() is not None:
                break
        raise SystemExit("the broker did not start")

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def expect(p: subprocess.Popen[str], what: str) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    if what not in line:
        raise SystemExit(f"worker said {line!r}, expected {what}")
    return line


def w3(clients: int, room_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        workers: list[subprocess.Popen[str]] = []
        try:
            time.sleep(0.5)  # let the broker's RSS settle before the baseline (not a sync)
            before = rss_bytes(broker.p.pid)
            started = time.monotonic()
            for first in range(0, clients, PER_WORKER):
                n = min(PER_WORKER, clients - first)
                workers.append(spawn("--worker", str(broker.port), str(first), str(n),
                                     str(room_size), "0", "idle"))  # fmt: skip
            for w in workers:
                expect(w, "READY")
            took = time.monotonic() - started
            after = rss_bytes(broker.p.pid)
            return {"clients": clients, "join_s": round(took, 2),
                    "rss_per_conn_kib": round((after - before) / clients / 1024, 1),
                    "rss_mib": round(after / 2**20, 1)}  # fmt: skip
        finally:
            for w in workers:
                if w.stdin:
                    w.stdin.close()
                w.wait(10)
            broker.stop()


def w1(receivers: int, messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        procs: list[subprocess.Popen[str]] = []
        try:
            halves = [receivers // 2, receivers - receivers // 2] if receivers > 1 else [1]
            first = 0
            for n in halves:
                if n:
                    procs.append(spawn("--worker", str(broker.port), str(first), str(n), "1",
                                       str(messages), "recv"))  # fmt: skip
                    first += n
            for p in procs:
                expect(p, "READY")
            send = spawn("--sender", str(broker.port), str(messages))
            expect(send, "READY")
            assert send.stdin is not None
            send.stdin.write("go\n")
            send.stdin.flush()
            started = json.loads(expect(send, "started"))["started"]
            results = [json.loads(expect(p, "counts")) for p in procs]
            delivered = sum(sum(r["counts"]) for r in results)
            last = max(r["last"] for r in results)
            send.stdin.close()
            send.wait(10)
            return {"receivers": receivers, "messages": messages,
                    "deliveries_per_s": round(delivered / max(1e-6, last - started)),
                    "delivered": round(delivered / (messages * receivers), 4)}  # fmt: skip
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=6)
    ap.add_argument("--sender", nargs=2)
    args = ap.parse_args()
    if args.worker:
        port, first, count, size, receive, prefix = args.worker
        worker(int(port), int(first), int(count), int(size), int(receive), prefix)
        return
    if args.sender:
        sender(int(args.sender[0]), int(args.sender[1]))
        return
    raise_nofile()
    w1_cases = [(3, 300)] if args.quick else [(10, 20_000), (100, 5_000)]
    w3_cases = [(50, 10)] if args.quick else [(1_000, 100), (5_000, 100)]
    for k, n in w1_cases:
        print("W1", json.dumps(w1(k, n)), flush=True)
    for mcount, size in w3_cases:
        print("W3", json.dumps(w3(mcount, size)), flush=True)


if __name__ == "__main__":
    main()
