"""``zchat client``: wires input and output around one Transport, on one asyncio loop.

Plain mode (stdin not a terminal, ``--plain``, or TERM=dumb): lines in from
stdin, one line per event out on stdout, flushed at once; at end of input the
client waits (bounded) until what it sent is acknowledged, then exits.
Interactive mode: the full-screen UI of zchat/client/tui.py, on the same loop
as the Transport; incoming lines never touch the input line.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import stat
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from zchat.client.core import ClientCore
from zchat.client.events import Problem, UiEvent, to_json
from zchat.client.transport import Transport
from zchat.config import ClientConfig
from zchat.keys import ClientKeys


def run(config: ClientConfig, json_mode: bool = False, keys: ClientKeys | None = None) -> int:
    """Run the client until the user leaves; returns the process exit code.

    ``keys``: the CURVE keys, when the config names them (cli loads them).
    """
    core = ClientCore(config.nick, config.room, config.history, quit_wait=config.wait)
    try:
        if config.plain or json_mode or not interactive_terminal():
            show = _line_writer(sys.stdout, json_mode)
            return asyncio.run(_plain(core, config, show, keys))
        return asyncio.run(_interactive(core, config, keys))
    except KeyboardInterrupt:
        return 130


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


async def _plain(
    core: ClientCore,
    config: ClientConfig,
    show: Callable[[UiEvent], None],
    keys: ClientKeys | None,
) -> int:
    transport = Transport(core, config.connect, show, keys=keys)
    pump = asyncio.create_task(_pump_stdin(transport))
    try:
        return await transport.run()
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


async def _pump_stdin(transport: Transport) -> None:
    """Feed stdin to the transport line by line; end of input means /quit."""
    loop = asyncio.get_running_loop()
    try:
        if _pollable(sys.stdin.fileno()):
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while True:
                try:
                    line_bytes = await reader.readline()
                except ValueError:  # a line over the reader's 1 MiB limit
                    transport.on_event(Problem("skipped an input line longer than 1 MiB"))
                    continue
                if not line_bytes:
                    break
                transport.feed(line_bytes.decode("utf-8", "replace"))
        else:
            # A file or device that never blocks: read it whole.
            for line in sys.stdin:
                transport.feed(line)
    finally:
        transport.feed("/quit")


async def _interactive(core: ClientCore, config: ClientConfig, keys: ClientKeys | None) -> int:
    """The full-screen UI and the Transport, side by side on this one loop."""
    from zchat.client.tui import ChatScreen, wants_colour

    screen = ChatScreen(core, bell=config.bell, colour=wants_colour(os.environ))
    transport = Transport(core, config.connect, screen.show, keys=keys)
    screen.submit = transport.feed
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, transport.feed, "/quit")  # leave properly, then exit
    ui = asyncio.create_task(screen.run())
    net = asyncio.create_task(transport.run())
    failed: BaseException | None = None
    try:
        await asyncio.wait({ui, net}, return_when=asyncio.FIRST_COMPLETED)
        if not net.done():  # the screen ended first, so it failed: stop the sockets too
            transport.quit(70)
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
