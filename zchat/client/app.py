"""``zchat client``: wires input and output around one Transport, on one asyncio loop.

Plain mode (stdin not a terminal, or ``--plain``): lines in from stdin, one
line per event out on stdout, flushed at once; at end of input the client
waits (bounded) until what it sent is acknowledged, then exits. Interactive
mode: prompt_toolkit keeps the input line intact while events print above it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Callable
from typing import TextIO

from zchat.client.core import ClientCore
from zchat.client.events import UiEvent, to_json
from zchat.client.transport import Transport
from zchat.config import ClientConfig


def run(config: ClientConfig, json_mode: bool = False) -> int:
    """Run the client until the user leaves; returns the process exit code."""
    plain = config.plain or json_mode or not sys.stdin.isatty()
    core = ClientCore(config.nick, config.room, config.history, quit_wait=config.wait)
    try:
        if plain:
            return asyncio.run(_plain(core, config, _line_writer(sys.stdout, json_mode)))
        return asyncio.run(_interactive(core, config))
    except KeyboardInterrupt:
        return 130


def _line_writer(out: TextIO, json_mode: bool) -> Callable[[UiEvent], None]:
    def write(event: UiEvent) -> None:
        out.write((to_json(event) if json_mode else event.plain()) + "\n")
        out.flush()

    return write


async def _plain(core: ClientCore, config: ClientConfig, show: Callable[[UiEvent], None]) -> int:
    transport = Transport(core, config.connect, show)
    pump = asyncio.create_task(_pump_stdin(transport))
    try:
        return await transport.run()
    finally:
        pump.cancel()


async def _pump_stdin(transport: Transport) -> None:
    """Feed stdin to the transport line by line; end of input means /quit."""
    loop = asyncio.get_running_loop()
    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        # A regular file never blocks (and epoll refuses it): read it whole.
        for line in sys.stdin:
            transport.feed(line)
    else:
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line_bytes := await reader.readline():
            transport.feed(line_bytes.decode("utf-8", "replace"))
    transport.feed("/quit")


async def _interactive(core: ClientCore, config: ClientConfig) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    session: PromptSession[str] = PromptSession()

    def show(event: UiEvent) -> None:
        print(event.plain(), flush=True)

    transport = Transport(core, config.connect, show)

    async def keyboard() -> None:
        while True:
            try:
                line = await session.prompt_async(lambda: f"[#{core.current or '-'}] ")
            except (EOFError, KeyboardInterrupt):
                transport.feed("/quit")
                return
            transport.feed(line)

    with patch_stdout(raw=True):
        keys = asyncio.create_task(keyboard())
        try:
            return await transport.run()
        finally:
            keys.cancel()
