"""examples/: the echo bot and the relay bot, each run as a real process against a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import zchat
from tests.procs import WAIT, Broker, Proc, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Script(Proc):
    """A Python script (not ``python -m zchat``) whose output lines are collected."""

    def __init__(self, script: Path, *args: str) -> None:
        self.args = [script.name, *args]
        self.lines = []
        self._q = queue.Queue()
        self.p = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(EXAMPLES.parent)},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


async def said(endpoint: str, room: str, texts: list[str]) -> list[zchat.Message]:
    """Join ``room`` as a watcher, say ``texts``, return the messages others said meanwhile
    until as many came back as ``texts``."""
    async with zchat.connect(endpoint, nick="watcher", rooms=[room]) as chat:
        for text in texts:
            await chat.say(room, text)
        replies: list[zchat.Message] = []
        async with asyncio.timeout(WAIT):
            async for event in chat:
                if isinstance(event, zchat.Message) and event.nick != "watcher":
                    replies.append(event)
                    if len(replies) == len(texts):
                        return replies
    return replies


def test_echo_bot_echoes(broker: Broker, procs: list[Proc]) -> None:
    bot = Script(EXAMPLES / "echo_bot.py", "--connect", broker.endpoint, "--room", "dev")
    procs.append(bot)
    bot.wait_for(r"echobot: echoing in #dev")
    replies = asyncio.run(said(broker.endpoint, "dev", ["!echo hello", "!echo two words"]))
    assert [(r.nick, r.text) for r in replies] == [("echobot", "hello"), ("echobot", "two words")]
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0


def test_relay_bot_relays_appended_lines(broker: Broker, procs: list[Proc], tmp_path: Path) -> None:
    log = tmp_path / "deploy.log"
    log.write_text("old line, not relayed\n")
    bot = Script(EXAMPLES / "relay_bot.py", "--connect", broker.endpoint, "--room", "ops",
                 "--file", str(log))  # fmt: skip
    procs.append(bot)
    bot.wait_for(r"relaybot: relaying .* to #ops")

    async def watch() -> list[str]:
        async with zchat.connect(broker.endpoint, nick="watcher", rooms=["ops"]) as chat:
            with log.open("a") as out:
                out.write("deploy started\ndeploy fini")
                out.flush()
                out.write("shed\n")
            texts: list[str] = []
            async with asyncio.timeout(WAIT):
                async for event in chat:
                    if isinstance(event, zchat.Message):
                        texts.append(event.text)
                        if len(texts) == 2:
                            break
            return texts

    assert asyncio.run(watch()) == ["deploy started", "deploy finished"]
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0


def test_relay_bot_takes_a_webhook(broker: Broker, procs: list[Proc]) -> None:
    port = free_port()
    bot = Script(EXAMPLES / "relay_bot.py", "--connect", broker.endpoint, "--room", "ops",
                 "--webhook", f"127.0.0.1:{port}")  # fmt: skip
    procs.append(bot)
    bot.wait_for(r"relaying POSTs")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"build green\nship it\n")
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        assert answer.status == 200
        assert json.loads(answer.read()) == {"seqs": [1, 2]}
    past = zchat.stats(broker.endpoint)
    assert past.counters["messages"] == 2
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit() == 0
