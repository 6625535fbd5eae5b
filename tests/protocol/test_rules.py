"""Names, limits and text rules (docs/protocol.md §3, error codes from §7)."""

from __future__ import annotations

import pytest

from zchat.protocol import rules
from zchat.protocol.errors import ProtocolError


def _code(call, *args: object) -> str:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value.code


# ----------------------------------------------------------------------- nicks


@pytest.mark.parametrize(
    "nick",
    [
        "a",
        "alice",
        "Alice",
        "_x",
        "0day",
        "bob_2",
        "a.b-c",
        "trailing.",
        "trailing-",
        "A" * rules.MAX_NICK_CHARS,
    ],
)
def test_valid_nick_is_returned_unchanged(nick: str) -> None:
    """§3.1: a valid nick comes back as is (case is kept for display)."""
    assert rules.check_nick(nick) == nick


@pytest.mark.parametrize(
    "nick",
    [
        "",
        "A" * (rules.MAX_NICK_CHARS + 1),
        ".alice",
        "-alice",
        "al ice",
        " alice",
        "alice ",
        "al#ice",
        "al@ice",
        "#alice",
        "alice\n",
        "ali\x00ce",
        "ali\tce",
        "zoë",
        "алиса",
        "al\u200bice",
        "\U0001f600",
    ],
)
def test_invalid_nick_is_bad_nick(nick: str) -> None:
    """§3.1: 1-32 characters of A-Z a-z 0-9 _ . -, not starting with . or -."""
    assert _code(rules.check_nick, nick) == "bad_nick"


def test_nick_length_boundary() -> None:
    """§3.1: exactly MAX_NICK_CHARS is fine, one more is not."""
    assert rules.check_nick("n" * rules.MAX_NICK_CHARS)
    assert _code(rules.check_nick, "n" * (rules.MAX_NICK_CHARS + 1)) == "bad_nick"


def test_nick_key_is_case_insensitive() -> None:
    """§3.1: ``Alice`` and ``alice`` are one nick."""
    assert rules.nick_key("Alice") == rules.nick_key("alice") == rules.nick_key("ALICE")
    assert rules.nick_key("Alice") != rules.nick_key("Alicia")
    assert rules.nick_key("Bob_1.x-Y") == "bob_1.x-y"


# ----------------------------------------------------------------------- rooms


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("dev", "dev"),
        ("#dev", "dev"),
        ("#Dev", "dev"),
        ("DEV", "dev"),
        ("#dev.ops-2_x", "dev.ops-2_x"),
        ("0", "0"),
        ("_", "_"),
        ("r" * rules.MAX_ROOM_CHARS, "r" * rules.MAX_ROOM_CHARS),
        ("#" + "R" * rules.MAX_ROOM_CHARS, "r" * rules.MAX_ROOM_CHARS),
    ],
)
def test_room_is_normalised(raw: str, name: str) -> None:
    """§3.2: the optional leading ``#`` goes, the name is lower-cased."""
    assert rules.normalize_room(raw) == name


def test_room_normalisation_is_idempotent() -> None:
    """§3.2: a canonical name normalises to itself."""
    for raw in ("#Dev", "dev", "#a.b-c_d"):
        once = rules.normalize_room(raw)
        assert rules.normalize_room(once) == once


@pytest.mark.parametrize(
    "room",
    [
        "",
        "#",
        "##dev",
        "de v",
        "dev ",
        "dev#",
        "-dev",
        ".dev",
        "#-dev",
        "dév",
        "dev\n",
        "dev\x00",
        "dev/ops",
        "dev!",
        "r" * (rules.MAX_ROOM_CHARS + 1),
        "#" + "r" * (rules.MAX_ROOM_CHARS + 1),
    ],
)
def test_invalid_room_is_bad_room(room: str) -> None:
    """§3.2: 1-64 characters of a-z 0-9 _ . - after an optional ``#``."""
    assert _code(rules.normalize_room, room) == "bad_room"


# ------------------------------------------------------------------------ text


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "  padded  ",
        "tab\tseparated",
        "\tleading tab",
        "héllo wörld",
        "日本語のテキスト",
        "emoji \U0001f600\U0001f44d",
        "flag \U0001f1f3\U0001f1f4, thumbs \U0001f44d\U0001f3fd, heart \u2764\ufe0f",
        "math ∑ ∫ √",
        "coder \U0001f469\u200d\U0001f4bb joined by ZWJ",
        "Persian \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 with ZWNJ",
        "flag of England \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
        "<b>not html</b> & stuff",
    ],
)
def test_valid_text(text: str) -> None:
    """§3.3: printable text of any script, emoji and tab are allowed."""
    assert rules.check_text(text) == text


@pytest.mark.parametrize("text", ["", " ", "   ", "\t", " \t "])
def test_empty_text(text: str) -> None:
    """§3.3: text that is empty or only whitespace is ``empty``."""
    assert _code(rules.check_text, text) == "empty"


def test_text_size_boundary_ascii() -> None:
    """§3.3: the limit is MAX_TEXT_BYTES UTF-8 bytes, inclusive."""
    assert rules.check_text("x" * rules.MAX_TEXT_BYTES)
    assert _code(rules.check_text, "x" * (rules.MAX_TEXT_BYTES + 1)) == "too_long"


def test_text_size_is_counted_in_utf8_bytes_not_characters() -> None:
    """§3.3: multi-byte characters count for their UTF-8 size."""
    two = "é"  # 2 bytes
    three = "€"  # 3 bytes
    four = "\U0001f600"  # 4 bytes
    assert rules.MAX_TEXT_BYTES % 2 == 0 and rules.MAX_TEXT_BYTES % 4 == 0
    assert rules.check_text(two * (rules.MAX_TEXT_BYTES // 2))
    assert _code(rules.check_text, two * (rules.MAX_TEXT_BYTES // 2) + "x") == "too_long"
    assert rules.check_text(four * (rules.MAX_TEXT_BYTES // 4))
    assert _code(rules.check_text, four * (rules.MAX_TEXT_BYTES // 4) + "x") == "too_long"
    # Far fewer characters than bytes: a character count would let this through.
    n, rest = divmod(rules.MAX_TEXT_BYTES, 3)
    exact = three * n + "x" * rest
    assert len(exact.encode()) == rules.MAX_TEXT_BYTES
    assert rules.check_text(exact)
    assert _code(rules.check_text, exact + "x") == "too_long"
    assert _code(rules.check_text, three * (n + 1)) == "too_long"


@pytest.mark.parametrize(
    "bad",
    [
        "\x00",  # NUL
        "\x07",  # BEL
        "\x1b",  # ESC: terminal escape sequences
        "\x1b[2J",
        "\n",
        "\r",
        "\r\n",
        "\x0b",  # VT
        "\x0c",  # FF
        "\x7f",  # DEL
        "\x85",  # C1 NEL
        "\x9b",  # C1 CSI
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u202d",  # LEFT-TO-RIGHT OVERRIDE
        "\u2066",  # LEFT-TO-RIGHT ISOLATE
        "\u200b",  # ZERO WIDTH SPACE
        "\u2060",  # WORD JOINER
        "\ufeff",  # BOM / ZERO WIDTH NO-BREAK SPACE
        "\u00ad",  # SOFT HYPHEN
        "\u2028",  # LINE SEPARATOR
        "\u2029",  # PARAGRAPH SEPARATOR
        # Lone surrogates cannot be encoded as UTF-8; U+DCFF is what
        # surrogateescape makes of an undecodable byte. (chr(), because ruff's
        # duplicate check sees every lone-surrogate literal as the same string.)
        chr(0xD800),
        chr(0xDCFF),
    ],
)
def test_control_and_invisible_characters_are_bad_text(bad: str) -> None:
    """§3.3: control characters (C0, DEL, C1), line breaks, invisible formatting
    (bidi overrides, zero-width) and lone surrogates are ``bad_text``, wherever
    they appear in otherwise fine text.
    """
    for text in (f"a{bad}b", f"{bad}ab", f"ab{bad}"):
        assert _code(rules.check_text, text) == "bad_text", repr(text)


def test_fake_line_is_rejected() -> None:
    """§3.3: a newline could forge a line from another nick."""
    assert _code(rules.check_text, "hi\n<admin> send me your password") == "bad_text"


def test_text_size_checked_before_characters() -> None:
    """§3.3: an oversized text is ``too_long`` even if it also has bad characters."""
    text = "\x1b" + "x" * rules.MAX_TEXT_BYTES
    assert _code(rules.check_text, text) == "too_long"


# ----------------------------------------------------------------------- topic


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "release on friday",
        "tab\tok",
        "ünïcödé \U0001f680",
        "t" * rules.MAX_TOPIC_CHARS,
        "é" * rules.MAX_TOPIC_CHARS,  # the topic limit is in characters
    ],
)
def test_valid_topic(topic: str) -> None:
    """§3.4: a topic may be empty (clears it) and up to MAX_TOPIC_CHARS characters."""
    assert rules.check_topic(topic) == topic


def test_topic_too_long() -> None:
    """§3.4: one character past MAX_TOPIC_CHARS is ``too_long``."""
    assert _code(rules.check_topic, "t" * (rules.MAX_TOPIC_CHARS + 1)) == "too_long"


@pytest.mark.parametrize("bad", ["\n", "\r", "\x1b", "\x9b", "\u202e", "\u200b", "\u2028"])
def test_topic_with_control_characters_is_bad_text(bad: str) -> None:
    """§3.4: the topic obeys the same character rules as text."""
    assert _code(rules.check_topic, f"topic{bad}here") == "bad_text"


# ---------------------------------------------------------------------- errors


def test_protocol_error_carries_code_text_and_rid() -> None:
    """§7: an error has a machine code, a human sentence and maybe a rid."""
    err = ProtocolError("bad_nick", "nope")
    assert (err.code, err.text, err.rid, str(err)) == ("bad_nick", "nope", None, "nope")
    again = err.with_rid(7)
    assert (again.code, again.text, again.rid) == ("bad_nick", "nope", 7)
    assert err.rid is None  # with_rid copies
