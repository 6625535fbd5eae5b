"""An optional Prometheus endpoint (``metrics = "HOST:PORT"``), read at scrape time.

prometheus_client serves HTTP from one thread of its own; at each scrape the
collector reads the core's counters and gauges (plain ints: reading them from
that thread is safe), so the broker's loop does no extra work per message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from zchat.broker.core import BrokerCore, Counters

_HELP = {
    "requests": "Messages received on the request socket",
    "malformed": "Received messages that did not decode",
    "errors": "ERROR replies to requests that decoded",
    "messages": "Room messages stored",
    "dms": "Direct messages stored",
    "duplicates": "Resent messages recognised by id and not stored again",
    "expired": "Sessions ended by the heartbeat timeout",
    "throttled": "Requests refused by the rate limit",
    "published": "Broadcasts handed to the broadcast socket",
    "replies": "Replies and pushes handed to the request socket",
    "dropped": "Replies and pushes the request socket could not deliver",
    "resets": "Broadcast sockets rebuilt against a subscription flood",
}


class MetricsError(Exception):
    """The endpoint cannot be served; str() says why, in one line."""


def serve(address: str, core: BrokerCore, clock: Callable[[], float]) -> Any:
    """Start serving /metrics on ``address``; returns the server (call .shutdown())."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector, CollectorRegistry
    except ImportError:
        raise MetricsError(
            "metrics needs prometheus_client: pip install 'zchat[metrics]'"
        ) from None

    class BrokerCollector(Collector):
        def collect(self) -> Iterator[Any]:
            yield GaugeMetricFamily("zchat_clients", "Live sessions", value=core.clients)
            yield GaugeMetricFamily("zchat_rooms", "Rooms with members", value=core.rooms)
            uptime = clock() - core.started  # the broker's own clock: steady
            yield GaugeMetricFamily("zchat_uptime_seconds", "Seconds since start", value=uptime)
            for f in dataclasses.fields(Counters):
                value = getattr(core.counters, f.name)
                yield CounterMetricFamily(f"zchat_{f.name}", _HELP[f.name], value=value)

    registry = CollectorRegistry()
    registry.register(BrokerCollector())
    host, _, port = address.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {address}: {exc.strerror}") from None
    return server
