"""Names, limits and text rules shared by both ends (docs/protocol.md §3).

Pure functions: each returns the normalised value or raises ProtocolError with
a code a broker can send back as is.
"""

from __future__ import annotations

import re
import unicodedata

from zchat.protocol.errors import ProtocolError

#: Largest body frame either side accepts, in bytes (§2).
MAX_BODY_BYTES = 64 * 1024
#: Longest chat text, in UTF-8 bytes (§3.3). Kept well under MAX_BODY_BYTES so
#: a reply carrying a message plus its metadata always fits.
MAX_TEXT_BYTES = 4000
MAX_TOPIC_CHARS = 300
MAX_NICK_CHARS = 32
MAX_ROOM_CHARS = 64
#: Most events one history reply may carry (§6.5).
MAX_HISTORY = 500

_NICK_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_ROOM_RE = re.compile(r"[a-z0-9_][a-z0-9_.\-]*\Z")


def check_nick(nick: str) -> str:
    """Return ``nick`` if it is a valid nick, else raise ``bad_nick``."""
    if not 1 <= len(nick) <= MAX_NICK_CHARS or not _NICK_RE.match(nick):
        raise ProtocolError(
            "bad_nick",
            f"invalid nick {nick[:40]!r}: 1-{MAX_NICK_CHARS} characters from "
            "A-Z a-z 0-9 _ . - (not starting with . or -)",
        )
    return nick


def nick_key(nick: str) -> str:
    """The form under which nicks are compared: ``Alice`` and ``alice`` are one nick."""
    return nick.lower()


def normalize_room(room: str) -> str:
    """Return the canonical room name: no leading ``#``, lower case.

    ``dev``, ``#dev`` and ``#Dev`` all name the room ``dev``.
    """
    name = room[1:] if room.startswith("#") else room
    # ASCII first: lower() folds some non-ASCII letters (the Kelvin sign) to ASCII.
    name = name.lower() if name.isascii() else "\x00"
    if not 1 <= len(name) <= MAX_ROOM_CHARS or not _ROOM_RE.match(name):
        raise ProtocolError(
            "bad_room",
            f"invalid room name {room[:70]!r}: 1-{MAX_ROOM_CHARS} characters from "
            "a-z 0-9 _ . - after an optional '#'",
        )
    return name


# Cc covers C0, DEL and C1; Cf covers invisible formatting such as bidi
# overrides and zero-width characters that can disguise text; Zl/Zp (U+2028,
# U+2029) break lines just as \n does. Cs (lone surrogates, e.g. from a
# surrogateescape'd stdin) cannot be encoded as UTF-8, so a message holding one
# could be built but never sent. Tab is fine.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Format characters that real text needs: ZWNJ and ZWJ (Persian and Indic
# scripts, emoji such as 👩‍💻) and the tag characters of subdivision flags.
ALLOWED_FORMAT = frozenset({"\t", "\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)})


def _has_control(text: str) -> bool:
    if text.isprintable():  # the common case, in C: no Cc/Cf/Cs/Zl/Zp at all
        return False
    return any(
        unicodedata.category(ch) in _FORBIDDEN_CATEGORIES and ch not in ALLOWED_FORMAT
        for ch in text
    )


def check_text(text: str) -> str:
    """Return ``text`` if it may be said, else raise ``empty``/``too_long``/``bad_text``."""
    if not text.strip():
        raise ProtocolError("empty", "message is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise ProtocolError("too_long", f"message is {size} bytes; the limit is {MAX_TEXT_BYTES}")
    if _has_control(text):
        raise ProtocolError(
            "bad_text", "message contains control or invisible formatting characters"
        )
    return text


def check_topic(topic: str) -> str:
    """Return ``topic`` if it may be set (empty clears it), else raise."""
    if len(topic) > MAX_TOPIC_CHARS:
        raise ProtocolError(
            "too_long", f"topic is {len(topic)} characters; the limit is {MAX_TOPIC_CHARS}"
        )
    if _has_control(topic):
        raise ProtocolError("bad_text", "topic contains control or invisible formatting characters")
    return topic
