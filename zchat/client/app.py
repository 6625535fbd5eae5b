"""``zchat client``: wires input and output around one ``Chat`` session (the public
API of zchat/client/api.py), on one asyncio loop.

Plain mode (stdin not a terminal, ``--plain``, or TERM=dumb): lines in from
stdin, one line per event out on stdout, flushed at once; at end of input the
client waits (bounded) until what it sent is acknowledged, then exits. Without
an explicit room it joins the default one at the first line, unless that line
is a ``/join``: a script that picks its room never lands in #lobby.
Interactive mode: the full-screen UI of zchat/client/tui.py, on the same loop
as the session; incoming lines never touch the input line.
``--log-dir``: every room and DM conversation also goes to a transcript file.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from zchat.client.api import Chat
from zchat.client.core import ClientCore
from zchat.client.events import Chat as ChatLine
from zchat.client.events import DirectLine, Problem, RoomNotice, UiEvent, safe, to_json
from zchat.config import ClientConfig
from zchat.protocol.rules import nick_key


def run(
    config: ClientConfig,
    json_mode: bool = False,
    *,
    explicit_room: bool = True,
    log_dir: str | None = None,
) -> int:
    """Run the client until the user leaves; returns the process exit code.

    ``explicit_room``: the room was given (flag, environment or file); without
    it, line mode joins the default room lazily (see the module docstring).
    """
    line_mode = config.plain or json_mode or not interactive_terminal()
    lazy = line_mode and not explicit_room
    core = ClientCore(
        config.nick,
        None if lazy else config.room,
        config.history,
        quit_wait=config.wait,
        lazy_room=config.room if lazy else None,
        lazy_waits=not sys.stdin.isatty(),
    )
    transcript = Transcript(Path(log_dir)) if log_dir else None
    try:
        if line_mode:
            show = _line_writer(sys.stdout, json_mode)
            return asyncio.run(_plain(core, config, _logged(show, transcript)))
        return asyncio.run(_interactive(core, config, transcript))
    except KeyboardInterrupt:
        return 130
    finally:
        if transcript is not None:
            transcript.close()


def _session(core: ClientCore, config: ClientConfig, show: Callable[[UiEvent], None]) -> Chat:
    return Chat(
        config.connect,
        nick=config.nick,
        curve_key=config.curve_key or None,
        curve_server_key=config.curve_server_key or None,
        events=False,
        core=core,
        on_ui=show,
    )


class Transcript:
    """``--log-dir``: one file per room (``dev.log``) and per DM peer (``@bob.log``),
    a dated line per live event. History replayed on join is not logged again."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._files: dict[str, TextIO] = {}

    def write(self, event: UiEvent) -> None:
        if isinstance(event, ChatLine | RoomNotice) and not event.history:
            name, ts = event.room, event.ts
        elif isinstance(event, DirectLine):
            name, ts = "@" + nick_key(event.to if event.outgoing else event.sender), event.ts
        else:
            return
        if isinstance(event, ChatLine):
            who = f"* {safe(event.nick)}" if event.action else f"<{safe(event.nick)}>"
            body = f"{who} {safe(event.text)}"
        elif isinstance(event, RoomNotice):
            body = f"-- {event.what()}"
        else:
            who = f"* {safe(event.sender)}" if event.action else f"<{safe(event.sender)}>"
            body = f"{who} {safe(event.text)}"
        out = self._files.get(name)
        if out is None:
            out = self._files[name] = open(  # noqa: SIM115 - kept open for the session
                self.folder / f"{name}.log", "a", encoding="utf-8"
            )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        out.write(f"{stamp} {body}\n")
        out.flush()

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()


def _logged(
    show: Callable[[UiEvent], None], transcript: Transcript | None
) -> Callable[[UiEvent], None]:
    if transcript is None:
        return show

    def both(event: UiEvent) -> None:
        show(event)
        transcript.write(event)

    return both


def interactive_terminal(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the full-screen UI can run: stdin and stdout are terminals that move a cursor.

    A dumb terminal (TERM=dumb or unset, as in editors' shells) gets the plain
    line mode: it cannot redraw a screen, but it shows lines fine.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    return env.get("TERM", "dumb") != "dumb"


def _line_writer(out: TextIO, json_mode: bool) -> Callable[[UiEvent], None]:
    def write(event: UiEvent) -> None:
        out.write((to_json(event) if json_mode else event.plain()) + "\n")
        out.flush()

    return write


async def _plain(core: ClientCore, config: ClientConfig, show: Callable[[UiEvent], None]) -> int:
    chat = _session(core, config, show)
    run = chat.begin()
    pump = asyncio.create_task(_pump_stdin(chat, show))
    try:
        return await run
    finally:
        pump.cancel()


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd``: pipes, sockets and terminals can;
    regular files and some devices (/dev/null) are refused by epoll, but never
    block either, so they are read whole."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    selector = selectors.DefaultSelector()
    try:
        selector.register(fd, selectors.EVENT_READ)
    except (PermissionError, ValueError, OSError):
        return False
    finally:
        selector.close()
    return True


async def _pump_stdin(chat: Chat, show: Callable[[UiEvent], None]) -> None:
    """Feed stdin to the session line by line; end of input means /quit."""
    loop = asyncio.get_running_loop()
    try:
        if _pollable(sys.stdin.fileno()):
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while True:
                try:
                    line_bytes = await reader.readline()
                except ValueError:  # a line over the reader's 1 MiB limit
                    show(Problem("skipped an input line longer than 1 MiB"))
                    continue
                if not line_bytes:
                    break
                chat.command(line_bytes.decode("utf-8", "replace"))
        else:
            # A file or device that never blocks: read it whole.
            for line in sys.stdin:
                chat.command(line)
    finally:
        chat.command("/quit")


async def _interactive(
    core: ClientCore, config: ClientConfig, transcript: Transcript | None
) -> int:
    """The full-screen UI and the session, side by side on this one loop."""
    from zchat.client.tui import ChatScreen, wants_colour

    screen = ChatScreen(core, bell=config.bell, colour=wants_colour(os.environ))
    chat = _session(core, config, _logged(screen.show, transcript))
    screen.submit = chat.command
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, chat.command, "/quit")  # leave properly, then exit
    ui = asyncio.create_task(screen.run())
    net = chat.begin()
    failed: BaseException | None = None
    try:
        await asyncio.wait({ui, net}, return_when=asyncio.FIRST_COMPLETED)
        if not net.done():  # the screen ended first, so it failed: stop the sockets too
            chat.transport.quit(70)
        code = await net
    finally:
        if screen.app.is_running:
            screen.exit()
        else:
            ui.cancel()  # not started yet
        try:
            await ui
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            failed = exc
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    # The screen is gone: say why we stopped where it stays visible.
    if failed is not None:
        print(f"!! the screen failed: {failed!r}", file=sys.stderr)
        return 70
    if code:
        for problem in screen.problems:
            print(problem.plain(), file=sys.stderr)
    return code
