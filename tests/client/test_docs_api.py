"""docs/api.md: every Python example runs, as written, against a real broker process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zchat
from tests.procs import WAIT, Broker

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
          if 'ENDPOINT = "tcp://127.0.0.1:5555"' in b]  # fmt: skip


def start(block: str, endpoint: str) -> subprocess.Popen[str]:
    code = block.replace('ENDPOINT = "tcp://127.0.0.1:5555"', f'ENDPOINT = "{endpoint}"')
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_the_doc_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_each_example_runs(broker: Broker, number: int) -> None:
    block = BLOCKS[number]
    proc = start(block, broker.endpoint)
    try:
        if "!stop" in block:  # the echo bot: talk to it, then stop it
            asyncio.run(talk_to_echobot(broker.endpoint))
        out, err = proc.communicate(timeout=3 * WAIT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    if "stored as" in block:
        assert "stored as" in out


async def talk_to_echobot(endpoint: str) -> None:
    async with zchat.connect(endpoint, nick="tester", rooms=["dev"]) as chat:
        async with asyncio.timeout(WAIT):
            while "echobot" not in await chat.who("dev"):
                await chat.who("dev")  # a round trip each: bounded by the timeout
        await chat.say("dev", "!echo ping")
        async with asyncio.timeout(WAIT):
            async for event in chat:
                if isinstance(event, zchat.Message) and event.nick == "echobot":
                    assert event.text == "ping"
                    break
        await chat.say("dev", "!stop")
