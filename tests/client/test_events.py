"""UI events: terminal-safe rendering, the plain line formats and JSON lines."""

from __future__ import annotations

import json
import re
import time

import pytest

from zchat.client.events import (
    Chat,
    Clear,
    DirectLine,
    Info,
    Problem,
    RoomNotice,
    StateChange,
    UiEvent,
    hhmm,
    safe,
    to_json,
)

TS = 1_700_000_000.0
HH = hhmm(TS)

# ------------------------------------------------------------------ safe()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # set window title (OSC ... BEL)
        ("a\rb", "a\\x0db"),  # carriage return rewrites the line
        ("ab\x08\x08xy", "ab\\x08\\x08xy"),  # backspace
        ("\x9b2J", "\\x9b2J"),  # C1 CSI, one-byte ESC [
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("pay\u200bpal", "pay\\u200bpal"),  # zero-width space
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("line\nbreak", "line\\x0abreak"),
        ("a\u2028b", "a\\u2028b"),  # line separator
        ("a\u2029b", "a\\u2029b"),  # paragraph separator
        ("\ufeffbom", "\\ufeffbom"),
    ],
)
def test_safe_escapes_control_and_invisible_characters(raw: str, shown: str) -> None:
    out = safe(raw)
    assert out == shown
    assert out.isprintable()


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii, with punctuation!? (and) [brackets] {braces} ~`^",
        "héllo wörld ñandú ça",
        "日本語のテキスト 한국어 中文",
        "emoji 👍 🎉 🐍 👍🏽 🇫🇷",
        "e\u0301 combining accent",
        "Ελληνικά кириллица עברית العربية",
        "math ∑∫√∞ ≠ ≤",
        "",
        " leading and trailing spaces ",
    ],
)
def test_safe_leaves_ordinary_text_alone(text: str) -> None:
    assert safe(text) == text


def test_safe_output_never_contains_an_escape_or_c1_byte() -> None:
    nasty = (
        "".join(chr(c) for c in range(0x00, 0x20))
        + "\x7f"
        + "".join(chr(c) for c in range(0x80, 0xA0))
    )
    out = safe(nasty)
    assert out.isprintable()
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", out)


def test_safe_keeps_printable_neighbours_of_escapes() -> None:
    assert safe("ok\x1b[31mred\x1b[0m ok") == "ok\\x1b[31mred\\x1b[0m ok"


# ---------------------------------------------------------------- plain()


def test_chat_line() -> None:
    line = Chat("dev", "alice", "hello", TS, False, False, False, 3).plain()
    assert line == f"{HH} #dev <alice> hello"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", HH)  # TS is in 2023: a dated stamp


def test_timestamps_carry_a_date_unless_from_today() -> None:
    now = time.time()
    assert re.fullmatch(r"\d\d:\d\d", hhmm(now))
    lt = time.localtime(now)
    noon = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 12, 0, 0, 0, 0, -1))
    day_before = noon - 86400 * 3
    if time.localtime(day_before).tm_year == lt.tm_year:
        assert re.fullmatch(r"[A-Z][a-z]{2} \d\d \d\d:\d\d", hhmm(day_before, now))
    assert hhmm(noon, noon) == "12:00"


def test_chat_action_line() -> None:
    line = Chat("dev", "alice", "waves", TS, True, False, False, 3).plain()
    assert line == f"{HH} #dev * alice waves"


def test_chat_line_escapes_nick_and_text() -> None:
    line = Chat("dev", "al\x1bice", "hi\x1b[2J", TS, False, False, False, 1).plain()
    assert "\x1b" not in line
    assert line == f"{HH} #dev <al\\x1bice> hi\\x1b[2J"


@pytest.mark.parametrize(
    ("kind", "text", "what"),
    [
        ("join", "", "bob joined #dev"),
        ("leave", "", "bob left #dev"),
        ("leave", "timeout", "bob left #dev (timeout)"),
        ("nick", "robert", "bob is now known as robert"),
        ("topic", "release friday", "bob set the topic of #dev: release friday"),
    ],
)
def test_room_notice_lines(kind: str, text: str, what: str) -> None:
    line = RoomNotice("dev", kind, "bob", text, TS, False, 7).plain()
    assert line == f"{HH} #dev -- {what}"


def test_room_notice_escapes_its_text() -> None:
    line = RoomNotice("dev", "topic", "bob", "x\u202ey", TS, False, 1).plain()
    assert "\u202e" not in line
    assert line.endswith("x\\u202ey")


def test_incoming_dm_lines() -> None:
    assert DirectLine("bob", "alice", "psst", TS, False, False).plain() == f"{HH} [DM] <bob> psst"
    assert DirectLine("bob", "alice", "nods", TS, True, False).plain() == f"{HH} [DM] * bob nods"


def test_outgoing_dm_lines() -> None:
    out = DirectLine("alice", "bob", "see you", TS, False, True).plain()
    assert out == f"{HH} [DM to bob] see you"
    act = DirectLine("alice", "bob", "waves", TS, True, True).plain()
    assert act == f"{HH} [DM to bob] * waves"


def test_dm_line_escapes_sender_and_text() -> None:
    line = DirectLine("b\rob", "alice", "\x1b]0;pwned\x07", TS, False, False).plain()
    assert "\x1b" not in line
    assert "\r" not in line
    assert "\x07" not in line


def test_client_lines() -> None:
    assert Info("joined #dev").plain() == "-- joined #dev"
    assert Problem("no such room").plain() == "!! no such room"
    assert StateChange("connected", "connected as alice").plain() == "-- connected as alice"
    assert Problem("bad \x1b[2J").plain() == "!! bad \\x1b[2J"


# ---------------------------------------------------------------- to_json()

SAMPLES: list[tuple[UiEvent, str]] = [
    (Chat("dev", "alice", "hi", TS, False, True, False, 3), "chat"),
    (RoomNotice("dev", "join", "bob", "", TS, True, 4), "notice"),
    (DirectLine("bob", "alice", "psst", TS, True, False), "dm"),
    (Info("hello"), "info"),
    (Problem("oops"), "error"),
    (StateChange("connected", "connected as alice"), "state"),
    (StateChange("auth_failed", "authentication failed"), "state"),
    (Clear(), "clear"),
]


@pytest.mark.parametrize(("event", "name"), SAMPLES)
def test_to_json_is_one_object_with_an_event_key(event: UiEvent, name: str) -> None:
    line = to_json(event)
    assert "\n" not in line
    data = json.loads(line)
    assert data["event"] == name
    fields = {k: v for k, v in data.items() if k != "event"}
    assert type(event)(**fields) == event


def test_to_json_chat_fields() -> None:
    data = json.loads(to_json(Chat("dev", "alice", "hi 👋", TS, True, False, True, 9)))
    assert data == {
        "event": "chat",
        "room": "dev",
        "nick": "alice",
        "text": "hi 👋",
        "ts": TS,
        "action": True,
        "mention": False,
        "history": True,
        "seq": 9,
        "id": "",
    }


def test_to_json_stays_one_line_whatever_the_text() -> None:
    line = to_json(Chat("dev", "alice", "a\nb\rc\x1b", TS, False, False, False, 1))
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["text"] == "a\nb\rc\x1b"


def test_safe_keeps_joiners_that_text_may_carry() -> None:
    """ZWJ emoji and ZWNJ scripts pass check_text (§3.3), so they display as sent."""
    coder = "\U0001f469\u200d\U0001f4bb"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert safe(coder) == coder
    assert safe(persian) == persian
    assert safe("tab\there") == "tab    here"  # a tab is allowed text: shown as spaces
    assert safe("\U000e0001") == "\\U000e0001"


def test_notice_says_what_happened_without_time_or_room_tag() -> None:
    notice = RoomNotice("dev", "leave", "b\x1bob", "quit", TS, False, 4)
    assert notice.what() == "b\\x1bob left #dev (quit)"
    assert notice.plain() == f"{HH} #dev -- {notice.what()}"


def test_clear_in_line_modes() -> None:
    assert Clear().plain() == "-- /clear only clears the interactive screen"
    assert json.loads(to_json(Clear())) == {"event": "clear"}


def test_an_ambiguous_failed_handshake_is_a_verdict_only_when_it_repeats() -> None:
    """A broker killed or restarted mid-handshake fails one handshake without detail;
    a broker that wants keys the client lacks fails every one. ZAP refusals and a
    mechanism mismatch are verdicts at once (issue 10: say it within 2 s)."""
    import zmq

    from zchat.keys import NEEDS_CURVE, handshake_failure

    no_detail = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    assert handshake_failure(no_detail, 0, curve=False, tries=1) is None
    assert handshake_failure(no_detail, 0, curve=False, tries=3) == NEEDS_CURVE
    assert handshake_failure(no_detail, 0, curve=True, tries=2) is None
    assert "wrong broker key" in str(handshake_failure(no_detail, 0, curve=True, tries=3))
    mismatch = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    protocol = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    assert handshake_failure(protocol, mismatch, curve=False, tries=1) == NEEDS_CURVE
    auth = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    assert "refused" in str(handshake_failure(auth, 400, curve=True, tries=1))
    assert handshake_failure(int(zmq.EVENT_CONNECTED), 0, curve=False, tries=5) is None


def test_a_busy_reader_lets_the_loop_run_other_sessions() -> None:
    """A socket with a long queue is read FAIR_BATCH messages at a time, the loop
    running everything else in between: a busy session must not starve the
    other sessions of the process, their timers and the application. And every
    message is read, though zmq's FD signals the queue only once."""
    import asyncio

    import zmq

    from zchat.client.core import ClientCore
    from zchat.client.transport import FAIR_BATCH, Transport

    total = 10 * FAIR_BATCH

    async def main() -> tuple[int, int]:
        ctx = zmq.Context.instance()
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind("inproc://fair-reader")
        push.connect("inproc://fair-reader")
        for i in range(total):
            push.send(b"%d" % i)
        got: list[bytes] = []
        ran_at: list[int] = []
        done = asyncio.get_running_loop().create_future()

        def handle(frames: list[bytes]) -> None:
            got.append(frames[0])
            if len(got) == total:
                done.set_result(None)

        async def other() -> None:
            ran_at.append(len(got))

        transport = Transport(ClientCore("alice", "dev"), "tcp://127.0.0.1:1", print)
        transport._watch(pull, handle)
        task = asyncio.create_task(other())
        await asyncio.wait_for(done, 10)
        await task
        transport._close(pull)
        push.close(linger=0)
        return ran_at[0], len(set(got))

    first_turn, distinct = asyncio.run(main())
    assert first_turn <= FAIR_BATCH
    assert distinct == total
