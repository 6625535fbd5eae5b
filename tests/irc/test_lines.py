"""zchat/irc/lines.py and state.py: parsing, rendering, limits, the state table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zchat.irc.lines import MAX_LINE, Line, LineError, fit_utf8, parse
from zchat.irc.state import TRANSITIONS, ConnState, Input, StateError, next_state


def test_parse_tags_source_params_trailing() -> None:
    line = parse(b"@label=a\\sb;+typing=active;flag :nick!u@h privmsg #dev :hello  world ")
    assert line.tags == {"label": "a b", "+typing": "active", "flag": ""}
    assert line.source == "nick!u@h" and line.command == "PRIVMSG"
    assert line.params == ("#dev", "hello  world ")
    assert parse(b"NICK :alice").params == ("alice",)
    assert parse(b"PRIVMSG #a :").params == ("#a", "")
    assert parse(b"USER a 0 * :Real Name").params == ("a", "0", "*", "Real Name")


def test_render_round_trips_and_escapes_tags() -> None:
    line = Line("PRIVMSG", ("#dev", "hi there"), "a!b@c", {"time": "x;y z"})
    raw = line.render()
    assert raw == b"@time=x\\:y\\sz :a!b@c PRIVMSG #dev :hi there\r\n"
    assert parse(raw[:-2]) == line
    assert Line("JOIN", ("#dev",), "a!b@c").render() == b":a!b@c JOIN #dev\r\n"
    assert Line("001", ("me", "Welcome"), "s").render() == b":s 001 me :Welcome\r\n"


@pytest.mark.parametrize(
    ("raw", "numeric"),
    [(b"PRIVMSG #a :" + b"x" * MAX_LINE, "417"), (b"@" + b"t" * 5000 + b" PING x", "417"),
     (b"PING \xff", "NOTICE"), (b"@\xff PING x", "NOTICE"), (b"A\x00B", ""), (b"A\rB", ""),
     (b"   ", ""), (b":src", ""), (b"PR!V x", "421")],
)  # fmt: skip
def test_refused_lines(raw: bytes, numeric: str) -> None:
    with pytest.raises(LineError) as info:
        parse(raw)
    assert info.value.numeric == numeric


@given(st.binary(max_size=600))
def test_parse_raises_only_line_error(raw: bytes) -> None:
    try:
        line = parse(raw)
    except LineError:
        return
    assert line.command and len(line.params) <= 15


def test_fit_utf8_never_splits_a_character() -> None:
    text = "aé€😀" * 50
    pieces = fit_utf8(text, 7)
    assert "".join(pieces) == text and all(len(p.encode()) <= 7 for p in pieces)


def test_state_table() -> None:
    assert next_state(ConnState.NEW, Input.CAP_START) is ConnState.NEGOTIATING
    assert next_state(ConnState.NEGOTIATING, Input.CAP_END) is ConnState.NEW
    assert next_state(ConnState.NEW, Input.IDENTIFIED) is ConnState.HELLO_SENT
    assert next_state(ConnState.HELLO_SENT, Input.WELCOMED) is ConnState.REGISTERED
    assert next_state(ConnState.HELLO_SENT, Input.REFUSED) is ConnState.NEW
    for state in ConnState:
        assert next_state(state, Input.GONE) is ConnState.CLOSED
    with pytest.raises(StateError):
        next_state(ConnState.REGISTERED, Input.WELCOMED)
    assert all(isinstance(k[0], ConnState) for k in TRANSITIONS)
