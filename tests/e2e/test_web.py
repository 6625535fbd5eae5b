"""End to end: the web door in a real headless Chromium, beside a terminal client.

The broker runs with ``--web`` as a subprocess; browsers are Debian's
``chromium`` driven through ``chromium-driver`` with Selenium (.ci/run installs
both). Every wait is a WebDriverWait or a Proc.wait_for with a deadline.

``ZCHAT_SCREENSHOTS=DIR`` saves the page at desktop and phone widths into DIR
(docs/screenshots/ holds the checked-in ones).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.procs import WAIT, Broker, Proc, free_port, raw_session
from zchat.protocol import decode_from_broker, encode
from zchat.protocol import messages as m

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install .[test])")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
XSS = "<img src=x onerror=alert(1)>"


def _browser() -> WebDriver:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium or chromium-driver is not installed (.ci/run installs both)")
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1200,800", "--disable-gpu", "--no-first-run"):  # fmt: skip
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(WAIT)
    return driver


@pytest.fixture(scope="module")
def browsers() -> Iterator[list[WebDriver]]:
    """Two browsers for the module (starting Chromium is the slow part)."""
    started: list[WebDriver] = []
    try:
        started.append(_browser())
        started.append(_browser())
        yield started
    finally:
        for d in started:
            d.quit()


@pytest.fixture
def web_broker(tmp_path: Path, procs: list[Proc]) -> Broker:
    port = free_port()
    b = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3", "--web", f"127.0.0.1:{port}")
    b.web = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    procs.append(b)
    b.wait_for(r"^web: the chat page at http://127\.0\.0\.1:\d+/")
    return b


#: Seconds a browser may take for one expected change (Chromium is slow on 2 busy cores).
WEB_WAIT = 2 * WAIT


def until(driver: WebDriver, cond: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WEB_WAIT).until(cond, message=what)


def log_lines(driver: WebDriver) -> list[str]:
    """The text of every line in the window on screen."""
    script = (
        "return Array.from(document.querySelectorAll('.pane:not(.hidden) .log .line'))"
        ".map(e => e.textContent)"
    )
    return driver.execute_script(script)  # type: ignore[no-any-return]


def shows(driver: WebDriver, text: str, count: int = 1) -> None:
    """Wait until the current window shows a line containing ``text`` (``count`` times)."""
    until(driver, lambda d: sum(text in line for line in log_lines(d)) >= count,
          f"{text!r} not shown; lines: {log_lines(driver)[-8:]}")  # fmt: skip


def status(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "status").get_attribute("data-state") or ""


def log_in(driver: WebDriver, url: str, nick: str, room: str = "lobby") -> None:
    driver.get(url)
    until(driver, lambda d: d.find_element(By.ID, "nick").is_displayed(), "no login form")
    driver.find_element(By.ID, "nick").send_keys(nick)
    box = driver.find_element(By.ID, "room")
    box.clear()
    box.send_keys(room)
    driver.find_element(By.ID, "go").click()
    until(driver, lambda d: status(d) == "connected", f"{nick} never connected")
    shows(driver, f"{nick} joined #{room}")


def type_line(driver: WebDriver, text: str) -> None:
    driver.find_element(By.ID, "input").send_keys(text + "\n")


def switch_to(driver: WebDriver, kind: str, name: str) -> None:
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'li[data-{kind}="{name}"]'),
          f"no {kind} {name} in the list")  # fmt: skip
    driver.find_element(By.CSS_SELECTOR, f'li[data-{kind}="{name}"]').click()


def no_alert(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when there is none
    except NoAlertPresentException:
        return True
    return False


def screenshot(driver: WebDriver, name: str, width: int, height: int) -> None:
    where = os.environ.get("ZCHAT_SCREENSHOTS")
    if not where:
        return
    driver.set_window_size(width, height)
    until(driver, lambda d: d.execute_script("return window.innerWidth") <= width, "resize")
    driver.save_screenshot(str(Path(where) / name))
    driver.set_window_size(1200, 800)


def test_browsers_and_a_terminal_chat_in_a_room_and_by_dm(
    web_broker: Broker, browsers: list[WebDriver], procs: list[Proc]
) -> None:
    alice, bob = browsers
    url = web_broker.web  # type: ignore[attr-defined]
    carol = Proc(["client", "--plain", "--connect", web_broker.endpoint, "--nick", "carol",
                  "--room", "lobby"])  # fmt: skip
    procs.append(carol)
    carol.wait_for(r"^-- joined #lobby")
    log_in(alice, url, "alice")
    log_in(bob, url, "bob")
    carol.wait_for(r"-- bob joined #lobby")

    type_line(alice, "hello from alice")
    shows(bob, "<alice>hello from alice")
    carol.wait_for(r"#lobby <alice> hello from alice$")
    carol.send("hi browsers, alice: look")
    shows(alice, "<carol>hi browsers, alice: look")
    shows(bob, "<carol>hi browsers, alice: look")
    until(alice, lambda d: d.find_elements(By.CSS_SELECTOR, ".pane:not(.hidden) .line.mention"),
          "a mention of alice is not highlighted")  # fmt: skip
    until(alice, lambda d: {"alice", "bob", "carol"} <= {
        e.text for e in d.find_elements(By.CSS_SELECTOR, "#members li")}, "members")  # fmt: skip
    type_line(bob, "/me waves")
    shows(alice, "* bobwaves")
    carol.send("/topic release day: ship it")  # carol made the room: its operator
    until(alice, lambda d: d.find_element(By.ID, "topic").text == "release day: ship it",
          "the topic is not shown")  # fmt: skip
    type_line(bob, "/away lunch")
    until(alice, lambda d: d.find_elements(By.CSS_SELECTOR, '#members li.away[data-member="bob"]'),
          "bob is not shown away")  # fmt: skip
    type_line(alice, "/whois bob")
    shows(alice, "bob is online in #lobby, away: lunch")

    # A second room: its unread count shows while alice looks at #lobby.
    type_line(alice, "/join side")
    shows(alice, "alice joined #side")
    type_line(alice, "/switch lobby")
    type_line(bob, "/join side")
    shows(bob, "bob joined #side")
    type_line(bob, "over here")
    until(alice, lambda d: d.find_elements(By.CSS_SELECTOR, 'li[data-room="side"] .unread'),
          "no unread count on #side")  # fmt: skip
    assert alice.find_element(By.CSS_SELECTOR, 'li[data-room="side"] .unread').text == "1"
    type_line(bob, "/switch lobby")

    # Direct messages: browser to browser, terminal to browser, browser to terminal.
    type_line(bob, "/msg alice psst, alice")
    until(alice, lambda d: d.find_elements(By.CSS_SELECTOR, 'li[data-dm="bob"] .unread'),
          "no unread DM from bob")  # fmt: skip
    switch_to(alice, "dm", "bob")
    shows(alice, "<bob>psst, alice")
    type_line(alice, "psst yourself")  # the DM window sends DMs
    switch_to(bob, "dm", "alice")
    shows(bob, "<alice>psst yourself")
    carol.send("/msg alice from the terminal")
    switch_to(alice, "dm", "carol")
    shows(alice, "<carol>from the terminal")
    type_line(alice, "/msg carol and back")
    carol.wait_for(r"\[DM\] <alice> and back$")

    # Markup is text: it shows as typed and runs nothing.
    switch_to(alice, "room", "lobby")
    type_line(bob, "/switch lobby")
    type_line(bob, XSS)
    shows(alice, XSS)
    carol.wait_for(r"<bob> <img src=x onerror=alert\(1\)>$")
    assert no_alert(alice) and no_alert(bob)
    assert not alice.find_elements(By.CSS_SELECTOR, ".log img")
    console = alice.get_log("browser")
    assert not [e for e in console if "Content Security Policy" in e["message"]], console
    screenshot(alice, "web-desktop.png", 1200, 800)
    bob.set_window_size(390, 844)  # on a phone every line still shows (topic too)
    until(bob, lambda d: d.execute_script("return window.innerWidth") <= 390, "resize")
    assert bob.find_element(By.CSS_SELECTOR, ".pane:not(.hidden) .line.topic").is_displayed()
    bob.set_window_size(1200, 800)
    screenshot(bob, "web-phone.png", 390, 844)

    # A reload shows the room's history again.
    alice.refresh()
    until(alice, lambda d: status(d) == "connected", "alice did not come back after a reload")
    shows(alice, "<alice>hello from alice")
    shows(alice, "<carol>hi browsers, alice: look")
    shows(alice, XSS)
    assert no_alert(alice)

    # Infinite scroll back: older messages arrive when the pane is scrolled to the top.
    for i in range(60):
        carol.send(f"filler {i}")
    shows(alice, "filler 59")
    alice.refresh()
    until(alice, lambda d: status(d) == "connected", "no reconnect after the second reload")
    shows(alice, "filler 59")
    assert not any("hello from alice" in line for line in log_lines(alice))
    alice.execute_script("document.querySelector('.pane:not(.hidden)').scrollTop = 0")
    shows(alice, "<alice>hello from alice")


def test_the_broker_is_killed_and_restarted_while_a_browser_types(
    web_broker: Broker, browsers: list[WebDriver], procs: list[Proc], tmp_path: Path
) -> None:
    alice = browsers[0]
    url = web_broker.web  # type: ignore[attr-defined]
    log_in(alice, url, "typist")
    sent = []
    for i in range(5):
        sent.append(f"before {i}")
        type_line(alice, sent[-1])
    sent.append("in flight")
    type_line(alice, sent[-1])
    web_broker.signal(signal.SIGKILL)
    web_broker.wait_exit()
    until(alice, lambda d: status(d) == "reconnecting", "the page did not notice the broker go")
    for i in range(5):
        sent.append(f"while down {i}")
        type_line(alice, sent[-1])
    until(alice, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".line.pending")) >= 5,
          "unsent messages are not shown as waiting")  # fmt: skip
    assert "unsent" in alice.find_element(By.ID, "status").text

    port = int(url.rsplit(":", 1)[1])
    again = Broker(tmp_path, "--heartbeat", "0.5", "--timeout", "3", "--web",
                   f"127.0.0.1:{port}", port=web_broker.port)  # fmt: skip
    procs.append(again)
    until(alice, lambda d: status(d) == "connected", "the page did not reconnect")
    for i in range(3):
        sent.append(f"after {i}")
        type_line(alice, sent[-1])
    for text in sent:
        shows(alice, f"<typist>{text}")
    until(alice, lambda d: not d.find_elements(By.CSS_SELECTOR, ".line.pending"),
          "messages still wait after the reconnect")  # fmt: skip
    lines = log_lines(alice)
    for text in sent:
        assert sum(line.endswith(f"<typist>{text}") for line in lines) == 1, (text, lines)

    # The store has each exactly once too.
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer, _ = raw_session(ctx, again.endpoint, "auditor")
        dealer.send_multipart(encode(m.History(2, "lobby", limit=500)))
        assert dealer.poll(int(WAIT * 1000))
        reply = decode_from_broker(dealer.recv_multipart())
        assert isinstance(reply, m.Events)
        stored = [e.text for e in reply.events if e.kind == "msg" and e.nick == "typist"]
        assert sorted(stored) == sorted(sent)
    finally:
        ctx.destroy(linger=0)


class _ForeignPage(http.server.BaseHTTPRequestHandler):
    """A page from another origin that tries to open the door's WebSocket."""

    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><title>trying</title><script>
const ws = new WebSocket({json.dumps(self.target)});
ws.onopen = () => {{ document.title = "opened"; }};
ws.onclose = () => {{ if (document.title !== "opened") document.title = "refused"; }};
</script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_from_another_origin_cannot_open_the_websocket(
    web_broker: Broker, browsers: list[WebDriver]
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = web_broker.web  # type: ignore[attr-defined]
    ws_url = url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as exc:
        connect(ws_url, origin="http://evil.example", open_timeout=WAIT)
    assert exc.value.response.status_code == 403
    with connect(ws_url, origin=url, open_timeout=WAIT) as ok:  # the door's own origin works
        assert json.loads(ok.recv(timeout=WAIT))["type"] == "door"

    _ForeignPage.target = ws_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser = browsers[1]
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        until(browser, lambda d: d.title in ("opened", "refused"), "the foreign page hung")
        assert browser.title == "refused"
        web_broker.wait_for(r"refused a WebSocket from origin 'http://127\.0\.0\.1:\d+'")
    finally:
        server.shutdown()
        server.server_close()


def test_an_allow_list_broker_asks_the_page_for_a_login_and_the_account_owns_its_nick(
    tmp_path: Path, browsers: list[WebDriver], procs: list[Proc]
) -> None:
    import subprocess
    import sys

    def zchat(*args: str, stdin: str = "") -> None:
        done = subprocess.run([sys.executable, "-m", "zchat", *args], input=stdin,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stderr

    keys, allowed, accounts = tmp_path / "keys", tmp_path / "allowed", tmp_path / "accounts"
    for name in ("broker", "carol"):
        zchat("keygen", name, "--dir", str(keys))
    allowed.mkdir()
    (allowed / "carol.key").write_bytes((keys / "carol.key").read_bytes())
    zchat("passwd", "Dana", "--accounts", str(accounts), "--password-stdin", stdin="s3cret\n")
    conf = tmp_path / "broker.toml"
    conf.write_text(f'[broker]\ncurve_secret_key = "{keys / "broker.key_secret"}"\n'
                    f'curve_clients = "{allowed}"\naccounts = "{accounts}"\n')  # fmt: skip
    port = free_port()
    broker = Broker(tmp_path, "--config", str(conf), "--web", f"127.0.0.1:{port}")
    procs.append(broker)
    broker.wait_for(r"^web: .*logins against the accounts file")

    page = browsers[1]
    page.get(f"http://127.0.0.1:{port}/")
    until(page, lambda d: d.find_element(By.ID, "password").is_displayed(), "no password field")
    page.find_element(By.ID, "nick").send_keys("dana")
    page.find_element(By.ID, "password").send_keys("wrong")
    page.find_element(By.ID, "go").click()
    refused = "wrong account name or password"
    until(page, lambda d: refused in d.find_element(By.ID, "login-error").text,
          "a wrong password was not refused")  # fmt: skip
    page.find_element(By.ID, "password").clear()
    page.find_element(By.ID, "password").send_keys("s3cret")
    page.find_element(By.ID, "go").click()
    until(page, lambda d: status(d) == "connected", "the right password did not log in")
    until(page, lambda d: d.find_element(By.ID, "me").text == "Dana", "not logged in as Dana")
    type_line(page, "logged in")
    shows(page, "<Dana>logged in")

    # A key allowed on the broker cannot take the account's nick, not even after Dana left.
    conf_c = tmp_path / "carol.toml"
    conf_c.write_text(f'[client]\ncurve_key = "{keys / "carol.key_secret"}"\n'
                      f'curve_server_key = "{keys / "broker.key"}"\n')  # fmt: skip
    type_line(page, "/quit")
    until(page, lambda d: d.find_element(By.ID, "login").is_displayed(), "/quit did not leave")
    carol = Proc(["client", "--plain", "--config", str(conf_c), "--connect", broker.endpoint,
                  "--nick", "dana", "--room", "lobby"])  # fmt: skip
    procs.append(carol)
    carol.wait_for(r"belongs to another key")
    page.find_element(By.ID, "go").click()  # and Dana comes back on the same page
    until(page, lambda d: status(d) == "connected" and d.find_element(By.ID, "app").is_displayed(),
          "no second login after /quit")  # fmt: skip
