"""The broker's handshake bookkeeping, without sockets (docs/security.md)."""

from __future__ import annotations

from zchat.broker.auth import RefusalLog


def test_refusals_are_shown_once_per_interval_with_a_count() -> None:
    log = RefusalLog(every=10.0)
    assert log.note("a client without CURVE keys", 100.0) == "! refused a client without CURVE keys"
    assert log.note("a client without CURVE keys", 101.0) == ""
    assert log.note("a client without CURVE keys", 109.9) == ""
    assert log.note("127.0.0.1: unknown key K", 105.0) == "! refused 127.0.0.1: unknown key K"
    assert log.note("a client without CURVE keys", 110.0) == (
        "! refused a client without CURVE keys (2 more since)"
    )
    assert log.note("a client without CURVE keys", 125.0) == "! refused a client without CURVE keys"


def test_the_refusal_log_stays_bounded_whatever_peers_send() -> None:
    log = RefusalLog()
    for i in range(5000):
        assert log.note(f"10.0.0.{i}: unknown key", float(i))
    assert len(log._last) <= 1001


def test_every_counter_has_metrics_help_and_a_line_in_the_protocol() -> None:
    """A counter added to the core must reach /metrics and STATS' table (§6.10)."""
    import dataclasses
    from pathlib import Path

    from zchat.broker import metrics
    from zchat.broker.core import Counters

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    for f in dataclasses.fields(Counters):
        assert f.name in metrics._HELP, f.name
        assert f"`{f.name}`" in doc[doc.index("### 6.10") : doc.index("### 6.11")], f.name
