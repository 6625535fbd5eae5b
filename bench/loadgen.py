"""One load-generator worker: many clients of one system in one process.

The harness (bench/harness.py) starts it as ``python -m bench.loadgen SPEC``,
SPEC being a JSON object (the keys are read in ``Worker.__init__`` and the
role classes). It talks to the harness by lines on stdin and stdout:

    worker -> harness   READY {...}      every client is connected and ready
                        PROBED           (zmq.proxy receivers) every sender heard
                        PROGRESS n       messages counted so far (receivers)
                        RESULT {...}     the measurements; the worker then exits 0
                        FAIL text        something broke; the worker exits 1
    harness -> worker   PROBE            (zmq.proxy senders) send probes until GO
                        GO               start the workload
                        STOP             finish now and report

Two systems here, two modes each (``recv``: subscribers/listeners, ``send``:
senders/chatters); zchat (through its real client API) and NATS run on an asyncio
loop instead, in bench/apiload.py, which ``main`` hands their specs to:

* ``proxy``: PUB and SUB sockets around a bare ``zmq.proxy`` (bench/proxy.py).
  A subscriber is ready when the proxy's XPUB welcome message reaches it
  (``XPUB_WELCOME_MSG``). PUB/SUB has no end-to-end handshake, so before GO the
  senders send probes until every subscriber has heard every sender (``PROBED``).
* ``mqtt``: paho-mqtt clients of mosquitto, QoS 0, driven by this loop through
  paho's external-loop API (``socket``, ``loop_read``, ``loop_write``).

Every socket is polled through one epoll object on its file descriptor, not with
``zmq.Poller`` (its cost grows with the number of sockets, shared/ZMQ-NOTES.md).
A zmq socket's FD (``zmq.FD``) is edge-triggered: a ready socket is drained while
``zmq.EVENTS`` says POLLIN (reading EVENTS re-arms the FD, like EAGAIN, and costs a
third of a raised ``zmq.Again``), and a socket we sent on or subscribed on is
drained once more afterwards, since that call may have consumed the edge. Every
loop is bounded by the spec's ``deadline`` (seconds of worker life).
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

HWM = 100_000  # the zchat broker's own per-peer queue bound, used for every system
PROGRESS_EVERY = 0.5  # seconds between PROGRESS lines
PROXY_TOPIC = b"bench\x00"
# pyzmq's Socket.getsockopt turns EVENTS into an enum and ``&`` on it builds
# another: the backend's plain-int ``get`` costs half as much per message.
_get = zmq.backend.Socket.get
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
MQTT_TOPIC = "bench/room"


class Fail(Exception):
    """The worker cannot go on; str() is the one line the harness shows."""


def make_text(tag: str, i: int, size: int) -> str:
    """A message text of ``size`` characters carrying the run tag, its index and
    the send time (Unix seconds), so any receiver can compute the latency."""
    head = f"{tag}|{i}|{time.time():.6f}|"
    return head + "x" * max(0, size - len(head))


class Tally:
    """What the receivers of one worker got: counts, duplicates, latencies."""

    def __init__(self, clients: int, expect: int, tag: str, latency: bool) -> None:
        self.tag = tag
        self.expect = expect
        self.seen = [bytearray(expect) for _ in range(clients)]
        self.counts = [0] * clients
        self.total = 0
        self.dups = 0
        self.foreign = 0  # index out of range: not ours
        self.complete = 0  # clients that got all ``expect``
        self.t_first = 0.0
        self.t_last = 0.0
        self.lat: array.array[float] | None = array.array("d") if latency else None

    def hit(self, client: int, text: str, now: float) -> None:
        parts = text.split("|", 3)
        if parts[0] != self.tag or len(parts) < 4:
            return  # a probe, or an event of another run
        i = int(parts[1])
        if not 0 <= i < self.expect:
            self.foreign += 1
            return
        seen = self.seen[client]
        if seen[i]:
            self.dups += 1
            return
        seen[i] = 1
        self.total += 1
        self.counts[client] += 1
        if self.counts[client] == self.expect:
            self.complete += 1
        if not self.t_first:
            self.t_first = now
        self.t_last = now
        if self.lat is not None:
            self.lat.append(now - float(parts[2]))

    def summary(self, latency_file: str | None) -> dict[str, Any]:
        if self.lat is not None and latency_file:
            with open(latency_file, "wb") as fh:
                self.lat.tofile(fh)
        return {
            "total": self.total,
            "dups": self.dups,
            "foreign": self.foreign,
            "complete": self.complete,
            "min_count": min(self.counts, default=0),
            "t_first": self.t_first,
            "t_last": self.t_last,
            "latency_file": latency_file if self.lat is not None else None,
        }


class Schedule:
    """When the senders send message i: at once with a window of unacknowledged
    messages (``rate`` 0), or at ``t0 + i / rate``, round robin over the senders."""

    def __init__(self, total: int, rate: float, window: int) -> None:
        self.total = total
        self.rate = rate
        self.window = window
        self.next = 0
        self.t0 = 0.0

    def start(self, now: float) -> None:
        self.t0 = now

    def due(self, now: float, unacked: int) -> int:
        """How many messages may go out now."""
        left = self.total - self.next
        if self.rate <= 0:
            return max(0, min(left, self.window - unacked))
        want = int((now - self.t0) * self.rate) + 1
        return max(0, min(left, want - self.next))

    def wait(self, now: float) -> float:
        """Seconds until the next message is due (for the poll timeout)."""
        if self.rate <= 0 or self.next >= self.total:
            return 0.05
        return max(0.0, self.t0 + self.next / self.rate - now)


class Worker:
    """The epoll loop, the control lines and the bounds shared by every role."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.n: int = spec["clients"]
        self.first: int = spec.get("first", 0)  # global index of this worker's first client
        self.tag: str = spec.get("tag", "t")
        self.size: int = spec.get("size", 100)
        self.end = time.monotonic() + float(spec.get("deadline", 120))
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.dirty: set[Callable[[int], None]] = set()
        self.commands: deque[str] = deque()
        self._stdin = b""
        self.go = self.stop = self.probing = False
        self.running = False  # the workload has started (GO seen and start_workload run)
        self.t_start = self.t_ready = 0.0
        self.t_go = 0.0
        self.cpu_go = 0.0
        self._progress_at = 0.0
        self._progress_sent = -1
        os.set_blocking(0, False)
        self.watch(0, self._read_stdin, edge=False)
        if self.mode == "recv":
            self.tally = Tally(
                self.n, spec.get("expect", 0), self.tag, bool(spec.get("latency_file"))
            )

    # ------------------------------------------------------------ the loop

    def watch(self, fd: int, fn: Callable[[int], None], edge: bool = True) -> None:
        flags = select.EPOLLIN | (select.EPOLLET if edge else 0)
        self.ep.register(fd, flags)
        self.handlers[fd] = fn

    def unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def poll(self, timeout: float) -> None:
        left = self.end - time.monotonic()
        if left <= 0:
            raise Fail(f"deadline of {self.spec.get('deadline', 120)} s passed")
        for fd, ev in self.ep.poll(max(0.0, min(timeout, left)), 4096):
            handler = self.handlers.get(fd)
            if handler is not None:
                handler(ev)
        while self.dirty:
            self.dirty.pop()(0)
        while self.commands:
            cmd = self.commands.popleft()
            if cmd == "GO":
                self.go = True
                self.probing = False
                self.t_go = time.time()
                self.cpu_go = time.process_time()
            elif cmd == "STOP":
                self.stop = True
            elif cmd == "PROBE":
                self.probing = True
        self.tick()

    def _read_stdin(self, _ev: int) -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        if not data:  # the harness is gone: stop
            self.unwatch(0)
            self.commands.append("STOP")
            return
        self._stdin += data
        *lines, self._stdin = self._stdin.split(b"\n")
        self.commands.extend(line.decode().strip() for line in lines if line.strip())

    def emit(self, kind: str, payload: Any = None) -> None:
        line = kind if payload is None else f"{kind} {json.dumps(payload)}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def tick(self) -> None:
        """Periodic work; roles extend it (pings, probes)."""
        if self.mode == "recv" and self.running:
            now = time.monotonic()
            if now >= self._progress_at:
                self._progress_at = now + PROGRESS_EVERY
                if self.tally.total != self._progress_sent:
                    self._progress_sent = self.tally.total
                    self.emit("PROGRESS", self.tally.total)

    # ------------------------------------------------------------- phases

    def run(self) -> int:
        try:
            self.t_start = time.time()
            self.setup()
            while not self.ready() and not self.stop:
                self.poll(0.05)
            if self.stop:
                raise Fail("stopped before ready")
            self.t_ready = time.time()
            self.emit("READY", {"t_start": self.t_start, "t_ready": self.t_ready})
            while not self.go and not self.stop:
                self.poll(0.02)
            if self.go:
                self.running = True
                self.start_workload()
                while not self.stop and not self.done():
                    self.poll(self.wait())
            self.emit("RESULT", self.result())
            return 0
        except Fail as exc:
            self.emit("FAIL", str(exc))
            return 1
        finally:
            self.close()

    def setup(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start_workload(self) -> None:
        pass

    def done(self) -> bool:
        if self.mode == "recv":
            return self.tally.complete == self.n and self.tally.expect > 0
        return False

    def wait(self) -> float:
        return 0.05

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clients": self.n,
            "t_start": self.t_start,
            "t_ready": self.t_ready,
            "t_go": self.t_go,
            # this worker's CPU seconds (all threads) from GO on: the workload, not the connects
            "cpu": time.process_time() - self.cpu_go if self.cpu_go else time.process_time(),
            "cpu_total": time.process_time(),
        }
        if self.mode == "recv":
            out.update(self.tally.summary(self.spec.get("latency_file")))
        return out

    def close(self) -> None:
        self.ep.close()


# ---------------------------------------------------------------------- proxy


class UnackedWorker(Worker):
    """A peer without acknowledgements: a message counts as acked once written."""

    schedule: Schedule
    t_first_send: float
    t_last_send: float

    def result(self) -> dict[str, Any]:
        out = super().result()
        if self.mode == "send":
            out.update(
                sent=self.schedule.next,
                acked=self.schedule.next,
                t_first=self.t_first_send,
                t_last_send=self.t_last_send,
                t_last_ack=self.t_last_send,
            )
        return out


class ProxyWorker(UnackedWorker):
    """PUB senders into the proxy's XSUB, SUB receivers on its XPUB."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, self.n + 64)
        self.socks: list[zmq.Socket[bytes]] = []
        self.senders: int = spec.get("senders", 1)
        self.probe_every: float = spec.get("probe_every", 0.02)
        self.heard: list[set[int]] = []
        self.heard_all = 0
        self.welcomed = 0
        self._probed_sent = False
        self.schedule = Schedule(spec.get("messages", 0), spec.get("rate", 0), HWM)
        self.t_first_send = self.t_last_send = 0.0
        self._probe_at = 0.0

    def setup(self) -> None:
        for i in range(self.n):
            if self.mode == "recv":
                sock = self.ctx.socket(zmq.SUB)
                sock.setsockopt(zmq.RCVHWM, HWM)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.spec["xpub"])
                sock.setsockopt(zmq.SUBSCRIBE, PROXY_TOPIC)
                self.heard.append(set())
                self.watch(sock.getsockopt(zmq.FD), self._reader(i, sock))
                self.dirty.add(self.handlers[sock.getsockopt(zmq.FD)])
            else:
                sock = self.ctx.socket(zmq.PUB)
                sock.setsockopt(zmq.SNDHWM, HWM)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.spec["xsub"])
            self.socks.append(sock)

    def _reader(self, i: int, sock: zmq.Socket[bytes]) -> Callable[[int], None]:
        heard = self.heard[i]
        tally = self.tally
        recv = sock.recv_multipart

        def on_ready(_ev: int) -> None:
            while _get(sock, _EVENTS) & _POLLIN:
                frames = recv(zmq.NOBLOCK)
                if len(frames) == 1:  # the XPUB's welcome: subscribed at the proxy
                    self.welcomed += 1
                    continue
                payload = frames[1]
                if payload[:2] == b"P|":  # a probe: proves this sender reaches us
                    if len(heard) < self.senders:
                        heard.add(int(payload.split(b"|")[1]))
                        if len(heard) == self.senders:
                            self.heard_all += 1
                else:
                    tally.hit(i, payload.decode(), time.time())

        return on_ready

    def ready(self) -> bool:
        return self.mode == "send" or self.welcomed == self.n

    def tick(self) -> None:
        super().tick()
        now = time.monotonic()
        if self.mode == "recv" and not self._probed_sent and self.heard_all == self.n:
            self._probed_sent = True
            self.emit("PROBED")
        if self.mode == "send" and self.probing and now >= self._probe_at:
            self._probe_at = now + self.probe_every
            for k, sock in enumerate(self.socks):
                sock.send_multipart([PROXY_TOPIC, b"P|%d|" % (self.first + k)])
        if self.mode == "send" and self.running:
            self._send_due()

    def start_workload(self) -> None:
        self.schedule.start(time.time())
        self.t_first_send = time.time()
        self._send_due()

    def _send_due(self) -> None:
        sched = self.schedule
        due = sched.due(time.time(), 0)
        for _ in range(due):
            i = sched.next
            sched.next += 1
            text = make_text(self.tag, i, self.size).encode()
            self.socks[i % self.n].send_multipart([PROXY_TOPIC, text])
        if due:
            self.t_last_send = time.time()

    def wait(self) -> float:
        return self.schedule.wait(time.time()) if self.mode == "send" else 0.05

    def done(self) -> bool:
        if self.mode == "send":
            return self.schedule.next >= self.schedule.total
        return super().done()

    def close(self) -> None:
        for sock in self.socks:
            # A PUB drops what it has not written yet at close with linger 0;
            # give a finished sender's last messages time to leave.
            sock.close(linger=5_000 if self.mode == "send" and not self.stop else 0)
        self.ctx.term()
        super().close()


# ----------------------------------------------------------------------- mqtt


class MqttWorker(UnackedWorker):
    """paho-mqtt clients of mosquitto, QoS 0, on this worker's epoll loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import paho.mqtt.client as mqtt  # only this role needs paho

        _connect_without_bind()
        self.mqtt = mqtt
        self.port: int = spec["port"]
        self.qos: int = spec.get("qos", 0)
        self.inflight: int = spec.get("inflight", 200)
        self.clients: list[Any] = []
        self.connected = 0
        self.subscribed = 0
        self.schedule = Schedule(spec.get("messages", 0), spec.get("rate", 0), HWM)
        self.t_first_send = self.t_last_send = 0.0
        self.writing: set[int] = set()

    def setup(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        target = self.subscribed if self.mode == "recv" else self.connected
        while len(self.clients) < self.n and len(self.clients) - target < self.inflight:
            self._connect(len(self.clients))

    def _connect(self, i: int) -> None:
        mqtt = self.mqtt
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{self.spec.get('nick', 'b')}{self.first + i}",
            userdata=i,
            protocol=mqtt.MQTTv311,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.port, keepalive=600)
        self.clients.append(c)
        sock = c.socket()
        # paho leaves Nagle on; libzmq and mosquitto (set_tcp_nodelay) turn it off.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()

        def on_ready(ev: int) -> None:
            if ev & select.EPOLLOUT:
                c.loop_write()
                self._want_write(c, fd)
            if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP) or not ev:
                for _ in range(256):  # loop_read reads one packet per call at QoS 0
                    before = self.tally.total if self.mode == "recv" else 0
                    if c.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                        raise Fail(f"mqtt client {i} lost its connection")
                    if self.mode != "recv" or self.tally.total == before:
                        break
                self._want_write(c, fd)

        self.watch(fd, on_ready, edge=False)
        self._want_write(c, fd)

    def _want_write(self, c: Any, fd: int) -> None:
        """Ask epoll for writability only while paho has bytes waiting."""
        if c.want_write() and fd not in self.writing:
            self.writing.add(fd)
            self.ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
        elif not c.want_write() and fd in self.writing:
            self.writing.discard(fd)
            self.ep.modify(fd, select.EPOLLIN)

    def _on_connect(self, c: Any, i: int, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            raise Fail(f"mqtt client {i}: connect refused: {reason}")
        self.connected += 1
        if self.mode == "recv":
            c.subscribe(MQTT_TOPIC, qos=self.qos)
        else:
            self._spawn()

    def _on_subscribe(self, c: Any, i: int, mid: int, reasons: Any, props: Any) -> None:
        self.subscribed += 1
        self._spawn()

    def _on_message(self, c: Any, i: int, msg: Any) -> None:
        payload = msg.payload
        if payload[:2] != b"P|":
            self.tally.hit(i, payload.decode(), time.time())

    def ready(self) -> bool:
        target = self.subscribed if self.mode == "recv" else self.connected
        return target == self.n

    def tick(self) -> None:
        super().tick()
        if self.mode == "send" and self.running:
            self._send_due()

    def start_workload(self) -> None:
        self.schedule.start(time.time())
        self.t_first_send = time.time()
        self._send_due()

    def _send_due(self) -> None:
        sched = self.schedule
        start = sched.next
        for _ in range(sched.due(time.time(), 0)):
            c = self.clients[sched.next % self.n]
            if sched.rate <= 0 and c.want_write():
                break  # socket full: wait for EPOLLOUT (TCP back-pressure)
            i = sched.next
            sched.next += 1
            c.publish(MQTT_TOPIC, make_text(self.tag, i, self.size), qos=self.qos)
            self._want_write(c, c.socket().fileno())
        if sched.next > start:
            self.t_last_send = time.time()

    def wait(self) -> float:
        if self.mode == "send" and self.schedule.rate <= 0:
            return 0.0 if not self.writing else 0.05
        return self.schedule.wait(time.time()) if self.mode == "send" else 0.05

    def done(self) -> bool:
        if self.mode == "send":
            return self.schedule.next >= self.schedule.total and not self.writing
        return super().done()

    def close(self) -> None:
        for c in self.clients:
            sock = c.socket()
            if sock is not None:
                sock.close()
        super().close()


def _connect_without_bind() -> None:
    """paho binds every socket to ("", 0) before connecting; such a bind must find
    a local port no other socket holds, so after tens of thousands of loopback
    connections (earlier cases' TIME_WAIT included) it fails with EADDRINUSE where
    a plain connect, which may reuse a port towards another address, succeeds."""
    plain = socket.create_connection

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if kwargs.get("source_address") == ("", 0):
            kwargs["source_address"] = None
        return plain(address, *args, **kwargs)

    socket.create_connection = create_connection  # type: ignore[assignment]


ROLES: dict[str, type[Worker]] = {"proxy": ProxyWorker, "mqtt": MqttWorker}
ASYNC_ROLES = ("zchat", "nats")  # bench/apiload.py


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    if spec["system"] in ASYNC_ROLES:
        from bench.apiload import main as run_async

        return run_async(spec)
    try:
        worker = ROLES[spec["system"]](spec)
    except Exception as exc:  # setup failed before the loop: still tell the harness
        print(f"FAIL {type(exc).__name__}: {exc}", flush=True)
        return 1
    return worker.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
