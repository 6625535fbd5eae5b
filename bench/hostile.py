"""Issue 10's attacks against a real broker, measured: ``python3 bench/hostile.py``.

Each attack gets a fresh broker (``python -m zchat broker`` on loopback, a new
store) so its peak memory (VmHWM) is its own. Meanwhile an honest peer in a
process of its own asks for STATS every 100 ms (STATS needs no session, so a
stall cannot expire one); the table reports the slowest answer. Figures:

  before  broker RSS once started, with the honest session connected
  peak    VmHWM at the end (the highest RSS the process ever had)
  held    RSS once the broker is quiet again, the attacker still connected
  after   RSS after the attacker disconnected and the broker is quiet
  cpu     broker CPU seconds (user + system) from the start of the attack to `after`
  ping    slowest STATS round trip of the honest peer during the attack

Options: ``--only name,name`` (see ``--list``), ``--source DIR`` runs the broker
from another checkout (``git archive <commit> | tar -x -C DIR``) to measure a
version before a fix, ``--json FILE`` writes every figure. Loopback only; every
loop is bounded; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``zchat`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REPO, cpu_seconds, free_port, raise_nofile
from zchat.protocol import decode_from_broker, encode
from zchat.protocol import messages as m

MB = 1_000_000
#: The first routing id an unseeded libzmq 4.3.5 ROUTER generates; +1 per peer.
FIRST_GENERATED_ID = bytes.fromhex("006b8b4567")
#: The longest subscription an honest client makes: '#' + 64-character room + NUL.
LONGEST_TOPIC = 66

#: A STATS unanswered this long counts as lost (and as this slow).
PING_TIMEOUT = 30.0

Ctx = zmq.Context[zmq.Socket[bytes]]


# ------------------------------------------------------------------ broker


def mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


class Broker:
    """``zchat broker`` as the README starts it, on a free loopback port."""

    def __init__(self, source: Path, tmp: Path) -> None:
        self.source = source
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log = tmp / f"broker-{self.port}.log"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "zchat", "broker", "--bind", self.endpoint,
             "--store", str(tmp / f"store-{self.port}.sqlite3")],
            cwd=source, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while "clients connect to" not in self.log.read_text():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._out.close()


#: The honest peer, in a process of its own so that the attacker's work in this
#: one (a send_multipart of a million frames holds the GIL) cannot slow it down.
_PROBE = """
import sys, time, zmq
from zchat.protocol import decode_from_broker, encode
from zchat.protocol import messages as m
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(sys.argv[1])
timeout, rid = float(sys.argv[2]), 0
while True:
    rid += 1
    started = time.monotonic()
    sock.send_multipart(encode(m.Stats(rid)))
    ok = False
    while not ok and (left := started + timeout - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000) + 1):
            break
        ok = getattr(decode_from_broker(sock.recv_multipart()), "rid", None) == rid
    print(f"{time.monotonic() - started:.4f} {int(ok)}", flush=True)
    time.sleep(0.1)
"""


class Probe:
    """An honest peer asking for STATS every 100 ms from a process of its own."""

    def __init__(self, ctx: Ctx, endpoint: str, source: Path) -> None:
        hello = dealer(ctx, endpoint)  # only to learn the broadcast endpoint
        hello.send_multipart(encode(m.Hello(1, "probe")))
        if not hello.poll(10_000):
            raise RuntimeError("no WELCOME for the probe")
        welcome = decode_from_broker(hello.recv_multipart())
        hello.close(linger=0)
        assert isinstance(welcome, m.Welcome), welcome
        self.pub_port = int(welcome.pub.rpartition(":")[2])
        self.worst = 0.0
        self.lost = 0
        self._lock = threading.Lock()
        self.p = subprocess.Popen(
            [sys.executable, "-c", _PROBE, endpoint, str(PING_TIMEOUT)],
            cwd=source, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            took, ok = line.split()
            with self._lock:
                self.worst = max(self.worst, float(took))
                self.lost += ok == "0"

    def reset(self) -> None:
        with self._lock:
            self.worst, self.lost = 0.0, 0

    def close(self) -> None:
        self.p.kill()
        self.p.wait(5)
        self._thread.join(5)


def wait_quiet(broker: Broker, timeout: float = 90.0) -> int:
    """RSS once it has stopped moving (six readings 0.4 s apart within 1 MB: the
    broker gives memory back a second after it drops a flood)."""
    deadline = time.monotonic() + timeout
    readings: list[int] = []
    while time.monotonic() < deadline and broker.alive():
        readings = [*readings[-5:], mem(broker.pid)[0]]
        if len(readings) == 6 and max(readings) - min(readings) < MB:
            break
        time.sleep(0.4)
    return mem(broker.pid)[0] if broker.alive() else 0


# ------------------------------------------------------------ raw peers


def dealer(ctx: Ctx, endpoint: str, routing_id: bytes | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(endpoint)
    return sock


def generated_id(n: int) -> bytes:
    counter = int.from_bytes(FIRST_GENERATED_ID[1:], "big") + n
    return b"\x00" + (counter % 2**32).to_bytes(4, "big")


def stats_answered(socks: list[zmq.Socket[bytes]], timeout: float = 5.0) -> int:
    for sock in socks:
        sock.send_multipart(encode(m.Stats(1)))
    deadline = time.monotonic() + timeout
    answered = 0
    for sock in socks:
        left = deadline - time.monotonic()
        if sock.poll(max(0, int(left * 1000))):
            answered += isinstance(decode_from_broker(sock.recv_multipart()), m.StatsReply)
    return answered


def zmtp_frame(body: bytes, command: bool = False, more: bool = False) -> bytes:
    flags = (4 if command else 0) | (1 if more else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


GREETING = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" * 32


def zmtp_connect(port: int, socket_type: bytes, identity: bytes | None = None) -> socket.socket:
    """A hand-written ZMTP 3.0 peer, handshake done (it waits for the broker's
    READY: libzmq drops a peer whose first message comes before that)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    props = b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    if identity is not None:
        props += b"\x08Identity" + struct.pack(">I", len(identity)) + identity
    sock.sendall(GREETING + zmtp_frame(b"\x05READY" + props, command=True))
    _read(sock, 64)
    flags = _read(sock, 1)[0]
    _read(sock, int.from_bytes(_read(sock, 8 if flags & 2 else 1), "big"))
    return sock


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise ConnectionResetError("hung up during the handshake")
        data += more
    return data


def topics(n: int, length: int) -> Iterator[bytes]:
    for i in range(n):
        head = b"%08d" % i
        yield head + b"x" * (length - len(head))


def subscribe_flood(port: int, items: Iterator[bytes], seconds: float) -> dict[str, Any]:
    """Every topic as a subscription message, from hand-written SUB connections that
    reconnect when dropped (a persistent attacker); the last one stays connected
    until ``release`` is called (subscriptions live as long as the connection)."""
    deadline = time.monotonic() + seconds
    sent = connections = 0
    peer: socket.socket | None = None
    chunk = bytearray()
    count = 0
    timed_out = False

    def flush() -> None:
        nonlocal peer, connections, sent, timed_out
        if time.monotonic() > deadline:
            timed_out = True
            return
        try:
            if peer is None:
                peer = zmtp_connect(port, b"SUB")
                connections += 1
            peer.sendall(chunk)
            sent += count
        except OSError:
            if peer is not None:
                peer.close()
            peer = None

    for topic in items:
        chunk += zmtp_frame(b"\x01" + topic)
        count += 1
        if len(chunk) >= 256 * 1024:
            flush()
            chunk.clear()
            count = 0
            if timed_out:
                break
    if chunk and not timed_out:
        flush()
    return {"topics sent": sent, "connections": connections, "sock": peer}


# -------------------------------------------------------------- attacks


@dataclass
class Run:
    """One attack's figures."""

    name: str
    what: str
    before: int = 0
    peak: int = 0
    held: int = 0
    after: int = 0
    cpu: float = 0.0
    ping: float = 0.0
    lost_pings: int = 0
    alive: bool = True
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scene:
    broker: Broker
    ctx: Ctx
    probe: Probe
    run: Run
    hold: list[Any] = field(default_factory=list)  # what the attacker keeps open

    def held(self) -> None:
        """Record RSS now (quiet, the attacker still connected)."""
        self.run.held = wait_quiet(self.broker)


Attack = Callable[[Scene], None]
ATTACKS: dict[str, tuple[str, Attack]] = {}
#: Attacks run only when named in --only (they take minutes or every file descriptor).
ON_REQUEST: set[str] = set()


def attack(name: str, what: str, on_request: bool = False) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        ATTACKS[name] = (what, fn)
        if on_request:
            ON_REQUEST.add(name)
        return fn

    return register


@attack("rid_claim", "40 peers, then 400 DEALERs claim the next generated ids, then 40 more")
def _rid_claim(s: Scene) -> None:
    earlier = [dealer(s.ctx, s.broker.endpoint) for _ in range(40)]
    s.run.notes["earlier answered"] = stats_answered(earlier)
    # Generated ids so far: the probe's HELLO (0), the probe (1), the 40 earlier (2-41).
    claims = [dealer(s.ctx, s.broker.endpoint, generated_id(42 + i)) for i in range(400)]
    s.run.notes["claims answered"] = stats_answered(claims)
    later = [dealer(s.ctx, s.broker.endpoint) for _ in range(40)]
    s.run.notes["later answered"] = stats_answered(later)
    stats = subprocess.run(
        [sys.executable, "-m", "zchat", "stats", "--connect", s.broker.endpoint, "--timeout", "3"],
        cwd=s.broker.source, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    s.run.notes["zchat stats exit"] = stats.returncode
    s.hold += earlier + claims + later
    s.held()


@attack("rid_first", "claim the next 100 generated ids on a fresh broker, then 20 id-less")
def _rid_first(s: Scene) -> None:
    # The probe's HELLO and the probe (id-less) took generated ids 0 and 1.
    claims = [dealer(s.ctx, s.broker.endpoint, generated_id(2 + i)) for i in range(100)]
    s.run.notes["claims answered"] = stats_answered(claims)
    idless = [dealer(s.ctx, s.broker.endpoint) for _ in range(20)]
    s.run.notes["id-less answered"] = stats_answered(idless)
    s.hold += claims + idless
    s.held()


#: Claims the lottery holds: the broker's open-file limit (20,000 here) less room.
LOTTERY_CLAIMS = 18_000
LOTTERY_SECONDS = 600.0


@attack(
    "rid_lottery",
    f"{LOTTERY_CLAIMS:,} random generated-looking ids claimed, then id-less connections "
    f"until the counter hits one (at most {LOTTERY_SECONDS:.0f} s)",
    on_request=True,
)
def _rid_lottery(s: Scene) -> None:
    """Seeded ids are unpredictable, not uncollidable: with K ids claimed at random,
    each id-less connection hits one with probability K / 2^32."""
    claims = [
        zmtp_connect(s.broker.port, b"DEALER", b"\x00" + os.urandom(4))
        for _ in range(LOTTERY_CLAIMS)
    ]
    s.hold += claims
    s.run.notes["claims"] = LOTTERY_CLAIMS
    s.run.notes["expected connections"] = 2**32 // LOTTERY_CLAIMS
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < LOTTERY_SECONDS and s.broker.alive():
        with contextlib.suppress(OSError):
            zmtp_connect(s.broker.port, b"DEALER").close()
            n += 1
    s.run.notes["id-less connections"] = n
    s.run.notes["per second"] = round(n / (time.monotonic() - started))
    if s.broker.alive():
        s.held()


def _flood(s: Scene, n: int, length: int, seconds: float = 60) -> None:
    result = subscribe_flood(s.probe.pub_port, topics(n, length), seconds)
    if result["sock"] is not None:
        s.hold.append(result.pop("sock"))
    else:
        result.pop("sock")
    s.run.notes.update(result)
    s.held()
    s.run.notes["bytes per topic"] = round((s.run.held - s.run.before) / n)


@attack("long_subs", "one SUB subscribes 100,000 topics of 1,000 bytes")
def _long_subs(s: Scene) -> None:
    _flood(s, 100_000, 1000)


for _n in (1_000, 10_000, 100_000):
    attack(f"short_subs_{_n // 1000}k", f"one SUB subscribes {_n:,} distinct 20-byte topics")(
        lambda s, n=_n: _flood(s, n, 20)
    )
for _n in (100_000, 300_000):
    attack(
        f"longest_subs_{_n // 1000}k",
        f"one SUB subscribes {_n:,} distinct {LONGEST_TOPIC}-byte topics",
    )(lambda s, n=_n: _flood(s, n, LONGEST_TOPIC))


def _multipart(s: Scene, frames: int, size: int) -> None:
    raw = dealer(s.ctx, s.broker.endpoint)
    raw.setsockopt(zmq.SNDHWM, 0)
    frame = zmq.Frame(b"\xab" * size)
    raw.send_multipart([b"ZCHAT/1", b"STATS", *([frame] * (frames - 2))], copy=False)
    s.run.notes["request MB"] = round(frames * size / MB)
    # Until the broker has had it (its peak moved by half of it) or 30 s.
    deadline = time.monotonic() + 30
    while mem(s.broker.pid)[1] - s.run.before < frames * size // 2:
        if time.monotonic() > deadline or not s.broker.alive():
            break
        time.sleep(0.05)
    s.run.notes["answered"] = bool(raw.poll(1000))
    s.hold.append(raw)
    s.held()
    rise = mem(s.broker.pid)[1] - s.run.before
    s.run.notes["peak rise / request"] = round(rise / (frames * size), 2)


@attack("multipart_2k", "one request of 2,000 frames × 60 KB (123 MB)")
def _multipart_2k(s: Scene) -> None:
    _multipart(s, 2000, 60 * 1024)


@attack("multipart_10k", "one request of 10,000 frames × 60 KB (614 MB)")
def _multipart_10k(s: Scene) -> None:
    _multipart(s, 10_000, 60 * 1024)


@attack("empty_frames", "one request of 1,000,000 empty frames (2 MB on the wire, raw ZMTP)")
def _empty_frames(s: Scene) -> None:
    frames = 1_000_000
    raw = zmtp_connect(s.broker.port, b"DEALER")
    raw.sendall(
        zmtp_frame(b"ZCHAT/1", more=True)
        + zmtp_frame(b"STATS", more=True)
        + b"\x01\x00" * (frames - 3)
        + b"\x00\x00"
    )
    # Until the broker has dropped it (it logs one line), or 120 s.
    deadline = time.monotonic() + 120
    while not any("frames" in line for line in s.broker.lines()[-3:]):
        if time.monotonic() > deadline or not s.broker.alive():
            break
        time.sleep(0.2)
    s.hold.append(raw)
    s.held()
    s.run.notes["bytes per frame"] = round((s.run.held - s.run.before) / frames)


def _stall(s: Scene, first_bytes: bytes, count: int = 1000, watch: float = 35.0) -> None:
    conns = []
    for _ in range(count):
        c = socket.create_connection(("127.0.0.1", s.broker.port), timeout=5)
        c.sendall(first_bytes)
        c.setblocking(False)
        conns.append(c)
    s.held()
    # How long the broker keeps them (libzmq's HANDSHAKE_IVL is 30 s by default).
    started = time.monotonic()
    closed_at: list[float] = []
    open_ = list(conns)
    while open_ and time.monotonic() - started < watch:
        still = []
        for c in open_:
            try:
                data = c.recv(4096)
                if data == b"":
                    closed_at.append(time.monotonic() - started)
                else:
                    still.append(c)
            except BlockingIOError:
                still.append(c)
            except OSError:
                closed_at.append(time.monotonic() - started)
        open_ = still
        time.sleep(0.5)
    s.run.notes["dropped by the broker"] = f"{len(closed_at)} of {count}"
    if closed_at:
        s.run.notes["dropped after s"] = round(min(closed_at), 1)
    s.run.notes["bytes per connection"] = round((s.run.held - s.run.before) / count)
    s.hold += conns


@attack("slowloris", "1,000 TCP connections send half a ZMTP greeting and stall")
def _slowloris(s: Scene) -> None:
    _stall(s, b"\xff" + b"\0" * 8)


@attack("stall_zmtp1", "1,000 TCP connections send 2 bytes of a ZMTP 1.0 identity and stall")
def _stall_zmtp1(s: Scene) -> None:
    _stall(s, b"\x05\x00", watch=10.0)


@attack("stalled_subs", "100 SUBs that never read, while 20 sessions say 3.9 KB lines for 20 s")
def _stalled_subs(s: Scene) -> None:
    """Each subscriber that does not read holds up to hwm broadcasts queued in the
    broker (about 240 bytes each: three message headers; the body is shared)."""
    senders = []
    for i in range(20):
        d = dealer(s.ctx, s.broker.endpoint)
        d.setsockopt(zmq.SNDHWM, 0)
        d.send_multipart(encode(m.Hello(1, f"sender{i}")))
        d.send_multipart(encode(m.Join(2, "flood", history=0)))
        senders.append(d)
    subs = []
    for _ in range(100):
        sub = s.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1)
        sub.setsockopt(zmq.RCVBUF, 4096)
        sub.setsockopt(zmq.SUBSCRIBE, m.room_topic("flood"))
        sub.connect(f"tcp://127.0.0.1:{s.probe.pub_port}")
        subs.append(sub)
    time.sleep(1)
    text = "x" * 3900
    said = 0
    started = time.monotonic()
    while time.monotonic() - started < 20:
        for d in senders:
            said += 1
            d.send_multipart(encode(m.Say(said + 10, "flood", os.urandom(8).hex(), text)))
            while d.poll(0):
                d.recv_multipart()
        time.sleep(0.005)
    s.run.notes["SAYs sent"] = said
    s.hold += senders + subs
    s.held()


@attack("garbage", "a raw DEALER sends 10,000 tiny garbage messages a second for 5 s")
def _garbage(s: Scene) -> None:
    raw = dealer(s.ctx, s.broker.endpoint)
    raw.setsockopt(zmq.SNDHWM, 0)
    lines_before = len(s.broker.lines())
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < 5.0:
        while sent < elapsed * 10_000:
            raw.send_multipart([b"ZCHAT/1", b"JUNK", os.urandom(8)])
            sent += 1
        time.sleep(0.002)
    s.run.notes["sent"] = sent
    s.hold.append(raw)
    s.held()
    s.run.notes["broker log lines"] = len(s.broker.lines()) - lines_before
    drained = 0
    while raw.poll(200):
        raw.recv_multipart()
        drained += 1
    s.run.notes["answers"] = drained


# --------------------------------------------------------------- running


def run_one(name: str, source: Path, tmp: Path) -> Run:
    what, fn = ATTACKS[name]
    run = Run(name, what)
    ctx: Ctx = zmq.Context()
    broker = Broker(source, tmp)
    probe = None
    scene = None
    try:
        probe = Probe(ctx, broker.endpoint, source)
        run.before = wait_quiet(broker)
        probe.reset()
        cpu0 = cpu_seconds(broker.pid)
        started = time.monotonic()
        scene = Scene(broker, ctx, probe, run)
        fn(scene)
        run.seconds = round(time.monotonic() - started, 1)
        for held in scene.hold:
            _close(held)
        scene.hold.clear()
        run.after = wait_quiet(broker)
        run.alive = broker.alive()
        if run.alive:
            run.peak = mem(broker.pid)[1]
            run.cpu = round(cpu_seconds(broker.pid) - cpu0, 2)
        run.ping, run.lost_pings = probe.worst, probe.lost
        if not run.alive:
            run.notes["died"] = (broker.lines() or ["(no output)"])[-1][:120]
    finally:
        if probe is not None:
            probe.close()
        if scene is not None:
            for held in scene.hold:
                with contextlib.suppress(Exception):
                    _close(held)
        broker.stop()
        ctx.destroy(linger=0)
    return run


def _close(held: Any) -> None:
    if isinstance(held, zmq.Socket):
        held.close(linger=0)
    else:
        held.close()


def fmt(run: Run) -> str:
    def mb(v: int) -> str:
        return f"{v / MB:,.0f}" if v else "-"

    notes = "; ".join(f"{k} {v}" for k, v in run.notes.items())
    ping = f"{run.ping * 1000:,.0f}" + (f" ({run.lost_pings} lost)" if run.lost_pings else "")
    return (
        f"| {run.name} | {mb(run.before)} | {mb(run.peak)} | {mb(run.held)} | {mb(run.after)} "
        f"| {run.cpu:.2f} | {ping} | {'yes' if run.alive else 'NO'} | {notes} |"
    )


HEADER = (
    "| attack | before MB | peak MB | held MB | after MB | cpu s | worst STATS ms | alive "
    "| notes |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated attack names")
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    ap.add_argument("--source", type=Path, default=REPO, help="checkout to run the broker from")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--label", default="", help="what --source is (e.g. a commit), for the title")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, _) in ATTACKS.items():
            print(f"{name:18} {what}{' (only with --only)' if name in ON_REQUEST else ''}")
        return 0
    names = args.only.split(",") if args.only else [n for n in ATTACKS if n not in ON_REQUEST]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        ap.error(f"unknown attacks: {', '.join(unknown)} (see --list)")
    raise_nofile()
    source = args.source.resolve()
    rev = (
        args.label
        or subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    print(f"# zchat hostile bench: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"broker from {source} {rev}, pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print(HEADER, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="zchat-hostile-"))
    runs = []
    failed = False
    try:
        for name in names:
            try:
                run = run_one(name, source, tmp)
            except Exception as exc:  # one attack's failure must not hide the others
                run = Run(name, ATTACKS[name][0], alive=False, notes={"error": repr(exc)[:200]})
                failed = True
            runs.append(run)
            print(fmt(run), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for run in runs:
        print(f"- {run.name}: {run.what}")
    if args.json:
        args.json.write_text(json.dumps([run.__dict__ for run in runs], indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
