"""``--address``: a HOST:PORT nothing listens on is refused at once (Ray would retry for minutes)."""

from __future__ import annotations

import socket

import pytest

from inferno.distributed.cluster import _check_reachable
from inferno.errors import ConfigError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_is_refused_naming_the_address() -> None:
    port = _closed_port()
    with pytest.raises(ConfigError, match=f"--address 127.0.0.1:{port}: nothing answers there"):
        _check_reachable(f"127.0.0.1:{port}", timeout_s=2)


def test_a_listening_port_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        _check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=2)


@pytest.mark.parametrize("address", ["auto", "local", "ray://head:10001", None])
def test_ray_resolves_the_symbolic_ones(address: str | None) -> None:
    _check_reachable(address, timeout_s=0.01)


@pytest.mark.parametrize("address", ["head", "head:port", ":"])
def test_malformed_addresses(address: str) -> None:
    with pytest.raises(ConfigError, match="--address: expected auto or HOST:PORT"):
        _check_reachable(address)
