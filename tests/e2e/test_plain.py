"""Plain and JSON modes: input piped in, output parsed, against a real broker.

For scripts and bots: one line (or one JSON object) per event, flushed at once,
exit 0 once what was sent is acknowledged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.procs import Broker, Proc

Start = Callable[..., Proc]

INPUT = "".join(
    line + "\n"
    for line in (
        "hello from a pipe",
        "/me waves",
        "/msg watcher psst",
        "/clear",
        "/frobnicate",
        "/query watcher",
        "via query",
        "/who dev",
        "/rooms",
    )
)

PLAIN_LINE = re.compile(
    r"\d\d:\d\d #\S+ (<\S+>|\* \S+|--) .*"  # room message, action or notice
    r"|\d\d:\d\d \[DM( to \S+)?\] .*"  # direct message
    r"|(--|!!) .*"  # the client's own lines
)


def run_client(broker: Broker, *flags: str, stdin: str = INPUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zchat", "client", "--connect", broker.endpoint,
         "--nick", "piper", "--room", "dev", *flags],
        input=stdin, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_plain_mode_is_one_line_per_event(broker: Broker, client: Start) -> None:
    watcher = client("watcher", room="dev")
    watcher.wait_for(r"^-- joined #dev")
    done = run_client(broker)  # stdin is a pipe: plain without asking
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout
    assert [line for line in lines if not PLAIN_LINE.fullmatch(line)] == []
    for expected in (
        r"-- connected as piper",
        r"-- joined #dev \(2 here\)",
        r"\d\d:\d\d #dev <piper> hello from a pipe",
        r"\d\d:\d\d #dev \* piper waves",
        r"\d\d:\d\d \[DM to watcher\] psst",
        r"-- /clear only clears the interactive screen",
        r"!! unknown command /frobnicate; /help lists them",
        r"\d\d:\d\d \[DM to watcher\] via query",
    ):
        assert any(re.fullmatch(expected, line) for line in lines), (expected, lines)
    watcher.wait_for(r"\[DM\] <piper> psst$")
    watcher.wait_for(r"\[DM\] <piper> via query$")
    watcher.wait_for(r"#dev <piper> hello from a pipe$")


def test_json_mode_is_one_object_per_event(broker: Broker, client: Start) -> None:
    watcher = client("watcher", room="dev")
    watcher.wait_for(r"^-- joined #dev")
    done = run_client(broker, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    objects: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [o["event"] for o in objects]
    assert set(kinds) <= {"chat", "notice", "dm", "info", "error", "state", "clear", "joined",
                          "who", "rooms", "topic"}  # fmt: skip
    states = [o["state"] for o in objects if o["event"] == "state"]
    assert states[:2] == ["connecting", "connected"]
    chats = [(o["nick"], o["text"], o["action"]) for o in objects if o["event"] == "chat"]
    assert ("piper", "hello from a pipe", False) in chats
    assert ("piper", "waves", True) in chats
    dms = [(o["to"], o["text"], o["outgoing"]) for o in objects if o["event"] == "dm"]
    assert dms == [("watcher", "psst", True), ("watcher", "via query", True)]
    assert "clear" in kinds
    assert any(o["event"] == "error" and "/frobnicate" in o["text"] for o in objects)
    joins = [o for o in objects if o["event"] == "notice" and o["kind"] == "join"]
    assert any(o["nick"] == "piper" and o["room"] == "dev" and o["ts"] > 0 for o in joins)
    # who and rooms have typed fields, not display strings (issue 11)
    assert {"event": "joined", "room": "dev", "here": 2, "topic": ""} in objects
    who = next(o for o in objects if o["event"] == "who")
    assert who["room"] == "dev" and sorted(who["members"]) == ["piper", "watcher"]
    rooms = next(o for o in objects if o["event"] == "rooms")
    assert {"name": "dev", "members": 2, "topic": ""} in rooms["rooms"]


def test_plain_flag_and_a_bot_conversation(broker: Broker, client: Start) -> None:
    """A bot reads the JSON stream of another client: mentions are flagged for it."""
    bot = client("bot", "--json", room="dev")
    bot.wait_for(r'"event": "joined", "room": "dev"')
    done = run_client(broker, "--plain", stdin="bot: status?\nnothing for you\n")
    assert done.returncode == 0, done.stdout + done.stderr
    line = bot.wait_for(r"bot: status\?")
    assert json.loads(line)["mention"] is True
    line = bot.wait_for(r"nothing for you")
    assert json.loads(line)["mention"] is False


# ------------------------------------------------------ issue 11: rough edges


def test_a_script_that_joins_its_room_stays_out_of_the_default_one(
    broker: Broker, client: Start
) -> None:
    """The README's bot example: `printf '/join ops\\n...' | zchat client --plain` never
    joins #lobby (nor announces itself there, nor becomes its operator)."""
    lobby = client("watcher", room="lobby")
    lobby.wait_for(r"^-- joined #lobby")
    done = subprocess.run(
        [sys.executable, "-m", "zchat", "client", "--plain", "--connect", broker.endpoint,
         "--nick", "deploybot"],
        input="/join ops\ndeploy finished\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-- joined #ops" in done.stdout and "#lobby" not in done.stdout
    assert re.search(r"#ops <deploybot> deploy finished", done.stdout)
    lobby.send("/who")
    lobby.wait_for(r"^-- #lobby: watcher$")
    assert lobby.count("deploybot") == 0


def test_transcripts_ignore_and_json_for_the_new_commands(
    broker: Broker, client: Start, tmp_path: Path
) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    logs = tmp_path / "logs"
    alice = client("alice", "--log-dir", str(logs), "--json", room="dev")
    alice.wait_for(r'"event": "joined", "room": "dev"')
    alice.send("/ignore carol", "/away lunch", "hello bob", "/msg bob psst", "/whois bob")
    whois = json.loads(alice.wait_for(r'"event": "whois"'))
    assert (whois["nick"], whois["online"], whois["rooms"]) == ("bob", True, ["dev"])
    carol = client("carol", room="dev")
    carol.wait_for(r"^-- joined #dev")
    carol.send("buy my stuff")
    bob.wait_for(r"<carol> buy my stuff")
    bob.send("/who")
    bob.wait_for(r"^-- #dev: .*alice \(away\)")
    bob.send("after carol")
    alice.wait_for(r"after carol")
    assert alice.count("buy my stuff") == 0  # ignored
    assert (logs / "dev.log").exists() and (logs / "@bob.log").exists()
    room_log = (logs / "dev.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d <alice> hello bob$", room_log, re.M)
    assert "buy my stuff" not in room_log
    assert re.search(r"<alice> psst$", (logs / "@bob.log").read_text(), re.M)


def test_help_lists_every_command_unabridged() -> None:
    done = subprocess.run([sys.executable, "-m", "zchat", "--help"], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0
    commands = done.stdout.split("Commands:")[1]
    assert "..." not in commands
    assert "exit to\n          leave." in commands  # wrapped, not cut
    assert "exit once it is\n          stored." in commands
