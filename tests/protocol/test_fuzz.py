"""Property tests for the codec (docs/protocol.md §2 framing, §3 rules, §7 errors).

Two promises hold whatever a peer sends:

* the ``decode_*`` functions return a message or raise ``ProtocolError``;
  nothing else escapes, and a message they return is valid (it encodes again);
* ``decode(encode(m)) == m`` for every message that can be built.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zchat.protocol import (
    PROTOCOL,
    ProtocolError,
    decode_broadcast,
    decode_from_broker,
    decode_request,
    encode,
    rules,
)
from zchat.protocol import messages as m

# No example database: a run does not depend on what earlier runs found (a
# failure prints its falsifying example and seed). Hypothesis still keeps its
# own caches in .hypothesis/, which ignores itself in git.
FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ROUND_TRIP = settings(max_examples=60, deadline=None, database=None)

DECODERS: tuple[Callable[[list[bytes]], m.Message], ...] = (
    decode_request,
    decode_from_broker,
    decode_broadcast,
)
ALL_CLASSES: tuple[type[m.Message], ...] = (*m.REQUESTS, *m.FROM_BROKER, *m.BROADCASTS)


def valid(check: Callable[[Any], object]) -> Callable[[Any], bool]:
    """A filter that keeps what ``check`` accepts: strategies go through the rules."""

    def keep(value: Any) -> bool:
        try:
            check(value)
        except ProtocolError:
            return False
        return True

    return keep


def decoder_for(msg: m.Message) -> Callable[[list[bytes]], m.Message]:
    if isinstance(msg, m.Request):
        return decode_request
    if isinstance(msg, m.Broadcast):
        return decode_broadcast
    return decode_from_broker


# ------------------------------------------------------------- valid messages

rids = st.integers(0, 2**53 - 1)
wire_ints = st.integers(-(2**63), 2**64 - 1)  # all MessagePack can carry
counters = st.integers(0, 2**53)
floats = st.floats(allow_nan=False)  # NaN != NaN would break ==, not the codec
any_text = st.text(max_size=40)  # unchecked broker-side strings; never surrogates

nicks = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}\Z").filter(valid(rules.check_nick))
rooms = st.from_regex(r"\A#?[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}\Z").filter(
    valid(rules.normalize_room)
)
_sayable = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"), include_characters="\t")
texts = st.one_of(
    st.text(_sayable, min_size=1, max_size=80),
    # Up against MAX_TEXT_BYTES with 1-4 byte characters.
    st.tuples(st.sampled_from("xé€\U0001f600"), st.integers(0, 8)).map(
        lambda c: c[0] * (rules.MAX_TEXT_BYTES // len(c[0].encode()) - c[1])
    ),
).filter(valid(rules.check_text))
topics = st.text(_sayable, max_size=rules.MAX_TOPIC_CHARS).filter(valid(rules.check_topic))
msg_ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)
tokens = st.text(string.ascii_letters + string.digits, min_size=1, max_size=64)

events = st.builds(
    m.Event,
    room=rooms,
    seq=st.integers(1, 2**64 - 1),
    kind=st.sampled_from(sorted(m.EVENT_KINDS)),
    nick=nicks,
    text=st.one_of(texts, st.just("")),
    ts=floats,
    id=msg_ids,
)

STRATEGIES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    m.Hello: st.builds(
        m.Hello, rid=rids, nick=nicks, resume=st.text(max_size=64), id=st.just("") | msg_ids
    ),
    m.Join: st.builds(
        m.Join, rid=rids, room=rooms, history=st.integers(0, 500), rejoin=st.booleans()
    ),
    m.Leave: st.builds(m.Leave, rid=rids, room=rooms),
    m.Say: st.builds(m.Say, rid=rids, room=rooms, id=msg_ids, text=texts, action=st.booleans()),
    m.Tell: st.builds(m.Tell, rid=rids, to=nicks, id=msg_ids, text=texts, action=st.booleans()),
    m.Nick: st.builds(m.Nick, rid=rids, nick=nicks),
    m.Topic: st.builds(m.Topic, rid=rids, room=rooms, topic=st.none() | topics),
    m.Who: st.builds(m.Who, rid=rids, room=rooms),
    m.Rooms: st.builds(m.Rooms, rid=rids),
    m.History: st.builds(
        m.History,
        rid=rids,
        room=rooms,
        after=counters,
        before=counters,
        limit=st.integers(0, rules.MAX_HISTORY),
    ),
    m.Seen: st.builds(m.Seen, rid=rids, seq=st.integers(0, 2**53 - 1)),
    m.Stats: st.builds(m.Stats, rid=rids),
    m.Ping: st.builds(m.Ping, rid=rids),
    m.Bye: st.builds(m.Bye, rid=rids, reason=topics),
    m.Away: st.builds(m.Away, rid=rids, text=topics),
    m.Whois: st.builds(m.Whois, rid=rids, nick=nicks),
    m.Op: st.builds(m.Op, rid=rids, room=rooms, nick=nicks, op=st.booleans()),
    m.Search: st.builds(
        m.Search,
        rid=rids,
        room=rooms,
        text=topics.filter(str.strip),
        limit=st.integers(0, rules.MAX_HISTORY),
    ),
    m.Welcome: st.builds(
        m.Welcome,
        rid=rids,
        nick=nicks,
        session=any_text,
        pub=any_text,
        epoch=any_text,
        time=floats,
        heartbeat=floats,
        timeout=floats,
        resumed=st.booleans(),
        rooms=st.lists(rooms, max_size=5),
        boot=st.just("") | tokens,
    ),
    m.Ok: st.builds(m.Ok, rid=rids),
    m.Joined: st.builds(
        m.Joined,
        rid=rids,
        room=rooms,
        topic=any_text,
        members=st.lists(nicks, max_size=5),
        last=wire_ints,
        history=st.lists(events, max_size=3),
    ),
    m.Ack: st.builds(
        m.Ack, rid=rids, id=msg_ids, seq=wire_ints, dup=st.booleans(), away=any_text
    ),
    m.Names: st.builds(
        m.Names,
        rid=rids,
        room=rooms,
        members=st.lists(nicks, max_size=5),
        away=st.lists(nicks, max_size=2),
    ),
    m.WhoisIs: st.builds(
        m.WhoisIs,
        rid=rids,
        nick=nicks,
        online=st.booleans(),
        rooms=st.lists(rooms, max_size=3),
        away=any_text,
        idle=floats,
        seen=floats,
        key=any_text,
    ),
    m.RoomList: st.builds(
        m.RoomList,
        rid=rids,
        rooms=st.lists(
            st.builds(m.RoomInfo, name=any_text, members=wire_ints, topic=any_text),
            max_size=4,
        ),
    ),
    m.TopicIs: st.builds(m.TopicIs, rid=rids, room=rooms, topic=any_text),
    m.Events: st.builds(
        m.Events,
        rid=rids,
        room=rooms,
        events=st.lists(events, max_size=3),
        last=wire_ints,
    ),
    m.Pong: st.builds(m.Pong, rid=rids, time=floats, beat=wire_ints),
    m.StatsReply: st.builds(
        m.StatsReply,
        rid=rids,
        started=floats,
        time=floats,
        clients=wire_ints,
        rooms=wire_ints,
        counters=st.lists(st.builds(m.Stat, name=any_text, value=wire_ints), max_size=5),
    ),
    m.Error: st.builds(m.Error, rid=rids, code=any_text, text=any_text, retry_after=floats),
    m.Dm: st.builds(
        m.Dm,
        id=msg_ids,
        sender=nicks,
        to=nicks,
        text=texts,
        ts=floats,
        action=st.booleans(),
    ),
    m.Event: events,
    m.Invited: st.builds(m.Invited, room=rooms, by=nicks),
    m.PrivateEvent: st.builds(m.PrivateEvent, event=events),
    m.Invite: st.builds(m.Invite, rid=rids, room=rooms, nick=nicks),
    m.Kick: st.builds(m.Kick, rid=rids, room=rooms, nick=nicks, reason=topics),
    m.Ban: st.builds(m.Ban, rid=rids, room=rooms, nick=nicks, ban=st.booleans()),
    m.Beat: st.builds(m.Beat, n=wire_ints, time=floats),
    m.Shutdown: st.builds(m.Shutdown, reason=any_text),
    m.Synced: st.builds(m.Synced, token=tokens),
}
any_message = st.one_of(*STRATEGIES.values())


def test_every_message_class_has_a_strategy() -> None:
    """A new message class must get a strategy, and so a round-trip property."""
    assert set(STRATEGIES) == set(ALL_CLASSES)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip(cls: type[m.Message], data: st.DataObject) -> None:
    """§2: ``decode(encode(m)) == m`` for any message that can be built."""
    msg = data.draw(STRATEGIES[cls])
    assert type(msg) is cls
    frames = encode(msg)
    assert frames[1] == cls.TYPE
    back = decoder_for(msg)(frames)
    assert type(back) is cls
    assert back == msg
    assert encode(back) == frames


# ------------------------------------------------------------- hostile input

FIELD_NAMES = sorted(
    {name for cls in ALL_CLASSES for name in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    | {"name", "members", "topic"}
)
TYPE_NAMES = sorted(cls.TYPE for cls in ALL_CLASSES)
HEADS = [PROTOCOL, m.CONTROL_TOPIC, b"#dev\x00", b"#dev", b"~abc\x00", b"", b"ZCHAT/2"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    wire_ints,
    st.integers(-(2**53), 2**53),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["dev", "#Dev", "alice", "msg", "join", "x" * 70, "a\x1bb"]),
    st.binary(max_size=20),
)
packable = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=25,
)
# Maps keyed mostly by real field names, so decoding gets past the map check
# and into the field checks and rules.
field_maps = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.binary(max_size=4), packable, max_size=8
)


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


bodies = st.one_of(
    st.binary(max_size=64),
    packable.map(_pack),
    field_maps.map(_pack),
)
heads = st.sampled_from(HEADS) | st.binary(max_size=12)
type_frames = st.sampled_from(TYPE_NAMES) | st.binary(max_size=10)


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    """The frames of a valid message, damaged in one of several ways."""
    frames = encode(draw(any_message))
    which = draw(st.integers(0, 2))
    frame = bytearray(frames[which])
    how = draw(st.sampled_from(["flip", "cut", "insert", "swap"]))
    if how == "swap":
        frames[which] = draw(heads | type_frames | bodies)
        return frames
    pos = draw(st.integers(0, len(frame)))
    if how == "flip" and frame:
        pos = min(pos, len(frame) - 1)
        frame[pos] ^= draw(st.integers(1, 255))
    elif how == "cut":
        del frame[pos:]
    else:
        frame[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    frames[which] = bytes(frame)
    return frames


@st.composite
def tweaked(draw: st.DrawFn) -> list[bytes]:
    """The frames of a valid message with one body field dropped, replaced or
    added: well-formed MessagePack that reaches the field checks and rules.
    """
    frames = encode(draw(any_message))
    fields = msgpack.unpackb(frames[2], raw=False)
    name = draw(st.sampled_from(sorted(fields)) | st.sampled_from(FIELD_NAMES))
    if draw(st.booleans()):
        fields.pop(name, None)
    else:
        fields[name] = draw(packable)
    frames[2] = _pack(fields)
    return frames


frame_lists = st.one_of(
    st.lists(st.binary(max_size=32), max_size=5),
    st.tuples(heads, type_frames, bodies).map(list),
    st.tuples(st.just(PROTOCOL), type_frames, bodies).map(list),
    st.lists(st.one_of(heads, type_frames, bodies), max_size=5),
    mutated(),
    tweaked(),
)


#: The codes the protocol layer itself raises (§7); the broker adds its own.
ERROR_CODES = frozenset(
    {
        "bad_frame",
        "bad_version",
        "bad_utf8",
        "unknown_type",
        "bad_request",
        "too_long",
        "bad_nick",
        "bad_room",
        "empty",
        "bad_text",
    }
)


def _check_decoded(decode: Callable[[list[bytes]], m.Message], msg: m.Message) -> None:
    """A decoded message is a valid one: it encodes, and decodes to itself."""
    assert isinstance(msg, m.Message)
    frames = encode(msg)
    again = decode(frames)
    assert type(again) is type(msg)
    assert encode(again) == frames  # bytes, so a NaN field compares equal


@FUZZ
@given(frames=frame_lists)
def test_decoders_return_a_message_or_raise_protocol_error(frames: list[bytes]) -> None:
    """§2, §7: on any frames, every decoder returns a message or raises
    ProtocolError with a documented code; nothing else escapes.
    """
    for decode in DECODERS:
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES, exc.code
            assert exc.rid is None or (type(exc.rid) is int and 0 <= exc.rid < 2**53)
        else:
            _check_decoded(decode, msg)


shallow_maps = st.dictionaries(
    st.sampled_from(FIELD_NAMES),
    scalars | st.lists(scalars, max_size=3) | st.lists(st.just({}), max_size=2),
    max_size=8,
)


@FUZZ
@given(kind=st.sampled_from(TYPE_NAMES), fields=shallow_maps, rid=rids)
def test_field_checks_keep_the_rid(kind: bytes, fields: dict[Any, Any], rid: int) -> None:
    """§4, §7: with a valid rid in the body, a request error always carries it."""
    raw = _pack({**fields, "rid": rid})
    try:
        msg = decode_request([PROTOCOL, kind, raw])
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        assert exc.rid == rid
    else:
        assert isinstance(msg, m.Request)
        assert msg.rid == rid


# Every code point, lone surrogates and controls included: the rules, not the
# strategy, decide what is allowed. Hypothesis favours ASCII, so the awkward
# characters are also offered by name or they would almost never appear.
awkward = st.sampled_from(
    "\ud800\udcff\x00\x1b\n\r\t \x85\x9b\u2028\u2029\u202e\u200b\ufeffaA#.-_é\u212a\u0130\U0001f600"
)
raw_text = st.text(st.characters(exclude_categories=()) | awkward, max_size=30)


@FUZZ
@given(text=raw_text, nick=raw_text, room=raw_text)
def test_what_the_rules_admit_can_be_sent(text: str, nick: str, room: str) -> None:
    """§3: a value the rules accept always encodes; one they refuse raises
    ProtocolError. A message that can be built can be sent.
    """
    built: list[m.Message] = []
    for build in (
        lambda: m.Say(rid=1, room="dev", id="x", text=text),
        lambda: m.Topic(rid=1, room="dev", topic=text),
        lambda: m.Bye(rid=1, reason=text),
        lambda: m.Hello(rid=1, nick=nick),
        lambda: m.Join(rid=1, room=room),
    ):
        try:
            built.append(build())
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES
    for msg in built:
        assert decode_request(encode(msg)) == msg
