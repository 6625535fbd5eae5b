"""CURVE authentication for the broker: the ZAP decision, without sockets.

libzmq asks a ZAP handler (RFC 27) about every CURVE handshake. The server
answers those requests in its own poll loop with ``zap_reply``; a CURVE server
without a ZAP handler would accept any key, so the handler is bound before
the broker's sockets are (docs/security.md).

The allow-list is a directory of public key files as ``zchat keygen`` (and
``zmq.auth.create_certificates``) writes them. It is re-read whenever the
directory changes, so adding or removing a key needs no restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import zmq.auth
from zmq.utils import z85

from zchat.keys import KeyFileError

#: The ZAP domain both broker sockets announce.
DOMAIN = b"zchat"


class KeyRing:
    """The allow-list: Z85 public keys found in a directory, or everyone (open mode)."""

    def __init__(self, directory: str | None, open_mode: bool = False) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.open_mode = open_mode
        self._keys: frozenset[bytes] = frozenset()
        self._stamp: int | None = None
        if self.directory is not None and not self.directory.is_dir():
            raise KeyFileError(f"{self.directory}: no such directory of client public keys")
        self.refresh()

    def refresh(self) -> None:
        """Re-read the directory if it changed since the last look (one stat)."""
        if self.directory is None:
            return
        try:
            stamp = self.directory.stat().st_mtime_ns
        except OSError:
            return  # keep the last good list rather than lock everyone out
        if stamp == self._stamp:
            return
        keys = set()
        for path in sorted(self.directory.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(path))
            except (OSError, ValueError):
                continue  # a half-written or foreign file: not a key
            keys.add(public)
        self._keys = frozenset(keys)
        self._stamp = stamp

    def allows(self, public_z85: bytes) -> bool:
        if self.open_mode:
            return True
        self.refresh()
        return public_z85 in self._keys

    def __len__(self) -> int:
        return len(self._keys)


def zap_reply(frames: Sequence[bytes], ring: KeyRing) -> tuple[list[bytes], str]:
    """The reply to one ZAP request, and what was refused ("" if nothing).

    ``frames`` is what the ZAP ROUTER received: routing envelope, empty
    delimiter, then version, request id, domain, address, identity,
    mechanism and credentials (RFC 27). The User-Id of an accepted client is
    its Z85 public key; sessions are tied to it (docs/security.md).
    """
    try:
        split = list(frames).index(b"")
    except ValueError:
        return [], "a ZAP request without a delimiter"
    head, body = list(frames[: split + 1]), list(frames[split + 1 :])
    if len(body) < 6:
        return [], "a short ZAP request"
    version, request_id, domain, address, _identity, mechanism, *creds = body

    def answer(code: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
        return [*head, b"1.0", request_id, code, text, user, b""]

    # An IPv4 peer of an IPv6 socket is ::ffff:a.b.c.d; the operator knows it as a.b.c.d.
    where = address.decode("ascii", "replace").removeprefix("::ffff:")
    if version != b"1.0" or domain != DOMAIN or mechanism != b"CURVE" or len(creds) != 1:
        return answer(b"400", b"not a zchat CURVE client"), f"{where}: not CURVE"
    public = z85.encode(creds[0])
    if not ring.allows(public):
        return answer(b"400", b"unknown key"), f"{where}: unknown key {public.decode()}"
    return answer(b"200", b"OK", public), ""


#: Handshake failures the broker's monitor reports, as the operator reads them.
HANDSHAKE_FAILURES = {
    int(zmq.Event.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "a client without CURVE keys",
    int(zmq.Event.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a client with the wrong broker key",
}
