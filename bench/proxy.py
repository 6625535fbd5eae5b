"""The ceiling peer: a bare libzmq forwarder, ``zmq.proxy`` between XSUB and XPUB.

``python -m bench.proxy`` binds both on free loopback ports, prints
``READY <xsub endpoint> <xpub endpoint>`` and forwards until killed. Senders
connect PUB sockets to the XSUB, receivers SUB sockets to the XPUB. Options match
the zchat broker's (queue bounds of 100,000 messages, listen backlog 4096) so
the two differ only in what runs between the sockets.
"""

from __future__ import annotations

import sys

import zmq

HWM = 100_000
WELCOME = b"bench\x00W"  # matches the subscribers' topic b"bench\x00"


def main() -> int:
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.BACKLOG, 4096)
    # A one-frame welcome to every new subscriber, on the topic it subscribes to:
    # the load generator's "connected and subscribed" signal (like zchat's SYNCED).
    xpub.setsockopt(zmq.XPUB_WELCOME_MSG, WELCOME)
    xsub.bind("tcp://127.0.0.1:*")
    xpub.bind("tcp://127.0.0.1:*")
    sys.stdout.write(
        f"READY {xsub.getsockopt_string(zmq.LAST_ENDPOINT)} "
        f"{xpub.getsockopt_string(zmq.LAST_ENDPOINT)}\n"
    )
    sys.stdout.flush()
    zmq.proxy(xsub, xpub)  # runs in C until the process is killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
