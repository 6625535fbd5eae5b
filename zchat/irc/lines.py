"""IRC lines: parse what a client sends, render what the server sends (RFC 1459/2812, IRCv3 tags).

Pure: bytes in, a ``Line`` out, and back. The limits are the standard ones:
a line is at most 512 bytes without its tags (CRLF included), and a client's
tags at most 4,094 bytes (the ``@`` and the space after them included,
IRCv3 message-tags). ``parse`` raises ``LineError`` and nothing else, with the
numeric the server should answer (or none when the line deserves only to be
dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Bytes of a line without its tags, CRLF included (RFC 1459 §2.3).
MAX_LINE = 512
#: Bytes of tags a client may send: ``@``, the tags and the space (IRCv3).
MAX_CLIENT_TAGS = 4094
#: Bytes of tags the server may send (IRCv3 message-tags: 8,191 in all).
MAX_SERVER_TAGS = 8191
#: The most a line can be, tags included, before the door stops reading it.
MAX_INPUT = MAX_CLIENT_TAGS + MAX_LINE
#: RFC 2812 §2.3: a command has at most 15 parameters.
MAX_PARAMS = 15

#: Commands whose last parameter is text: always sent as a trailing parameter
#: (":text"), as servers do, whatever it holds; some clients expect it.
_TEXT_LAST = frozenset({"PRIVMSG", "NOTICE", "TOPIC", "PART", "KICK", "CAP"})
_TEXT_ONLY = frozenset({"QUIT", "ERROR", "AWAY"})
_TAG_ESCAPES = {"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


class LineError(Exception):
    """A line the server refuses. ``numeric`` is the reply to send ("" for none)."""

    def __init__(self, numeric: str, text: str, command: str = "") -> None:
        super().__init__(text)
        self.numeric = numeric
        self.text = text
        self.command = command


@dataclass(frozen=True, slots=True)
class Line:
    """One IRC message: tags, source (prefix), command and parameters."""

    command: str
    params: tuple[str, ...] = ()
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def render(self) -> bytes:
        """The line as sent, CRLF included. The last parameter is made a trailing
        one when it needs to be (empty, a space, or a leading ``:``)."""
        parts: list[str] = []
        if self.tags:
            parts.append(
                "@"
                + ";".join(k if v == "" else f"{k}={escape_tag(v)}" for k, v in self.tags.items())
            )
        if self.source:
            parts.append(":" + self.source)
        parts.append(self.command)
        params = list(self.params)
        if params:
            last = params.pop()
            parts.extend(params)
            needs = not last or " " in last or last[0] == ":"
            text = self.command in _TEXT_ONLY or (
                bool(params) and (self.command in _TEXT_LAST or self.command.isdigit())
            )
            parts.append(":" + last if needs or text else last)
        return " ".join(parts).encode("utf-8", "replace") + b"\r\n"


def escape_tag(value: str) -> str:
    return "".join(_TAG_ESCAPES.get(c, c) for c in value)


def unescape_tag(value: str) -> str:
    out: list[str] = []
    it = iter(value)
    for c in it:
        if c == "\\":
            nxt = next(it, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


def parse(raw: bytes) -> Line:
    """One line from a client, without its CRLF.

    Refused: tags over ``MAX_CLIENT_TAGS`` or the rest over ``MAX_LINE`` (417
    ERR_INPUTTOOLONG), NUL, CR or LF inside (dropped: no reply), invalid UTF-8
    (dropped with a NOTICE, see ``LineError.numeric == "NOTICE"``), no command.
    """
    if b"\x00" in raw or b"\r" in raw or b"\n" in raw:
        raise LineError("", "NUL, CR or LF inside a line")
    tags: dict[str, str] = {}
    rest = raw
    if rest.startswith(b"@"):
        tag_part, _, rest = rest.partition(b" ")
        if len(tag_part) + 1 > MAX_CLIENT_TAGS:
            raise LineError("417", "Input line was too long")
        tags = _parse_tags(tag_part[1:])
    if len(rest) + 2 > MAX_LINE:
        raise LineError("417", "Input line was too long")
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise LineError("NOTICE", "line dropped: it is not valid UTF-8") from None
    text = text.lstrip(" ")
    source = ""
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    head, sep, trailing = text.partition(" :")
    words = head.split()
    if not words:
        raise LineError("", "no command")
    command = words[0].upper()
    if not (command.isascii() and (command.isalpha() or command.isdigit())):
        raise LineError("421", "Unknown command", words[0][:20])
    params = words[1:]
    if sep:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        params = [*params[: MAX_PARAMS - 1], " ".join(params[MAX_PARAMS - 1 :])]
    return Line(command, tuple(params), source, tags)


def _parse_tags(data: bytes) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LineError("NOTICE", "line dropped: its tags are not valid UTF-8") from None
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = unescape_tag(value)
    return tags


def fit_utf8(text: str, budget: int) -> list[str]:
    """``text`` cut into pieces of at most ``budget`` UTF-8 bytes, on character boundaries."""
    out: list[str] = []
    data = text.encode("utf-8")
    while len(data) > budget:
        cut = budget
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # inside a character: back off
            cut -= 1
        out.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    out.append(data.decode("utf-8"))
    return out
