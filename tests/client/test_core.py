"""The pure client core: typed lines and broker messages in, actions out.

No sockets and no clock: every call gets an explicit ``now``, message ids and
sync tokens come from counters. The handshake follows docs/protocol.md §6.1
(HELLO/WELCOME) and §5.2 (subscribe, prove it with SYNCED, then JOIN).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.client.core import (
    HELP,
    Action,
    ClientCore,
    ConnectSub,
    Done,
    Output,
    Quit,
    Reconnect,
    Request,
    Subscribe,
    Unsubscribe,
)
from zchat.client.endpoints import Rotation
from zchat.client.events import (
    Chat,
    DirectLine,
    Info,
    Problem,
    RoomNotice,
    StateChange,
    UiEvent,
)
from zchat.protocol import messages as m

EP = "tcp://127.0.0.1:5555"
PUB = "tcp://127.0.0.1:7000"
T0 = 1_000.0  # not 0.0: the core uses 0.0 to mean "never heard a BEAT"
HEARTBEAT = 5.0
TIMEOUT = 15.0


# ------------------------------------------------------------------ helpers


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def make_core(room: str | None = "lobby", nick: str = "alice", **kwargs: object) -> ClientCore:
    kwargs.setdefault("hello_id", "h1")
    return ClientCore(nick, room, new_id=counter("m"), new_token=counter("t"), **kwargs)  # type: ignore[arg-type]


def reqs(actions: Iterable[Action]) -> list[m.Request]:
    return [a.msg for a in actions if isinstance(a, Request)]


def shown(actions: Iterable[Action]) -> list[UiEvent]:
    return [a.event for a in actions if isinstance(a, Output)]


def chat_texts(actions: Iterable[Action]) -> list[str]:
    return [e.text for e in shown(actions) if isinstance(e, Chat)]


R = TypeVar("R", bound=m.Request)


def the(actions: Iterable[Action], cls: type[R]) -> R:
    """The one request of type ``cls`` among ``actions``."""
    found = [r for r in reqs(actions) if isinstance(r, cls)]
    assert len(found) == 1, f"expected one {cls.__name__}, got {found}"
    return found[0]


def none_of(actions: Iterable[Action], cls: type[m.Request]) -> bool:
    return not any(isinstance(r, cls) for r in reqs(actions))


def welcome(
    rid: int,
    *,
    nick: str = "alice",
    session: str = "s1",
    pub: str = PUB,
    epoch: str = "e1",
    resumed: bool = False,
    rooms: Iterable[str] = (),
    boot: str = "b1",
) -> m.Welcome:
    return m.Welcome(
        rid, nick, session, pub, epoch, T0, HEARTBEAT, TIMEOUT, resumed, list(rooms), boot
    )


def event(
    seq: int, room: str = "lobby", nick: str = "bob", text: str | None = None, kind: str = "msg"
) -> m.Event:
    body = f"line {seq}" if text is None else text
    return m.Event(room, seq, kind, nick, body, T0 + seq, f"{room}-{seq}")


def own_line(say: m.Say, seq: int) -> m.Event:
    """The EVENT the broker publishes for our ``say`` (§6.3)."""
    return m.Event(say.room, seq, "action" if say.action else "msg", "alice", say.text, T0, say.id)


def joined(
    join: m.Join,
    last: int = 0,
    history: Iterable[m.Event] = (),
    members: Iterable[str] = ("alice", "bob"),
    topic: str = "",
) -> m.Joined:
    return m.Joined(join.rid, join.room, topic, list(members), last, list(history))


def connect(core: ClientCore, now: float = T0, endpoint: str = EP) -> m.Hello:
    actions = core.connecting(endpoint, now)
    first = actions[0]
    assert isinstance(first, Output)
    assert isinstance(first.event, StateChange)
    # A first attempt is "connecting"; one after a loss stays "reconnecting".
    assert first.event.state in ("connecting", "reconnecting")
    return the(actions, m.Hello)


def sync(core: ClientCore, actions: list[Action], now: float) -> list[Action]:
    """Answer the sync subscription in ``actions`` with its SYNCED (§5.2)."""
    topics = [a.topic for a in actions if isinstance(a, Subscribe) and a.topic.startswith(b"~")]
    assert len(topics) == 1, actions
    token = topics[0][1:-1].decode("ascii")
    out = core.on_broadcast(m.Synced(token), now)
    assert out[0] == Unsubscribe(topics[0])
    return out


def handshake(
    core: ClientCore,
    now: float = T0,
    *,
    last: int = 0,
    history: Iterable[m.Event] = (),
    topic: str = "",
    endpoint: str = EP,
    **welcome_args: object,
) -> list[Action]:
    """HELLO -> WELCOME -> SUB setup -> SYNCED -> JOIN -> JOINED for every room.

    Returns the actions that followed the JOINED replies (history shown,
    held messages sent, deferred commands sent).
    """
    hello = connect(core, now, endpoint)
    rooms = list(core.rooms)
    actions = core.on_direct(welcome(hello.rid, **welcome_args), now)  # type: ignore[arg-type]
    setup = [a for a in actions if not isinstance(a, Output | Request)]
    pub = str(welcome_args.get("pub", PUB))
    if pub.startswith("tcp://*:"):
        pub = f"tcp://{core.host}:{pub.rsplit(':', 1)[1]}"
    expected: list[Action] = [ConnectSub(pub), Subscribe(m.CONTROL_TOPIC)]
    expected += [Subscribe(m.room_topic(r)) for r in rooms]
    assert setup[: len(expected)] == expected
    assert core.state == "connected"
    if not rooms:
        assert len(setup) == len(expected)
        return actions
    synced = sync(core, actions, now)
    joins = [r for r in reqs(synced) if isinstance(r, m.Join)]
    assert [j.room for j in joins] == rooms
    out: list[Action] = []
    for join in joins:
        out += core.on_direct(joined(join, last, history, topic=topic), now)
    return out


def ready(room: str | None = "lobby", **kwargs: object) -> ClientCore:
    core = make_core(room, **kwargs)
    handshake(core)
    return core


def lines(actions: Iterable[Action]) -> list[str]:
    return [line for e in shown(actions) for line in e.plain().split("\n")]


# ---------------------------------------------------------------- handshake


def test_handshake_step_by_step() -> None:
    """§6.1 + §5.2: HELLO, WELCOME, subscribe, SYNCED, then JOIN and JOINED."""
    core = make_core()
    actions = core.connecting(EP, T0)
    assert actions == [
        Output(StateChange("connecting", f"connecting to {EP} ...")),
        Request(m.Hello(1, "alice", "", "h1")),
    ]
    assert not core.idle

    actions = core.on_direct(welcome(1), T0)
    assert [a for a in actions if not isinstance(a, Output)] == [
        ConnectSub(PUB),
        Subscribe(m.CONTROL_TOPIC),
        Subscribe(m.room_topic("lobby")),
        Subscribe(m.sync_topic("t1")),
    ]
    assert isinstance(shown(actions)[0], StateChange)
    assert core.state == "connected"
    assert (core.session, core.epoch) == ("s1", "e1")

    actions = core.on_broadcast(m.Synced("t1"), T0)
    assert actions == [Unsubscribe(m.sync_topic("t1")), Request(m.Join(2, "lobby", 20))]

    actions = core.on_direct(m.Joined(2, "lobby", "welcome all", ["alice", "bob"], 0, []), T0)
    assert lines(actions) == ["-- joined #lobby (2 here)", "-- topic of #lobby: welcome all"]
    assert reqs(actions) == []
    assert core.rooms["lobby"].joined
    assert core.idle


def test_join_history_size_comes_from_the_constructor() -> None:
    core = make_core(history=7)
    hello = connect(core)
    synced = sync(core, core.on_direct(welcome(hello.rid), T0), T0)
    assert the(synced, m.Join).history == 7


def test_wildcard_pub_host_becomes_the_host_we_connected_to() -> None:
    """§6.1: ``tcp://*:7000`` means "the host you reached the broker on"."""
    core = make_core()
    hello = connect(core, endpoint="tcp://chat.example.org:5555")
    actions = core.on_direct(welcome(hello.rid, pub="tcp://*:7000"), T0)
    assert ConnectSub("tcp://chat.example.org:7000") in actions
    assert core.pub == "tcp://chat.example.org:7000"


def test_concrete_pub_endpoint_is_used_as_is() -> None:
    core = make_core()
    hello = connect(core, endpoint="tcp://chat.example.org:5555")
    actions = core.on_direct(welcome(hello.rid, pub="tcp://10.0.0.9:7001"), T0)
    assert ConnectSub("tcp://10.0.0.9:7001") in actions


def test_no_room_means_no_sync_and_nothing_to_join() -> None:
    core = make_core(room=None)
    actions = handshake(core)
    assert not any(isinstance(a, Subscribe) and a.topic.startswith(b"~") for a in actions)
    assert core.idle


def test_synced_with_an_unknown_token_is_ignored() -> None:
    core = ready()
    assert core.on_broadcast(m.Synced("nobodys"), T0) == []


def test_welcome_takes_the_nick_and_timers_the_broker_gives() -> None:
    core = make_core(nick="Alice")
    hello = connect(core)
    msg = m.Welcome(hello.rid, "Alice", "s9", PUB, "e1", T0, 2.0, 6.0)
    core.on_direct(msg, T0)
    assert (core.nick, core.heartbeat, core.timeout) == ("Alice", 2.0, 6.0)


# ---------------------------------------------------------------- saying


def test_plain_text_is_a_say_to_the_current_room_kept_until_ack() -> None:
    core = ready()
    actions = core.command("hello there", T0 + 1)
    say = the(actions, m.Say)
    assert (say.room, say.id, say.text, say.action) == ("lobby", "m1", "hello there", False)
    assert list(core.outbox) == ["m1"]
    assert not core.idle

    # The ACK settles the outbox; the room's EVENT shows the line.
    assert core.on_direct(m.Ack(say.rid, "m1", 1), T0 + 1) == []
    assert core.outbox == {}
    assert not core.idle  # our own line has not come back on the SUB yet
    own = core.on_broadcast(event(1, nick="alice", text="hello there"), T0 + 1)
    assert chat_texts(own) == ["hello there"]
    assert core.idle


def test_duplicate_ack_fetches_an_own_line_we_may_have_missed() -> None:
    """A dup ACK means the line was published before, maybe while we were away."""
    core = ready()
    say = the(core.command("again", T0), m.Say)
    actions = core.on_direct(m.Ack(say.rid, say.id, 1, dup=True), T0)
    fetch = the(actions, m.History)
    assert (fetch.room, fetch.after, fetch.limit) == ("lobby", 0, 1)
    filled = core.on_direct(m.Events(fetch.rid, "lobby", [own_line(say, 1)], 1), T0)
    assert chat_texts(filled) == ["again"]
    assert core.idle


def test_duplicate_ack_for_a_line_already_shown_fetches_nothing() -> None:
    core = ready()
    say = the(core.command("again", T0), m.Say)
    core.on_broadcast(own_line(say, 1), T0)
    assert core.on_direct(m.Ack(say.rid, say.id, 1, dup=True), T0) == []
    assert core.idle


def test_a_line_ending_is_stripped_and_blank_lines_ignored() -> None:
    core = ready()
    assert the(core.command("hi\r\n", T0), m.Say).text == "hi"
    assert core.command("   ", T0) == []
    assert core.command("\n", T0) == []


def test_double_slash_sends_a_line_starting_with_slash() -> None:
    core = ready()
    assert the(core.command("//etc/hosts is a file", T0), m.Say).text == "/etc/hosts is a file"


def test_me_is_an_action_say() -> None:
    core = ready()
    say = the(core.command("/me waves", T0), m.Say)
    assert (say.text, say.action, say.room) == ("waves", True, "lobby")


def test_say_without_a_room_is_a_problem() -> None:
    core = ready(room=None)
    actions = core.command("anyone?", T0)
    assert len(actions) == 1
    assert isinstance(shown(actions)[0], Problem)
    assert core.outbox == {}


def test_say_with_control_characters_is_refused_locally() -> None:
    core = ready()
    actions = core.command("evil \x1b[2J", T0)
    assert [type(e) for e in shown(actions)] == [Problem]
    assert reqs(actions) == []
    assert core.outbox == {}


def test_say_typed_before_joined_is_held_then_sent_in_order() -> None:
    """§6.3: a line waits for its room's JOINED, and lines keep their order."""
    core = make_core()
    hello = connect(core)
    assert core.command("one", T0) == []  # not connected yet
    actions = core.on_direct(welcome(hello.rid), T0)
    assert none_of(actions, m.Say)
    assert core.command("two", T0) == []  # connected, but not in the room yet
    synced = sync(core, actions, T0)
    assert none_of(synced, m.Say)
    assert core.command("three", T0) == []  # JOIN in flight
    after = core.on_direct(joined(the(synced, m.Join), last=0), T0)
    says = [r for r in reqs(after) if isinstance(r, m.Say)]
    assert [(s.id, s.text) for s in says] == [("m1", "one"), ("m2", "two"), ("m3", "three")]
    assert len({s.rid for s in says}) == 3
    assert list(core.outbox) == ["m1", "m2", "m3"]


def test_say_for_a_second_room_waits_for_that_rooms_join() -> None:
    core = ready()
    join_actions = core.command("/join dev", T0)
    assert core.current == "dev"
    assert core.command("in dev", T0) == []
    synced = sync(core, join_actions, T0)
    after = core.on_direct(joined(the(synced, m.Join)), T0)
    say = the(after, m.Say)
    assert (say.room, say.text) == ("dev", "in dev")


# ----------------------------------------------------------------- quitting


@pytest.mark.parametrize("line", ["exit", "  exit  ", "/quit", "/QUIT"])
def test_quit_sends_bye_and_ok_quits_zero(line: str) -> None:
    core = ready()
    bye = the(core.command(line, T0), m.Bye)
    assert core.on_direct(m.Ok(bye.rid), T0) == [Quit(0)]


def test_quit_reason_goes_in_bye() -> None:
    core = ready()
    assert the(core.command("/quit gone fishing", T0), m.Bye).reason == "gone fishing"


def test_exit_with_more_words_is_just_chat() -> None:
    core = ready()
    assert the(core.command("exit now", T0), m.Say).text == "exit now"


def test_bye_waits_until_the_outbox_is_empty() -> None:
    core = ready()
    first = the(core.command("one", T0), m.Say)
    second = the(core.command("two", T0), m.Say)
    assert core.command("exit", T0) == []
    # Own lines published first, acks after.
    assert none_of(core.on_broadcast(own_line(first, 1), T0), m.Bye)
    assert none_of(core.on_broadcast(own_line(second, 2), T0), m.Bye)
    assert core.on_direct(m.Ack(first.rid, first.id, 1), T0) == []
    bye = the(core.on_direct(m.Ack(second.rid, second.id, 2), T0), m.Bye)
    assert core.on_direct(m.Ok(bye.rid), T0) == [Quit(0)]


def test_bye_waits_for_own_lines_acked_before_they_are_seen() -> None:
    """The SUB may lag the DEALER: BYE waits until our acked lines are shown."""
    core = ready()
    first = the(core.command("one", T0), m.Say)
    second = the(core.command("two", T0), m.Say)
    assert core.command("exit", T0) == []
    assert core.on_direct(m.Ack(first.rid, first.id, 1), T0) == []
    assert core.on_direct(m.Ack(second.rid, second.id, 2), T0) == []
    assert none_of(core.on_broadcast(own_line(first, 1), T0), m.Bye)
    bye = the(core.on_broadcast(own_line(second, 2), T0), m.Bye)
    assert core.on_direct(m.Ok(bye.rid), T0) == [Quit(0)]


def test_quit_typed_before_connecting_sends_held_lines_first() -> None:
    core = make_core()
    hello = connect(core)
    assert core.command("last words", T0) == []
    assert core.command("/quit", T0) == []
    actions = core.on_direct(welcome(hello.rid), T0)
    assert none_of(actions, m.Bye)
    synced = sync(core, actions, T0)
    after = core.on_direct(joined(the(synced, m.Join)), T0)
    say = the(after, m.Say)
    assert none_of(after, m.Bye)
    core.on_broadcast(own_line(say, 1), T0)
    bye = the(core.on_direct(m.Ack(say.rid, say.id, 1), T0), m.Bye)
    assert core.on_direct(m.Ok(bye.rid), T0) == [Quit(0)]


def test_unacknowledged_message_gives_up_at_quit_wait() -> None:
    core = ready(quit_wait=10.0)
    the(core.command("never acked", T0), m.Say)
    assert core.command("exit", T0) == []
    for t in (T0 + 3, T0 + 6, T0 + 9.99):
        assert not any(isinstance(a, Quit) for a in core.tick(t))
        core.on_direct(m.Pong(999, t, 1), t)  # the broker is alive, just not acking
    actions = core.tick(T0 + 10)
    assert actions[-1] == Quit(1)
    problem = shown(actions)[0]
    assert isinstance(problem, Problem)
    assert "1 message(s) were not acknowledged" in problem.text


def test_unanswered_bye_gives_up_at_quit_wait() -> None:
    core = ready(quit_wait=4.0)
    the(core.command("/quit", T0), m.Bye)
    actions = core.tick(T0 + 4)
    assert actions[-1] == Quit(1)


def test_next_deadline_includes_the_quit_deadline() -> None:
    core = ready(quit_wait=2.0)
    the(core.command("pending", T0), m.Say)
    core.command("exit", T0)
    assert core.next_deadline() == T0 + 2.0


def test_exit_while_still_connecting_with_nothing_unsent_quits_at_once() -> None:
    """Nothing to send and no session yet: leaving need not wait for the broker.

    BUG: the HELLO in flight counts as "not idle", so the client waits the
    whole quit_wait and then says "no answer to BYE" (no BYE was ever sent)
    and exits 1; the ``state != "ready" -> Quit(0)`` branch is unreachable.
    """
    core = make_core()
    connect(core)
    assert core.command("exit", T0) == [Quit(0)]


def test_quit_reason_with_control_characters_never_raises() -> None:
    """BUG: ``/quit`` + a reason with an ESC raises ProtocolError out of command().

    The reason goes into Bye() unchecked; it should be refused (or cleaned)
    with a Problem line like any other bad input.
    """
    core = ready()
    actions = core.command("/quit bye\x1b[2J", T0)
    assert all(isinstance(a, Output | Request | Quit) for a in actions)


def test_quit_reason_with_control_characters_typed_while_connecting() -> None:
    """BUG (same cause): the bad BYE is built later, inside on_direct(JOINED),
    where the exception escapes into the transport's reader task."""
    core = make_core()
    hello = connect(core)
    core.command("/quit bye\x1b[2J", T0)
    actions = core.on_direct(welcome(hello.rid), T0)
    synced = sync(core, actions, T0)
    core.on_direct(joined(the(synced, m.Join)), T0)


# ------------------------------------------------------------ room events


def test_join_history_is_shown_in_order() -> None:
    core = make_core()
    history = [event(3, text="c"), event(4, text="d"), event(5, text="e")]
    after = handshake(core, last=5, history=history)
    assert chat_texts(after) == ["c", "d", "e"]
    assert core.rooms["lobby"].last == 5
    assert reqs(after) == []  # nothing missing: no gap fetch


def test_join_history_is_marked_as_history() -> None:
    """Backlog shown on JOIN is old, like /history output; only live events are new.

    BUG (probable): ``_on_joined`` shows the backlog through ``_show`` which
    sets ``Chat.history=False``, so ``--json`` bots cannot tell the backlog
    replayed on every join from new messages (``/history`` marks them True).
    """
    core = make_core()
    after = handshake(core, last=2, history=[event(1), event(2)])
    chats = [e for e in shown(after) if isinstance(e, Chat)]
    assert [c.history for c in chats] == [True, True]


def test_live_events_buffered_while_joining_are_merged_by_seq() -> None:
    """§6.2: live events at or below JOINED.last are already in history."""
    core = make_core()
    hello = connect(core)
    synced = sync(core, core.on_direct(welcome(hello.rid), T0), T0)
    join = the(synced, m.Join)
    # Subscribed before JOIN, so these arrive first; out of order on purpose.
    for seq in (6, 4, 5, 7):
        assert core.on_broadcast(event(seq), T0) == []
    after = core.on_direct(joined(join, last=5, history=[event(4), event(5)]), T0)
    assert chat_texts(after) == ["line 4", "line 5", "line 6", "line 7"]
    assert reqs(after) == []
    assert core.rooms["lobby"].last == 7
    assert core.rooms["lobby"].buffer == {}


def test_buffered_events_beyond_a_hole_trigger_a_fetch_after_join() -> None:
    core = make_core()
    hello = connect(core)
    synced = sync(core, core.on_direct(welcome(hello.rid), T0), T0)
    core.on_broadcast(event(8), T0)
    after = core.on_direct(joined(the(synced, m.Join), last=5, history=[event(5)]), T0)
    assert chat_texts(after) == ["line 5"]
    fetch = the(after, m.History)
    assert (fetch.room, fetch.after, fetch.limit) == ("lobby", 5, 3)


def test_live_events_in_order_are_shown_once() -> None:
    core = ready()
    assert chat_texts(core.on_broadcast(event(1), T0)) == ["line 1"]
    assert chat_texts(core.on_broadcast(event(2), T0)) == ["line 2"]
    assert core.on_broadcast(event(2), T0) == []  # duplicate
    assert core.on_broadcast(event(1), T0) == []  # old
    assert core.rooms["lobby"].last == 2
    assert core.rooms["lobby"].buffer == {}  # nothing stale kept around


def test_gap_fetches_history_and_fills_in_order() -> None:
    """§6.4: seq 5 after 3 means 4 is missing: fetch after=3, show 4, 5."""
    core = make_core()
    handshake(core, last=3, history=[event(1), event(2), event(3)])
    actions = core.on_broadcast(event(5), T0 + 1)
    assert shown(actions) == []
    fetch = the(actions, m.History)
    assert (fetch.room, fetch.after, fetch.limit) == ("lobby", 3, 2)
    assert core.idle  # a background fetch does not hold up quitting
    # Another live event during the fetch: buffered, no second fetch.
    assert core.on_broadcast(event(6), T0 + 1) == []
    reply = m.Events(fetch.rid, "lobby", [event(4), event(5)], 5)
    after = core.on_direct(reply, T0 + 1)
    assert chat_texts(after) == ["line 4", "line 5", "line 6"]
    assert reqs(after) == []
    assert core.on_broadcast(event(5), T0 + 1) == []
    assert core.on_broadcast(event(4), T0 + 1) == []
    assert chat_texts(core.on_broadcast(event(7), T0 + 1)) == ["line 7"]


def test_gap_filled_by_a_late_live_event_is_not_shown_twice() -> None:
    core = make_core()
    handshake(core, last=3, history=[event(3)])
    fetch = the(core.on_broadcast(event(5), T0), m.History)
    assert chat_texts(core.on_broadcast(event(4), T0)) == ["line 4", "line 5"]
    after = core.on_direct(m.Events(fetch.rid, "lobby", [event(4), event(5)], 5), T0)
    assert shown(after) == []
    assert reqs(after) == []


def test_gap_fetch_that_comes_back_short_fetches_again() -> None:
    core = make_core()
    handshake(core, last=1, history=[event(1)])
    fetch = the(core.on_broadcast(event(4), T0), m.History)
    after = core.on_direct(m.Events(fetch.rid, "lobby", [event(2)], 4), T0)
    assert chat_texts(after) == ["line 2"]
    again = the(after, m.History)
    assert again.after == 2
    final = core.on_direct(m.Events(again.rid, "lobby", [event(3), event(4)], 4), T0)
    assert chat_texts(final) == ["line 3", "line 4"]


def test_gap_trimmed_from_the_log_is_reported_then_skipped() -> None:
    core = make_core()
    handshake(core, last=3, history=[event(3)])
    fetch = the(core.on_broadcast(event(12), T0), m.History)
    after = core.on_direct(m.Events(fetch.rid, "lobby", [event(10), event(11)], 12), T0)
    problem = shown(after)[0]
    assert isinstance(problem, Problem)
    assert "6 older event(s)" in problem.text
    assert chat_texts(after) == ["line 10", "line 11", "line 12"]


def test_events_of_a_room_not_joined_are_ignored() -> None:
    core = ready()
    assert core.on_broadcast(event(1, room="elsewhere"), T0) == []
    assert "elsewhere" not in core.rooms


def test_room_notices_and_mentions() -> None:
    core = ready()
    notices = core.on_broadcast(event(1, kind="join", text=""), T0)
    notice = shown(notices)[0]
    assert isinstance(notice, RoomNotice)
    assert (notice.kind, notice.nick, notice.room, notice.seq) == ("join", "bob", "lobby", 1)
    mention = shown(core.on_broadcast(event(2, text="hey Alice, look"), T0))[0]
    assert isinstance(mention, Chat)
    assert mention.mention
    own = shown(core.on_broadcast(event(3, nick="alice", text="alice here"), T0))[0]
    assert isinstance(own, Chat)
    assert not own.mention
    plain = shown(core.on_broadcast(event(4, text="nothing"), T0))[0]
    assert isinstance(plain, Chat)
    assert not plain.mention


def test_action_event_is_an_action_chat() -> None:
    core = ready()
    line = shown(core.on_broadcast(event(1, kind="action", text="waves"), T0))[0]
    assert isinstance(line, Chat)
    assert line.action


# --------------------------------------------------------------- joining


def test_join_normalises_the_room_name() -> None:
    core = ready()
    actions = core.command("/join #Dev", T0)
    assert core.current == "dev"
    assert "dev" in core.rooms
    assert actions == [Subscribe(m.room_topic("dev")), Subscribe(m.sync_topic("t2"))]
    synced = core.on_broadcast(m.Synced("t2"), T0)
    join = the(synced, m.Join)
    assert (join.room, join.history) == ("dev", 20)
    after = core.on_direct(joined(join, members=["alice"]), T0)
    assert lines(after) == ["-- joined #dev (1 here)"]


def test_join_before_connecting_is_done_with_the_others() -> None:
    core = make_core()
    hello = connect(core)
    assert core.command("/join dev", T0) == []
    actions = core.on_direct(welcome(hello.rid), T0)
    assert Subscribe(m.room_topic("lobby")) in actions
    assert Subscribe(m.room_topic("dev")) in actions
    synced = sync(core, actions, T0)
    assert [j.room for j in reqs(synced) if isinstance(j, m.Join)] == ["lobby", "dev"]


def test_join_a_room_already_joined_switches_to_it() -> None:
    core = ready()
    core.current = None
    actions = core.command("/join LOBBY", T0)
    assert lines(actions) == ["-- now talking in #lobby"]
    assert core.current == "lobby"


def test_switch_between_joined_rooms() -> None:
    core = ready()
    sync(core, core.command("/join dev", T0), T0)
    assert lines(core.command("/switch #lobby", T0)) == ["-- now talking in #lobby"]
    assert core.current == "lobby"
    assert the(core.command("hi", T0), m.Say).room == "lobby"


def test_join_error_drops_the_room() -> None:
    core = ready()
    synced = sync(core, core.command("/join dev", T0), T0)
    join = the(synced, m.Join)
    actions = core.on_direct(m.Error(join.rid, "too_many_rooms", "enough"), T0)
    assert lines(actions) == ["!! too_many_rooms: enough"]
    assert "dev" not in core.rooms
    assert core.current == "lobby"


def test_leave_unsubscribes_and_sends_leave() -> None:
    core = ready()
    actions = core.command("/leave", T0)
    assert actions[0] == Unsubscribe(m.room_topic("lobby"))
    leave = the(actions, m.Leave)
    assert leave.room == "lobby"
    assert core.current is None
    assert "lobby" not in core.rooms
    assert lines(core.on_direct(m.Ok(leave.rid), T0)) == ["-- you left #lobby"]
    assert core.on_broadcast(event(1), T0) == []  # its events are ignored now


def test_leave_named_room_keeps_the_current_one() -> None:
    core = ready()
    sync(core, core.command("/join dev", T0), T0)
    core.command("/switch lobby", T0)
    actions = core.command("/leave #Dev", T0)
    assert the(actions, m.Leave).room == "dev"
    assert core.current == "lobby"


# -------------------------------------------------------- direct messages


def test_msg_sends_tell_and_ack_shows_an_outgoing_line() -> None:
    core = ready()
    tell = the(core.command("/msg bob see you at 5", T0), m.Tell)
    assert (tell.to, tell.id, tell.text) == ("bob", "m1", "see you at 5")
    assert list(core.outbox) == ["m1"]
    actions = core.on_direct(m.Ack(tell.rid, "m1", 1), T0 + 2)
    assert shown(actions) == [DirectLine("alice", "bob", "see you at 5", T0 + 2, False, True, "m1")]
    assert core.outbox == {}


def test_incoming_dm_is_shown() -> None:
    core = ready()
    actions = core.on_direct(m.Dm("x1", "bob", "alice", "psst", T0, False), T0)
    assert shown(actions) == [DirectLine("bob", "alice", "psst", T0, False, False, "x1")]


def test_dm_while_connecting_is_shown_too() -> None:
    core = make_core()
    connect(core)
    actions = core.on_direct(m.Dm("x1", "bob", "alice", "early", T0, True), T0)
    assert shown(actions) == [DirectLine("bob", "alice", "early", T0, True, False, "x1")]


def test_tell_is_not_held_back_by_a_pending_join() -> None:
    core = make_core()
    hello = connect(core)
    core.command("/msg bob hi", T0)
    actions = core.on_direct(welcome(hello.rid), T0)
    assert the(actions, m.Tell).text == "hi"


# --------------------------------------------------- other commands, replies


def test_nick_change() -> None:
    core = ready()
    nick = the(core.command("/nick bob2", T0), m.Nick)
    assert nick.nick == "bob2"
    assert lines(core.on_direct(m.Ok(nick.rid), T0)) == ["-- you are now bob2"]
    assert core.nick == "bob2"


def test_nick_taken_on_change_is_one_problem_and_keeps_the_nick() -> None:
    core = ready()
    nick = the(core.command("/nick bob", T0), m.Nick)
    actions = core.on_direct(m.Error(nick.rid, "nick_taken", "bob is taken"), T0)
    assert lines(actions) == ["!! nick_taken: bob is taken"]
    assert core.nick == "alice"


def test_who_in_current_and_named_room() -> None:
    core = ready()
    who = the(core.command("/who", T0), m.Who)
    assert who.room == "lobby"
    actions = core.on_direct(m.Names(who.rid, "lobby", ["alice", "bob"]), T0)
    assert lines(actions) == ["-- #lobby: alice, bob"]
    assert the(core.command("/who #Ops", T0), m.Who).room == "ops"


def test_rooms_list() -> None:
    core = ready()
    rooms = the(core.command("/rooms", T0), m.Rooms)
    listing = [m.RoomInfo("lobby", 2, "hi"), m.RoomInfo("dev", 1, "")]
    actions = core.on_direct(m.RoomList(rooms.rid, listing), T0)
    assert lines(actions) == ["-- #lobby (2) - hi", "-- #dev (1)"]
    rooms = the(core.command("/rooms", T0), m.Rooms)
    assert lines(core.on_direct(m.RoomList(rooms.rid, []), T0)) == ["-- no rooms yet: /join one"]


def test_topic_read_and_set() -> None:
    core = ready()
    read = the(core.command("/topic", T0), m.Topic)
    assert (read.room, read.topic) == ("lobby", None)
    assert lines(core.on_direct(m.TopicIs(read.rid, "lobby", "fun"), T0)) == [
        "-- topic of #lobby: fun"
    ]
    write = the(core.command("/topic release on friday", T0), m.Topic)
    assert write.topic == "release on friday"
    # The topic EVENT in the room announces the change; the reply adds nothing.
    assert core.on_direct(m.TopicIs(write.rid, "lobby", "release on friday"), T0) == []


def test_history_command_shows_events_as_history() -> None:
    core = ready()
    hist = the(core.command("/history 5", T0), m.History)
    assert (hist.room, hist.limit, hist.after) == ("lobby", 5, 0)
    actions = core.on_direct(m.Events(hist.rid, "lobby", [event(1), event(2)], 2), T0)
    chats = [e for e in shown(actions) if isinstance(e, Chat)]
    assert [c.text for c in chats] == ["line 1", "line 2"]
    assert all(c.history for c in chats)
    hist = the(core.command("/history", T0), m.History)
    assert lines(core.on_direct(m.Events(hist.rid, "lobby", [], 0), T0)) == [
        "-- no history in #lobby"
    ]


def test_help_lists_every_command() -> None:
    core = ready()
    actions = core.command("/help", T0)
    events = shown(actions)
    assert len(actions) == len(HELP) + 1
    assert all(isinstance(e, Info) for e in events)


def test_help_for_one_command_is_one_line() -> None:
    core = ready()
    assert shown(core.command("/help join", T0)) == [Info(HELP["join"])]
    assert shown(core.command("/help /JOIN", T0)) == [Info(HELP["join"])]


def test_error_reply_to_a_command_is_one_problem() -> None:
    core = ready()
    who = the(core.command("/who nowhere", T0), m.Who)
    actions = core.on_direct(m.Error(who.rid, "no_such_room", "no room nowhere"), T0)
    assert lines(actions) == ["!! no_such_room: no room nowhere"]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("/bogus", Problem),
        ("/", Problem),
        ("/help bogus", Problem),
        ("/help join", Info),
        ("/join", Problem),
        ("/join a b", Problem),
        ("/join bad!name", Problem),
        ("/leave nowhere", Problem),
        ("/leave bad!name", Problem),
        ("/msg", Problem),
        ("/msg bob", Problem),
        ("/msg bob    ", Problem),
        ("/msg b@d hello", Problem),
        ("/me", Problem),
        ("/nick", Problem),
        ("/nick a b", Problem),
        ("/nick -bad", Problem),
        ("/who bad!room", Problem),
        ("/switch", Problem),
        ("/switch nowhere", Problem),
        ("/history lots", Problem),
        ("/topic " + "x" * 301, Problem),
        ("/topic bad\x07", Problem),
        ("/me rings \x07", Problem),
    ],
)
def test_bad_or_local_commands_give_exactly_one_line(line: str, kind: type) -> None:
    core = ready()
    actions = core.command(line, T0)
    assert len(actions) == 1, actions
    assert isinstance(actions[0], Output)
    assert isinstance(actions[0].event, kind)
    assert core.outbox == {}


def test_commands_needing_a_room_without_one() -> None:
    core = ready(room=None)
    for line in ("/who", "/topic", "/history", "/leave", "/me waves"):
        actions = core.command(line, T0)
        assert [type(e) for e in shown(actions)] == [Problem], line
        assert reqs(actions) == [], line


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=40))
def test_no_typed_line_raises(text: str) -> None:
    """Whatever is typed, command() answers with actions, never an exception."""
    core = ready()
    for line in (text, "/" + text, "/join " + text, "/msg bob " + text, "/nick " + text):
        if line.split(" ", 1)[0].lower() in ("/quit",):
            continue  # /quit with a bad reason: see the dedicated test above
        actions = core.command(line, T0)
        assert isinstance(actions, list)


def test_commands_typed_before_connecting_are_sent_after_the_joins() -> None:
    core = make_core()
    hello = connect(core)
    assert core.command("/who", T0) == []
    assert core.command("/rooms", T0) == []
    assert not core.idle
    actions = core.on_direct(welcome(hello.rid), T0)
    assert none_of(actions, m.Who)
    synced = sync(core, actions, T0)
    assert none_of(synced, m.Who)
    after = core.on_direct(joined(the(synced, m.Join)), T0)
    later = [r for r in reqs(after) if isinstance(r, m.Who | m.Rooms)]
    assert [type(r) for r in later] == [m.Who, m.Rooms]
    assert later[0].room == "lobby"  # type: ignore[union-attr]
    assert core.idle is False  # their answers are awaited
    core.on_direct(m.Names(later[0].rid, "lobby", ["alice"]), T0)
    core.on_direct(m.RoomList(later[1].rid, []), T0)
    assert core.idle


def test_command_typed_during_a_join_waits_for_it() -> None:
    core = ready()
    join_actions = core.command("/join dev", T0)
    assert core.command("/who", T0) == []
    synced = sync(core, join_actions, T0)
    assert none_of(synced, m.Who)
    after = core.on_direct(joined(the(synced, m.Join)), T0)
    assert the(after, m.Who).room == "dev"


def test_command_deferred_behind_a_join_left_before_synced_is_still_sent() -> None:
    """BUG: a command queued while a join was syncing is never sent if that
    room is left before SYNCED: on_broadcast(SYNCED) never flushes the queue,
    so ``idle`` stays False and /quit only ends by timing out."""
    core = ready()
    join_actions = core.command("/join dev", T0)
    assert core.command("/rooms", T0) == []
    core.command("/leave dev", T0)
    actions = sync(core, join_actions, T0)
    assert the(actions, m.Rooms)


def test_command_deferred_behind_a_join_left_before_joined_is_still_sent() -> None:
    """BUG: the same when the room is left after its JOIN went out: the JOINED
    of a room no longer in ``rooms`` returns early without flushing."""
    core = ready()
    synced = sync(core, core.command("/join dev", T0), T0)
    join = the(synced, m.Join)
    assert core.command("/rooms", T0) == []
    leave = the(core.command("/leave dev", T0), m.Leave)
    actions = core.on_direct(joined(join), T0)
    actions += core.on_direct(m.Ok(leave.rid), T0)
    assert the(actions, m.Rooms)


# ---------------------------------------------------------------- heartbeats


def test_ping_after_heartbeat_seconds_without_sending() -> None:
    """§6.7: an idle client pings every heartbeat seconds."""
    core = ready()
    assert core.tick(T0 + HEARTBEAT - 0.01) == []
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    assert core.idle  # a ping is background traffic
    assert core.on_direct(m.Pong(ping.rid, T0 + HEARTBEAT, 3), T0 + HEARTBEAT) == []
    assert core.tick(T0 + HEARTBEAT + 1) == []


def test_any_request_resets_the_heartbeat() -> None:
    core = ready()
    the(core.command("hi", T0 + 4), m.Say)
    assert core.tick(T0 + HEARTBEAT) == []
    assert the(core.tick(T0 + 4 + HEARTBEAT), m.Ping)


def test_pong_heads_reveal_events_lost_at_the_tail_of_a_burst() -> None:
    """§6.7: PONG carries each room's latest seq; one still ahead of what we showed
    at the next PONG, a heartbeat later, means the tail was lost: fetch it."""
    core = make_core()
    handshake(core, last=2, history=[event(2)])
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    heads = [m.Head("lobby", 4), m.Head("elsewhere", 9)]
    # The events may only be waiting in our SUB queue: nothing yet.
    assert core.on_direct(m.Pong(ping.rid, T0, 1, heads), T0 + HEARTBEAT) == []
    ping = the(core.tick(T0 + 2 * HEARTBEAT), m.Ping)
    actions = core.on_direct(m.Pong(ping.rid, T0, 2, heads), T0 + 2 * HEARTBEAT)
    fetch = the(actions, m.History)
    assert (fetch.room, fetch.after, fetch.limit) == ("lobby", 2, 2)
    filled = core.on_direct(m.Events(fetch.rid, "lobby", [event(3), event(4)], 4), T0)
    assert chat_texts(filled) == ["line 3", "line 4"]


def test_a_client_merely_behind_its_queue_fetches_nothing() -> None:
    """Issue 12: a PONG head ahead of us because the events still wait in our SUB
    queue costs no HISTORY: they arrive before the next PONG."""
    core = make_core()
    handshake(core, last=2, history=[event(2)])
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    assert core.on_direct(m.Pong(ping.rid, T0, 1, [m.Head("lobby", 50)]), T0 + HEARTBEAT) == []
    for seq in range(3, 51):  # the queue drains
        assert not reqs(core.on_broadcast(event(seq), T0 + HEARTBEAT))
    ping = the(core.tick(T0 + 2 * HEARTBEAT), m.Ping)
    late = core.on_direct(m.Pong(ping.rid, T0, 2, [m.Head("lobby", 60)]), T0 + 2 * HEARTBEAT)
    assert not [r for r in reqs(late) if isinstance(r, m.History)]


def test_a_client_still_reading_a_long_queue_fetches_nothing_until_it_ran_dry() -> None:
    """Issue 12: a receiver more than a heartbeat behind its SUB queue has not
    lost the tail: it fetches only once the transport read the queue empty after
    the PONG and the head is still ahead."""
    core = make_core()
    handshake(core, last=2, history=[event(2)])
    core.sub_drained(T0)
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    assert core.on_direct(m.Pong(ping.rid, T0, 1, [m.Head("lobby", 500)]), T0 + HEARTBEAT) == []
    for seq in range(3, 100):  # busy: the queue never runs dry this heartbeat
        core.on_broadcast(event(seq), T0 + HEARTBEAT + 1)
    ping = the(core.tick(T0 + 2 * HEARTBEAT + 1), m.Ping)
    busy = core.on_direct(m.Pong(ping.rid, T0, 2, [m.Head("lobby", 500)]), T0 + 2 * HEARTBEAT + 1)
    assert not [r for r in reqs(busy) if isinstance(r, m.History)]
    core.sub_drained(T0 + 2 * HEARTBEAT + 2)  # read empty: 100..500 are not coming
    core.on_broadcast(m.Beat(3, T0 + 3 * HEARTBEAT), T0 + 3 * HEARTBEAT)
    ping = the(core.tick(T0 + 3 * HEARTBEAT + 2), m.Ping)
    lost = core.on_direct(m.Pong(ping.rid, T0, 3, [m.Head("lobby", 500)]), T0 + 3 * HEARTBEAT + 2)
    fetch = the(lost, m.History)
    assert (fetch.after, fetch.limit) == (99, min(401, fetch.limit))


def test_hello_names_the_registration_and_a_new_boot_makes_joins_rejoins() -> None:
    """§6.1, §6.2: HELLO carries the same id on every try; a WELCOME from another
    broker process (a restart) makes the JOINs that follow rejoins."""
    core = make_core()
    hello = the(core.connecting(EP, T0), m.Hello)
    assert hello.id == "h1"
    handshake(core, last=2, history=[event(2)])
    again = the(core.connecting(EP, T0 + 1), m.Hello)
    assert again.id == "h1" and again.resume == "s1"
    actions = core.on_direct(welcome(again.rid, boot="b2"), T0 + 1)
    sync = next(a for a in actions if isinstance(a, Subscribe) and a.topic.startswith(b"~"))
    token = sync.topic[1:-1].decode()
    join = the(core.on_broadcast(m.Synced(token), T0 + 1), m.Join)
    assert join.rejoin


def test_pong_heads_at_or_below_what_we_showed_fetch_nothing() -> None:
    core = make_core()
    handshake(core, last=2, history=[event(2)])
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    assert core.on_direct(m.Pong(ping.rid, T0, 1, [m.Head("lobby", 2)]), T0 + HEARTBEAT) == []


def test_silent_dealer_means_reconnect_after_timeout() -> None:
    core = ready()
    for t in (T0 + 5, T0 + 10, T0 + 15):
        actions = core.tick(t)
        assert not any(isinstance(a, Reconnect) for a in actions)
    actions = core.tick(T0 + TIMEOUT + 0.01)
    assert isinstance(actions[-1], Reconnect)
    state = shown(actions)[0]
    assert isinstance(state, StateChange)
    assert state.state == "reconnecting"
    assert core.state == "reconnecting"


def test_silent_sub_means_reconnect_after_timeout() -> None:
    """The DEALER answers but BEATs stopped: the SUB is dead, reconnect."""
    core = ready()
    assert core.on_broadcast(m.Beat(1, T0), T0 + 1) == []
    for t in (T0 + 5, T0 + 10, T0 + 15):
        ping = the(core.tick(t), m.Ping)
        core.on_direct(m.Pong(ping.rid, t, 1), t)
    assert not any(isinstance(a, Reconnect) for a in core.tick(T0 + 1 + TIMEOUT))
    actions = core.tick(T0 + 1 + TIMEOUT + 0.5)
    assert isinstance(actions[-1], Reconnect)
    assert "broadcast" in actions[-1].reason


def test_beats_keep_the_sub_alive() -> None:
    core = ready()
    for k in range(1, 10):
        t = T0 + 5 * k
        core.on_broadcast(m.Beat(k, t), t)
        for a in core.tick(t):
            assert not isinstance(a, Reconnect)
            if isinstance(a, Request):
                core.on_direct(m.Pong(a.msg.rid, t, k), t)


def test_retry_interval_while_connecting_doubles_to_32() -> None:
    core = make_core()
    now = T0
    connect(core, now)
    for interval in (2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0):
        assert core.tick(now + interval - 0.01) == []
        assert core.next_deadline() == now + interval
        assert core.tick(now + interval) == [Reconnect("no answer yet")]
        now += interval
        connect(core, now)  # what the transport does on Reconnect


def test_retry_interval_resets_after_welcome() -> None:
    core = make_core()
    connect(core, T0)
    core.tick(T0 + 2)
    hello = connect(core, T0 + 2)
    core.tick(T0 + 6)  # now 8s
    hello = connect(core, T0 + 6)
    core.on_direct(welcome(hello.rid), T0 + 6)
    core.on_broadcast(m.Shutdown("restart"), T0 + 7)
    connect(core, T0 + 7)
    assert core.tick(T0 + 9) == [Reconnect("no answer yet")]


def test_next_deadline_when_ready() -> None:
    core = ready()
    assert core.next_deadline() == T0 + HEARTBEAT


# ----------------------------------------------------------- reconnecting


def test_resume_resends_outbox_with_same_ids_and_fetches_the_gap() -> None:
    """§6.1, §6.3: a resumed session gets every unacked message again, same
    ids (the broker dedupes); rooms are rejoined without history and the
    events missed meanwhile come from a gap fetch."""
    core = make_core()
    handshake(core, last=3, history=[event(1), event(2), event(3)])
    say = the(core.command("are you there?", T0 + 1), m.Say)
    tell = the(core.command("/msg bob ping", T0 + 1), m.Tell)
    lost = core.tick(T0 + 1 + TIMEOUT + 1)
    assert isinstance(lost[-1], Reconnect)

    t = T0 + 20
    hello = connect(core, t)
    assert hello.resume == "s1"
    actions = core.on_direct(welcome(hello.rid, resumed=True, rooms=["lobby"]), t)
    assert ConnectSub(PUB) in actions  # the transport dropped the SUB with the DEALER
    assert Subscribe(m.room_topic("lobby")) in actions
    resent_tell = the(actions, m.Tell)
    assert (resent_tell.id, resent_tell.text) == (tell.id, "ping")
    assert resent_tell.rid != tell.rid
    assert none_of(actions, m.Say)  # waits for the room

    synced = sync(core, actions, t)
    join = the(synced, m.Join)
    assert (join.room, join.history) == ("lobby", 0)

    after = core.on_direct(joined(join, last=5), t)
    assert lines(after) == []  # no second "joined #lobby"
    fetch = the(after, m.History)
    assert (fetch.after, fetch.limit) == (3, 2)
    resent_say = the(after, m.Say)
    assert (resent_say.id, resent_say.text) == (say.id, say.text)
    assert list(core.outbox) == [say.id, tell.id]

    filled = core.on_direct(m.Events(fetch.rid, "lobby", [event(4), event(5)], 5), t)
    assert chat_texts(filled) == ["line 4", "line 5"]
    assert chat_texts(core.on_broadcast(own_line(say, 6), t)) == [say.text]
    # A late ack for the first try is from a dead connection: ignored.
    assert core.on_direct(m.Ack(say.rid, say.id, 6), t) == []
    assert say.id in core.outbox
    core.on_direct(m.Ack(resent_say.rid, say.id, 6, dup=True), t)
    core.on_direct(m.Ack(resent_tell.rid, tell.id, 1, dup=True), t)
    assert core.outbox == {}
    assert core.idle


def test_rejoin_with_nothing_new_fetches_nothing() -> None:
    core = make_core()
    handshake(core, last=3, history=[event(3)])
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    synced = sync(core, core.on_direct(welcome(hello.rid, resumed=True), T0 + 2), T0 + 2)
    after = core.on_direct(joined(the(synced, m.Join), last=3), T0 + 2)
    assert after == []


def test_events_buffered_during_rejoin_are_merged_without_duplicates() -> None:
    core = make_core()
    handshake(core, last=3, history=[event(3)])
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    synced = sync(core, core.on_direct(welcome(hello.rid, resumed=True), T0 + 2), T0 + 2)
    for seq in (3, 4, 5):
        assert core.on_broadcast(event(seq), T0 + 2) == []
    after = core.on_direct(joined(the(synced, m.Join), last=4), T0 + 2)
    assert chat_texts(after) == ["line 4", "line 5"]
    assert reqs(after) == []


def test_welcome_with_a_new_epoch_resets_positions() -> None:
    """§6.1: another epoch means another history; old seqs mean nothing."""
    core = make_core()
    handshake(core, last=40, history=[event(40)])
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    actions = core.on_direct(welcome(hello.rid, epoch="e2", session="s2"), T0 + 2)
    problems = [e for e in shown(actions) if isinstance(e, Problem)]
    assert len(problems) == 1
    assert "reset" in problems[0].text
    assert core.rooms["lobby"].last == 0
    assert core.epoch == "e2"
    synced = sync(core, actions, T0 + 2)
    assert the(synced, m.Join).history == 20
    after = core.on_direct(joined(the(synced, m.Join), last=2, history=[event(1), event(2)]), T0)
    assert chat_texts(after) == ["line 1", "line 2"]


def test_new_epoch_does_not_wait_for_own_lines_of_the_old_history() -> None:
    """BUG: RoomView.acked survives an epoch reset (only ``last`` is zeroed),
    so ``idle`` waits for seqs of the old history that will never come back
    on the SUB: after a store reset, /quit always ends by timing out."""
    core = make_core()
    handshake(core, last=39, history=[event(39)])
    say = the(core.command("before the reset", T0), m.Say)
    core.on_broadcast(own_line(say, 40), T0)
    core.on_direct(m.Ack(say.rid, say.id, 40), T0)
    assert core.idle
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    actions = core.on_direct(welcome(hello.rid, epoch="e2", session="s2"), T0 + 2)
    synced = sync(core, actions, T0 + 2)
    core.on_direct(joined(the(synced, m.Join), last=1, history=[event(1)]), T0 + 2)
    assert core.idle
    assert the(core.command("exit", T0 + 2), m.Bye)


def test_shutdown_broadcast_means_reconnect() -> None:
    core = ready()
    actions = core.on_broadcast(m.Shutdown("maintenance"), T0)
    assert isinstance(actions[-1], Reconnect)
    state = shown(actions)[0]
    assert isinstance(state, StateChange)
    assert "maintenance" in state.text
    assert core.state == "reconnecting"
    assert core.pub == ""


def test_nick_taken_on_first_hello_quits_with_2() -> None:
    core = make_core()
    hello = connect(core)
    actions = core.on_direct(m.Error(hello.rid, "nick_taken", "alice is taken"), T0)
    assert actions[-1] == Quit(2)
    assert lines(actions) == ["!! nick_taken: alice is taken"]


def test_failed_resume_registers_anew() -> None:
    core = ready()
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    assert hello.resume == "s1"
    actions = core.on_direct(m.Error(hello.rid, "no_session", "expired"), T0 + 2)
    assert not any(isinstance(a, Reconnect) for a in actions)  # no tight loop
    assert core.session == ""
    assert core.tick(T0 + 3) == []
    assert any(isinstance(a, Reconnect) for a in core.tick(T0 + 4.1))
    assert connect(core, T0 + 5).resume == ""


def test_not_registered_reconnects_and_keeps_the_message() -> None:
    """libzmq reconnected the DEALER by itself; the broker sees a stranger (§6.1)."""
    core = ready()
    say = the(core.command("are you there", T0), m.Say)
    actions = core.on_direct(m.Error(say.rid, "not_registered", "say HELLO"), T0)
    assert any(isinstance(a, Reconnect) for a in actions)
    assert list(core.outbox) == [say.id]
    hello = connect(core, T0 + 1)
    assert hello.resume == "s1"


def test_error_on_say_drops_it_from_the_outbox() -> None:
    core = ready()
    say = the(core.command("too fast", T0), m.Say)
    actions = core.on_direct(m.Error(say.rid, "bad_text", "no escapes"), T0)
    assert lines(actions) == ["!! bad_text: no escapes"]
    assert core.outbox == {}
    assert core.idle


def test_error_on_tell_drops_it_from_the_outbox() -> None:
    core = ready()
    tell = the(core.command("/msg ghost boo", T0), m.Tell)
    actions = core.on_direct(m.Error(tell.rid, "no_such_nick", "nobody is called ghost"), T0)
    assert [type(e) for e in shown(actions)] == [Problem]
    assert core.outbox == {}


def test_reply_for_an_unknown_rid_is_ignored() -> None:
    core = ready()
    assert core.on_direct(m.Ok(424242), T0) == []
    assert core.on_direct(m.Error(0, "bad_request", "garbled"), T0) == []


def test_room_left_while_disconnected_is_left_on_resume() -> None:
    """§6.1: WELCOME.rooms lists the rooms a resumed session is still in.

    BUG: the core ignores WELCOME.rooms, so a room /left while the connection
    was down (no LEAVE could be sent) stays joined on the broker for good.
    """
    core = ready()
    sync(core, core.command("/join dev", T0), T0)
    core.on_broadcast(m.Shutdown("restart"), T0 + 1)
    hello = connect(core, T0 + 2)
    assert core.command("/leave dev", T0 + 2) == [Unsubscribe(m.room_topic("dev"))]
    actions = core.on_direct(welcome(hello.rid, resumed=True, rooms=["lobby", "dev"]), T0 + 2)
    synced = sync(core, actions, T0 + 2)
    leaves = [r for r in reqs(actions + synced) if isinstance(r, m.Leave)]
    assert [r.room for r in leaves] == ["dev"]


# ----------------------------------------------------------------- idle


def test_idle_property() -> None:
    core = make_core()
    assert core.idle  # nothing asked yet
    hello = connect(core)
    assert not core.idle  # HELLO in flight
    actions = core.on_direct(welcome(hello.rid), T0)
    assert not core.idle  # waiting for SYNCED
    synced = sync(core, actions, T0)
    assert not core.idle  # JOIN in flight
    core.on_direct(joined(the(synced, m.Join)), T0)
    assert core.idle
    say = the(core.command("hi", T0), m.Say)
    assert not core.idle
    core.on_direct(m.Ack(say.rid, say.id, 1), T0)
    assert not core.idle  # acked, but our line is not back on the SUB yet
    core.on_broadcast(own_line(say, 1), T0)
    assert core.idle
    ping = the(core.tick(T0 + HEARTBEAT), m.Ping)
    assert core.idle  # background
    core.on_direct(m.Pong(ping.rid, T0, 1), T0)
    who = the(core.command("/who", T0), m.Who)
    assert not core.idle
    core.on_direct(m.Names(who.rid, "lobby", []), T0)
    assert core.idle


def test_failed_join_drops_the_messages_held_for_that_room() -> None:
    """A SAY held for a room whose JOIN fails is not sent anywhere else."""
    core = ready()
    actions = core.command("/join dev", T0)
    assert core.command("for dev only", T0) == []  # held until JOINED
    join = the(sync(core, actions, T0), m.Join)
    out = core.on_direct(m.Error(join.rid, "too_many_rooms", "leave one first"), T0)
    assert none_of(out, m.Say)
    assert Unsubscribe(m.room_topic("dev")) in out
    assert "!! 1 message(s) for #dev not sent" in lines(out)
    assert core.outbox == {}
    assert core.current == "lobby"


def test_throttled_messages_are_kept_and_resent_in_order_after_retry_after() -> None:
    """§6.12: rate_limited is not a refusal; order holds; a window bounds what is in flight."""
    core = ready()
    says = [the(core.command(f"line {i}", T0), m.Say) for i in range(3)]
    out = core.on_direct(m.Error(says[1].rid, "rate_limited", "slow", 0.5), T0)
    assert [type(e).__name__ for e in shown(out)] == ["Problem"]
    core.on_direct(m.Error(says[2].rid, "rate_limited", "slow", 0.4), T0)
    assert list(core.outbox) == [s.id for s in says]
    assert core.command("line 3", T0) == []  # held: nothing goes out during the wait
    assert core.next_deadline() == T0 + 0.5
    assert core.tick(T0 + 0.4) == []
    resent = [r for r in reqs(core.tick(T0 + 0.5)) if isinstance(r, m.Say)]
    assert [r.text for r in resent] == ["line 1", "line 2", "line 3"]
    assert [r.id for r in resent[:2]] == [says[1].id, says[2].id]


def test_window_bounds_messages_in_flight() -> None:
    from zchat.client.core import WINDOW

    core = ready()
    sent = [r for i in range(WINDOW + 10) for r in reqs(core.command(f"m{i}", T0))]
    assert len(sent) == WINDOW
    first = sent[0]
    assert isinstance(first, m.Say)
    more = core.on_direct(m.Ack(first.rid, first.id, 1), T0)
    assert [r.text for r in reqs(more) if isinstance(r, m.Say)] == [f"m{WINDOW}"]


# ------------------------------------------- interactive commands (issue 5)


def test_query_turns_plain_lines_into_dms_until_left() -> None:
    core = ready()
    assert shown(core.command("/query bob", T0)) == [
        Info("now talking to bob in private; /query alone to leave")
    ]
    assert core.query == "bob"
    tell = the(core.command("hi there", T0), m.Tell)
    assert (tell.to, tell.text, tell.action) == ("bob", "hi there", False)
    assert the(core.command("/me nods", T0), m.Tell).action
    assert shown(core.command("/query", T0)) == [Info("now talking in #lobby")]
    assert core.query is None
    assert the(core.command("hi room", T0), m.Say).room == "lobby"


def test_query_needs_a_valid_nick() -> None:
    core = ready()
    assert shown(core.command("/query no way", T0)) == [Problem(f"usage: {HELP['query']}")]
    assert core.query is None


def test_switch_and_join_leave_the_query() -> None:
    core = ready()
    core.command("/query bob", T0)
    core.command("/switch lobby", T0)
    assert core.query is None
    core.command("/query bob", T0)
    core.command("/join dev", T0)
    assert core.query is None and core.current == "dev"


def test_away_is_a_session_state_not_a_stored_line() -> None:
    """§6.13: AWAY, not an action line in the room's log (issue 11)."""
    core = ready()
    out = core.command("/away lunch", T0)
    assert core.away == "lunch" and none_of(out, m.Say)
    assert the(out, m.Away).text == "lunch"
    back = the(core.command("/away", T0), m.Away)
    assert back.text == "" and core.away is None
    bare = the(core.command("/away", T0), m.Away)
    assert bare.text == "away" and core.away == ""


def test_away_without_a_room_still_tells_the_broker() -> None:
    core = ready(room=None)
    assert the(core.command("/away brb", T0), m.Away).text == "brb"
    assert core.away == "brb"


def test_away_is_set_again_on_a_new_session() -> None:
    core = ready()
    core.command("/away lunch", T0)
    core.tick(T0 + TIMEOUT + 1)
    hello = connect(core, T0 + 20)
    synced = sync(core, core.on_direct(welcome(hello.rid, session="s2"), T0 + 20), T0 + 20)
    after = core.on_direct(joined(the(synced, m.Join)), T0 + 20)
    assert the(after, m.Away).text == "lunch"


def test_a_join_after_the_broker_restarted_is_a_rejoin() -> None:
    """§6.2: after a broker restart (WELCOME names another boot) the JOINs say
    rejoin; after a silent link (a cut cable) the broker is the same and the others
    should see us come back. A broker that names no boot: SHUTDOWN or a closed
    connection are taken for a restart."""
    core = ready()  # boot b1
    core.on_broadcast(m.Shutdown("restart"), T0)
    hello = connect(core, T0 + 20)
    synced = sync(core, core.on_direct(welcome(hello.rid, boot="b2"), T0 + 20), T0 + 20)
    assert the(synced, m.Join).rejoin is True
    core.tick(T0 + 20 + TIMEOUT + 1)  # silence this time, the same broker
    hello = connect(core, T0 + 40)
    synced = sync(core, core.on_direct(welcome(hello.rid, boot="b2"), T0 + 40), T0 + 40)
    assert the(synced, m.Join).rejoin is False
    first = make_core()
    assert the(handshake_joins(first), m.Join).rejoin is False
    old = make_core()
    handshake(old, boot="")
    old.on_broadcast(m.Shutdown("restart"), T0)
    hello = connect(old, T0 + 20)
    synced = sync(old, old.on_direct(welcome(hello.rid, boot=""), T0 + 20), T0 + 20)
    assert the(synced, m.Join).rejoin is True


def handshake_joins(core: ClientCore) -> list[Action]:
    hello = connect(core)
    return sync(core, core.on_direct(welcome(hello.rid), T0), T0)


def test_whois_op_and_search() -> None:
    core = ready()
    ask = the(core.command("/whois bob", T0), m.Whois)
    out = core.on_direct(m.WhoisIs(ask.rid, "bob", True, ["lobby"], "lunch", 125.0, 0, "ab12"), T0)
    assert lines(out) == ["-- bob; online in #lobby; away: lunch; idle 2m; key ab12"]
    op = the(core.command("/op bob", T0), m.Op)
    assert (op.room, op.nick, op.op) == ("lobby", "bob", True)
    assert the(core.command("/deop bob", T0), m.Op).op is False
    found = the(core.command("/search deploy green", T0), m.Search)
    assert (found.room, found.text) == ("lobby", "deploy green")
    out = core.on_direct(m.Events(found.rid, "lobby", [event(3, text="deploy is green")], 9), T0)
    assert lines(out)[0] == "-- 1 message(s) in #lobby with 'deploy green'"
    assert chat_texts(out) == ["deploy is green"]
    notice = core.on_broadcast(event(1, nick="alice", text="bob", kind="op"), T0)
    assert lines(notice)[0].endswith("-- alice made bob an operator of #lobby")


def test_who_marks_the_away_and_a_dm_to_an_away_nick_says_so() -> None:
    core = ready()
    who = the(core.command("/who", T0), m.Who)
    out = core.on_direct(m.Names(who.rid, "lobby", ["alice", "bob"], 0, ["bob"]), T0)
    assert lines(out) == ["-- #lobby: alice, bob (away)"]
    tell = the(core.command("/msg bob hi", T0), m.Tell)
    acked = core.on_direct(m.Ack(tell.rid, tell.id, 1, False, "lunch"), T0)
    assert lines(acked)[-1] == "-- bob is away: lunch"


def test_names_asks_who_is_in_the_room() -> None:
    core = ready()
    assert the(core.command("/names", T0), m.Who).room == "lobby"
    assert the(core.command("/names dev", T0), m.Who).room == "dev"


def test_clear_is_a_ui_event() -> None:
    from zchat.client.events import Clear

    core = ready()
    assert shown(core.command("/clear", T0)) == [Clear()]
    assert shown(core.command("/help clear", T0)) == [Info(HELP["clear"])]


def test_members_follow_joined_and_room_events() -> None:
    """Completion candidates: JOINED's members, then join/leave/nick events after it."""
    core = ready()
    view = core.rooms["lobby"]
    assert view.members == {"alice": "alice", "bob": "bob"}
    core.on_broadcast(event(1, kind="join", nick="Carol", text=""), T0)
    core.on_broadcast(event(2, kind="leave", nick="bob", text="quit"), T0)
    core.on_broadcast(event(3, kind="nick", nick="carol", text="Caroline"), T0)
    assert view.members == {"alice": "alice", "caroline": "Caroline"}
    who = the(core.command("/who", T0), m.Who)
    core.on_direct(m.Names(who.rid, "lobby", ["alice", "dave"]), T0)
    assert view.members == {"alice": "alice", "dave": "dave"}


def test_members_ignore_history_older_than_joined() -> None:
    core = make_core()
    old = [event(1, kind="join", nick="ghost", text=""), event(2, kind="leave", nick="bob")]
    handshake(core, last=2, history=old)
    assert core.rooms["lobby"].members == {"alice": "alice", "bob": "bob"}


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("alice: hi", True),
        ("hi @Alice!", True),
        ("ALICE?", True),
        ("ask alice.", True),
        ("malice aforethought", False),
        ("alice_b is here", False),
        ("alice.smith", False),
    ],
)
def test_mention_is_the_nick_as_a_word(text: str, hit: bool) -> None:
    core = ready()
    [chat] = shown(core.on_broadcast(event(1, text=text), T0))
    assert isinstance(chat, Chat) and chat.mention is hit


def test_own_line_naming_ourselves_is_no_mention() -> None:
    core = ready()
    [chat] = shown(core.on_broadcast(event(1, nick="Alice", text="alice here"), T0))
    assert isinstance(chat, Chat) and not chat.mention


def test_a_room_log_that_went_back_resets_the_position() -> None:
    """A store restored from a backup keeps its epoch but has fewer entries."""
    core = ready()
    for seq in range(1, 6):
        core.on_broadcast(event(seq), T0)
    assert core.rooms["lobby"].last == 5
    core.on_broadcast(m.Shutdown("restore"), T0 + 1)
    hello = connect(core, T0 + 2)
    actions = core.on_direct(welcome(hello.rid), T0 + 2)
    join = the(sync(core, actions, T0 + 2), m.Join)
    out = core.on_direct(joined(join, last=2, history=[event(1), event(2)]), T0 + 2)
    assert "history went back" in " ".join(lines(out))
    assert core.rooms["lobby"].last == 2
    new = core.on_broadcast(event(3, text="after the restore"), T0 + 3)
    assert chat_texts(new) == ["after the restore"]


def test_a_throttled_gap_fetch_is_asked_again_and_never_shown_as_history() -> None:
    core = ready()
    core.on_broadcast(event(1), T0)
    gap = the(core.on_broadcast(event(3), T0), m.History)
    assert core.on_direct(m.Error(gap.rid, "rate_limited", "slow", 0.5), T0) == []
    assert not core.rooms["lobby"].fetching
    again = the(core.on_broadcast(event(4), T0 + 1), m.History)  # asked again, after the wait
    out = core.on_direct(m.Events(again.rid, "lobby", [event(2), event(3), event(4)], 4), T0 + 1)
    assert chat_texts(out) == ["line 2", "line 3", "line 4"]
    assert all(not e.history for e in shown(out) if isinstance(e, Chat))


def test_a_throttled_message_for_a_room_whose_join_fails_is_dropped_cleanly() -> None:
    core = ready()
    actions = core.command("/join dev", T0)
    join = the(sync(core, actions, T0), m.Join)
    core.on_direct(joined(join), T0)
    say = the(core.command("to dev", T0), m.Say)
    core.on_direct(m.Error(say.rid, "rate_limited", "slow", 0.5), T0)
    core.command("/leave dev", T0)
    actions = core.command("/join dev", T0)
    join = the(sync(core, actions, T0), m.Join)
    core.on_direct(m.Error(join.rid, "banned", "you are banned"), T0)
    assert core.outbox == {}
    core.tick(T0 + 1)  # used to raise KeyError for the refused id


def test_quitting_through_a_broker_shutdown_exits_zero() -> None:
    core = ready()
    bye = the(core.command("/quit", T0), m.Bye)
    assert bye.reason == ""
    assert core.on_broadcast(m.Shutdown("restart"), T0) == [Quit(0)]


# ------------------------------------------------- issue 11: state, calls, rough edges


def test_state_moves_only_along_the_table() -> None:
    from zchat.client.state import TRANSITIONS, ConnectionState

    cs = ConnectionState
    assert cs.CONNECTED in TRANSITIONS[cs.CONNECTING]
    with pytest.raises(RuntimeError):
        cs.CONNECTED.check(cs.CONNECTING)  # a loss is "reconnecting", never "connecting"
    with pytest.raises(RuntimeError):
        cs.CLOSED.check(cs.CONNECTED)
    assert cs.AUTH_FAILED.final and cs.CLOSED.final and not cs.RECONNECTING.final


def test_every_request_type_has_a_reply_row() -> None:
    from zchat.client.core import _ROWS

    assert set(m.REQUESTS) == set(_ROWS)


def test_attempts_after_a_loss_stay_reconnecting_and_count_the_queue() -> None:
    core = ready()
    core.command("unsent", T0)
    lost = core.tick(T0 + TIMEOUT + 1)
    state = shown(lost)[0]
    assert isinstance(state, StateChange)
    assert (state.state, state.queued) == ("reconnecting", 1)
    assert "1 message(s) wait to be sent" in state.text
    again = core.connecting(EP, T0 + 20)
    first = shown(again)[0]
    assert isinstance(first, StateChange) and first.state == "reconnecting"


def test_a_dropped_connection_reconnects_at_once() -> None:
    core = ready()
    actions = core.link_down(T0 + 1)
    assert any(isinstance(a, Reconnect) for a in actions)
    assert core.state == "reconnecting"
    assert core.link_down(T0 + 2) == []  # only once


def test_store_unavailable_keeps_the_message_and_resends_after_retry_after() -> None:
    """Issue 10: any error with retry_after > 0 is a wait, not a refusal; one notice."""
    core = ready()
    says = [the(core.command(f"line {i}", T0), m.Say) for i in range(2)]
    out = core.on_direct(m.Error(says[0].rid, "store_unavailable", "disk full", 2.0), T0)
    assert [type(e).__name__ for e in shown(out)] == ["Problem"]
    assert "store_unavailable" in lines(out)[0] and "kept" in lines(out)[0]
    again = core.on_direct(m.Error(says[1].rid, "store_unavailable", "disk full", 2.0), T0)
    assert shown(again) == []  # one notice per episode
    assert list(core.outbox) == [s.id for s in says]
    assert core.tick(T0 + 1) == []
    resent = [r for r in reqs(core.tick(T0 + 2)) if isinstance(r, m.Say)]
    assert [r.id for r in resent] == [s.id for s in says]
    core.on_direct(m.Ack(resent[0].rid, resent[0].id, 1), T0 + 2)
    # Went through: a later wait is a new episode, told again.
    third = the(core.command("line 3", T0 + 3), m.Say)
    out = core.on_direct(m.Error(third.rid, "store_unavailable", "disk full", 2.0), T0 + 3)
    assert len(shown(out)) == 1


def test_calls_with_a_tag_are_answered_by_tag() -> None:
    from zchat.client.core import Done, Failed

    core = ready()
    say = the(core.say("lobby", "hi", T0, tag=7), m.Say)
    done = core.on_direct(m.Ack(say.rid, say.id, 4), T0)
    assert Done(7, m.Ack(say.rid, say.id, 4)) in done
    assert core.say("lobby", "", T0, tag=8) == [Failed(8, "empty", "message is empty")]
    who = the(core.ask(lambda rid: m.Who(rid, "lobby"), T0, tag=9), m.Who)
    answered = core.on_direct(m.Names(who.rid, "lobby", ["alice"]), T0)
    assert answered == [Done(9, m.Names(who.rid, "lobby", ["alice"]))]  # nothing shown
    refused = core.on_direct(
        m.Error(the(core.ask(m.Rooms, T0, tag=10), m.Rooms).rid, "not_member", "no"), T0
    )
    assert refused == [Failed(10, "not_member", "no")]


def test_a_join_call_is_answered_at_joined_even_across_a_reconnect() -> None:
    from zchat.client.core import Done

    core = ready()
    assert Subscribe(m.room_topic("dev")) in core.join("dev", T0, tag=3)
    core.tick(T0 + TIMEOUT + 1)  # lost before SYNCED
    hello = connect(core, T0 + 20)
    synced = sync(core, core.on_direct(welcome(hello.rid), T0 + 20), T0 + 20)
    joins = [r for r in reqs(synced) if isinstance(r, m.Join)]
    out: list[Action] = []
    for join in joins:
        out += core.on_direct(joined(join), T0 + 20)
    assert [a.tag for a in out if isinstance(a, Done)] == [3]


def test_an_api_call_in_flight_is_asked_again_after_a_reconnect() -> None:
    from zchat.client.core import Done

    core = ready()
    who = the(core.ask(lambda rid: m.Who(rid, "lobby"), T0, tag=5), m.Who)
    core.tick(T0 + TIMEOUT + 1)
    hello = connect(core, T0 + 20)
    synced = sync(core, core.on_direct(welcome(hello.rid), T0 + 20), T0 + 20)
    after = core.on_direct(joined(the(synced, m.Join)), T0 + 20)
    again = the(after, m.Who)
    assert again.rid != who.rid
    assert core.on_direct(m.Names(again.rid, "lobby", ["alice"]), T0 + 20)[-1] == Done(
        5, m.Names(again.rid, "lobby", ["alice"])
    )


def test_a_kicked_user_is_told_and_the_room_goes() -> None:
    from zchat.client.events import Kicked

    core = ready()
    out = core.on_broadcast(event(1, nick="alice", text="by bob: spam", kind="kick"), T0)
    told = shown(out)
    assert told == [Kicked("lobby", "alice", "by bob: spam", T0 + 1, 1)]
    assert "that is you" in told[0].plain()
    assert "lobby" not in core.rooms and core.current is None


def test_history_command_has_a_header_and_an_end() -> None:
    core = ready()
    hist = the(core.command("/history 2", T0), m.History)
    out = core.on_direct(m.Events(hist.rid, "lobby", [event(1), event(2)], 2), T0)
    assert lines(out)[0] == "-- history of #lobby: the last 2 event(s)"
    assert lines(out)[-1] == "-- end of history of #lobby"
    assert all(e.history for e in shown(out) if isinstance(e, Chat))


def test_leave_then_join_does_not_show_again_what_was_on_screen() -> None:
    core = ready()
    core.on_broadcast(event(1, text="seen before"), T0)
    core.command("/leave", T0)
    actions = core.command("/join lobby", T0)
    join = the(sync(core, actions, T0), m.Join)
    history = [event(1, text="seen before"), event(2, text="while away")]
    out = core.on_direct(joined(join, last=2, history=history), T0)
    assert chat_texts(out) == ["while away"]


def test_a_bad_nick_is_named_not_answered_with_usage() -> None:
    core = ready()
    out = lines(core.command("/nick bad nick!", T0))
    assert len(out) == 1 and out[0].startswith("!! invalid nick 'bad nick!'")


def test_ignore_hides_messages_and_dms_of_a_nick() -> None:
    core = ready()
    assert lines(core.command("/ignore bob", T0)) == [
        "-- ignoring bob: /unignore bob to see them again"
    ]
    assert chat_texts(core.on_broadcast(event(1, nick="Bob", text="noise"), T0)) == []
    assert core.rooms["lobby"].last == 1  # still counted: no gap fetch for it
    assert shown(core.on_direct(m.Dm("d1", "bob", "alice", "psst", T0, False, 1), T0)) == []
    assert chat_texts(core.on_broadcast(event(2, nick="carol", text="hi"), T0)) == ["hi"]
    assert lines(core.command("/ignore", T0)) == ["-- you ignore bob"]
    core.command("/unignore bob", T0)
    assert chat_texts(core.on_broadcast(event(3, nick="bob", text="back"), T0)) == ["back"]


def test_a_first_line_that_joins_keeps_the_default_room_out() -> None:
    core = make_core(room=None, lazy_room="lobby")
    connect(core)
    actions = core.command("/join ops", T0)
    assert list(core.rooms) == ["ops"] and actions == []


def test_a_first_chat_line_joins_the_default_room_first() -> None:
    core = make_core(room=None, lazy_room="lobby")
    connect(core)
    core.command("hello", T0)
    assert list(core.rooms) == ["lobby"] and list(core.outbox) == ["m1"]


def test_connecting_before_any_line_takes_the_default_room() -> None:
    core = make_core(room=None, lazy_room="lobby")
    hello = connect(core)
    actions = core.on_direct(welcome(hello.rid), T0)
    assert Subscribe(m.room_topic("lobby")) in actions
    core.command("/join ops", T0)
    assert list(core.rooms) == ["lobby", "ops"]


def test_new_commands_are_in_help() -> None:
    assert set(HELP) >= {"ignore", "unignore", "whois", "op", "deop", "search"}


# ------------------------------------------------ failover across brokers (§6.7)

A, B, C = "tcp://a.example:5555", "tcp://b.example:5555", "tcp://c.example:5555"


def brokers(*endpoints: str, **kwargs: object) -> ClientCore:
    """A core given several brokers, as the transport gives it (nothing connected yet)."""
    core = make_core(**kwargs)
    core.rotation = Rotation(endpoints or (A, B, C))
    return core


def dial(core: ClientCore, now: float) -> m.Hello:
    """What the transport does on Reconnect: a new DEALER at the rotation's endpoint."""
    return connect(core, now, core.rotation.current)


def reconnects(actions: Iterable[Action]) -> bool:
    return any(isinstance(a, Reconnect) for a in actions)


def test_the_first_endpoint_first_and_the_status_names_the_broker() -> None:
    core = brokers()
    hello = dial(core, T0)
    assert core.endpoint == A
    actions = core.on_direct(welcome(hello.rid), T0)
    state = shown(actions)[0]
    assert isinstance(state, StateChange)
    assert state.text == f"connected to {A} as alice"


def test_one_endpoint_says_connected_as_nick_as_before() -> None:
    core = brokers(A)
    hello = dial(core, T0)
    state = shown(core.on_direct(welcome(hello.rid), T0))[0]
    assert isinstance(state, StateChange) and state.text == "connected as alice"


def test_a_lost_broker_means_the_next_endpoint_at_once_with_the_same_session() -> None:
    """The heartbeat timeout on A: B at once; HELLO resumes with the token; the pub
    wildcard is B's host; the outbox goes again with the same ids after JOINED."""
    core = brokers()
    handshake(core, endpoint=A, last=3, history=[event(3)], pub="tcp://*:7000")
    assert core.pub == "tcp://a.example:7000"
    say = the(core.command("are you there?", T0 + 1), m.Say)
    lost = core.tick(T0 + 1 + TIMEOUT + 1)
    assert reconnects(lost) and core.rotation.current == B

    t = T0 + 17  # at once: no retry delay before the first try of the next endpoint
    hello = dial(core, t)
    assert (core.endpoint, hello.resume) == (B, "s1")
    actions = core.on_direct(welcome(hello.rid, pub="tcp://*:7000", resumed=True,
                                     rooms=["lobby"]), t)  # fmt: skip
    assert ConnectSub("tcp://b.example:7000") in actions
    state = shown(actions)[0]
    assert isinstance(state, StateChange) and state.text == f"connected to {B} as alice"
    join = the(sync(core, actions, t), m.Join)
    resent = the(core.on_direct(joined(join, last=3), t), m.Say)
    assert (resent.id, resent.text) == (say.id, say.text)


@pytest.mark.parametrize(
    "lose",
    [
        lambda core, t: core.tick(t + TIMEOUT + 1),
        lambda core, t: core.on_broadcast(m.Shutdown("restart"), t),
        lambda core, t: core.link_down(t),
    ],
    ids=["heartbeat timeout", "shutdown", "link down"],
)
def test_every_loss_moves_round_robin(lose: Callable[[ClientCore, float], list[Action]]) -> None:
    core = brokers()
    now = T0
    for expected in (A, B, C, A, B):
        handshake(core, now, endpoint=core.rotation.current)
        assert core.endpoint == expected
        assert reconnects(lose(core, now))
        now += 20


def test_not_registered_tries_the_same_broker_first() -> None:
    """The broker answered (libzmq had reconnected the DEALER): it is alive."""
    core = brokers()
    handshake(core, endpoint=A)
    say = the(core.command("hi", T0), m.Say)
    assert reconnects(core.on_direct(m.Error(say.rid, "not_registered", "say HELLO"), T0))
    assert core.rotation.current == A


def test_no_welcome_moves_on_and_the_delay_doubles_once_per_round() -> None:
    core = brokers()
    now = T0
    dial(core, now)
    tries = []
    for _ in range(18):
        delay = core.next_deadline() - now
        tries.append((core.endpoint, delay))
        assert core.tick(now + delay - 0.01) == []
        assert core.tick(now + delay) == [Reconnect("no answer yet")]
        now += delay
        dial(core, now)
    rounds = [2.0, 4.0, 8.0, 16.0, 32.0, 32.0]
    assert tries == [(ep, d) for d in rounds for ep in (A, B, C)]


def test_one_endpoint_retries_as_before() -> None:
    core = brokers(A)
    now = T0
    dial(core, now)
    for interval in (2.0, 4.0, 8.0, 16.0, 32.0, 32.0):
        assert core.next_deadline() == now + interval
        assert core.unreachable(now) == []  # nothing else to try: wait it out
        assert core.tick(now + interval) == [Reconnect("no answer yet")]
        now += interval
        assert dial(core, now) and core.endpoint == A


def test_a_refused_endpoint_gives_way_at_once_except_the_last_of_a_round() -> None:
    core = brokers()
    dial(core, T0)
    assert core.unreachable(T0 + 0.1) == [Reconnect(f"nothing answers at {A}")]
    dial(core, T0 + 0.1)
    assert core.unreachable(T0 + 0.2) == [Reconnect(f"nothing answers at {B}")]
    dial(core, T0 + 0.2)
    assert core.unreachable(T0 + 0.3) == []  # C closes the round: no tight loop
    assert core.next_deadline() == T0 + 0.2 + 2.0
    assert core.tick(T0 + 2.2) == [Reconnect("no answer yet")]
    dial(core, T0 + 2.2)
    assert (core.endpoint, core.next_deadline()) == (A, T0 + 2.2 + 4.0)  # round 2


def test_after_a_loss_the_round_ends_with_the_broker_that_was_lost() -> None:
    core = brokers()
    handshake(core, endpoint=A)
    core.link_down(T0 + 1)
    for expected in (B, C):
        dial(core, T0 + 1)
        assert core.endpoint == expected
        assert reconnects(core.unreachable(T0 + 1))
    dial(core, T0 + 1)
    assert core.endpoint == A and core.unreachable(T0 + 1) == []


def test_a_connection_dropped_before_welcome_counts_as_refused() -> None:
    core = brokers()
    dial(core, T0)
    assert reconnects(core.link_down(T0)) and core.rotation.current == B


def test_refusals_while_connected_change_nothing() -> None:
    core = brokers()
    handshake(core, endpoint=A)
    assert core.unreachable(T0 + 1) == []
    assert core.rotation.current == A


def test_a_welcome_ends_the_backoff() -> None:
    core = brokers()
    now = T0
    hello = dial(core, now)
    for _ in range(4):  # a round and one more: the delay is 4 s now
        now = core.next_deadline()
        assert reconnects(core.tick(now))
        hello = dial(core, now)
    assert core.rotation.delay == 4.0
    core.on_direct(welcome(hello.rid), now)
    assert core.rotation.delay == 2.0
    core.link_down(now + 1)
    dial(core, now + 1)
    assert core.next_deadline() == now + 1 + 2.0


def test_stats_without_a_session_asks_the_next_broker_when_one_is_silent() -> None:
    core = brokers(A, B, register=False)
    core.connecting(core.rotation.current, T0)
    asked = the(core.ask(m.Stats, T0, tag=7), m.Stats)
    assert core.next_deadline() == T0 + 2.0
    assert core.tick(T0 + 2.0) == [Reconnect("no answer yet")]
    again = the(core.connecting(core.rotation.current, T0 + 2.0), m.Stats)
    assert again.rid != asked.rid and core.endpoint == B
    answer = core.on_direct(m.StatsReply(again.rid, T0, T0, 0, 0, []), T0 + 2.1)
    assert [a.tag for a in answer if isinstance(a, Done)] == [7]


def test_stats_without_a_session_skips_a_refusing_broker() -> None:
    core = brokers(A, B, register=False)
    core.connecting(core.rotation.current, T0)
    core.ask(m.Stats, T0, tag=7)
    assert core.unreachable(T0 + 0.1) == [Reconnect(f"nothing answers at {A}")]
    assert the(core.connecting(core.rotation.current, T0 + 0.1), m.Stats)


def test_stats_with_one_broker_waits_for_it_as_before() -> None:
    core = brokers(A, register=False)
    core.connecting(A, T0)
    core.ask(m.Stats, T0, tag=7)
    assert core.tick(T0 + 60) == []
    assert core.next_deadline() == T0 + 3600.0


# ---------------------------------------------- BEAT.epoch (§6.7): a reset store


def test_a_beat_with_another_epoch_reconnects_to_the_same_broker_and_starts_over() -> None:
    """A shared store was reset under a running broker: its BEATs carry the new
    epoch. The client takes it as a lost connection, tries the same endpoint
    first, and the new WELCOME's epoch resets its positions with the notice."""
    core = brokers()
    handshake(core, endpoint=A, last=40, history=[event(40)])
    clock = iter([T0 + 1, T0 + 1.5, T0 + 2, T0 + 2.5])  # the injected clock
    assert core.on_broadcast(m.Beat(1, T0, "e1"), next(clock)) == []
    assert core.on_broadcast(m.Beat(2, T0, ""), next(clock)) == []  # an older broker
    lost = core.on_broadcast(m.Beat(3, T0, "e2"), next(clock))
    assert reconnects(lost)
    state = shown(lost)[0]
    assert isinstance(state, StateChange) and state.state == "reconnecting"
    assert "history was reset" in state.text
    assert core.rotation.current == A  # the broker is fine: same endpoint first

    now = next(clock)
    hello = dial(core, now)
    assert core.endpoint == A and hello.resume == "s1"
    actions = core.on_direct(welcome(hello.rid, epoch="e2", resumed=True, rooms=["lobby"]), now)
    problems = [e.text for e in shown(actions) if isinstance(e, Problem)]
    assert problems == ["the broker's history was reset; positions start over"]
    assert core.rooms["lobby"].last == 0 and core.epoch == "e2"
    join = the(sync(core, actions, now), m.Join)
    assert join.history == 20  # positions start over: the room's history again
    after = core.on_direct(joined(join, last=2, history=[event(1), event(2)]), now)
    assert chat_texts(after) == ["line 1", "line 2"]
    assert core.on_broadcast(m.Beat(4, T0, "e2"), now + 1) == []


def test_a_beat_with_another_epoch_on_one_broker_reconnects_too() -> None:
    core = ready()
    assert reconnects(core.on_broadcast(m.Beat(1, T0, "e9"), T0 + 1))
    assert core.state == "reconnecting"
