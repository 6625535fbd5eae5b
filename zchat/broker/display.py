"""The broker's own output: the traffic display and its warnings, as text or JSON.

Every line the core asks to show is either traffic (``info``: arrivals,
room lines, DMs without their text) or a warning (``warning``: lines starting
with ``!``, such as refused keys and dropped input). Text mode prints
``HH:MM:SS line``; JSON mode prints one object per line for log collectors.
Lines are written per batch and flushed at once, so a reader sees each line
as it happens without a write call per message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")


class Display:
    def __init__(
        self,
        out: TextIO,
        fmt: str = "text",
        level: str = "info",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.out = out
        self.json = fmt == "json"
        self.traffic = LEVELS.index(level) <= LEVELS.index("info")
        self.warnings = LEVELS.index(level) <= LEVELS.index("warning")
        self.clock = clock

    def show(self, lines: Iterable[str]) -> None:
        now = self.clock()
        picked = [
            ("warning" if line.startswith("!") else "info", line)
            for line in lines
            if (self.warnings if line.startswith("!") else self.traffic)
        ]
        if not picked:
            return
        if self.json:
            stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z"
            )
            text = "".join(
                json.dumps({"time": stamp, "level": lvl, "msg": line.lstrip("! ")}) + "\n"
                for lvl, line in picked
            )
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            text = "".join(f"{stamp} {line}\n" for _, line in picked)
        self.out.write(text)
        self.out.flush()
