"""Frames to messages and back (docs/protocol.md §2 framing, §4 requests,
§5 broadcasts, §7 error codes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from zchat.protocol import (
    PROTOCOL,
    ProtocolError,
    decode_broadcast,
    decode_from_broker,
    decode_request,
    encode,
)
from zchat.protocol import messages as m
from zchat.protocol.codec import pack_body
from zchat.protocol.rules import MAX_BODY_BYTES, MAX_TEXT_BYTES

Decoder = Callable[[list[bytes]], m.Message]

_EVENT = m.Event(
    room="dev", seq=3, kind="msg", nick="alice", text="hi \U0001f44b", ts=1.5, id="c1-1"
)

#: One representative instance of every message class on the wire.
SAMPLES: dict[type[m.Message], m.Message] = {
    # requests (§4)
    m.Hello: m.Hello(rid=1, nick="Alice", resume="tok123"),
    m.Join: m.Join(rid=2, room="#Dev", history=5),
    m.Leave: m.Leave(rid=3, room="dev"),
    m.Say: m.Say(rid=4, room="dev", id="c1-1", text="héllo\tworld \U0001f600"),
    m.Tell: m.Tell(rid=5, to="bob", id="c1-2", text="psst", action=True),
    m.Nick: m.Nick(rid=6, nick="alice2"),
    m.Topic: m.Topic(rid=7, room="dev", topic="release friday"),
    m.Who: m.Who(rid=8, room="ops"),
    m.Rooms: m.Rooms(rid=9),
    m.History: m.History(rid=10, room="dev", after=0, before=100, limit=25),
    m.Seen: m.Seen(rid=10, seq=4),
    m.Stats: m.Stats(rid=13),
    m.Invite: m.Invite(rid=14, room="#secret", nick="bob"),
    m.Kick: m.Kick(rid=15, room="dev", nick="troll", reason="spam"),
    m.Ban: m.Ban(rid=16, room="dev", nick="troll", ban=False),
    m.Ping: m.Ping(rid=11),
    m.Bye: m.Bye(rid=12, reason="lunch"),
    m.Away: m.Away(rid=17, text="lunch"),
    m.Whois: m.Whois(rid=18, nick="bob"),
    m.Op: m.Op(rid=19, room="dev", nick="bob", op=False),
    m.Search: m.Search(rid=20, room="dev", text="deploy friday", limit=5),
    # replies and pushes
    m.Welcome: m.Welcome(
        rid=1,
        nick="Alice",
        session="s-abc",
        pub="tcp://*:5556",
        epoch="e1",
        time=1700000000.25,
        heartbeat=1.0,
        timeout=5.0,
        resumed=True,
        rooms=["dev", "ops"],
        boot="b1",
    ),
    m.Ok: m.Ok(rid=3),
    m.Joined: m.Joined(
        rid=2,
        room="dev",
        topic="release friday",
        members=["alice", "bob"],
        last=3,
        history=[
            m.Event(room="dev", seq=2, kind="join", nick="bob", text="", ts=1.0, id="j"),
            _EVENT,
        ],
    ),
    m.Ack: m.Ack(rid=4, id="c1-1", seq=4, dup=True, away="lunch"),
    m.Names: m.Names(rid=8, room="ops", members=["carol", "dave"], away=["dave"]),
    m.WhoisIs: m.WhoisIs(
        rid=18, nick="bob", online=True, rooms=["dev"], away="lunch", idle=12.5, key="ab12"
    ),
    m.RoomList: m.RoomList(
        rid=9,
        rooms=[m.RoomInfo(name="dev", members=2, topic="t"), m.RoomInfo("ops", 1, "")],
    ),
    m.TopicIs: m.TopicIs(rid=7, room="dev", topic="release friday"),
    m.Events: m.Events(rid=10, room="dev", events=[_EVENT], last=3),
    m.Pong: m.Pong(rid=11, time=1700000000.5, beat=42),
    m.StatsReply: m.StatsReply(12, 1.5, 9.5, 3, 2, [m.Stat("messages", 7), m.Stat("dms", 0)]),
    m.Error: m.Error(rid=4, code="rate_limited", text="slow down", retry_after=0.5),
    m.Dm: m.Dm(id="c1-2", sender="alice", to="bob", text="psst", ts=2.0, action=True),
    m.Invited: m.Invited(room="secret", by="alice"),
    m.PrivateEvent: m.PrivateEvent(m.Event("secret", 3, "msg", "alice", "hush", 2.0, "e-3")),
    # broadcasts (§5)
    m.Event: _EVENT,
    m.Beat: m.Beat(n=42, time=1700000000.75),
    m.Shutdown: m.Shutdown(reason="maintenance"),
    m.Synced: m.Synced(token="abc123"),
}


def decoder_for(msg: m.Message) -> Decoder:
    """The decode function for the path ``msg`` travels (§2)."""
    if isinstance(msg, m.Request):
        return decode_request
    if isinstance(msg, m.Broadcast):
        return decode_broadcast
    return decode_from_broker


def body(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def error_of(decode: Decoder, frames: list[bytes]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    return info.value


def req(kind: bytes, raw: bytes) -> list[bytes]:
    return [PROTOCOL, kind, raw]


# ------------------------------------------------------------------ round trip


def test_every_message_class_has_a_sample() -> None:
    """A new message class must get a sample here, and so a round-trip test."""
    every = {*m.REQUESTS, *m.FROM_BROKER, *m.BROADCASTS}
    assert set(SAMPLES) == every
    assert len(every) == len(m.REQUESTS) + len(m.FROM_BROKER) + len(m.BROADCASTS)


def test_type_frames_are_unique() -> None:
    """§2: the TYPE frame alone names the class within a path, and across paths."""
    types = [cls.TYPE for cls in SAMPLES]
    assert len(set(types)) == len(types)
    assert all(t and t.isupper() for t in types)


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_round_trip(cls: type[m.Message]) -> None:
    """§2: ``decode(encode(m)) == m`` for every message, on its own path."""
    msg = SAMPLES[cls]
    frames = encode(msg)
    back = decoder_for(msg)(frames)
    assert type(back) is cls
    assert back == msg


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_frame_shape(cls: type[m.Message]) -> None:
    """§2: ``[PROTOCOL, TYPE, body]`` direct, ``[topic, TYPE, body]`` broadcast;
    the body is a MessagePack map of the fields.
    """
    msg = SAMPLES[cls]
    frames = encode(msg)
    assert len(frames) == 3
    assert all(type(f) is bytes for f in frames)
    head, kind, raw = frames
    assert kind == cls.TYPE
    if isinstance(msg, m.Broadcast):
        assert head == msg.topic
        assert head.endswith(b"\x00")
    else:
        assert head == PROTOCOL == b"ZCHAT/1"
    assert type(msgpack.unpackb(raw, raw=False)) is dict


def test_request_rooms_are_normalised_on_both_ends() -> None:
    """§3.2: ``#Dev`` is sent as ``dev``, so the decoded message equals the built one."""
    frames = encode(m.Join(rid=1, room="#Dev"))
    assert msgpack.unpackb(frames[2])["room"] == "dev"
    # A peer that sends the un-normalised form still decodes to the canonical one.
    raw = body(rid=1, room="#DeV", history=20)
    assert decode_request(req(b"JOIN", raw)) == m.Join(rid=1, room="dev")


def test_defaults_may_be_omitted() -> None:
    """§4: fields with a default may be left out of the body."""
    assert decode_request(req(b"JOIN", body(rid=1, room="dev"))) == m.Join(1, "dev", 20)
    assert decode_request(req(b"TOPIC", body(rid=2, room="dev"))) == m.Topic(2, "dev")
    assert decode_request(req(b"TOPIC", body(rid=2, room="dev", topic=None))) == m.Topic(
        2, "dev", None
    )


def test_int_is_accepted_where_float_expected() -> None:
    """§2: a float field accepts a MessagePack int (many encoders shrink 2.0 to 2)."""
    msg = decode_from_broker([PROTOCOL, b"PONG", body(rid=1, time=5, beat=1)])
    assert isinstance(msg, m.Pong)
    assert type(msg.time) is float and msg.time == 5.0


def test_unknown_extra_fields_are_ignored() -> None:
    """§2: a newer peer may add fields; an older one ignores them."""
    raw = body(rid=1, nick="alice", future_field=[1, {"x": b"\x00"}], zz=None)
    assert decode_request(req(b"HELLO", raw)) == m.Hello(rid=1, nick="alice")
    nested = msgpack.packb(
        {
            "rid": 9,
            "rooms": [{"name": "dev", "members": 1, "topic": "", "extra": True}],
        }
    )
    assert decode_from_broker([PROTOCOL, b"ROOMLIST", nested]) == m.RoomList(
        9, [m.RoomInfo("dev", 1, "")]
    )


# --------------------------------------------------------------------- topics


def test_room_topic_ends_with_nul() -> None:
    """§5: a room's topic is ``#`` name NUL."""
    assert m.room_topic("dev") == b"#dev\x00"
    assert encode(_EVENT)[0] == b"#dev\x00"


def test_room_topic_is_not_a_prefix_of_a_longer_room() -> None:
    """§5: SUB matches by prefix; the NUL keeps ``#dev`` from receiving ``#devops``."""
    dev = m.room_topic("dev")
    devops = m.room_topic("devops")
    assert not devops.startswith(dev)
    assert not dev.startswith(devops)
    devops_frames = encode(m.Event("devops", 1, "msg", "bob", "hi", 0.0, "x"))
    assert not devops_frames[0].startswith(dev)
    assert devops_frames[0].startswith(devops)


def test_control_and_sync_topics() -> None:
    """§5: heartbeats and shutdown on the control topic, SYNCED on its own token."""
    assert encode(SAMPLES[m.Beat])[0] == m.CONTROL_TOPIC == b"!\x00"
    assert encode(SAMPLES[m.Shutdown])[0] == m.CONTROL_TOPIC
    assert encode(m.Synced("abc"))[0] == b"~abc\x00"
    # No room topic can be mistaken for a control or sync topic.
    assert not m.room_topic("x").startswith((b"!", b"~"))


def test_broadcast_with_mismatched_topic_is_bad_frame() -> None:
    """§5: a broadcast whose topic frame disagrees with its body is ``bad_frame``."""
    frames = encode(_EVENT)
    frames[0] = m.room_topic("devops")
    assert error_of(decode_broadcast, frames).code == "bad_frame"
    beat = encode(SAMPLES[m.Beat])
    beat[0] = b"#dev\x00"
    assert error_of(decode_broadcast, beat).code == "bad_frame"
    synced = encode(m.Synced("abc"))
    synced[0] = b"~abd\x00"
    assert error_of(decode_broadcast, synced).code == "bad_frame"
    no_nul = encode(_EVENT)
    no_nul[0] = b"#dev"
    assert error_of(decode_broadcast, no_nul).code == "bad_frame"


# ------------------------------------------------------------------- framing


@pytest.mark.parametrize("decode", [decode_request, decode_from_broker, decode_broadcast])
@pytest.mark.parametrize("count", [0, 1, 2, 4, 5])
def test_wrong_frame_count_is_bad_frame(decode: Decoder, count: int) -> None:
    """§2: every message is exactly three frames."""
    frames = [PROTOCOL, b"PING", body(rid=1), b"", b"x"][:count]
    assert error_of(decode, frames).code == "bad_frame"


@pytest.mark.parametrize("head", [b"", b"ZCHAT/2", b"zchat/1", b"ZCHAT/1 ", b"ZCHAT/", b"#dev\x00"])
@pytest.mark.parametrize("decode", [decode_request, decode_from_broker])
def test_wrong_protocol_frame_is_bad_version(decode: Decoder, head: bytes) -> None:
    """§2, §7: the first direct frame must be exactly ``ZCHAT/1``."""
    assert error_of(decode, [head, b"PING", body(rid=1)]).code == "bad_version"


def test_frames_may_be_any_bytes_like() -> None:
    """§2: the decoders accept bytearray/memoryview frames as pyzmq may hand them."""
    frames = encode(SAMPLES[m.Say])
    assert decode_request([bytearray(f) for f in frames]) == SAMPLES[m.Say]
    assert decode_request([memoryview(f) for f in frames]) == SAMPLES[m.Say]


# --------------------------------------------------------------- unknown type


def test_unknown_type_recovers_rid() -> None:
    """§7: ``unknown_type`` keeps the rid so the client can match the ERROR."""
    err = error_of(decode_request, req(b"FROB", body(rid=77, x=1)))
    assert (err.code, err.rid) == ("unknown_type", 77)


@pytest.mark.parametrize("rid", [None, True, -1, 2**53, "7", 1.0])
def test_unknown_type_without_valid_rid(rid: object) -> None:
    """§7: no rid is invented when the body's rid is missing or not a valid rid."""
    raw = body() if rid is None else body(rid=rid)
    err = error_of(decode_request, req(b"FROB", raw))
    assert (err.code, err.rid) == ("unknown_type", None)


def test_type_frame_is_case_sensitive() -> None:
    """§2: ``ping`` is not ``PING``."""
    err = error_of(decode_request, req(b"ping", body(rid=3)))
    assert (err.code, err.rid) == ("unknown_type", 3)


@pytest.mark.parametrize("cls", m.REQUESTS, ids=lambda c: c.__name__)
def test_request_is_not_decoded_as_broker_message(cls: type[m.Request]) -> None:
    """§2: direction matters; a request on the broker's path is ``unknown_type``."""
    frames = encode(SAMPLES[cls])
    err = error_of(decode_from_broker, frames)
    assert (err.code, err.rid) == ("unknown_type", SAMPLES[cls].rid)
    # On the SUB path the PROTOCOL frame is just an unknown topic.
    assert error_of(decode_broadcast, frames).code == "unknown_type"


@pytest.mark.parametrize("cls", m.FROM_BROKER, ids=lambda c: c.__name__)
def test_broker_message_is_not_decoded_as_request(cls: type[m.Message]) -> None:
    """§2: a reply or push sent to the broker is ``unknown_type``."""
    assert error_of(decode_request, encode(SAMPLES[cls])).code == "unknown_type"


@pytest.mark.parametrize("cls", m.BROADCASTS, ids=lambda c: c.__name__)
def test_broadcast_is_not_decoded_on_the_direct_path(cls: type[m.Broadcast]) -> None:
    """§2, §5: broadcast frames start with a topic, not ``ZCHAT/1``."""
    frames = encode(SAMPLES[cls])
    assert error_of(decode_request, frames).code == "bad_version"
    assert error_of(decode_from_broker, frames).code == "bad_version"
    # Even with the right head, the type is unknown on the direct path.
    assert error_of(decode_from_broker, [PROTOCOL, *frames[1:]]).code == "unknown_type"


# ----------------------------------------------------------------------- body


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        b"\x82\xa3rid",  # truncated map
        b"\x81\xa3rid",  # map missing its value
        msgpack.packb({"rid": 1}) + b"\x00",  # trailing data
        msgpack.packb({"rid": 1}) * 2,
        b"\xdf\xff\xff\xff\xff",  # map claiming 4 billion entries
        b"\x81\x01\x02",  # int map key
        b"\x81\xc0\x02",  # nil map key
        b"\x81\x91\x01\x02",  # array map key
        b"\x81\xa1k\xc7\x03\xff\x00\x00\x00",  # malformed timestamp extension
        b"\x91" * 5000 + b"\xc0",  # nesting deeper than any message
        b"not msgpack at all",
    ],
)
def test_body_that_is_not_one_msgpack_value_is_bad_frame(raw: bytes) -> None:
    """§2, §7: the body must be exactly one MessagePack value."""
    assert error_of(decode_request, req(b"PING", raw)).code == "bad_frame"


@pytest.mark.parametrize("value", [None, 1, -1, 1.5, True, "rid", b"rid", [1], [{"rid": 1}], []])
def test_body_that_is_not_a_map_is_bad_frame(value: object) -> None:
    """§2, §7: the body is a MessagePack map."""
    raw = msgpack.packb(value, use_bin_type=True)
    assert error_of(decode_request, req(b"PING", raw)).code == "bad_frame"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x82\xa3rid\x01\xa4nick\xa2\xff\xfe",  # value
        b"\x82\xa3rid\x01\xa4nic\xc3\x01",  # truncated multi-byte in a key
        b"\x81\xa3r\xffd\x01",  # bad byte in a key
        b"\x82\xa3rid\x01\xa4nick\xa3\xed\xa0\x80",  # UTF-8-encoded surrogate
        b"\x82\xa3rid\x01\xa4nick\xa2\xc0\xaf",  # overlong encoding
    ],
)
def test_invalid_utf8_string_is_bad_utf8(raw: bytes) -> None:
    """§2, §7: MessagePack strings must be valid UTF-8."""
    assert error_of(decode_request, req(b"HELLO", raw)).code == "bad_utf8"


def test_binary_where_string_expected_is_bad_request() -> None:
    """§2: strings are MessagePack str, not bin."""
    err = error_of(decode_request, req(b"HELLO", body(rid=4, nick=b"alice")))
    assert (err.code, err.rid) == ("bad_request", 4)


def _fit(make: Callable[[int], bytes], size: int) -> bytes:
    """``make(n)`` for the ``n`` that gives exactly ``size`` bytes.

    ``make`` pads with ``n`` characters; the string header grows from 3 to 5
    bytes around 64 KiB, so step towards the target rather than compute it.
    """
    n = size
    for _ in range(10):
        raw = make(n)
        if len(raw) == size:
            return raw
        n -= len(raw) - size
    raise AssertionError(f"cannot make {size} bytes")


def _padded_body(size: int) -> bytes:
    """A valid HELLO body of exactly ``size`` bytes (unknown ``pad`` field)."""
    return _fit(lambda n: body(rid=1, nick="alice", pad="x" * n), size)


def test_body_over_limit_is_too_long() -> None:
    """§2, §7: a body frame may be at most MAX_BODY_BYTES."""
    at_limit = _padded_body(MAX_BODY_BYTES)
    assert decode_request(req(b"HELLO", at_limit)) == m.Hello(rid=1, nick="alice")
    over = _padded_body(MAX_BODY_BYTES + 1)
    assert error_of(decode_request, req(b"HELLO", over)).code == "too_long"
    garbage = b"\xc1" * (MAX_BODY_BYTES + 1)  # checked before parsing
    assert error_of(decode_from_broker, [PROTOCOL, b"OK", garbage]).code == "too_long"


# ---------------------------------------------------------------- field checks


def test_missing_field_is_bad_request_with_rid() -> None:
    """§4, §7: a missing required field is ``bad_request``; the rid is kept."""
    err = error_of(decode_request, req(b"SAY", body(rid=9, room="dev", id="x")))
    assert (err.code, err.rid) == ("bad_request", 9)
    assert "text" in err.text


def test_missing_rid_is_bad_request_without_rid() -> None:
    """§4, §7: with no rid there is nothing to keep."""
    err = error_of(decode_request, req(b"PING", body()))
    assert (err.code, err.rid) == ("bad_request", None)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (b"JOIN", {"rid": 7, "room": "dev", "history": True}),  # bool for int
        (b"JOIN", {"rid": 7, "room": "dev", "history": 2.0}),  # float for int
        (b"JOIN", {"rid": 7, "room": "dev", "history": "5"}),  # str for int
        (b"HELLO", {"rid": 7, "nick": 5}),  # int for str
        (b"HELLO", {"rid": 7, "nick": None}),  # nil for str
        (b"HELLO", {"rid": 7, "nick": ["alice"]}),  # list for str
        (b"SAY", {"rid": 7, "room": "dev", "id": "x", "text": "hi", "action": 1}),
        (b"TOPIC", {"rid": 7, "room": "dev", "topic": 3}),  # optional str
        (b"HISTORY", {"rid": 7, "room": "dev", "limit": -1}),  # out of range
        (b"HISTORY", {"rid": 7, "room": "dev", "limit": 501}),
        (b"JOIN", {"rid": 7, "room": "dev", "history": 2**64 - 1}),
        (b"SAY", {"rid": 7, "room": "dev", "id": "", "text": "hi"}),  # empty id
        (b"SAY", {"rid": 7, "room": "dev", "id": "é", "text": "hi"}),  # non-ASCII id
        (b"SAY", {"rid": 7, "room": "dev", "id": "a\nb", "text": "hi"}),
        (b"SAY", {"rid": 7, "room": "dev", "id": "x" * 65, "text": "hi"}),
        (b"HELLO", {"rid": 7, "nick": "alice", "resume": "r" * 65}),
    ],
)
def test_wrong_field_is_bad_request_with_rid(kind: bytes, fields: dict[str, Any]) -> None:
    """§4, §7: a field of the wrong type or out of range is ``bad_request``."""
    err = error_of(decode_request, req(kind, body(**fields)))
    assert (err.code, err.rid) == ("bad_request", 7)


@pytest.mark.parametrize("rid", [True, -1, 2**53, 2**64 - 1, -(2**63), 1.0, "1", None])
def test_bad_rid_is_bad_request_without_rid(rid: object) -> None:
    """§4: rid is an int in [0, 2**53); anything else cannot be echoed back."""
    err = error_of(decode_request, req(b"PING", body(rid=rid)))
    assert (err.code, err.rid) == ("bad_request", None)


def test_rid_boundaries() -> None:
    """§4: 0 and 2**53 - 1 are valid rids."""
    for rid in (0, 2**53 - 1):
        assert decode_request(req(b"PING", body(rid=rid))) == m.Ping(rid)


@pytest.mark.parametrize(
    ("kind", "fields", "code"),
    [
        (b"HELLO", {"rid": 5, "nick": "-bad"}, "bad_nick"),
        (b"NICK", {"rid": 5, "nick": ""}, "bad_nick"),
        (b"TELL", {"rid": 5, "to": "a b", "id": "x", "text": "hi"}, "bad_nick"),
        (b"JOIN", {"rid": 5, "room": "#de v"}, "bad_room"),
        (b"SAY", {"rid": 5, "room": "dev", "id": "x", "text": " "}, "empty"),
        (b"SAY", {"rid": 5, "room": "dev", "id": "x", "text": "a\x1b[2Jb"}, "bad_text"),
        (
            b"SAY",
            {"rid": 5, "room": "dev", "id": "x", "text": "x" * (MAX_TEXT_BYTES + 1)},
            "too_long",
        ),
        (b"TOPIC", {"rid": 5, "room": "dev", "topic": "a\u202eb"}, "bad_text"),
        (b"BYE", {"rid": 5, "reason": "x\ny"}, "bad_text"),
    ],
)
def test_rule_violations_keep_their_code_and_rid(
    kind: bytes, fields: dict[str, Any], code: str
) -> None:
    """§3, §7: a rule broken inside a request keeps the rule's code and the rid."""
    err = error_of(decode_request, req(kind, body(**fields)))
    assert (err.code, err.rid) == (code, 5)


def test_nested_field_errors() -> None:
    """§2: fields inside lists and records are checked too."""
    bad_member = body(rid=1, room="dev", members=["alice", 3])
    err = error_of(decode_from_broker, [PROTOCOL, b"NAMES", bad_member])
    assert (err.code, err.rid) == ("bad_request", 1)
    not_a_list = body(rid=1, room="dev", members="alice")
    assert error_of(decode_from_broker, [PROTOCOL, b"NAMES", not_a_list]).code == ("bad_request")
    bad_info = body(rid=2, rooms=[{"name": "dev", "members": "1", "topic": ""}])
    err = error_of(decode_from_broker, [PROTOCOL, b"ROOMLIST", bad_info])
    assert (err.code, err.rid) == ("bad_request", 2)
    assert "rooms[0].members" in err.text
    info_not_map = body(rid=2, rooms=[["dev", 1, ""]])
    assert error_of(decode_from_broker, [PROTOCOL, b"ROOMLIST", info_not_map]).code == (
        "bad_request"
    )
    bad_event = msgpack.packb(
        {
            "rid": 3,
            "room": "dev",
            "last": 1,
            "events": [
                {
                    "room": "dev",
                    "seq": 0,
                    "kind": "msg",
                    "nick": "a",
                    "text": "",
                    "ts": 0.0,
                    "id": "x",
                }
            ],
        }
    )
    err = error_of(decode_from_broker, [PROTOCOL, b"EVENTS", bad_event])
    assert (err.code, err.rid) == ("bad_request", 3)


def test_event_checks() -> None:
    """§5.1: an event has a known kind, a seq from 1 and a valid room."""
    good = msgpack.packb(
        {
            "room": "dev",
            "seq": 1,
            "kind": "msg",
            "nick": "a",
            "text": "t",
            "ts": 1,
            "id": "x",
        }
    )
    assert decode_broadcast([b"#dev\x00", b"EVENT", good]).seq == 1
    for change, code in [
        ({"kind": "shout"}, "bad_request"),
        ({"seq": 0}, "bad_request"),
        ({"room": "d v"}, "bad_room"),
        ({"ts": "now"}, "bad_request"),
    ]:
        raw = msgpack.packb({**msgpack.unpackb(good), **change})
        assert error_of(decode_broadcast, [b"#dev\x00", b"EVENT", raw]).code == code


def test_synced_token_checks() -> None:
    """§5.2: a sync token is 1-64 ASCII letters and digits."""
    for token in ["", "a b", "é", "x" * 65, "a\x00"]:
        with pytest.raises(ProtocolError) as info:
            m.Synced(token)
        assert info.value.code == "bad_request"


# ---------------------------------------------------------------------- encode


def test_encode_of_oversized_message_is_too_long() -> None:
    """§2: ``encode`` refuses a body past MAX_BODY_BYTES before it reaches a socket."""
    huge = m.Error(rid=1, code="internal", text="x" * MAX_BODY_BYTES)
    with pytest.raises(ProtocolError) as info:
        encode(huge)
    assert info.value.code == "too_long"
    many = m.Names(rid=1, room="dev", members=["n" * 32] * 3000)
    with pytest.raises(ProtocolError) as info:
        encode(many)
    assert info.value.code == "too_long"
    events = m.Events(rid=1, room="dev", events=[_EVENT] * 2000, last=3)
    with pytest.raises(ProtocolError) as info:
        encode(events)
    assert info.value.code == "too_long"


def test_encode_at_the_limit() -> None:
    """§2: a body of exactly MAX_BODY_BYTES is encoded and decoded."""

    def error(n: int) -> m.Error:
        return m.Error(rid=1, code="c", text="x" * n)

    raw = _fit(lambda n: pack_body(error(n)), MAX_BODY_BYTES)
    msg = decode_from_broker([PROTOCOL, b"ERROR", raw])
    assert isinstance(msg, m.Error)
    frames = encode(msg)
    assert len(frames[2]) == MAX_BODY_BYTES
    assert decode_from_broker(frames) == msg
    with pytest.raises(ProtocolError) as info:
        encode(m.Error(rid=1, code="c", text=msg.text + "x"))
    assert info.value.code == "too_long"


def test_largest_valid_say_fits() -> None:
    """§3.3: a SAY at MAX_TEXT_BYTES, in any script, is far below MAX_BODY_BYTES."""
    text = "\U0001f600" * (MAX_TEXT_BYTES // 4)
    msg = m.Say(rid=2**53 - 1, room="r" * 64, id="i" * 64, text=text, action=True)
    assert decode_request(encode(msg)) == msg


@pytest.mark.parametrize(
    "build",
    [
        lambda: m.Hello(rid=1, nick="bad nick"),
        lambda: m.Hello(rid=-1, nick="alice"),
        lambda: m.Join(rid=1, room="#"),
        lambda: m.Join(rid=1, room="dev", history=501),
        lambda: m.Say(rid=1, room="dev", id="x", text="a\udcffb"),
        lambda: m.Say(rid=1, room="dev", id="x", text=""),
        lambda: m.Tell(rid=1, to="bob", id="x", text="a\u2028b"),
        lambda: m.Topic(rid=1, room="dev", topic="\x1b"),
        lambda: m.Event("dev", 1, "bogus", "a", "", 0.0, "x"),
    ],
)
def test_invalid_messages_cannot_be_built(build: Callable[[], m.Message]) -> None:
    """A message that exists is valid: building a bad one raises ProtocolError,
    so nothing unencodable ever reaches ``encode``.
    """
    with pytest.raises(ProtocolError):
        build()


def test_messages_are_immutable() -> None:
    """Messages are frozen values."""
    msg = m.Ping(rid=1)
    with pytest.raises(AttributeError):
        msg.rid = 2  # type: ignore[misc]


_GOOD_EVENT = {"room": "Dev", "seq": 3, "kind": "msg", "nick": "al", "text": "hi", "ts": 1.5,
               "id": "x1"}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"ts": 2},  # an int is widened
        {"room": "#dev"},
        {"extra": 1},  # unknown keys are ignored
        {"seq": 0},
        {"seq": True},
        {"seq": "3"},
        {"kind": "dance"},
        {"room": "no spaces"},
        {"room": ""},
        {"nick": 5},
        {"text": None},
        {"ts": "now"},
        {"id": b"x1"},
        {"room": None},
    ],
)
def test_the_fast_event_decoder_agrees_with_the_general_one(change: dict[str, Any]) -> None:
    """EVENT has a hand-written builder (codec._event); whatever it takes, the
    general path takes alike, and what it refuses, the general path refuses
    with the error it would always have given."""
    from zchat.protocol import codec

    raw = {**_GOOD_EVENT, **change}
    cls, fields = codec._BROADCASTS[b"EVENT"]
    try:
        general: m.Message | None = codec._build(cls, fields, dict(raw))
    except ProtocolError:
        general = None
    assert codec._event(dict(raw)) == general
    frames = [m.room_topic("dev"), b"EVENT", msgpack.packb(raw)]
    if general is None:
        with pytest.raises(ProtocolError):
            decode_broadcast(frames)
    else:
        assert decode_broadcast(frames) == general


def test_the_fast_event_decoder_misses_no_missing_field() -> None:
    from zchat.protocol import codec

    for name in _GOOD_EVENT:
        raw = {k: v for k, v in _GOOD_EVENT.items() if k != name}
        assert codec._event(raw) is None
        frames = [m.room_topic("dev"), b"EVENT", msgpack.packb(raw)]
        with pytest.raises(ProtocolError, match=name):
            decode_broadcast(frames)
