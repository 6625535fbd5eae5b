"""The interactive screen's pure parts: rendering, colours, wrapping, status line, completion.

And ChatScreen's bookkeeping (which window an event lands in, unread counts,
Alt-number, paste), driven without a terminal: prompt_toolkit's dummy output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from prompt_toolkit.input import Input, create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.utils import get_cwidth

from zchat.client.core import ClientCore, RoomView
from zchat.client.events import (
    Chat,
    Clear,
    DirectLine,
    Info,
    Kicked,
    Problem,
    RoomNotice,
    StateChange,
    UiEvent,
    hhmm,
)
from zchat.client.state import ConnectionState
from zchat.client.tui import (
    NICK_COLOURS,
    ChatScreen,
    Line,
    Look,
    Tab,
    columns,
    complete,
    make_style,
    nick_colour,
    render,
    status_line,
    wants_colour,
    wrap,
)

# Today at noon: lines from today show HH:MM only (older ones carry a date).
_NOW = time.localtime()
TS = time.mktime((_NOW.tm_year, _NOW.tm_mon, _NOW.tm_mday, 12, 0, 0, 0, 0, -1))
HH = hhmm(TS)


def text(line: Line) -> str:
    return "".join(frag[1] for frag in line)


def styles(line: Line) -> str:
    return " ".join(frag[0] for frag in line)


def chat(nick: str = "bob", body: str = "hello", **kw: object) -> Chat:
    fields: dict[str, object] = {
        "room": "dev", "nick": nick, "text": body, "ts": TS, "action": False,
        "mention": False, "history": False, "seq": 1,
    }  # fmt: skip
    fields.update(kw)
    return Chat(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ colours


def test_nick_colour_is_stable_and_case_blind() -> None:
    """crc32, not hash(): the same colour in every process and for Alice and alice."""
    assert nick_colour("alice") == "ansibrightcyan"
    assert nick_colour("bob") == "ansibrightyellow"
    assert nick_colour("Alice") == nick_colour("alice")
    assert nick_colour("bob") in NICK_COLOURS


def test_nick_colour_does_not_depend_on_hash_seed() -> None:
    code = "from zchat.client.tui import nick_colour; print(nick_colour('zoe-42'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seen == {nick_colour("zoe-42") + "\n"}


def test_nick_colours_spread() -> None:
    nicks = [f"user{i}" for i in range(200)]
    assert len({nick_colour(n) for n in nicks}) == len(NICK_COLOURS)


@pytest.mark.parametrize(
    ("env", "colour"),
    [
        ({"TERM": "xterm-256color"}, True),
        ({"TERM": "xterm-256color", "NO_COLOR": "1"}, False),
        ({"TERM": "xterm-256color", "NO_COLOR": "yes please"}, False),
        ({"TERM": "xterm-256color", "NO_COLOR": ""}, True),  # empty means unset (no-color.org)
        ({"TERM": "dumb"}, False),
        ({}, False),
    ],
)
def test_wants_colour(env: dict[str, str], colour: bool) -> None:
    assert wants_colour(env) is colour


@pytest.mark.parametrize("colour", [True, False])
def test_styles_parse(colour: bool) -> None:
    style = make_style(colour)
    assert style.get_attrs_for_style_str("class:mention").reverse
    attrs = style.get_attrs_for_style_str("class:status")
    assert attrs.bgcolor == ("ansiblue" if colour else "")


def test_without_colour_no_fragment_names_a_colour() -> None:
    look = Look(me="alice", colour=False)
    events: list[UiEvent] = [
        chat(),
        chat(mention=True),
        chat(nick="alice"),
        RoomNotice("dev", "join", "bob", "", TS, False, 2),
        DirectLine("bob", "alice", "psst", TS, False, False),
    ]
    for event in events:
        line, _ = render(event, look)
        assert "fg:" not in styles(line) and "bg:" not in styles(line)
    coloured, _ = render(chat(), Look(colour=True))
    assert f"fg:{nick_colour('bob')}" in styles(coloured)


# ---------------------------------------------------------------- rendering


def test_chat_line() -> None:
    line, indent = render(chat(), Look())
    assert text(line) == f"{HH} <bob> hello"
    assert indent == len(f"{HH} <bob> ")


def test_action_line() -> None:
    line, indent = render(chat(body="waves", action=True), Look())
    assert text(line) == f"{HH} * bob waves"
    assert indent == len(f"{HH} * bob ")


def test_own_line_is_bold_and_mention_is_reversed() -> None:
    own, _ = render(chat(nick="Alice"), Look(me="alice"))
    assert "class:own" in styles(own)
    hit, _ = render(chat(body="alice: look", mention=True), Look(me="alice"))
    assert "class:mention" in styles(hit)
    assert hit[-1][0] == "class:mention-text"
    plain, _ = render(chat(), Look(me="alice"))
    assert "class:mention" not in styles(plain) and "class:own" not in styles(plain)


@pytest.mark.parametrize(
    ("kind", "body", "shown"),
    [
        ("join", "", "-- bob joined #dev"),
        ("leave", "quit", "-- bob left #dev (quit)"),
        ("nick", "robert", "-- bob is now known as robert"),
        ("topic", "ship it", "-- bob set the topic of #dev: ship it"),
    ],
)
def test_notices_are_dimmed(kind: str, body: str, shown: str) -> None:
    line, indent = render(RoomNotice("dev", kind, "bob", body, TS, False, 3), Look())
    assert text(line) == f"{HH} {shown}"
    assert line[-1][0] == "class:notice"
    assert make_style(False).get_attrs_for_style_str("class:notice").dim
    assert indent == len(f"{HH} -- ")


def test_dms_are_marked() -> None:
    line, _ = render(DirectLine("bob", "alice", "psst", TS, False, False), Look())
    assert text(line) == f"{HH} [DM] <bob> psst"
    assert ("class:dm", "[DM]") in line
    out, _ = render(DirectLine("alice", "bob", "ok", TS, True, True), Look())
    assert text(out) == f"{HH} [DM to bob] * alice ok"


def test_client_lines_have_no_time() -> None:
    assert text(render(Info("joined #dev (2 here)"), Look())[0]) == "-- joined #dev (2 here)"
    assert text(render(Problem("nope"), Look())[0]) == "!! nope"
    assert text(render(StateChange("connected", "connected as a"), Look())[0]) == (
        "-- connected as a"
    )
    assert render(Clear(), Look())[0] == []


def test_narrow_look_drops_the_clock() -> None:
    line, indent = render(chat(), Look(clock=False))
    assert text(line) == "<bob> hello"
    assert indent == len("<bob> ")


def test_rendering_escapes_what_came_from_the_network() -> None:
    line, _ = render(chat(nick="b\x1bob", body="\x1b[2Jgotcha\x07"), Look())
    assert "\x1b" not in text(line) and "\x07" not in text(line)


# ----------------------------------------------------------------- wrapping


def test_short_line_is_untouched() -> None:
    line: Line = [("a", "hello "), ("b", "world")]
    assert wrap(line, 80, 6) == [[("a", "hello "), ("b", "world")]]


def test_wraps_at_words_with_a_hanging_indent() -> None:
    line, indent = render(chat(body="one two three four five six seven eight nine ten"), Look())
    rows = [text(r) for r in wrap(line, 36, indent)]
    assert rows == [
        f"{HH} <bob> one two three four five",
        "            six seven eight nine ten",
    ]


def test_style_survives_the_wrap() -> None:
    rows = wrap([("x", "aaa bbb ccc")], 7, 0)
    assert rows == [[("x", "aaa bbb")], [("x", "ccc")]]


def test_a_word_longer_than_the_line_is_cut() -> None:
    rows = wrap([("", "go " + "x" * 25)], 10, 2)
    assert [text(r) for r in rows] == ["go xxxxxxx", "  xxxxxxxx", "  xxxxxxxx", "  xx"]


def test_wide_characters_count_two_columns() -> None:
    rows = wrap([("", "日本語のテキスト です")], 8, 0)
    assert all(columns(r) <= 8 for r in rows)
    assert "".join(text(r) for r in rows).replace(" ", "") == "日本語のテキストです"
    assert get_cwidth(text(rows[0])) == 8


def test_indent_shrinks_on_narrow_screens() -> None:
    rows = wrap([("", "<somebody> " + "word " * 10)], 24, 11)
    assert [text(r) for r in rows] == [
        "<somebody> word word",
        "        word word word",  # a third of 24, not 11
        "        word word word",
        "        word word",
    ]
    assert all(columns(r) <= 24 for r in rows)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 13, 40])
def test_wrap_never_overflows_or_loses_text(width: int) -> None:
    body = "a bb ccc dddd eeeee ffffff 日本 x" * 3
    rows = wrap([("", body)], width, 4)
    assert all(columns(r) <= max(width, 2) for r in rows)
    assert "".join(text(r) for r in rows).replace(" ", "") == body.replace(" ", "")


# ------------------------------------------------------------------ status


TABS = [Tab(1, "#dev", current=True), Tab(2, "#ops", unread=3), Tab(3, "#random"), Tab(4, "@bob")]


def test_status_line_in_full() -> None:
    line = status_line(80, "alice", False, "connected", TABS)
    assert text(line).rstrip() == " alice | 1:#dev 2:#ops(3) 3:#random 4:@bob | connected"
    assert columns(line) == 80  # the bar spans the screen


@pytest.mark.parametrize(
    ("state", "label"),
    [
        ("connecting", "connecting"),
        ("reconnecting", "reconnecting"),
        ("auth_failed", "authentication failed"),
        ("something-new", "something-new"),
    ],
)
def test_status_line_names_the_connection_state(state: str, label: str) -> None:
    line = status_line(100, "alice", False, state, TABS)
    assert text(line).rstrip().endswith(f"| {label}")
    assert ("class:status.bad", label) in line


def test_whois_and_ignore_complete_any_known_nick() -> None:
    for verb in ("/whois", "/ignore"):
        assert complete(f"{verb} ca", [], [], ["bob"], ["bob", "carol"]) == [("carol ", 2)]


def test_history_lines_read_dimmer_than_live_ones() -> None:
    old, _ = render(chat(history=True), Look())
    live, _ = render(chat(), Look())
    assert "class:history" in styles(old) and "class:history" not in styles(live)


def test_status_line_counts_what_waits_to_be_sent() -> None:
    line = status_line(100, "alice", False, "reconnecting", TABS, queued=3)
    assert text(line).rstrip().endswith("| reconnecting (3 queued)")


def test_a_kick_is_shown_in_the_window_the_user_looks_at_next() -> None:
    s = Screen()
    s.core.rooms["ops"] = RoomView("ops")
    s.core.current = "ops"  # the core moved on after removing #dev
    s.ui.show(Kicked("dev", "alice", "by bob: spam", TS))
    shown = [e for e in s.ui.windows["#ops"].events if isinstance(e, Kicked)]
    assert shown[0].plain() == (
        "!! alice was removed from #dev (by bob: spam): that is you, you are no longer in #dev"
    )


def test_status_line_marks_away_mentions_and_scrollback() -> None:
    tabs = [Tab(1, "#dev", current=True), Tab(2, "#ops", unread=1, hilite=True)]
    line = status_line(80, "alice", True, "connected", tabs, more=True)
    assert text(line).startswith(" alice (away) | 1:#dev 2:#ops(1) [more] |")
    assert ("class:status.hilite", "2:#ops(1)") in line


@pytest.mark.parametrize(
    ("width", "shown"),
    [
        (52, " alice | 1:#dev 2:#ops(3) | connected"),
        (36, " alice | #dev #ops(3) | connected"),
        (30, " #dev #ops(3) | connected"),
        (20, " #dev | connected"),
        (8, "connecte"),
    ],
)
def test_status_line_degrades_on_narrow_screens(width: int, shown: str) -> None:
    line = status_line(width, "alice", False, "connected", TABS)
    assert text(line).rstrip() == shown
    assert columns(line) == width


# -------------------------------------------------------------- completion

CMDS = ["join", "leave", "msg", "query", "quit", "help", "who", "names", "switch"]
ROOMS = ["dev", "devops", "ops"]
HERE = ["bob", "Bobby", "carol"]
ALL = [*HERE, "dave"]


def done(before: str) -> list[str]:
    return [
        before[: len(before) - n] + text for text, n in complete(before, CMDS, ROOMS, HERE, ALL)
    ]


def test_completes_commands() -> None:
    assert done("/que") == ["/query "]
    assert done("/q") == ["/query ", "/quit "]
    assert done("/xyz") == []
    assert done("/help qu") == ["/help query ", "/help quit "]


def test_completes_nicks_of_the_room() -> None:
    assert done("bo") == ["bob: ", "Bobby: "]  # at the start: addressed
    assert done("ca") == ["carol: "]
    assert done("hi ca") == ["hi carol "]
    assert done("BO") == ["bob: ", "Bobby: "]
    assert done("da") == []  # not in this room
    assert done("") == [] and done("hi ") == []


def test_completes_rooms() -> None:
    assert done("/join de") == ["/join #dev ", "/join #devops "]
    assert done("/switch #o") == ["/switch #ops "]
    assert done("see #dev") == ["see #dev ", "see #devops "]


def test_completes_any_known_nick_for_dms() -> None:
    assert done("/msg da") == ["/msg dave "]
    assert done("/query car") == ["/query carol "]


# ----------------------------------------------------------- the screen


class Screen:
    """A ChatScreen over a core in the room dev, with its submissions recorded."""

    def __init__(self, bell: bool = True, input: Input | None = None) -> None:
        self.core = ClientCore("alice", "dev")
        self.sent: list[str] = []
        self.out = DummyOutput()
        self.bells = 0

        def ring() -> None:
            self.bells += 1

        self.out.bell = ring  # type: ignore[method-assign]
        self.ui = ChatScreen(
            self.core, self.submit, bell=bell, colour=False, input=input, output=self.out
        )

    def submit(self, line: str) -> None:
        self.sent.append(line)
        for action in self.core.command(line, TS):
            event = getattr(action, "event", None)
            if event is not None:
                self.ui.show(event)

    def rows(self, key: str) -> list[str]:
        win = self.ui.windows[key]
        return [text(r) for r in win.lines(80, Look("alice", False))]


def test_events_land_in_their_windows() -> None:
    s = Screen()
    s.core.rooms["ops"] = RoomView("ops")
    s.ui.show(chat(body="in dev"))
    s.ui.show(chat(room="ops", body="in ops"))
    s.ui.show(Info("a client line"))
    assert s.rows("#dev")[-2:] == [f"{HH} <bob> in dev", "-- a client line"]
    assert s.rows("#ops") == [f"{HH} <bob> in ops"]
    assert [(t.title, t.unread, t.current) for t in s.ui.tabs()] == [
        ("#dev", 0, True),
        ("#ops", 1, False),
    ]


def test_unread_counts_messages_only_and_clears_on_switch() -> None:
    s = Screen()
    s.core.rooms["ops"] = RoomView("ops")
    s.ui.show(RoomNotice("ops", "join", "carol", "", TS, False, 1))
    s.ui.show(chat(room="ops", history=True))
    s.ui.show(chat(room="ops", nick="alice"))  # our own
    assert s.ui.tabs()[1].unread == 0
    s.ui.show(chat(room="ops", body="alice?", mention=True))
    assert (s.ui.tabs()[1].unread, s.ui.tabs()[1].hilite) == (1, True)
    s.ui.go_to(2)
    assert s.sent == ["/switch ops"]
    assert s.ui.tabs()[1] == Tab(2, "#ops", 0, False, True)
    assert "now talking" not in " ".join(s.rows("#ops"))  # a key switched: no chatter


def test_alt_number_reaches_dm_windows_and_ignores_missing_ones() -> None:
    s = Screen()
    s.ui.show(DirectLine("Bob", "alice", "psst", TS, False, False))
    assert [t.title for t in s.ui.tabs()] == ["#dev", "@Bob"]
    s.ui.go_to(9)
    assert s.sent == []
    s.ui.go_to(2)
    assert s.sent == ["/query Bob"]
    assert s.core.query == "Bob"
    assert s.ui.tabs()[1].current


def test_dm_shows_in_its_window_and_where_you_look_and_rings() -> None:
    s = Screen()
    s.ui.show(DirectLine("bob", "alice", "psst", TS, False, False))
    assert s.rows("@bob") == [f"{HH} [DM] <bob> psst"]
    assert s.rows("#dev")[-1] == f"{HH} [DM] <bob> psst"
    assert s.bells == 1
    s.ui.show(DirectLine("alice", "bob", "ok", TS, False, True))
    assert s.bells == 1  # not for our own


def test_bell_on_mention_unless_turned_off() -> None:
    s = Screen()
    s.ui.show(chat(body="alice: hi", mention=True))
    s.ui.show(chat(body="alice: old", mention=True, history=True))
    assert s.bells == 1
    quiet = Screen(bell=False)
    quiet.ui.show(chat(body="alice: hi", mention=True))
    assert quiet.bells == 0


def test_the_screen_shows_the_state_the_core_names() -> None:
    """One vocabulary (zchat/client/state.py): the core says "reconnecting" for every
    attempt after a loss, and the screen shows what it is told, deriving nothing."""
    s = Screen()
    assert s.ui.state == "connecting"
    s.ui.show(StateChange(ConnectionState.CONNECTED, "connected as alice"))
    s.ui.show(StateChange(ConnectionState.RECONNECTING, "lost"))
    s.ui.show(StateChange(ConnectionState.RECONNECTING, "connecting to ..."))
    assert s.ui.state == "reconnecting"
    s.ui.show(StateChange("auth_failed", "authentication failed"))
    assert s.ui.state == "auth_failed"


def test_clear_empties_the_current_window() -> None:
    s = Screen()
    s.ui.show(chat())
    s.submit("/clear")
    assert s.rows("#dev") == []


def test_paste_sends_complete_lines_and_keeps_the_rest() -> None:
    s = Screen()
    s.ui.input.text = "pre"
    s.ui.input.cursor_position = 3
    s.ui._paste("fix one\r\ntwo\n\nthree")
    assert s.sent == ["prefix one", "two"]
    assert s.ui.input.text == "three"
    s.ui._paste(" more")
    assert s.ui.input.text == "three more"


def test_enter_sends_each_line_of_a_multiline_buffer() -> None:
    s = Screen()
    s.ui.input.text = "a\nb"
    s.ui.input.validate_and_handle()
    assert s.sent == ["a", "b"]
    assert s.ui.input.text == ""


def test_a_bug_in_a_command_is_one_line_not_a_crash() -> None:
    s = Screen()

    def broken(line: str) -> None:
        raise RuntimeError("boom")

    s.ui.submit = broken
    s.ui._submit("/anything")
    assert s.rows("#dev")[-1] == "!! internal error: RuntimeError('boom')"


def test_completion_candidates_come_from_the_core() -> None:
    s = Screen()
    view = s.core.rooms["dev"]
    view.members = {"alice": "alice", "bob": "bob"}
    assert s.ui.nicks_here() == ["bob"]
    s.ui.show(DirectLine("zed", "alice", "hi", TS, False, False))
    assert sorted(s.ui.all_nicks()) == ["bob", "zed"]
    s.core.query = "zed"
    assert s.ui.nicks_here() == ["zed"]
    assert s.ui.rooms() == ["dev"]
    assert "query" in s.ui.commands()


def test_scrolling_back_and_forth() -> None:
    s = Screen()
    for i in range(100):
        s.ui.show(chat(body=f"line {i}"))
    win = s.ui.windows["#dev"]
    win.lines(80, s.ui.look(80))
    s.ui.scroll(-1)
    assert not win.follow
    top = win.top
    s.ui.scroll(-1)
    assert win.top < top
    for _ in range(30):
        s.ui.scroll(-1)
    assert win.top == 0
    for _ in range(30):
        s.ui.scroll(1)
    assert win.follow


def test_new_line_wraps_only_itself() -> None:
    s = Screen()
    win = s.ui.windows.get("#dev") or s.ui._current()
    look = s.ui.look(80)
    s.ui.show(chat(body="x"))
    first = win.lines(80, look)
    n = len(first)
    s.ui.show(chat(body="y"))
    assert len(win.lines(80, look)) == n + 1
    assert len(win.lines(20, look)) == n + 1  # re-wrapped for the new width


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def test_keys_drive_the_screen_on_the_callers_loop_without_threads() -> None:
    """Enter, Tab, Alt-number and Ctrl-D through a real key pipe, on this loop, no threads."""

    async def main() -> None:
        with create_pipe_input() as keys:
            s = Screen(input=keys)
            s.core.rooms["ops"] = RoomView("ops")
            s.core.rooms["dev"].members = {"bob": "bob", "alice": "alice"}
            before = threading.active_count()
            app = asyncio.create_task(s.ui.run())
            await until(lambda: s.ui.app.is_running)
            keys.send_text("hello\r")
            await until(lambda: s.sent == ["hello"])
            keys.send_text("b\t")
            await until(lambda: s.ui.input.text == "bob: ")
            keys.send_text("hi\r")
            await until(lambda: s.sent[-1] == "bob: hi")
            keys.send_text("\x1b2")  # Alt-2
            await until(lambda: s.sent[-1] == "/switch ops")
            # prompt_toolkit loads the history into the buffer in a task of its own:
            # Up before that is a no-op (under load, the task ran late).
            await until(lambda: "bob: hi" in s.ui.input._working_lines)
            keys.send_text("\x1b[A")  # Up: the history
            await until(lambda: s.ui.input.text == "bob: hi")
            keys.send_text("\x15\x04")  # Ctrl-U clears, Ctrl-D on an empty line quits
            await until(lambda: s.sent[-1] == "/quit")
            assert threading.active_count() == before
            s.ui.exit()
            await app

    asyncio.run(main())
