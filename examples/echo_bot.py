"""An echo bot on zchat's API: repeats what follows ``!echo `` in the rooms it is in.

    python examples/echo_bot.py --connect tcp://127.0.0.1:5555 --nick echobot --room dev

Stops cleanly (BYE, nothing unsent) on Ctrl-C or SIGTERM. With CURVE, pass
--curve-key (this bot's secret key file) and --curve-server-key.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import zchat


async def main(args: argparse.Namespace) -> None:
    async with zchat.connect(
        args.connect,
        nick=args.nick,
        rooms=args.room,
        curve_key=args.curve_key,
        curve_server_key=args.curve_server_key,
    ) as chat:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(chat.close()))
        print(f"{chat.nick}: echoing in {', '.join('#' + r for r in chat.joined)}", flush=True)
        async for event in chat:  # ends when the session closes
            if (
                isinstance(event, zchat.Message)
                and event.room is not None  # not a DM
                and not event.history  # not replayed from the log
                and event.nick != chat.nick  # never our own lines
                and event.text.startswith("!echo ")
            ):
                seq = await chat.say(event.room, event.text[len("!echo ") :])
                print(f"echoed #{event.room} seq {seq}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connect", default="tcp://127.0.0.1:5555")
    parser.add_argument("--nick", default="echobot")
    parser.add_argument("--room", action="append", default=[], help="a room (repeatable)")
    parser.add_argument("--curve-key")
    parser.add_argument("--curve-server-key")
    arguments = parser.parse_args()
    arguments.room = arguments.room or ["lobby"]
    try:
        asyncio.run(main(arguments))
    except zchat.ChatError as exc:
        raise SystemExit(f"echobot: {exc}") from None
