"""The interactive client in a real terminal: tmux runs `zchat client`, the test reads the screen.

Each test starts a real broker (tests/conftest.py) and drives the real
`python -m zchat client` in a detached tmux session of a fixed size, on a tmux
server of its own (`tmux -L`), killed at the end. Keys go in with send-keys;
the screen comes back with capture-pane. Every wait is on a screen (or output)
condition with a deadline: no sleeps for synchronisation.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import WAIT, Broker, Proc

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None,
    reason="tmux is not installed (apt-get install tmux): the interactive client is "
    "tested in a real terminal",
)

REPO = Path(__file__).resolve().parents[2]
SGR = re.compile(r"\x1b\[([0-9;]*)m")
Start = Callable[..., Proc]


class Term:
    """A real terminal running one interactive `zchat client`."""

    def __init__(
        self,
        tmp: Path,
        broker: Broker,
        nick: str,
        room: str = "dev",
        width: int = 100,
        height: int = 30,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.socket = f"zchat-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.bells = tmp / f"{nick}.bells"
        self.code = tmp / f"{nick}.exit"
        cmd = [sys.executable, "-m", "zchat", "client", "--connect", broker.endpoint,
               "--nick", nick, "--room", room, *extra]  # fmt: skip
        envs = {"NO_COLOR": "", "ZCHAT_CONFIG": "", **(env or {})}
        args = [f"{k}={v}" for k, v in envs.items()]
        bells = shlex.quote(str(self.bells))
        code = shlex.quote(str(self.code))
        self.tmux(
            "-f", "/dev/null", "start-server", ";",
            "set-option", "-g", "remain-on-exit", "on", ";",  # keep the screen and exit code
            "set-option", "-g", "default-terminal", "tmux-256color", ";",
            "set-hook", "-g", "alert-bell", f"run-shell 'echo bell >> {bells}'", ";",
            "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c", str(REPO),
            # env: tmux would override a TERM given with -e. sh: keeps the exit code.
            shlex.join(["sh", "-c", f'"$@"; echo $? > {code}', "sh", "env", *args, *cmd]),
        )  # fmt: skip
        self.socket_path = Path(self.tmux("display", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=WAIT
        )
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", *(["-e"] if escapes else []))

    def lines(self) -> list[str]:
        return self.screen().rstrip("\n").split("\n")

    def status(self) -> str:
        return self.last_status(self.screen())

    @staticmethod
    def last_status(screen: str) -> str:
        """The status line of a captured screen: the row above the input line."""
        return screen.rstrip("\n").split("\n")[-2]

    def input_line(self) -> str:
        return self.lines()[-1].rstrip()

    def wait(
        self, cond: str | Callable[[str], bool], timeout: float = WAIT, escapes: bool = False
    ) -> str:
        """The screen once ``cond`` (a regex, or a predicate) holds for it."""
        check = cond if callable(cond) else re.compile(cond, re.M).search
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen(escapes)
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never matched {cond!r}:\n{text}")
            time.sleep(0.02)  # a poll interval, not a synchronisation

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)

    def paste(self, text: str) -> None:
        """A bracketed paste, as a terminal does it when text is pasted with the mouse."""
        self.tmux("set-buffer", "-b", "p", text)
        self.tmux("paste-buffer", "-p", "-b", "p", "-t", "t")

    def bell_rung(self) -> bool:
        return self.bells.exists() and "bell" in self.bells.read_text()

    def exit_status(self) -> int | None:
        """The client's exit code once it has exited, else None."""
        text = self.code.read_text() if self.code.exists() else ""
        return int(text) if text.endswith("\n") else None

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=WAIT
        )
        self.socket_path.unlink(missing_ok=True)  # kill-server leaves it behind


@pytest.fixture
def term(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., Term]]:
    """Start interactive clients in terminals; every tmux server is killed at the end."""
    started: list[Term] = []

    def start(nick: str, **kwargs: object) -> Term:
        t = Term(tmp_path, broker, nick, **kwargs)  # type: ignore[arg-type]
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def wait_exit(t: Term, timeout: float = WAIT) -> int:
    deadline = time.monotonic() + timeout
    while (code := t.exit_status()) is None:
        assert time.monotonic() < deadline, "the client did not exit:\n" + t.screen()
        time.sleep(0.02)
    return code


def joined(t: Term, room: str = "dev") -> None:
    t.wait(rf"^-- joined #{room} ")
    t.wait(lambda s: s.rstrip("\n").split("\n")[-2].rstrip().endswith("connected"))


# ------------------------------------------------------------------ tests


def test_typing_is_never_disturbed_by_traffic(term: Callable[..., Term], client: Start) -> None:
    """50 messages arrive while a line is typed a key at a time; all show, the line goes intact."""
    alice = term("alice", height=64)
    joined(alice)
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice.wait("bob joined #dev")

    typed = "the quick brown fox jumps over the lazy dog, 0123456789 ünïcödé ✓"
    done = 0
    for i in range(50):
        bob.send(f"burst message {i:02d}")
        if done < len(typed):
            alice.type(typed[done])
            done += 1
        # It arrived while we were typing, and the line shows exactly what was typed so far.
        line = ("[#dev] " + typed[:done]).rstrip()
        alice.wait(lambda s, i=i, line=line: f"<bob> burst message {i:02d}\n" in s
                   and s.rstrip("\n").split("\n")[-1].rstrip() == line)  # fmt: skip
    alice.type(typed[done:])
    screen = alice.wait(lambda s: s.rstrip("\n").split("\n")[-1].rstrip() == "[#dev] " + typed)

    rows = screen.rstrip("\n").split("\n")
    shown = [r for r in rows[:-2] if "<bob> burst message" in r]
    assert [r.split()[-1] for r in shown] == [f"{i:02d}" for i in range(50)]
    assert all(re.match(r"\d\d:\d\d <bob> burst message \d\d$", r) for r in shown)

    alice.keys("Enter")
    bob.wait_for(rf"#dev <alice> {re.escape(typed)}$")
    alice.wait(rf"<alice> {re.escape(typed)}$")
    assert alice.input_line() == "[#dev]"


def test_tab_completes_nicks_commands_and_rooms(term: Callable[..., Term], client: Start) -> None:
    bob = client("bobby", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice")
    joined(alice)

    alice.type("bo")
    alice.keys("Tab")
    alice.wait(r"^\[#dev\] bobby:$")  # and a blank, that the capture does not show
    alice.type("ready?")
    alice.keys("Enter")
    bob.wait_for(r"#dev <alice> bobby: ready\?$")

    alice.type("/que")
    alice.keys("Tab")
    alice.wait(r"^\[#dev\] /query$")
    alice.type("bob")
    alice.keys("Tab")
    alice.wait(r"^\[#dev\] /query bobby$")
    alice.keys("C-u")

    alice.type("/switch #d")
    alice.keys("Tab")
    alice.wait(r"^\[#dev\] /switch #dev$")
    alice.keys("C-u")
    alice.wait(r"^\[#dev\]$")

    # Up recalls what was sent.
    alice.keys("Up")
    alice.wait(r"^\[#dev\] bobby: ready\?$")


def test_query_sends_dms(term: Callable[..., Term], client: Start) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice")
    joined(alice)

    alice.type("/query bob")
    alice.keys("Enter")
    alice.wait(r"^\[@bob\]$")
    alice.wait(lambda s: "2:@bob" in Term.last_status(s))
    alice.type("just between us")
    alice.keys("Enter")
    bob.wait_for(r"\[DM\] <alice> just between us$")
    alice.wait(r"\[DM to bob\] <alice> just between us$")
    assert bob.count("#dev <alice> just between us") == 0

    bob.send("/msg alice got it")
    alice.wait(r"\[DM\] <bob> got it$")

    alice.type("/query")
    alice.keys("Enter")
    alice.wait(r"^\[#dev\]$")
    alice.type("back in the room")
    alice.keys("Enter")
    bob.wait_for(r"#dev <alice> back in the room$")


def test_switch_and_alt_number_move_between_rooms(term: Callable[..., Term], client: Start) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice")
    joined(alice)
    alice.type("/join ops")
    alice.keys("Enter")
    alice.wait(r"^-- joined #ops ")
    alice.wait(r"^\[#ops\]$")

    bob.send("only in dev")
    status = alice.wait(lambda s: "1:#dev(1)" in Term.last_status(s))
    assert "only in dev" not in status  # another window: counted, not shown
    assert "2:#ops" in Term.last_status(status)

    alice.keys("M-1")
    screen = alice.wait(r"^\[#dev\]$")
    assert re.search(r"<bob> only in dev$", screen, re.M)
    assert "1:#dev(1)" not in Term.last_status(screen)  # read now

    alice.type("/switch ops")
    alice.keys("Enter")
    screen = alice.wait(r"^\[#ops\]$")
    assert "only in dev" not in screen
    alice.type("said in ops")
    alice.keys("Enter")
    alice.wait(r"<alice> said in ops$")

    alice.keys("M-1")
    alice.wait(r"^\[#dev\]$")
    alice.keys("M-2")
    alice.wait(r"^\[#ops\]$")


def test_mention_is_highlighted_and_rings_the_bell(
    term: Callable[..., Term], client: Start
) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice")
    joined(alice)

    bob.send("no one in particular")
    alice.wait(r"<bob> no one in particular$")
    assert not alice.bell_rung()
    bob.send("alice: the build is yours")
    screen = alice.wait(r"the build is yours", escapes=True)
    deadline = time.monotonic() + WAIT
    while not alice.bell_rung():
        assert time.monotonic() < deadline, "no bell"
        time.sleep(0.02)

    def attrs(row: str) -> set[str]:
        return {p for codes in SGR.findall(row) for p in codes.split(";")}

    rows = screen.split("\n")
    mention = next(r for r in rows if "the build is yours" in r)
    plain = next(r for r in rows if "no one in particular" in r)
    assert "7" in attrs(mention) and "1" in attrs(mention)  # reverse nick, bold text
    assert "7" not in attrs(plain)
    # Nicks are coloured: bob's nick carries a foreground colour.
    assert attrs(plain) & {str(c) for c in [*range(31, 38), *range(91, 98)]}


def test_no_color_keeps_attributes_drops_colours(term: Callable[..., Term], client: Start) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice", env={"NO_COLOR": "1"})
    joined(alice)
    bob.send("alice: plain please")
    screen = alice.wait(r"plain please", escapes=True)
    codes = {p for c in SGR.findall(screen) for p in c.split(";") if p}
    colours = {str(c) for c in [*range(30, 38), *range(40, 48), *range(90, 98), *range(100, 108)]}
    assert not codes & (colours | {"38", "48"}), codes
    assert "7" in codes  # the mention still stands out


def test_status_line_shows_the_connection_state(
    tmp_path: Path, term: Callable[..., Term], broker: Broker, procs: list[Proc]
) -> None:
    alice = term("alice")
    joined(alice)
    assert re.fullmatch(r" alice \| 1:#dev \| connected *", alice.status())

    broker.signal(signal.SIGKILL)  # gone without a word: noticed by the heartbeat timeout
    broker.wait_exit()
    alice.wait(lambda s: Term.last_status(s).rstrip().endswith("| reconnecting"))

    again = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3", port=broker.port)
    procs.append(again)
    alice.wait(lambda s: Term.last_status(s).rstrip().endswith("| connected"), timeout=40)


def test_paste_sends_each_line_and_bad_commands_get_a_hint(
    term: Callable[..., Term], client: Start
) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice")
    joined(alice)

    alice.paste("first pasted\nsecond pasted\nstill typing")
    bob.wait_for(r"#dev <alice> first pasted$")
    bob.wait_for(r"#dev <alice> second pasted$")
    alice.wait(r"^\[#dev\] still typing$")
    alice.keys("C-u")

    alice.type("/frobnicate now")
    alice.keys("Enter")
    alice.wait(r"^!! unknown command /frobnicate; /help lists them$")
    alice.type("/msg bob")
    alice.keys("Enter")
    alice.wait(r"^!! usage: /msg NICK TEXT")
    alice.type("/help query")
    alice.keys("Enter")
    alice.wait(r"^-- /query \[NICK\] - ")
    assert "Traceback" not in alice.screen()

    alice.type("/quit")
    alice.keys("Enter")
    assert wait_exit(alice) == 0
    bob.wait_for(r"#dev -- alice left #dev \(quit\)")


def test_narrow_terminal_degrades(term: Callable[..., Term], client: Start) -> None:
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice", width=30, height=12)
    alice.wait(r"^-- joined #dev")
    alice.wait(lambda s: Term.last_status(s).rstrip().endswith("connected"))
    bob.send("a message long enough to need wrapping on a narrow screen")
    screen = alice.wait(r"screen$")
    rows = screen.rstrip("\n").split("\n")
    assert all(len(r) <= 30 for r in rows)
    assert any(r.startswith("<bob> a message") for r in rows)  # no timestamp when narrow
    assert rows[-1].startswith(">")


def test_dumb_terminal_gets_line_mode(term: Callable[..., Term], client: Start) -> None:
    """TERM=dumb cannot redraw a screen: the client prints lines and reads lines instead."""
    bob = client("bob", room="dev")
    bob.wait_for(r"^-- joined #dev")
    alice = term("alice", env={"TERM": "dumb"})
    alice.wait(r"^-- joined #dev \(2 here\)$")
    alice.type("plain and simple")
    alice.keys("Enter")
    bob.wait_for(r"#dev <alice> plain and simple$")
    screen = alice.wait(r"^\d\d:\d\d #dev <alice> plain and simple$")
    assert "| connected" not in screen  # no status line


def test_failed_authentication_is_said_after_the_screen_closes(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """A key the broker refuses: exit 3, and the reason stays on the terminal."""
    from tests.procs import make_keys

    make_keys(tmp_path, ("broker", "alice", "mallory"), ("alice",))
    allowed = tmp_path / "allowed"
    conf = tmp_path / "zchat.toml"
    conf.write_text(
        "[broker]\n"
        f'curve_secret_key = "{tmp_path / "keys" / "broker.key_secret"}"\n'
        f'curve_clients = "{allowed}"\n'
        "[client]\n"
        f'curve_key = "{tmp_path / "keys" / "mallory.key_secret"}"\n'
        f'curve_server_key = "{tmp_path / "keys" / "broker.key"}"\n'
    )
    broker = Broker(tmp_path, "--config", str(conf))
    procs.append(broker)
    mallory = Term(tmp_path, broker, "mallory", extra=("--config", str(conf)))
    try:
        assert wait_exit(mallory) == 3
        everything = mallory.tmux("capture-pane", "-p", "-t", "t", "-S", "-")  # with history
        assert re.search(
            r"^-- authentication failed: the broker refused this client's key\b", everything, re.M
        ), everything
    finally:
        mallory.close()


# ------------------------------------------------------ issue 11: rough edges


def test_a_dead_broker_shows_at_once_with_what_waits_to_be_sent(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """kill -9: the status line says "reconnecting" at once (the dropped TCP connection),
    not after the heartbeat timeout (15 s here), and counts the lines typed since."""
    store = tmp_path / "slow"
    store.mkdir()
    slow = Broker(store, "--heartbeat", "5", "--timeout", "15")
    procs.append(slow)
    alice = Term(tmp_path, slow, "alice")
    try:
        joined(alice)
        slow.signal(signal.SIGKILL)
        slow.wait_exit()
        alice.wait(lambda s: Term.last_status(s).rstrip().endswith("| reconnecting"), timeout=3)
        alice.type("anyone there?")
        alice.keys("Enter")
        alice.wait(lambda s: Term.last_status(s).rstrip().endswith("reconnecting (1 queued)"))
        again = Broker(store, "--heartbeat", "5", "--timeout", "15", port=slow.port)
        procs.append(again)
        alice.wait(r"<alice> anyone there\?", timeout=40)
        alice.wait(lambda s: Term.last_status(s).rstrip().endswith("| connected"))
    finally:
        alice.close()


def test_kicked_history_nick_and_tab_lines_read_clearly(
    term: Callable[..., Term], client: Start
) -> None:
    op = client("opal", room="dev")  # first in #dev: its operator
    op.wait_for(r"^-- joined #dev")
    bob = term("bob")
    joined(bob)
    op.send("one\tcolumn", "two", "three")
    bob.wait(r"<opal> three")
    assert "one    column" in bob.screen() and "\\x09" not in bob.screen()
    bob.type("/history 2")
    bob.keys("Enter")
    bob.wait(r"^-- history of #dev: the last 2 event\(s\)")
    bob.wait(r"^-- end of history of #dev")
    bob.type("/nick bad nick!")
    bob.keys("Enter")
    bob.wait(r"!! invalid nick 'bad nick!'")
    op.send("/kick bob enough")
    bob.wait(r"!! bob was removed from #dev \(by opal: enough\): that is you")
    assert "| connected" in bob.status()
