"""An in-process world for the IRC protocol: the real BrokerCore on a memory store, no sockets.

Every request an ``IrcConnection`` makes goes through the codec into the core,
and every effect comes back through the codec, as the server would carry it
(zchat/broker/server.py): ``Send`` to ``reply``, ``Publish`` to the hub and
the room's watchers. The clock is a number the test moves.
"""

from __future__ import annotations

from zchat.broker.core import BrokerCore, CoreConfig, Limits, Publish, Send
from zchat.irc.hub import Hub
from zchat.irc.lines import Line, parse
from zchat.irc.protocol import IrcConnection, Settings
from zchat.protocol import decode_broadcast, decode_from_broker, encode
from zchat.protocol import messages as m
from zchat.store.memory import MemoryStore

PREFIX = b"\xffirc:"


class World:
    def __init__(self, settings: Settings | None = None, rate: float = 50.0, burst: int = 200,
                 admins: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.now = 1_000_000.0
        self.store = MemoryStore()
        self.core = BrokerCore(
            self.store,
            CoreConfig("tcp://*:1", 5.0, 15.0, Limits(rate=rate, burst=burst), admins),
            self.now,
        )
        self.settings = settings or Settings()
        self.hub = Hub()
        self.conns: dict[bytes, IrcConnection] = {}
        self.zmq_inbox: dict[bytes, list[m.Reply | m.Push]] = {}
        self._n = 0

    def connect(self, secure: bool = False, cert: str = "") -> Client:
        self._n += 1
        peer = PREFIX + self._n.to_bytes(8, "big")
        conn = IrcConnection(peer, self.settings, self.hub, self.now, secure=secure,
                             cert_fingerprint=cert)  # fmt: skip
        self.conns[peer] = conn
        return Client(self, conn)

    def register(self, nick: str, caps: str = "") -> Client:
        c = self.connect()
        if caps:
            c.send(f"CAP REQ :{caps}")
        c.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} Real")
        if caps:
            c.send("CAP END")
        c.first = c.take()
        assert any(" 001 " in x for x in c.first), f"{nick} did not register"
        c.first = c.first[next(i for i, x in enumerate(c.first) if " 376 " in x) + 1 :]
        return c

    def zmq(self, peer: bytes, req: m.Request, user: str = "") -> list[m.Reply | m.Push]:
        """A ZeroMQ client's request (peer: any id not starting with 0xff)."""
        self._run(peer, encode(req), user)
        self.pump()
        out, self.zmq_inbox[peer] = self.zmq_inbox.get(peer, []), []
        return out

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._carry(self.core.tick(self.now))
        for conn in list(self.conns.values()):
            if self.now >= conn.next_deadline():
                conn.tick(self.now)
        self.pump()

    def pump(self) -> None:
        for _ in range(100):
            busy = False
            for conn in list(self.conns.values()):
                reqs, conn.requests = conn.requests, []
                for req in reqs:
                    busy = True
                    self._run(conn.peer, encode(req), conn.user)
            if not busy:
                return
        raise AssertionError("requests never settle")

    def _run(self, peer: bytes, frames: list[bytes], user: str) -> None:
        self._carry(self.core.handle(peer, frames, self.now, user))

    def _carry(self, effects: list[object]) -> None:
        for fx in effects:
            if isinstance(fx, Publish):
                msg = decode_broadcast(encode(fx.msg))
                if isinstance(msg, m.Event):
                    self.hub.observe(msg)
                    room = self.hub.rooms.get(msg.room)
                    for conn in list(room.watchers) if room else []:
                        conn.event(msg, self.now)
            elif isinstance(fx, Send):
                reply = decode_from_broker(encode(fx.msg))
                conn = self.conns.get(fx.peer)
                if conn is not None:
                    conn.reply(reply, self.now)
                elif not fx.peer.startswith(b"\xff"):
                    self.zmq_inbox.setdefault(fx.peer, []).append(reply)


class Client:
    """One IRC connection in the world: send lines, take what came back."""

    def __init__(self, world: World, conn: IrcConnection) -> None:
        self.world = world
        self.conn = conn
        self.first: list[str] = []  # what came after the MOTD at registration (DMs)

    def send(self, *lines: str | bytes) -> None:
        for line in lines:
            raw = line.encode() if isinstance(line, str) else line
            self.conn.receive(raw, self.world.now)
            self.world.pump()

    def take(self) -> list[str]:
        """Lines written to the client since the last take, without CRLF."""
        out, self.conn.out = self.conn.out, []
        self.conn.written()  # as the door does once the bytes are out
        self.world.pump()
        lines: list[bytes] = []
        for chunk in out:  # a chunk may hold several lines (a long message split)
            assert chunk.endswith(b"\r\n") and b"\x00" not in chunk
            lines += chunk[:-2].split(b"\r\n")
        for x in lines:
            rest = x.split(b" ", 1)[1] if x.startswith(b"@") else x  # 512 bytes without tags
            assert b"\r" not in x and b"\n" not in x and len(rest) + 2 <= 512, x
        return [x.decode() for x in lines]

    def lines(self) -> list[Line]:
        return [parse(x.encode()) for x in self.take()]

    def said(self, *lines: str) -> list[str]:
        self.send(*lines)
        return self.take()
