"""The interactive terminal client: one full-screen prompt_toolkit Application.

The screen, top to bottom: the scrollback of the current window, a status
line, the input line. There is one window per joined room and one per DM
conversation; Alt-1..9 (or /switch, /query) picks one. Events land in their
window's scrollback and never touch the input buffer, so traffic arriving
while you type cannot disturb the line. The Application runs on the
Transport's asyncio loop: one loop, no threads.

Everything the screen shows is built by pure functions of (event, look,
width): ``render``, ``wrap``, ``status_line``, ``complete``. They are tested
without a terminal; ``ChatScreen`` only wires them to prompt_toolkit.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.data_structures import Point
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import (
    DynamicContainer,
    Float,
    FloatContainer,
    HSplit,
    Layout,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.output import ColorDepth, Output
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from zchat.client.core import HELP, ClientCore
from zchat.client.events import (
    INFO_EVENTS,
    Chat,
    Clear,
    DirectLine,
    Info,
    Kicked,
    Problem,
    RoomListing,
    RoomNotice,
    StateChange,
    UiEvent,
    hhmm,
    safe,
)
from zchat.client.state import ConnectionState
from zchat.protocol.rules import nick_key

Line = StyleAndTextTuples

#: Below this width lines drop their timestamps and the prompt shrinks.
NARROW = 50
#: Events kept per window; the oldest go first.
SCROLLBACK = 5000

# ------------------------------------------------------------------ colour

#: Nick colours: the 12 ANSI colours that read on dark and light backgrounds alike
#: (no black, white or grey). 4-bit names, so they work on any colour terminal.
NICK_COLOURS = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)


def nick_colour(nick: str) -> str:
    """A nick's colour, the same in every run and client (crc32, not the salted hash())."""
    return NICK_COLOURS[zlib.crc32(nick_key(nick).encode()) % len(NICK_COLOURS)]


def wants_colour(env: Mapping[str, str]) -> bool:
    """False under NO_COLOR (any non-empty value, no-color.org) and on dumb terminals."""
    if env.get("NO_COLOR"):
        return False
    return env.get("TERM", "") not in ("dumb", "")


#: Only attributes here (bold, reverse, dim, italic) so the screen reads the same
#: without colour; COLOURS adds colour on top when the terminal has it.
STYLE = {
    "time": "",
    "notice": "dim italic",
    "history": "dim",
    "info": "",
    "problem": "bold",
    "state": "bold",
    "dm": "bold",
    "own": "bold",
    "mention": "bold reverse",
    "mention-text": "bold",
    "prompt": "bold",
    "status": "reverse",
    "status.bad": "reverse bold",
    "status.unread": "reverse bold",
    "status.hilite": "reverse bold underline",
    "status.current": "reverse bold",
    "status.more": "reverse bold",
}
COLOURS = {
    "time": "ansibrightblack",
    "notice": "ansibrightblack italic",
    "info": "ansicyan",
    "problem": "ansired bold",
    "state": "ansiyellow",
    "dm": "ansimagenta bold",
    "status": "noreverse bg:ansiblue fg:ansigray",
    "status.bad": "noreverse bg:ansired fg:ansiwhite bold",
    "status.unread": "noreverse bg:ansiblue fg:ansiwhite bold",
    "status.hilite": "noreverse bg:ansiblue fg:ansibrightyellow bold",
    "status.current": "noreverse bg:ansiblue fg:ansiwhite bold",
    "status.more": "noreverse bg:ansiblue fg:ansibrightyellow bold",
}


def make_style(colour: bool) -> Style:
    rules = dict(STYLE)
    if colour:
        for name, extra in COLOURS.items():
            rules[name] = f"{rules.get(name, '')} {extra}".strip()
    return Style.from_dict(rules)


# --------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class Look:
    """What rendering depends on besides the event."""

    me: str = ""  # our nick: our own lines are bold
    colour: bool = True
    clock: bool = True  # HH:MM in front of timed lines (off on narrow screens)


def _nick_style(nick: str, look: Look, mention: bool = False) -> str:
    style = "class:nick"
    if look.colour:
        style += f" fg:{nick_colour(nick)}"
    if look.me and nick_key(nick) == nick_key(look.me):
        style += " class:own"
    if mention:
        style += " class:mention"
    return style


def _who(nick: str, action: bool, look: Look, mention: bool = False) -> Line:
    style = _nick_style(nick, look, mention)
    if action:
        return [("", "* "), (style, safe(nick)), ("", " ")]
    return [("", "<"), (style, safe(nick)), ("", "> ")]


def render(event: UiEvent, look: Look) -> tuple[Line, int]:
    """One event as one logical line, and the indent its wrapped lines take.

    The indent is the width of what precedes the text (time, nick), so a long
    message wraps into a column of its own.
    """
    clock: Line = []
    if look.clock and isinstance(event, Chat | RoomNotice | DirectLine | Kicked):
        clock = [("class:time", hhmm(event.ts) + " ")]
    line: Line
    if isinstance(event, Chat):
        # Replayed history (on join, /history) reads dimmer than live lines.
        text_style = "class:mention-text" if event.mention else ""
        if event.history:
            text_style = f"{text_style} class:history".strip()
        line = [
            *clock,
            *_who(event.nick, event.action, look, event.mention),
            (text_style, safe(event.text)),
        ]
    elif isinstance(event, RoomNotice):
        line = [*clock, ("class:notice", "-- " + event.what())]
    elif isinstance(event, DirectLine):
        tag = f"[DM to {safe(event.to)}]" if event.outgoing else "[DM]"
        line = [
            *clock,
            ("class:dm", tag),
            ("", " "),
            *_who(event.sender, event.action, look),
            ("", safe(event.text)),
        ]
    elif isinstance(event, Problem):
        line = [("class:problem", "!! " + safe(event.text))]
    elif isinstance(event, StateChange):
        line = [("class:state", "-- " + safe(event.text))]
    elif isinstance(event, Info):
        line = [("class:info", "-- " + safe(event.text))]
    elif isinstance(event, Kicked):
        line = [*clock, ("class:problem", event.plain())]
    elif isinstance(event, INFO_EVENTS):
        line = [("class:info", event.plain())]  # plain() escaped what came from the network
    elif isinstance(event, Clear):
        line = []
    else:  # an event this screen does not know yet still shows, as its plain line
        line = [("", safe(event.plain()))]
    indent = columns(line[:-1]) if len(line) > 1 else 3
    if isinstance(event, RoomNotice):
        indent = columns(clock) + 3
    return line, indent


_TOKENS = re.compile(r" +|[^ ]+")


def columns(line: Line) -> int:
    """How many terminal columns ``line`` takes."""
    return sum(get_cwidth(frag[1]) for frag in line)


def wrap(line: Line, width: int, indent: int) -> list[Line]:
    """Word-wrap one logical line to ``width`` columns.

    Continuation lines start with ``indent`` blanks (at most a third of the
    width, so narrow screens keep room for text); a word longer than a line
    is cut. Blanks at a wrap point are dropped. Wide (CJK) characters count
    two columns.
    """
    width = max(width, 1)
    indent = min(indent, width // 3)
    out: list[Line] = []
    cur: Line = []
    col = 0
    start = 0  # the column where this line's own text begins

    def put(style: str, text: str, w: int) -> None:
        nonlocal col
        if cur and cur[-1][0] == style:
            cur[-1] = (style, cur[-1][1] + text)
        else:
            cur.append((style, text))
        col += w

    def newline() -> None:
        nonlocal cur, col, start
        while cur and not cur[-1][1].strip(" "):
            cur.pop()  # trailing blanks
        if cur:
            cur[-1] = (cur[-1][0], cur[-1][1].rstrip(" "))
        out.append(cur)
        cur = [("", " " * indent)] if indent else []
        col = start = indent

    for frag in line:
        style, text = frag[0], frag[1]
        for tok in _TOKENS.findall(text):
            w = get_cwidth(tok)
            if tok[0] == " ":
                if col == start and out:
                    continue  # no leading blanks on a continuation line
                if col + w > width:
                    newline()
                    continue
                put(style, tok, w)
            elif col + w <= width:
                put(style, tok, w)
            elif col > start and w <= width - indent:
                newline()
                put(style, tok, w)
            else:
                for ch in tok:
                    cw = get_cwidth(ch)
                    if col + cw > width and col > start:
                        newline()
                    put(style, ch, cw)
    newline()
    return out


# ------------------------------------------------------------------ status


STATE_LABELS: dict[str, str] = {
    ConnectionState.CONNECTING: "connecting",
    ConnectionState.CONNECTED: "connected",
    ConnectionState.RECONNECTING: "reconnecting",
    ConnectionState.AUTH_FAILED: "authentication failed",
    ConnectionState.CLOSED: "closed",
}


@dataclass(frozen=True, slots=True)
class Tab:
    """One window as the status line lists it."""

    number: int
    title: str  # "#dev" or "@bob"
    unread: int = 0
    hilite: bool = False  # a mention or a DM among the unread
    current: bool = False


def status_line(
    width: int,
    nick: str,
    away: bool,
    state: str,
    tabs: list[Tab],
    more: bool = False,
    queued: int = 0,
) -> Line:
    """The status line, fitted to ``width``: what matters most survives narrow screens.

    Full: `` alice | 1:#dev 2:#ops(3) 3:@bob | connected``. Narrower, it drops the
    windows without activity, then the numbers, then the nick; the current
    window and the connection state stay.
    """
    label = STATE_LABELS.get(state, state)  # StrEnum keys: a plain string finds them too
    if queued:  # typed but not yet acknowledged: visible while the broker is away
        label += f" ({queued} queued)"
    state_style = "class:status" if state == "connected" else "class:status.bad"
    who = safe(nick) + (" (away)" if away else "")

    def tab_frags(tab: Tab, numbered: bool) -> Line:
        text = (f"{tab.number}:" if numbered else "") + safe(tab.title)
        if tab.unread:
            text += f"({tab.unread})"
        style = (
            "class:status.current"
            if tab.current
            else "class:status.hilite"
            if tab.hilite
            else "class:status.unread"
            if tab.unread
            else "class:status"
        )
        return [(style, text)]

    def build(show_nick: bool, which: str, numbered: bool) -> Line:
        frags: Line = [("class:status", " ")]
        if show_nick:
            frags += [("class:status", who), ("class:status", " | ")]
        shown = [t for t in tabs if which == "all" or t.current or (which == "active" and t.unread)]
        for i, tab in enumerate(shown):
            if i:
                frags.append(("class:status", " "))
            frags += tab_frags(tab, numbered)
        if more:
            frags += [("class:status", " "), ("class:status.more", "[more]")]
        frags += [("class:status", " | "), (state_style, label), ("class:status", " ")]
        return frags

    choices = [
        build(True, "all", True),
        build(True, "active", True),
        build(True, "active", False),
        build(False, "active", False),
        build(False, "current", False),
    ]
    for frags in choices:
        used = columns(frags)
        if used <= width:
            return [*frags, ("class:status", " " * (width - used))]
    # Narrower still: the state alone, cut to fit.
    return [(state_style, label[: max(width, 0)].ljust(max(width, 0)))]


# --------------------------------------------------------------- completion


def complete(
    before: str,
    commands: Iterable[str],
    rooms: Iterable[str],
    nicks_here: Iterable[str],
    all_nicks: Iterable[str],
) -> list[tuple[str, int]]:
    """Tab completions for the text before the cursor: (replacement, how many chars it replaces).

    ``/jo`` -> ``/join ``; a room after ``/join``, ``/switch``, ``/leave``,
    ``/who``, ``/names`` or any ``#`` word; a nick after ``/msg``/``/query``;
    a command after ``/help``; otherwise a nick of the current room, with
    ``: `` when it starts the line (the IRC way of addressing someone).
    """
    words = before.split(" ")
    word = words[-1]
    low = word.lower()
    if len(words) == 1 and word.startswith("/") and not word.startswith("//"):
        return [(f"/{c} ", len(word)) for c in sorted(commands) if c.startswith(low[1:])]
    verb = words[0].lower() if before.startswith("/") else ""
    first_arg = len(words) == 2
    if word.startswith("#") or (
        first_arg and verb in ("/join", "/switch", "/leave", "/who", "/names")
    ):
        bare = low.removeprefix("#")
        return [(f"#{r} ", len(word)) for r in sorted(rooms) if r.startswith(bare)]
    if first_arg and verb == "/help":
        return [(f"{c} ", len(word)) for c in sorted(commands) if c.startswith(low.lstrip("/"))]
    anyone = ("/msg", "/query", "/whois", "/ignore", "/unignore")
    pool = all_nicks if first_arg and verb in anyone else nicks_here
    if not word:
        return []
    suffix = ": " if len(words) == 1 else " "
    found = sorted({n for n in pool if nick_key(n).startswith(low)}, key=nick_key)
    return [(n + suffix, len(word)) for n in found]


class _Completer(Completer):
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        s = self.screen
        for text, replaced in complete(
            document.text_before_cursor, s.commands(), s.rooms(), s.nicks_here(), s.all_nicks()
        ):
            yield Completion(text, start_position=-replaced, display=text.rstrip(": "))


# ----------------------------------------------------------------- windows


@dataclass(slots=True)
class ChatWindow:
    """The scrollback of one room or DM conversation, wrapped for one width at a time."""

    key: str  # "#dev", "@bob" (nick_key), or "" before any room
    title: str  # as shown: "#dev", "@Bob"
    events: list[UiEvent] = field(default_factory=list)
    unread: int = 0
    hilite: bool = False
    follow: bool = True  # stuck to the bottom; False while scrolled back
    top: int = 0  # first line shown while scrolled back
    _lines: list[Line] = field(default_factory=list)
    _width: int = -1
    _look: Look | None = None
    _done: int = 0  # events already in _lines

    def add(self, event: UiEvent) -> None:
        self.events.append(event)
        if len(self.events) > SCROLLBACK + SCROLLBACK // 10:
            del self.events[: len(self.events) - SCROLLBACK]
            self._width = -1  # re-wrap what is left

    def clear(self) -> None:
        self.events.clear()
        self._lines.clear()
        self._done = 0
        self.follow, self.top = True, 0

    @property
    def wrapped(self) -> int:
        """How many physical lines the last ``lines()`` made."""
        return len(self._lines)

    def lines(self, width: int, look: Look) -> list[Line]:
        """Physical lines at ``width``; new events are wrapped once, all again on resize."""
        if width != self._width or look != self._look:
            self._lines, self._done = [], 0
            self._width, self._look = width, look
            self.follow = True  # line numbers changed; the bottom is a safe place
        for event in self.events[self._done :]:
            line, indent = render(event, look)
            if line:
                self._lines += wrap(line, width, indent)
        self._done = len(self.events)
        return self._lines


class _ScrollbackControl(UIControl):
    """Shows a ChatWindow's lines; the Window scrolls to the last one unless scrolled back."""

    def __init__(self, screen: ChatScreen, win: ChatWindow) -> None:
        self.screen = screen
        self.win = win

    def create_content(self, width: int, height: int) -> UIContent:
        lines = self.win.lines(width, self.screen.look(width))
        count = len(lines)
        if not self.win.follow:
            self.win.top = max(0, min(self.win.top, count - 1))
        y = (count - 1 if self.win.follow else self.win.top) if count else 0

        def get_line(i: int) -> Line:
            return lines[i] if i < count else []

        return UIContent(get_line=get_line, line_count=max(count, 1), cursor_position=Point(0, y))

    def is_focusable(self) -> bool:
        return False


# ------------------------------------------------------------------ screen


class ChatScreen:
    """The interactive UI: ``show`` is the Transport's ``on_event``; typed lines go to ``submit``.

    Reads the core's state (nick, current room or query, rooms and their
    members, away) to draw the status line and complete; changes it only by
    submitting commands.
    """

    def __init__(
        self,
        core: ClientCore,
        submit: Callable[[str], None] | None = None,
        *,
        bell: bool = True,
        colour: bool = True,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        self.core = core
        self.submit: Callable[[str], None] = submit or (lambda line: None)
        self.bell = bell
        self.colour = colour
        self.state = ConnectionState.CONNECTING
        self.windows: dict[str, ChatWindow] = {}
        self._dms: list[str] = []  # DM window keys, in the order they opened
        self._views: dict[str, Window] = {}
        self._shown_key = ""
        self._muted = False  # drop Info lines: a key press switched windows
        #: The last few problems (and a failed authentication): printed after the
        #: screen is gone when the client exits with an error, so they stay visible.
        self.problems: list[Problem | StateChange] = []

        self.input = Buffer(
            multiline=False,
            completer=_Completer(self),
            complete_while_typing=False,
            history=InMemoryHistory(),
            accept_handler=self._accept,
        )
        prompt = BeforeInput(self._prompt, style="class:prompt")
        body = HSplit(
            [
                DynamicContainer(self._current_view),
                Window(FormattedTextControl(self._status), height=1, style="class:status"),
                Window(
                    BufferControl(self.input, input_processors=[prompt]),
                    height=Dimension(min=1, max=3),
                    wrap_lines=True,
                    dont_extend_height=True,
                ),
            ]
        )
        menu = Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))
        root = FloatContainer(content=body, floats=[menu])
        self.app: Application[None] = Application(
            layout=Layout(root, focused_element=self.input),
            key_bindings=self._keys(),
            style=make_style(colour),
            color_depth=None if colour else ColorDepth.DEPTH_1_BIT,
            full_screen=True,
            mouse_support=False,  # leave selecting and copying text to the terminal
            min_redraw_interval=0.02,  # a flood redraws at most 50 times a second
            input=input,
            output=output,
        )

    # --------------------------------------------------------------- events

    def show(self, event: UiEvent) -> None:
        """Put an event in its window (the Transport's ``on_event``)."""
        if self._muted and isinstance(event, Info):
            return
        current = self._current()
        if isinstance(event, Clear):
            current.clear()
        elif isinstance(event, Chat | RoomNotice):
            win = self._window("#" + event.room, "#" + event.room)
            win.add(event)
            self._count(win, current, event)
            if isinstance(event, Chat) and event.mention and not event.history:
                self._ring()
        elif isinstance(event, RoomListing):
            for line in event.plain().split("\n"):  # one screen line per room
                current.add(Info(line.removeprefix("-- ")))
        elif isinstance(event, DirectLine):
            peer = event.to if event.outgoing else event.sender
            win = self._window("@" + nick_key(peer), "@" + peer, dm=True)
            win.add(event)
            if win is not current:
                current.add(event)  # a DM is never missed: also in the window you look at
            if not event.outgoing:
                self._ring()
        else:
            if isinstance(event, StateChange):
                self.state = event.state
            if isinstance(event, Problem) or (
                isinstance(event, StateChange) and event.state == "auth_failed"
            ):
                self.problems = [*self.problems[-2:], event]
            current.add(event)
        self.app.invalidate()

    def _count(self, win: ChatWindow, current: ChatWindow, event: Chat | RoomNotice) -> None:
        """Unread lines: messages (not notices, not history, not ours) in other windows."""
        if win is current or not isinstance(event, Chat) or event.history:
            return
        if nick_key(event.nick) == nick_key(self.core.nick):
            return
        win.unread += 1
        win.hilite = win.hilite or event.mention

    def _ring(self) -> None:
        if self.bell:
            self.app.output.bell()

    # -------------------------------------------------------------- windows

    def _window(self, key: str, title: str, dm: bool = False) -> ChatWindow:
        win = self.windows.get(key)
        if win is None:
            win = self.windows[key] = ChatWindow(key, title)
        if dm and key not in self._dms:
            self._dms.append(key)
        return win

    def _current_key(self) -> str:
        if self.core.query is not None:
            return "@" + nick_key(self.core.query)
        return "#" + self.core.current if self.core.current else ""

    def _current(self) -> ChatWindow:
        key = self._current_key()
        if key.startswith("@"):
            win = self._window(key, "@" + (self.core.query or ""), dm=True)
        else:
            win = self._window(key, key or "zchat")
        if key != self._shown_key:  # switched (by a command or a key): it is read now
            self._shown_key = key
            win.unread, win.hilite = 0, False
        return win

    def tabs(self) -> list[Tab]:
        """The windows in Alt-number order: joined rooms, then DM conversations."""
        current = self._current()
        keys = ["#" + r for r in self.core.rooms] + self._dms
        tabs = []
        for n, key in enumerate(keys, 1):
            win = self.windows.get(key) or ChatWindow(key, key)
            tabs.append(Tab(n, win.title, win.unread, win.hilite, win is current))
        return tabs

    def go_to(self, number: int) -> None:
        """Make window ``number`` (1-based, as in the status line) current."""
        keys = ["#" + r for r in self.core.rooms] + self._dms
        if not 1 <= number <= len(keys):
            return
        key = keys[number - 1]
        if key == self._current_key():
            return
        # The window changing is the answer: no "now talking in ..." line for a key.
        self._muted = True
        try:
            if key.startswith("#"):
                self._submit(f"/switch {key[1:]}")
            else:
                self._submit(f"/query {self.windows[key].title[1:]}")
        finally:
            self._muted = False

    def _current_view(self) -> Window:
        win = self._current()
        view = self._views.get(win.key)
        if view is None or getattr(view.content, "win", None) is not win:

            def scroll(window: Window, win: ChatWindow = win) -> int:
                return win.top if not win.follow else window.vertical_scroll

            view = Window(
                _ScrollbackControl(self, win), get_vertical_scroll=scroll, always_hide_cursor=True
            )
            self._views[win.key] = view
        return view

    def scroll(self, pages: int) -> None:
        """Page up (negative) or down through the current window's scrollback."""
        win = self._current()
        view = self._current_view()
        height = view.render_info.window_height if view.render_info else 10
        count = win.wrapped
        bottom_top = max(0, count - height)
        top = bottom_top if win.follow else win.top
        top = max(0, top + pages * max(1, height - 1))
        win.follow = top >= bottom_top
        win.top = top
        self.app.invalidate()

    # ---------------------------------------------------------- completion

    def commands(self) -> list[str]:
        return list(HELP)

    def rooms(self) -> list[str]:
        return list(self.core.rooms)

    def nicks_here(self) -> list[str]:
        if self.core.query is not None:
            return [self.core.query]
        view = self.core.rooms.get(self.core.current or "")
        me = nick_key(self.core.nick)
        return [n for k, n in view.members.items() if k != me] if view else []

    def all_nicks(self) -> list[str]:
        me = nick_key(self.core.nick)
        found = {k: n for view in self.core.rooms.values() for k, n in view.members.items()}
        found.update((k[1:], self.windows[k].title[1:]) for k in self._dms)
        return [n for k, n in found.items() if k != me]

    # --------------------------------------------------------------- drawing

    def look(self, width: int) -> Look:
        return Look(self.core.nick, self.colour, clock=width >= NARROW)

    def _prompt(self) -> Line:
        width = self.app.output.get_size().columns
        key = self._current_key() or "-"
        if width < NARROW:
            return [("class:prompt", "> ")]
        return [("class:prompt", f"[{safe(key)}] ")]

    def _status(self) -> Line:
        width = self.app.output.get_size().columns
        win = self._current()
        return status_line(
            width,
            self.core.nick,
            self.core.away is not None,
            self.state,
            self.tabs(),
            more=not win.follow,
            queued=0 if self.state == ConnectionState.CONNECTED else len(self.core.outbox),
        )

    # ----------------------------------------------------------------- input

    def _submit(self, line: str) -> None:
        try:
            self.submit(line)
        except Exception as exc:  # a bug must not take the screen down with a traceback
            self.show(Problem(f"internal error: {exc!r}"))

    def _accept(self, buffer: Buffer) -> bool:
        for line in buffer.text.split("\n"):
            if line.strip():
                self._submit(line)
        self._current().follow = True  # what you said is at the bottom: go there
        return False  # clear the line (and keep it in the history)

    def _paste(self, data: str) -> None:
        """Pasted text: each complete line is sent, the unfinished last line stays to edit."""
        buf = self.input
        text = buf.text[: buf.cursor_position] + data + buf.text[buf.cursor_position :]
        *complete_lines, rest = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if not complete_lines:
            buf.insert_text(data)
            return
        for line in complete_lines:
            if line.strip():
                buf.history.append_string(line)  # up-arrow brings pasted lines back too
                self._submit(line)
        buf.document = Document(rest, len(rest))

    def _edit_or_quit(self, edit: Callable[[], object]) -> None:
        """Ctrl-C and Ctrl-D: ``edit`` what is typed, or on an empty line quit."""
        if self.input.text:
            edit()
        else:
            self._submit("/quit")

    def _keys(self) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            self._edit_or_quit(self.input.reset)

        @kb.add("c-d")
        def _eof(event: KeyPressEvent) -> None:
            self._edit_or_quit(self.input.delete)

        for n in range(1, 10):

            @kb.add("escape", str(n))
            def _alt_n(event: KeyPressEvent, n: int = n) -> None:
                self.go_to(n)

        @kb.add("escape", "0")
        def _alt_0(event: KeyPressEvent) -> None:
            self.go_to(10)

        @kb.add("c-n")
        def _next(event: KeyPressEvent) -> None:
            self._step(1)

        @kb.add("c-p")
        def _previous(event: KeyPressEvent) -> None:
            self._step(-1)

        @kb.add("pageup")
        def _page_up(event: KeyPressEvent) -> None:
            self.scroll(-1)

        @kb.add("pagedown")
        def _page_down(event: KeyPressEvent) -> None:
            self.scroll(1)

        @kb.add("c-l")
        def _redraw(event: KeyPressEvent) -> None:
            event.app.renderer.clear()

        @kb.add(Keys.BracketedPaste)
        def _paste(event: KeyPressEvent) -> None:
            self._paste(event.data)

        return kb

    def _step(self, delta: int) -> None:
        tabs = self.tabs()
        if not tabs:
            return
        now = next((t.number for t in tabs if t.current), 1)
        self.go_to((now - 1 + delta) % len(tabs) + 1)

    # ----------------------------------------------------------------- run

    async def run(self) -> None:
        await self.app.run_async()

    def exit(self) -> None:
        """Leave the screen (restoring the terminal); harmless if it is not running."""
        if self.app.is_running and not self.app.is_done:
            self.app.exit()
