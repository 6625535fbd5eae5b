"""A relay bot on zchat's API: says in a room each line appended to a file, or POSTed to it.

    python examples/relay_bot.py --room ops --file /var/log/deploy.log
    python examples/relay_bot.py --room ops --webhook 127.0.0.1:8099
    curl -d 'deploy finished' http://127.0.0.1:8099/

``--file`` follows the file like ``tail -f`` (lines already there are not
sent); ``--webhook`` answers each POST with ``200`` and the seqs of the lines
once they are stored (``202`` is never needed: a line is stored or refused).
A line the rules refuse (control characters, too long) is reported and
skipped. Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path

import zchat


async def follow(chat: zchat.Chat, room: str, path: Path, every: float = 0.2) -> None:
    """Say each line appended to ``path``, in order."""
    with path.open("rb") as source:
        source.seek(0, 2)  # only what comes from now on
        partial = b""
        while True:
            chunk = source.read()
            if not chunk:
                await asyncio.sleep(every)  # a file cannot be waited on: look again soon
                continue
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                await relay(chat, room, line.decode("utf-8", "replace"))


async def relay(chat: zchat.Chat, room: str, line: str) -> int | None:
    text = line.rstrip("\r")
    if not text.strip():
        return None
    try:
        seq = await chat.say(room, text)
    except zchat.InvalidRequest as exc:
        print(f"skipped a line: {exc.text}", flush=True)
        return None
    print(f"relayed #{room} seq {seq}", flush=True)
    return seq


async def webhook(chat: zchat.Chat, room: str, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: each POST body's lines go to the room."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer: dict[str, object]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method = head.split(b" ", 1)[0]
            length = 0
            for header in head.split(b"\r\n")[1:]:
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            body = await reader.readexactly(min(length, 1 << 20))
            if method != b"POST":
                status, answer = "405 Method Not Allowed", {"error": "POST lines to relay"}
            else:
                lines = body.decode("utf-8", "replace").splitlines()
                seqs = [seq for line in lines if (seq := await relay(chat, room, line))]
                status, answer = "200 OK", {"seqs": seqs}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, answer = "400 Bad Request", {"error": "not a request"}
        except zchat.ChatError as exc:
            status, answer = "503 Service Unavailable", {"error": str(exc)}
        data = json.dumps(answer).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


async def main(args: argparse.Namespace) -> None:
    async with zchat.connect(
        args.connect,
        nick=args.nick,
        curve_key=args.curve_key,
        curve_server_key=args.curve_server_key,
    ) as chat:
        work: asyncio.Future[object]
        if args.file:
            work = asyncio.ensure_future(follow(chat, args.room, Path(args.file)))
            print(f"{chat.nick}: relaying {args.file} to #{args.room}", flush=True)
        else:
            host, _, port = args.webhook.rpartition(":")
            server = await webhook(chat, args.room, host or "127.0.0.1", int(port))
            work = asyncio.ensure_future(server.serve_forever())
            print(f"{chat.nick}: relaying POSTs to {args.webhook} to #{args.room}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, work.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await work  # cancelled to stop: leaving `async with` waits for what was said


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connect", default="tcp://127.0.0.1:5555")
    parser.add_argument("--nick", default="relaybot")
    parser.add_argument("--room", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="follow this file and relay new lines")
    source.add_argument("--webhook", metavar="HOST:PORT", help="relay lines POSTed here")
    parser.add_argument("--curve-key")
    parser.add_argument("--curve-server-key")
    try:
        asyncio.run(main(parser.parse_args()))
    except zchat.ChatError as exc:
        raise SystemExit(f"relaybot: {exc}") from None
