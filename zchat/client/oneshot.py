"""One-shot requests for scripts: ``zchat send`` and ``zchat stats``.

``send``: one connection, HELLO, SAY each line, wait for the acks, BYE. For
scripts, bots and cron jobs, so it imports only what sending needs (no
asyncio, no prompt_toolkit) and uses one blocking DEALER.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import zmq

from zchat.protocol import ProtocolError, decode_from_broker, encode
from zchat.protocol import messages as m


class SendError(Exception):
    """Sending failed; str() is one line for the user."""


def send(endpoint: str, nick: str, room: str, texts: Iterable[str], timeout: float) -> int:
    """Say every text in ``room``; return how many the broker stored (all, or raise)."""
    try:
        says = [m.Say(i + 2, room, uuid.uuid4().hex, t) for i, t in enumerate(texts) if t.strip()]
    except ProtocolError as exc:
        raise SendError(exc.text) from None
    deadline = time.monotonic() + timeout
    with _dealer(endpoint) as sock:
        _ask(sock, m.Hello(1, nick), deadline, endpoint)
        waiting = {say.rid for say in says}
        # Pipelined: every SAY goes out at once; acks come back in order.
        for say in says:
            sock.send_multipart(encode(say))
        while waiting:
            reply = _receive(sock, deadline, endpoint)
            if isinstance(reply, m.Error):
                raise SendError(f"{reply.code}: {reply.text}")
            if isinstance(reply, m.Ack):
                waiting.discard(reply.rid)
        sock.send_multipart(encode(m.Bye(len(says) + 2)))
        _receive(sock, deadline, endpoint)
        return len(says)


def stats(endpoint: str, timeout: float) -> m.StatsReply:
    """The broker's counters (STATS needs no HELLO, so no session is made)."""
    with _dealer(endpoint) as sock:
        reply = _ask(sock, m.Stats(1), time.monotonic() + timeout, endpoint)
    if not isinstance(reply, m.StatsReply):
        raise SendError(f"unexpected answer {reply.TYPE.decode()} from the broker")
    return reply


@contextmanager
def _dealer(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def _ask(sock: zmq.Socket[bytes], req: m.Request, deadline: float, endpoint: str) -> m.Reply:
    sock.send_multipart(encode(req))
    reply = _receive(sock, deadline, endpoint)
    if isinstance(reply, m.Error):
        raise SendError(f"{reply.code}: {reply.text}")
    return reply


def _receive(sock: zmq.Socket[bytes], deadline: float, endpoint: str) -> m.Reply:
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SendError(f"no answer from a broker at {endpoint}")
        try:
            msg = decode_from_broker(sock.recv_multipart())
        except ProtocolError as exc:
            raise SendError(f"bad answer from the broker: {exc}") from None
        if isinstance(msg, m.Reply):
            return msg
