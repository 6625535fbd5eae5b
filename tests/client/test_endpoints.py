"""The broker rotation (zchat/client/endpoints.py, docs/protocol.md §6.7): pure, no clock."""

from __future__ import annotations

import pytest

from zchat.client.endpoints import Rotation, endpoint_host, split_endpoints

A, B, C = "tcp://a:1", "tcp://b:2", "tcp://c:3"


@pytest.mark.parametrize(
    ("value", "endpoints"),
    [
        (A, (A,)),
        (f"{A},{B}", (A, B)),
        (f"{A} , {B},{C}", (A, B, C)),
        ([A, B], (A, B)),
        ((A,), (A,)),
    ],
)
def test_split(value: str | list[str], endpoints: tuple[str, ...]) -> None:
    assert split_endpoints(value) == endpoints


@pytest.mark.parametrize("value", ["", [], f"{A},", f"{A},,{B}", [A, ""]])
def test_split_refuses_none_and_empty_ones(value: str | list[str]) -> None:
    with pytest.raises(ValueError):
        split_endpoints(value)


def test_host_of_an_endpoint() -> None:
    assert endpoint_host("tcp://chat.example.org:5555") == "chat.example.org"
    assert endpoint_host("tcp://[::1]:5555") == "[::1]"


def test_failed_tries_go_round_and_the_delay_grows_per_round() -> None:
    r = Rotation([A, B, C])
    seen = []
    for _ in range(9):
        seen.append((r.current, r.delay, r.last_in_round))
        r.failed()
    assert seen == [
        (A, 2.0, False), (B, 2.0, False), (C, 2.0, True),
        (A, 4.0, False), (B, 4.0, False), (C, 4.0, True),
        (A, 8.0, False), (B, 8.0, False), (C, 8.0, True),
    ]  # fmt: skip


def test_the_delay_stops_at_32() -> None:
    r = Rotation([A])
    delays = []
    for _ in range(7):
        delays.append(r.delay)
        assert r.last_in_round
        r.failed()
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0]
    assert r.current == A


def test_a_loss_starts_a_round_at_the_next_endpoint_with_the_first_delay() -> None:
    r = Rotation([A, B, C])
    for _ in range(4):
        r.failed()
    assert (r.current, r.delay) == (B, 4.0)
    r.welcomed()
    r.lost()
    assert (r.current, r.delay, r.last_in_round) == (C, 2.0, False)
    r.failed()
    r.failed()
    assert (r.current, r.last_in_round) == (B, True)  # the round ends where we lost


def test_a_loss_may_keep_the_endpoint() -> None:
    r = Rotation([A, B])
    r.lost(same=True)
    assert r.current == A
    r.lost()
    r.lost()
    assert r.current == A  # round robin wraps


def test_no_endpoint_given_is_one_unnamed_broker() -> None:
    r = Rotation()
    assert (len(r), r.current, r.last_in_round) == (1, "", True)
    r.lost()
    assert r.current == ""
