"""Messages to ZeroMQ frames and back (docs/protocol.md §2).

``encode`` turns a message into ``list[bytes]``; the three ``decode_*``
functions turn frames from one path into a message or raise ``ProtocolError``.
Nothing else escapes them, whatever the input: see tests/protocol/test_fuzz.py.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgpack

from zchat.protocol import messages as m
from zchat.protocol.errors import ProtocolError
from zchat.protocol.rules import MAX_BODY_BYTES, normalize_room

#: First frame of every DEALER/ROUTER message: protocol name and version (§2).
PROTOCOL = b"ZCHAT/1"

Frames = Sequence[bytes]
_Check = Callable[[Any, str], Any]
M = TypeVar("M", bound=m.Message)


def _bad(path: str, what: str) -> ProtocolError:
    return ProtocolError("bad_request", f"field {path!r}: {what}")


def _scalar(kind: type) -> _Check:
    def check(value: Any, path: str) -> Any:
        # bool is an int in Python: keep them apart on the wire.
        if type(value) is kind:
            return value
        if kind is float and type(value) is int:
            return float(value)
        raise _bad(path, f"expected {kind.__name__}, got {type(value).__name__}")

    return check


def _optional(inner: _Check) -> _Check:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def _list_of(inner: _Check) -> _Check:
    def check(value: Any, path: str) -> Any:
        if type(value) is not list:
            raise _bad(path, f"expected a list, got {type(value).__name__}")
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


def _record(cls: type) -> _Check:
    fields = _schema(cls)

    def check(value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise _bad(path, f"expected a map, got {type(value).__name__}")
        return _build(cls, fields, value, path + ".")

    return check


def _checker(hint: Any) -> _Check:
    if hint in (int, str, bool, float):
        return _scalar(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list:
        return _list_of(_checker(args[0]))
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _optional(_checker(inner))
    if dataclasses.is_dataclass(hint):
        return _record(typing.cast(type, hint))
    raise TypeError(f"no wire form for {hint!r}")  # our bug, at import time


_Field = tuple[str, _Check, bool]  # name, checker, required
_SCHEMAS: dict[type, list[_Field]] = {}


def _schema(cls: type) -> list[_Field]:
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls, vars(m))
        _SCHEMAS[cls] = [
            (
                f.name,
                _checker(hints[f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        ]
    return _SCHEMAS[cls]


def _build(cls: type[M], fields: list[_Field], raw: dict[Any, Any], prefix: str = "") -> M:
    # Unknown keys are ignored so a newer peer can add optional fields (§2).
    kwargs = {}
    for name, check, required in fields:
        if name in raw:
            kwargs[name] = check(raw[name], prefix + name)
        elif required:
            raise _bad(prefix + name, "missing")
    try:
        return cls(**kwargs)
    except ProtocolError:
        raise
    except (TypeError, ValueError, UnicodeError, OverflowError) as exc:
        raise _bad(prefix.rstrip(".") or cls.__name__, str(exc)) from None


def _registry(classes: Sequence[type[M]]) -> dict[bytes, tuple[type[M], list[_Field]]]:
    return {cls.TYPE: (cls, _schema(cls)) for cls in classes}


_REQUESTS = _registry(m.REQUESTS)
_FROM_BROKER = _registry(m.FROM_BROKER)
_BROADCASTS = _registry(m.BROADCASTS)


_Wire = Callable[[Any], Any]
_WIRE: dict[type, _Wire] = {}


def _wire_form(cls: type) -> _Wire:
    """A function from an instance of ``cls`` to its MessagePack-ready map, built
    once per class: only fields holding records need a walk, the rest are read
    as they are (this is on the broker's hot path, §2)."""
    if cls not in _WIRE:
        hints = typing.get_type_hints(cls, vars(m))
        plain: list[str] = []
        nested: list[tuple[str, _Wire]] = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
            if dataclasses.is_dataclass(inner):
                record = _wire_form(typing.cast(type, inner))
                listed = typing.get_origin(hint) is list
                nested.append((f.name, _each(record) if listed else record))
            else:
                plain.append(f.name)
        names = tuple(plain)
        getter: Callable[[Any], tuple[Any, ...]]
        if len(names) > 1:
            getter = operator.attrgetter(*names)
        else:
            getter = lambda obj: tuple(getattr(obj, n) for n in names)  # noqa: E731

        def wire(obj: Any) -> dict[str, Any]:
            out = dict(zip(names, getter(obj), strict=True))
            for name, convert in nested:
                out[name] = convert(getattr(obj, name))
            return out

        _WIRE[cls] = wire
    return _WIRE[cls]


def _each(record: _Wire) -> _Wire:
    return lambda items: [record(item) for item in items]


_PACKER = msgpack.Packer(use_bin_type=True)


def pack_body(msg: m.Message) -> bytes:
    """The body frame of ``msg``: a MessagePack map of its fields."""
    body: bytes = _PACKER.pack(_wire_form(type(msg))(msg))
    return body


def encode(msg: m.Message) -> list[bytes]:
    """Frames for ``msg``: ``[PROTOCOL, TYPE, body]``, or ``[topic, TYPE, body]``
    for a broadcast. Raises ``ProtocolError("too_long")`` past MAX_BODY_BYTES,
    so an oversized message never reaches a socket (§2).
    """
    body = pack_body(msg)
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError("too_long", f"{msg.TYPE.decode()} body of {len(body)} bytes")
    head = msg.topic if isinstance(msg, m.Broadcast) else PROTOCOL
    return [head, msg.TYPE, body]


def _unpack(body: bytes) -> dict[Any, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError("too_long", f"body of {len(body)} bytes; limit {MAX_BODY_BYTES}")
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except UnicodeDecodeError:
        rid = _rid_of(body)
        raise ProtocolError("bad_utf8", "a string in the body is not valid UTF-8", rid) from None
    except ValueError:  # ExtraData, FormatError, StackError and friends
        raise ProtocolError("bad_frame", "body is not one MessagePack value") from None
    if type(raw) is not dict:
        raise ProtocolError("bad_frame", "body is not a MessagePack map")
    return raw


def _valid_rid(rid: Any) -> int | None:
    return rid if type(rid) is int and 0 <= rid < 2**53 else None


def _rid_of(body: bytes) -> int | None:
    """Best effort, on the error path only: the rid of a body we are rejecting,
    so the error reply can still be matched to its request."""
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True, unicode_errors="replace")
    except Exception:  # anything at all: the caller is raising its own error
        return None
    return _valid_rid(raw.get("rid")) if type(raw) is dict else None


def _decode(
    frames: Frames, registry: dict[bytes, tuple[type[M], list[_Field]]], head: bytes | None
) -> M:
    if len(frames) != 3:
        raise ProtocolError("bad_frame", f"expected 3 frames, got {len(frames)}")
    first, kind, body = frames
    if not (type(first) is type(kind) is type(body) is bytes):  # zmq.Frame, memoryview...
        first, kind, body = bytes(first), bytes(kind), bytes(body)
    if head is not None and first != head:
        raise ProtocolError(
            "bad_version",
            f"expected protocol {head.decode()}, got {first[:20]!r}",
            _rid_of(body) if len(body) <= MAX_BODY_BYTES else None,
        )
    entry = registry.get(kind)
    raw = _unpack(body)
    rid = _valid_rid(raw.get("rid"))
    if entry is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:20]!r}", rid)
    cls, fields = entry
    fast = _FAST.get(cls)
    msg = typing.cast("M | None", fast(raw)) if fast is not None else None
    if msg is None:  # the general path: it also names what is wrong
        try:
            msg = _build(cls, fields, raw)
        except ProtocolError as exc:
            raise exc.with_rid(rid) from None
    if head is None and isinstance(msg, m.Broadcast) and msg.topic != first:
        raise ProtocolError("bad_frame", "topic frame does not match the message")
    return msg


def _event(raw: dict[Any, Any]) -> m.Event | None:
    """EVENT, which every client decodes thousands of times a second: the same
    checks as ``_build`` and ``Event.__post_init__`` (field types, room name,
    kind, seq), inline. None if any fails: the general path then says which."""
    try:
        room, seq, kind, nick = raw["room"], raw["seq"], raw["kind"], raw["nick"]
        text, ts, msg_id = raw["text"], raw["ts"], raw["id"]
    except KeyError:
        return None
    if not (
        type(room) is type(kind) is type(nick) is type(text) is type(msg_id) is str
        and type(seq) is int
        and seq >= 1
        and (type(ts) is float or type(ts) is int)
        and kind in m.EVENT_KINDS
    ):
        return None
    try:
        room = normalize_room(room)
    except ProtocolError:
        return None
    return m.Event.trusted(room, seq, kind, nick, text, float(ts), msg_id)


#: Hand-written builders for the hottest messages; None means "use _build".
_FAST: dict[type, Callable[[dict[Any, Any]], m.Message | None]] = {m.Event: _event}


def decode_request(frames: Frames) -> m.Request:
    """Decode what a client sent (ROUTER side, envelope already stripped)."""
    return _decode(frames, _REQUESTS, PROTOCOL)


def decode_from_broker(frames: Frames) -> m.Reply | m.Push:
    """Decode a reply or push the broker sent on the DEALER."""
    msg = _decode(frames, _FROM_BROKER, PROTOCOL)
    assert isinstance(msg, (m.Reply, m.Push))  # FROM_BROKER holds only these
    return msg


def decode_broadcast(frames: Frames) -> m.Broadcast:
    """Decode a message received on the SUB socket."""
    return _decode(frames, _BROADCASTS, None)
