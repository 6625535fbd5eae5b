"""The IRC door's socket edge. Being built: see issue 14."""

from __future__ import annotations

from zchat.broker.doors import Door, DoorError
from zchat.config import BrokerConfig


def open_door(config: BrokerConfig) -> Door:
    raise DoorError("IRC door: not in this version of zchat yet")
