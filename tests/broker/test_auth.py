"""The broker's handshake bookkeeping, without sockets (docs/security.md)."""

from __future__ import annotations

from zchat.broker.quiet import QuietLog


def test_refusals_are_shown_once_per_interval_with_a_count() -> None:
    log = QuietLog(every=10.0)
    nokeys = "refused a client without CURVE keys"
    assert log.note(nokeys, 100.0) == "! " + nokeys
    assert log.note(nokeys, 101.0) == ""
    assert log.note(nokeys, 109.9) == ""
    unknown = "refused 127.0.0.1: unknown key K"
    assert log.note(unknown, 105.0) == "! " + unknown
    assert log.note(nokeys, 110.0) == "! " + nokeys + " (2 more since)"
    assert log.note(nokeys, 125.0) == "! " + nokeys


def test_lines_of_one_kind_share_a_budget() -> None:
    log = QuietLog(every=10.0)
    assert log.note("bad request from 01: bad_frame", 0.0, kind="bad_frame")
    assert log.note("bad request from 02: bad_frame", 1.0, kind="bad_frame") == ""
    assert log.note("bad request from 03: bad_utf8", 1.0, kind="bad_utf8")
    assert log.note("bad request from 04: bad_frame", 11.0, kind="bad_frame") == (
        "! bad request from 04: bad_frame (1 more since)"
    )


def test_the_refusal_log_stays_bounded_whatever_peers_send() -> None:
    log = QuietLog()
    for i in range(5000):
        assert log.note(f"refused 10.0.0.{i}: unknown key", float(i))
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
