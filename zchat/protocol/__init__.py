"""The zchat wire protocol: messages, rules and codec. Never imports zmq."""

from zchat.protocol.codec import (
    PROTOCOL,
    decode_broadcast,
    decode_from_broker,
    decode_request,
    encode,
)
from zchat.protocol.errors import Code, Fault, ProtocolError

__all__ = [
    "PROTOCOL",
    "Code",
    "Fault",
    "ProtocolError",
    "decode_broadcast",
    "decode_from_broker",
    "decode_request",
    "encode",
]
