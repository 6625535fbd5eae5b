"""CURVE key files, as ``zchat keygen`` writes them (docs/security.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils import z85


@dataclass(frozen=True)
class ClientKeys:
    """What a CURVE client needs: its key pair and the broker's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, key_file: str, server_key: str) -> ClientKeys | None:
        """Keys from a client config (None when CURVE is off); KeyFileError if unusable."""
        if not key_file and not server_key:
            return None
        if not key_file or not server_key:
            raise KeyFileError("CURVE needs both curve_key and curve_server_key")
        public, secret = load_secret(key_file, "client's secret key file, curve_key")
        return cls(public, secret, load_public(server_key))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client; before connect()."""
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


#: Monitor events that mean the CURVE handshake failed, and what to tell the user.
HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the broker refused this client's key (not on its list)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: (
        "the handshake failed: wrong broker key (curve_server_key), or the broker has no CURVE"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the handshake failed: the broker speaks no CURVE",
}
#: Every monitor event a client watches on its DEALER.
MONITORED = (
    sum(HANDSHAKE_FAILURES)
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
)
NEEDS_CURVE = "the broker requires CURVE: set curve_key and curve_server_key"


#: Failed handshakes in a row that settle an ambiguous failure: a broker killed
#: or restarted mid-handshake fails one too (libzmq retries every 100 ms, so a
#: real refusal repeats well within the 2 s a user waits for the verdict).
AMBIGUOUS_TRIES = 3


def handshake_failure(event: int, value: int, curve: bool, tries: int = 1) -> str | None:
    """What a failed handshake means for the user, or None if ``event`` is no failure
    (or not yet a verdict).

    ``curve``: whether this client has keys. A client without keys against a
    CURVE broker sees a mechanism mismatch: it needs keys, retrying cannot help.
    ``tries``: failed handshakes in a row, this one included. A refusal by the
    broker's ZAP handler and a mechanism mismatch settle it at once; a failure
    without detail or another protocol error only once it repeats.
    """
    known = HANDSHAKE_FAILURES.get(zmq.Event(event)) if event in set(zmq.Event) else None
    if known is None:
        return None
    mismatch = (
        event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    )
    if not (event == zmq.EVENT_HANDSHAKE_FAILED_AUTH or mismatch or tries >= AMBIGUOUS_TRIES):
        return None
    if curve:
        return known
    # Without keys the handshake is NULL, which only fails against a broker that
    # wants more: CURVE. (libzmq reports a mechanism mismatch, or no detail when
    # the broker's ZAP handler answers first.)
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and not mismatch:
        return f"the handshake failed: a protocol error ({value:#x}) on the broker's side"
    return NEEDS_CURVE


class KeyFileError(Exception):
    """A key file is missing or unreadable; str() names the file."""


def _readable(path: str, what: str) -> None:
    """KeyFileError naming ``path`` if it is missing or cannot be read (zmq.auth only
    says "Invalid certificate file" for both)."""
    if not os.path.exists(path):
        raise KeyFileError(f"{path}: no such file (the {what})")
    if os.path.isdir(path):
        raise KeyFileError(f"{path}: is a directory, not the {what}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def load_secret(path: str, what: str = "secret key file") -> tuple[bytes, bytes]:
    """(public, secret) from a secret key file, or KeyFileError saying what is wrong."""
    import zmq.auth

    path = os.path.expanduser(path)
    _readable(path, what)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read a CURVE key pair: {exc}") from None
    if not secret:
        raise KeyFileError(f"{path}: holds no secret key (use the .key_secret file)")
    return public, secret


def load_public(path_or_key: str) -> bytes:
    """A public key from a key file, or given directly as 40 Z85 characters."""
    if len(path_or_key) == 40 and not os.path.exists(path_or_key):
        try:
            z85.decode(path_or_key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            pass
        else:
            return path_or_key.encode("ascii")
    import zmq.auth

    path_or_key = os.path.expanduser(path_or_key)
    _readable(path_or_key, "broker's public key file, curve_server_key")
    try:
        public, _ = zmq.auth.load_certificate(path_or_key)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path_or_key}: cannot read a CURVE public key: {exc}") from None
    return public
