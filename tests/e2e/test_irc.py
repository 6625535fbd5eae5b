"""The IRC door end to end: the real broker with --irc, real IRC clients, real zchat clients.

Clients are the `irc` library (jaraco's), raw sockets (``Irc`` below: exact
lines in and out) and irssi in tmux. Every wait is on a line or a screen with a
deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import WAIT, Broker, Proc, free_port

pytestmark = pytest.mark.slow


class Irc:
    """A hand-written IRC client on a raw socket: send lines, wait for lines."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.sock: socket.socket = (
            tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        )
        self.lines: list[str] = []
        self._buf = b""
        self.closed = False

    def send(self, *lines: str | bytes) -> None:
        for line in lines:
            raw = line.encode() if isinstance(line, str) else line
            self.sock.sendall(raw + b"\r\n")

    def _pull(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLError):
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self._buf += data
        *done, self._buf = self._buf.split(b"\r\n")
        self.lines += [d.decode() for d in done]
        return True

    def wait_for(self, pattern: str, timeout: float = WAIT, start: int = 0) -> str:
        """The first line from index ``start`` on matching ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for i in range(seen, len(self.lines)):
                if rx.search(self.lines[i]):
                    self.mark = i + 1
                    return self.lines[i]
            seen = len(self.lines)
            if self.closed or time.monotonic() >= deadline:
                raise AssertionError(
                    f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines[-30:])
                )
            self._pull(deadline)

    def after(self, pattern: str, timeout: float = WAIT) -> str:
        """The next line matching ``pattern`` after the last one waited for."""
        return self.wait_for(pattern, timeout, getattr(self, "mark", 0))

    def register(self, nick: str, caps: str = "") -> None:
        if caps:
            self.send("CAP LS 302", f"CAP REQ :{caps}")
            self.after(r" CAP \S+ ACK ")
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} tester")
        if caps:
            self.send("CAP END")
        self.after(r" 376 ")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def irc_broker(tmp_path: Path, procs: list[Proc]) -> Iterator[tuple[Broker, int]]:
    port = free_port()
    b = Broker(tmp_path, "--irc", f"127.0.0.1:{port}", "--heartbeat", "0.5", "--timeout", "3")
    procs.append(b)
    b.wait_for(f"IRC clients connect to 127.0.0.1:{port}")
    yield b, port


@pytest.fixture
def ircs() -> Iterator[list[Irc]]:
    opened: list[Irc] = []
    yield opened
    for c in opened:
        c.close()


def zclient(procs: list[Proc], broker: Broker, nick: str, room: str = "lobby") -> Proc:
    c = Proc(["client", "--plain", "--connect", broker.endpoint, "--nick", nick, "--room", room])
    procs.append(c)
    c.wait_for(f"joined #{room}")
    return c


def test_irc_library_and_zchat_client_chat_both_ways(
    irc_broker: tuple[Broker, int], procs: list[Proc]
) -> None:
    import irc.client

    broker, port = irc_broker
    reactor = irc.client.Reactor()
    got: list[tuple[str, str, str]] = []

    def on(kind: str) -> Callable[[object, irc.client.Event], None]:
        def handler(conn: object, event: irc.client.Event) -> None:
            got.append(
                (kind, str(event.source.nick if event.source else ""), " ".join(event.arguments))
            )

        return handler

    for kind in ("welcome", "join", "pubmsg", "privmsg", "action", "part", "quit"):
        reactor.add_global_handler(kind, on(kind))

    def until(cond: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not cond():
            assert time.monotonic() < deadline, f"timed out; got {got}"
            reactor.process_once(0.05)

    server = reactor.server().connect("127.0.0.1", port, "ircuser")
    until(lambda: any(k == "welcome" for k, _, _ in got))
    server.join("#lobby")
    until(lambda: ("join", "ircuser", "") in got)
    zed = zclient(procs, broker, "zed")
    until(lambda: ("join", "zed", "") in got)
    zed.send("hello from zchat")
    until(lambda: ("pubmsg", "zed", "hello from zchat") in got)
    server.privmsg("#lobby", "hello from irc")
    zed.wait_for(r"<ircuser> hello from irc")
    server.action("#lobby", "waves")
    zed.wait_for(r"\* ircuser waves")
    zed.send("/msg ircuser a secret")
    until(lambda: ("privmsg", "zed", "a secret") in got)
    server.privmsg("zed", "secret back")
    zed.wait_for(r"\[DM\] <ircuser> secret back")
    zed.send("/leave lobby")
    until(lambda: ("part", "zed", "") in got)
    server.quit("bye now")
    zed.send("/join lobby")
    zed.wait_for("joined #lobby")
    server.disconnect()


def test_registration_and_every_command(irc_broker: tuple[Broker, int], procs: list[Proc],
                                        ircs: list[Irc]) -> None:  # fmt: skip
    broker, port = irc_broker
    a, b = Irc(port), Irc(port)
    ircs += [a, b]
    a.send("PING early")  # before registration: allowed
    a.send("CAP LS 302")
    caps = a.after(r" CAP \* LS ")
    for cap in ("message-tags", "server-time", "echo-message", "batch", "labeled-response",
                "away-notify", "multi-prefix", "draft/chathistory"):  # fmt: skip
        assert cap in caps
    a.send("CAP REQ :away-notify multi-prefix nonsense")
    a.after(r" CAP \* NAK ")
    a.send("CAP REQ :away-notify multi-prefix", "NICK alice", "USER al 0 * :Alice", "CAP END")
    for numeric in ("001", "002", "003", "004", "005", "376"):
        a.after(f" {numeric} alice ")
    b.register("bob")
    a.send("JOIN #dev,#Ops")
    a.after(r"^:alice!~al@irc JOIN #dev")
    a.after(r" 353 alice = #dev :@alice$")
    a.after(r" 366 alice #dev ")
    a.after(r"^:alice!~al@irc JOIN #ops")
    b.send("JOIN #dev")
    a.after(r"^:bob!~bob@irc JOIN #dev")
    a.send("TOPIC #dev :release day")
    b.after(r"^:alice!~al@irc TOPIC #dev :release day")
    b.send("TOPIC #dev")
    b.after(r" 332 bob #dev :release day")
    b.send("NAMES #dev")
    b.after(r" 353 bob = #dev :@alice bob")
    b.send("WHO #dev")
    b.after(r" 352 bob #dev ~al irc zchat alice H@ :0 Alice")
    b.after(r" 315 bob #dev ")
    b.send("LIST")
    b.after(r" 322 bob #dev 2 :release day")
    b.after(r" 323 bob ")
    b.send("AWAY :lunch")
    b.after(r" 306 bob ")
    a.after(r"^:bob!~bob@irc AWAY :lunch")
    a.send("WHOIS bob")
    a.after(r" 311 alice bob ~bob irc \* :bob tester")
    a.after(r" 319 alice bob :#dev")
    a.after(r" 301 alice bob :lunch")
    a.after(r" 318 alice bob ")
    b.send("AWAY")
    b.after(r" 305 bob ")
    a.send("PRIVMSG #dev :hi bob", "NOTICE bob :psst")
    b.after(r"^:alice!~al@irc PRIVMSG #dev :hi bob")
    b.after(r"^:alice!~al@irc NOTICE bob :psst")
    a.send("MODE #dev")
    a.after(r" 324 alice #dev :?\+t")
    a.send("MODE #dev +o bob")
    b.after(r"^:alice!~al@irc MODE #dev \+o :?bob")
    a.send("MODE #dev -o bob")
    b.after(r"^:alice!~al@irc MODE #dev -o :?bob")
    a.send("MODE #priv +i", "JOIN #priv")
    a.after(r"JOIN #priv")
    b.send("JOIN #priv")
    b.after(r" 473 bob #priv ")
    a.send("INVITE bob #priv")
    a.after(r" 341 alice bob :?#priv")
    b.after(r"^:alice!~al@irc INVITE bob :?#priv")
    b.send("JOIN #priv")
    b.after(r"^:bob!~bob@irc JOIN #priv")
    b.send("KICK #dev alice")
    b.after(r" 482 bob #dev ")
    a.send("KICK #priv bob :out")
    b.after(r"^:alice!~al@irc KICK #priv bob :out")
    b.send("PART #dev :later")
    a.after(r"^:bob!~bob@irc PART #dev")
    b.send("NICK robert")
    b.after(r"^:bob!~bob@irc NICK :?robert")
    b.send("OPER x y", "FOO", "JOIN dev")
    b.after(r" 491 robert ")
    b.after(r" 421 robert FOO ")
    b.after(r" 403 robert dev ")
    b.send("PING :still-here")
    b.after(r"PONG zchat :?still-here")
    b.send("QUIT :done")
    b.after(r"^ERROR :Closing link: Quit: done")
    a.send("JOIN #dev")  # already in: nothing, then QUIT seen? robert had left #dev
    a.send("QUIT")
    a.after(r"^ERROR ")
    broker.wait_for(r"robert gone")


def test_chathistory_after_reconnect_returns_exactly_the_missed(
    irc_broker: tuple[Broker, int], procs: list[Proc], ircs: list[Irc]
) -> None:
    broker, port = irc_broker
    caps = "draft/chathistory batch server-time message-tags"
    a = Irc(port)
    ircs.append(a)
    a.register("histo", caps)
    a.send("JOIN #lobby")
    a.after(r" 366 histo #lobby ")
    zed = zclient(procs, broker, "zed")
    zed.send("before 1", "before 2")
    line = a.after(r"PRIVMSG #lobby :before 2$")
    msgid = re.search(r"msgid=([^; ]+)", line).group(1)  # type: ignore[union-attr]
    a.send("QUIT :brb")
    a.after("^ERROR")
    a.close()
    zed.send("missed 1", "missed 2", "missed 3")
    zed.wait_for("<zed> missed 3")
    b = Irc(port)
    ircs.append(b)
    b.register("histo", caps + " echo-message labeled-response")
    b.send("JOIN #lobby", f"CHATHISTORY AFTER #lobby msgid={msgid} 100")
    b.after(r"BATCH \+\S+ chathistory #lobby")
    texts = []
    while True:
        line = b.after(r"PRIVMSG #lobby|BATCH -")
        if "BATCH -" in line:
            break
        assert "time=" in line and "batch=" in line
        texts.append(line.rsplit(" :", 1)[1])
    assert texts == ["missed 1", "missed 2", "missed 3"]
    b.send("CHATHISTORY LATEST #lobby * 2")
    b.after(r"BATCH \+\S+ chathistory #lobby")
    assert b.after(r"PRIVMSG #lobby").endswith(":missed 2")
    assert b.after(r"PRIVMSG #lobby").endswith(":missed 3")
    # echo-message with labeled-response: the stored message comes back, labeled.
    b.send("@label=e1 PRIVMSG #lobby :back again")
    echo = b.after(r"label=e1")
    assert "msgid=" in echo and "time=" in echo and echo.endswith("PRIVMSG #lobby :back again")
    zed.wait_for("<histo> back again")
    b.send("@label=e2 PING :x")
    b.after(r"^@label=e2 :zchat PONG")


def _cert(tmp: Path, name: str) -> tuple[Path, Path, bytes]:
    """A self-signed certificate and key (PEM files) for ``name``, and its DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def test_sasl_over_tls_on_an_allow_list_broker(tmp_path: Path, procs: list[Proc],
                                               ircs: list[Irc]) -> None:  # fmt: skip
    server_cert, server_key, _ = _cert(tmp_path, "server")
    bot_cert, bot_key, _ = _cert(tmp_path, "bot")
    accounts = tmp_path / "accounts"
    keys = tmp_path / "keys"
    for args, stdin in (
        (["passwd", "--accounts", str(accounts), "alice", "--password-stdin"], "wonderland\n"),
        (
            [
                "passwd",
                "--accounts",
                str(accounts),
                "bot",
                "--no-password",
                "--cert",
                str(bot_cert),
            ],
            "",
        ),
        (["keygen", "broker", "--dir", str(keys)], ""),
    ):
        done = subprocess.run([sys.executable, "-m", "zchat", *args], input=stdin, text=True,
                              capture_output=True, timeout=WAIT)  # fmt: skip
        assert done.returncode == 0, done.stderr
    clients = tmp_path / "clients"
    clients.mkdir()
    port = free_port()
    env = {
        "ZCHAT_IRC_TLS_CERT": str(server_cert), "ZCHAT_IRC_TLS_KEY": str(server_key),
        "ZCHAT_ACCOUNTS": str(accounts), "ZCHAT_CURVE_SECRET_KEY": str(keys / "broker.key_secret"),
        "ZCHAT_CURVE_CLIENTS": str(clients),
    }  # fmt: skip
    broker = Broker(tmp_path, "--irc", f"127.0.0.1:{port}", env=env)
    procs.append(broker)
    broker.wait_for(r"IRC clients connect to .* \(TLS, SASL required\)")
    tls = ssl.create_default_context(cafile=str(server_cert))

    # No login: refused at registration.
    anon = Irc(port, tls)
    ircs.append(anon)
    anon.send("NICK anon", "USER a 0 * :a")
    anon.after(r"^ERROR :Closing link: SASL authentication required")

    # SASL PLAIN: a wrong password, then the right one; the nick is the account's.
    a = Irc(port, tls)
    ircs.append(a)
    a.send("CAP LS 302")
    assert "sasl=PLAIN,EXTERNAL" in a.after(r" CAP \* LS ")
    a.send("CAP REQ :sasl", "NICK alice", "USER alice 0 * :Alice", "AUTHENTICATE PLAIN")
    a.after(r"^AUTHENTICATE \+")
    a.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0guess").decode())
    a.after(r" 904 ")
    a.send("AUTHENTICATE PLAIN")
    a.after(r"^AUTHENTICATE \+")
    a.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0wonderland").decode())
    a.after(r" 900 alice \S+ alice ")
    a.after(r" 903 ")
    a.send("CAP END")
    a.after(r" 001 alice ")
    a.send("JOIN #secure")
    a.after(r"JOIN #secure")

    # SASL EXTERNAL with a client certificate the accounts file holds.
    tls_bot = ssl.create_default_context(cafile=str(server_cert))
    tls_bot.load_cert_chain(str(bot_cert), str(bot_key))
    bot = Irc(port, tls_bot)
    ircs.append(bot)
    bot.send("CAP REQ :sasl", "NICK bot", "USER bot 0 * :bot", "AUTHENTICATE EXTERNAL")
    bot.after(r"^AUTHENTICATE \+")
    bot.send("AUTHENTICATE +")
    bot.after(r" 903 ")
    bot.send("CAP END", "JOIN #secure", "PRIVMSG #secure :beep")
    a.after(r"^:bot!~bot@irc PRIVMSG #secure :beep")
    a.send("WHOIS bot")
    a.after(r" 330 alice bot bot ")


def test_hostile_lines_refused_without_harm_to_others(
    irc_broker: tuple[Broker, int], procs: list[Proc], ircs: list[Irc]
) -> None:
    broker, port = irc_broker
    watcher = Irc(port)
    ircs.append(watcher)
    watcher.register("watcher")
    watcher.send("JOIN #lobby")
    watcher.after(r" 366 watcher ")
    zed = zclient(procs, broker, "zed")
    evil = Irc(port)
    ircs.append(evil)
    evil.register("evil")
    evil.send("JOIN #lobby")
    evil.after(r" 366 evil ")
    evil.send(b"PRIVMSG #lobby :" + b"A" * 5000)  # overlong
    evil.after(r" 417 evil ")
    evil.send(b"PRIVMSG #lobby :\xc3\x28 bad utf-8")
    evil.after(r"NOTICE evil :line dropped: it is not valid UTF-8")
    evil.send(b"PRIVMSG #lobby :nul\x00inside")
    evil.send(b"@" + b"t=" + b"x" * 9000 + b" PRIVMSG #lobby :tags")  # tags over budget
    evil.after(r" 417 evil ")
    # A flood past the rate limit (burst 200, 50/s): delayed, none lost, in order.
    flood = 260
    evil.sock.sendall(b"".join(b"PRIVMSG #lobby :flood %d\r\n" % i for i in range(flood)))
    zed.send("zchat still talks")
    watcher.after(r"<?zed.*PRIVMSG #lobby :zchat still talks", timeout=WAIT)
    watcher.wait_for(rf"PRIVMSG #lobby :flood {flood - 1}$", timeout=3 * WAIT)
    got = [x.rsplit(":flood ", 1)[1] for x in watcher.lines if ":flood " in x]
    assert got == [str(i) for i in range(flood)]
    assert not any("A" * 100 in x or "bad utf-8" in x or "nul" in x for x in watcher.lines)
    zed.wait_for(rf"<evil> flood {flood - 1}", timeout=3 * WAIT)
    # A connection that never registers is dropped by the registration timeout
    # (30 s: not waited for here); one that sends half a line forever is bounded.
    slow = Irc(port)
    ircs.append(slow)
    slow.sock.sendall(b"NICK " + b"x" * 8000)
    slow.after(r" 417 ")
    watcher.send("PING :alive")
    watcher.after(r"PONG zchat :?alive")


def _irssi_available() -> bool:
    return shutil.which("irssi") is not None and shutil.which("tmux") is not None


@pytest.mark.skipif(
    not _irssi_available(), reason="irssi and tmux are needed (apt-get install irssi tmux)"
)
def test_irssi_joins_chats_with_a_zchat_client_and_leaves(
    irc_broker: tuple[Broker, int], procs: list[Proc], tmp_path: Path
) -> None:
    broker, port = irc_broker
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text('settings = { core = { real_name = "Irssi User"; } };\n')
    sock = f"zchat-irc-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=WAIT
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen_until(pattern: str) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            text = tmux("capture-pane", "-p", "-t", "t")
            if re.search(pattern, text, re.M):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"irssi never showed {pattern!r}:\n{text}")
            time.sleep(0.05)  # a poll interval, not a synchronisation

    cmd = ["irssi", "--home", str(home), "-n", "irssiuser", "-c", "127.0.0.1", "-p", str(port)]
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "30",
         shlex.join(["env", "TERM=screen", *cmd]))  # fmt: skip
    try:
        broker.wait_for(r"\+ irssiuser arrived")
        tmux("send-keys", "-t", "t", "-l", "/join #lobby")
        tmux("send-keys", "-t", "t", "Enter")
        broker.wait_for(r"irssiuser joined #lobby")
        zed = zclient(procs, broker, "zed")
        screen_until(r"zed.*has joined #lobby")
        zed.send("hello irssi")
        screen_until(r"<.?zed> hello irssi")
        tmux("send-keys", "-t", "t", "-l", "hello zchat")
        tmux("send-keys", "-t", "t", "Enter")
        zed.wait_for(r"<irssiuser> hello zchat")
        tmux("send-keys", "-t", "t", "-l", "/part #lobby")
        tmux("send-keys", "-t", "t", "Enter")
        zed.wait_for(r"irssiuser left #lobby")
        tmux("send-keys", "-t", "t", "-l", "/quit bye")
        tmux("send-keys", "-t", "t", "Enter")
        broker.wait_for(r"irssiuser gone")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=WAIT)
