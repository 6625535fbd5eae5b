"""One-shot requests for scripts: ``zchat send`` and ``zchat stats``.

``send``: one connection, HELLO, SAY each line, wait for the acks, BYE. For
scripts, bots and cron jobs, so it imports only what sending needs (no
asyncio, no prompt_toolkit) and uses one blocking DEALER.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import zmq

from zchat.keys import HANDSHAKE_FAILURES, ClientKeys
from zchat.protocol import ProtocolError, decode_from_broker, encode
from zchat.protocol import messages as m

#: SAYs in flight at once: bounds what a throttled stream resends (§6.12).
WINDOW = 64


class SendError(Exception):
    """Sending failed; str() is one line for the user."""


def send(
    endpoint: str,
    nick: str,
    room: str,
    texts: Iterable[str],
    timeout: float,
    keys: ClientKeys | None = None,
) -> int:
    """Say every text in ``room``; return how many the broker stored.

    A text the rules refuse (control characters, too long) is skipped and the
    rest is sent; SendError afterwards names the first one refused, so a script
    sees a failure without losing the good lines.
    """
    says: list[m.Say] = []
    refused: list[str] = []
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            continue
        try:
            says.append(m.Say(0, room, uuid.uuid4().hex, text))
        except ProtocolError as exc:
            refused.append(f"line {number}: {exc.text}")
    if says:
        with _dealer(endpoint, keys) as sock:
            rids = itertools.count(1)
            _ask(sock, m.Hello(next(rids), nick), time.monotonic() + timeout, endpoint)
            _say_all(sock, says, timeout, endpoint, rids)
            sock.send_multipart(encode(m.Bye(next(rids))))
            _receive(sock, time.monotonic() + timeout, endpoint)
    if refused:
        raise SendError(f"{len(refused)} not sent ({refused[0]}); {len(says)} sent")
    return len(says)


def _say_all(
    sock: zmq.Socket[bytes],
    says: list[m.Say],
    timeout: float,
    endpoint: str,
    rids: Iterator[int],
) -> None:
    """Pipeline the SAYs, WINDOW at a time; on rate_limited wait the retry-after and
    send the refused ones again, in their order (§6.12). ``timeout`` bounds each wait
    for an answer, not the whole stream: a throttled stream just takes longer."""
    order = {say.id: i for i, say in enumerate(says)}
    queue = deque(says)
    in_flight: dict[int, m.Say] = {}
    refused: list[m.Say] = []
    hold_until = 0.0
    while queue or in_flight or refused:
        if refused and not in_flight:  # every answer of the window is in: retry in order
            queue.extendleft(sorted(refused, key=lambda say: order[say.id], reverse=True))
            refused.clear()
            time.sleep(max(0.0, hold_until - time.monotonic()))
        while queue and not refused and len(in_flight) < WINDOW:
            say = dataclasses.replace(queue.popleft(), rid=next(rids))
            in_flight[say.rid] = say
            sock.send_multipart(encode(say))
        if not in_flight:
            continue
        reply = _receive(sock, time.monotonic() + timeout, endpoint)
        sent = in_flight.pop(reply.rid, None)
        if sent is None:
            continue
        if isinstance(reply, m.Error):
            if reply.code != "rate_limited":
                raise SendError(f"{reply.code}: {reply.text}")
            refused.append(sent)
            hold_until = max(hold_until, time.monotonic() + reply.retry_after)


def stats(endpoint: str, timeout: float, keys: ClientKeys | None = None) -> m.StatsReply:
    """The broker's counters (STATS needs no HELLO, so no session is made)."""
    with _dealer(endpoint, keys) as sock:
        reply = _ask(sock, m.Stats(1), time.monotonic() + timeout, endpoint)
    if not isinstance(reply, m.StatsReply):
        raise SendError(f"unexpected answer {reply.TYPE.decode()} from the broker")
    return reply


@contextmanager
def _dealer(endpoint: str, keys: ClientKeys | None) -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)
    monitor = None
    if keys is not None:
        keys.apply(sock)
        monitor = sock.get_monitor_socket(sum(HANDSHAKE_FAILURES))
    sock.connect(endpoint)
    try:
        yield sock
    except SendError as exc:
        # No answer with CURVE on: say why if the handshake was refused.
        why = _handshake_failure(monitor) if monitor is not None else None
        raise SendError(f"authentication failed: {why}") if why else exc from None
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)


def _handshake_failure(monitor: zmq.Socket[bytes]) -> str | None:
    from zmq.utils.monitor import parse_monitor_message  # imports asyncio: only if needed

    while monitor.poll(0):
        event = parse_monitor_message(monitor.recv_multipart())["event"]
        why = HANDSHAKE_FAILURES.get(zmq.Event(event))
        if why is not None:
            return why
    return None


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
