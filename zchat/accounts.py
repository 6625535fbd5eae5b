"""The accounts file: names with scrypt password hashes and client-certificate fingerprints.

Doors that let people in without a CURVE key (IRC, the web) check logins
against it: SASL PLAIN with a password, SASL EXTERNAL with the SHA-256
fingerprint of a TLS client certificate. ``zchat passwd NAME`` writes it. An
account owns its nick the way a CURVE key does: the door says the session's
user is ``account:NAME`` and the broker binds the nick to that (§6.11).

The file is text, one account a line, ``#`` comments::

    alice scrypt$16384$8$1$<salt, base64>$<hash, base64> sha256:5f1c...e0 cert:MIIB...

``cert:`` holds a client certificate (DER, base64): the IRC door trusts the
certificates listed here, self-signed ones included, for its TLS handshakes,
and finds the account by the certificate's fingerprint.

Names follow the nick rules (docs/protocol.md §3.1) and compare
case-insensitively. The file is written whole to a temporary file and renamed,
owner-only (0600): the hashes are slow to test but still secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from zchat.protocol.errors import ProtocolError
from zchat.protocol.rules import check_nick, nick_key

#: scrypt cost: 16 MiB and about 50 ms per check on a laptop core; the same
#: parameters as Python's documented example, above OWASP's minimum.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_HASH_BYTES = 32
_SALT_BYTES = 16
#: Most bytes of a password checked; longer ones are refused (a hash costs the same).
MAX_PASSWORD_BYTES = 1024


class AccountsError(Exception):
    """The accounts file cannot be read or written, or a line is malformed: one line for a human."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$N$r$p$salt$hash``."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
        maxmem=64 * 1024 * 1024, dklen=_HASH_BYTES,
    )  # fmt: skip
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the stored hash; False for a malformed hash too."""
    try:
        scheme, n, r, p, salt, want = stored.split("$")
        if scheme != "scrypt":
            return False
        salt_b, want_b = (
            base64.b64decode(salt, validate=True),
            base64.b64decode(want, validate=True),
        )
        got = hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt_b, n=int(n), r=int(r),
            p=int(p), maxmem=256 * 1024 * 1024, dklen=len(want_b),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want_b)


def normalize_fingerprint(text: str) -> str:
    """``sha256:`` and 64 lower-case hex digits, from any usual spelling
    (``AB:CD:...``, with or without the prefix); ValueError if it is not one."""
    raw = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise ValueError(f"not a SHA-256 fingerprint: {text[:80]!r}")
    return "sha256:" + raw


def fingerprint(der_cert: bytes) -> str:
    """The fingerprint of a DER certificate, as the accounts file keeps it."""
    return "sha256:" + hashlib.sha256(der_cert).hexdigest()


@dataclass(slots=True)
class Account:
    name: str  # as typed when it was made (display case)
    hash: str = ""  # "" for an account that logs in with a certificate only
    fingerprints: list[str] = field(default_factory=list)
    certs: list[bytes] = field(default_factory=list)  # DER client certificates


# A hash no password matches, checked for unknown names so that a wrong name
# costs as much time as a wrong password (no probing for names).
_DUMMY = "scrypt$16384$8$1$" + _b64(b"\0" * _SALT_BYTES) + "$" + _b64(b"\0" * _HASH_BYTES)


class Accounts:
    """The accounts of one file, in memory; ``save()`` writes them back."""

    def __init__(self, path: str | Path, accounts: dict[str, Account] | None = None) -> None:
        self.path = Path(path)
        self._by_key: dict[str, Account] = accounts or {}
        self.mtime_ns = 0

    # ----------------------------------------------------------------- reading

    @classmethod
    def load(cls, path: str | Path, missing_ok: bool = False) -> Accounts:
        """Read ``path``; AccountsError names the line of a mistake. A missing file
        is an error unless ``missing_ok`` (``zchat passwd`` makes it)."""
        p = Path(path)
        try:
            text = p.read_text("utf-8")
            mtime = p.stat().st_mtime_ns
        except FileNotFoundError:
            if missing_ok:
                return cls(p)
            raise AccountsError(
                f"accounts file {p} does not exist (zchat passwd NAME makes it)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AccountsError(f"cannot read accounts file {p}: {exc}") from None
        out: dict[str, Account] = {}
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            try:
                name = check_nick(words[0])
                hashed = "" if len(words) < 2 or words[1] == "-" else words[1]
                if hashed and not hashed.startswith("scrypt$"):
                    raise ValueError("the hash must start with scrypt$ (or be - for none)")
                prints = [normalize_fingerprint(w) for w in words[2:] if not w.startswith("cert:")]
                certs = [
                    base64.b64decode(w[5:], validate=True)
                    for w in words[2:]
                    if w.startswith("cert:")
                ]
            except (ValueError, ProtocolError) as exc:
                raise AccountsError(f"{p}, line {number}: {exc}") from None
            prints += [fingerprint(c) for c in certs if fingerprint(c) not in prints]
            out[nick_key(name)] = Account(name, hashed, prints, certs)
        accounts = cls(p, out)
        accounts.mtime_ns = mtime
        return accounts

    def changed(self) -> bool:
        """True if the file on disk is not the one loaded (``zchat passwd`` ran since)."""
        try:
            return self.path.stat().st_mtime_ns != self.mtime_ns
        except OSError:
            return self.mtime_ns != 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, name: str) -> bool:
        return nick_key(name) in self._by_key

    def get(self, name: str) -> Account | None:
        return self._by_key.get(nick_key(name))

    def verify(self, name: str, password: str) -> bool:
        """True if ``name`` has an account whose password is ``password``.

        Costs one scrypt whatever the answer, so wrong names and wrong
        passwords look the same from outside.
        """
        account = self._by_key.get(nick_key(name))
        if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
            return False
        stored = account.hash if account is not None and account.hash else _DUMMY
        ok = check_password(stored, password)
        return ok and account is not None and bool(account.hash)

    def by_fingerprint(self, print_: str) -> str | None:
        """The account name a certificate fingerprint belongs to, or None."""
        try:
            want = normalize_fingerprint(print_)
        except ValueError:
            return None
        for account in self._by_key.values():
            if want in account.fingerprints:
                return account.name
        return None

    def certificates(self) -> list[bytes]:
        """Every client certificate (DER) of every account: what TLS should trust."""
        return [c for a in self._by_key.values() for c in a.certs]

    # ----------------------------------------------------------------- writing

    def set(
        self,
        name: str,
        password: str | None = None,
        add_fingerprint: str = "",
        add_cert: bytes = b"",
    ) -> Account:
        """Create or update ``name``: a new password (None keeps the old one) and
        optionally one more certificate fingerprint. ``save()`` writes it."""
        try:
            check_nick(name)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        if password is not None and not password:
            raise ValueError("the password is empty")
        if password is not None and len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            raise ValueError(f"the password is over {MAX_PASSWORD_BYTES} bytes")
        account = self._by_key.setdefault(nick_key(name), Account(name))
        if password is not None:
            account.hash = hash_password(password)
        if add_cert:
            add_fingerprint = fingerprint(add_cert)
            if add_cert not in account.certs:
                account.certs.append(add_cert)
        if add_fingerprint:
            fp = normalize_fingerprint(add_fingerprint)
            if fp not in account.fingerprints:
                account.fingerprints.append(fp)
        if not account.hash and not account.fingerprints:
            del self._by_key[nick_key(name)]
            raise ValueError("an account needs a password or a certificate fingerprint")
        return account

    def remove(self, name: str) -> bool:
        return self._by_key.pop(nick_key(name), None) is not None

    def save(self) -> None:
        """Write the file whole (temporary file, then rename), mode 0600."""
        lines = [
            "# zchat accounts (zchat passwd NAME): name, scrypt hash, certificate fingerprints"
        ]
        for key in sorted(self._by_key):
            a = self._by_key[key]
            certs = ["cert:" + _b64(c) for c in a.certs]
            lines.append(" ".join([a.name, a.hash or "-", *a.fingerprints, *certs]))
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, self.path)
            self.mtime_ns = self.path.stat().st_mtime_ns
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise AccountsError(f"cannot write accounts file {self.path}: {exc}") from None
