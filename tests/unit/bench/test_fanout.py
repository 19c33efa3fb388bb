"""How a point is shared between load-generator processes."""

from __future__ import annotations

import pytest

from inferno.bench import fanout
from inferno.bench.fanout import auto_clients, clients_for, split


def test_split_is_whole_and_even() -> None:
    assert split(64, 3) == [22, 21, 21]
    assert split(2, 2) == [1, 1]
    assert sum(split(1001, 7)) == 1001


def test_default_processes_follow_the_load_and_the_cores() -> None:
    assert auto_clients("concurrency", 1, cpus=8) == 1
    assert auto_clients("concurrency", fanout.CONNECTIONS_PER_CLIENT, cpus=8) == 1
    assert auto_clients("concurrency", fanout.CONNECTIONS_PER_CLIENT + 1, cpus=8) == 2
    assert auto_clients("concurrency", 1024, cpus=2) == 2
    assert auto_clients("rate", fanout.RATE_PER_CLIENT * 3, cpus=8) == 3
    assert auto_clients("rate", 10.0, cpus=1) == 1


def test_a_closed_loop_never_has_more_processes_than_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert clients_for("concurrency", 1, 4) == 1
    assert clients_for("concurrency", 3, 4) == 3
    assert clients_for("rate", 5.0, 4) == 4
    monkeypatch.setattr(fanout, "available_cpus", lambda: 1)
    assert clients_for("concurrency", 4096, None) == 1
