"""RayOptions: the placement ``inferno serve --ray`` is given, checked before Ray starts."""

from __future__ import annotations

import pytest

from inferno.distributed import RayOptions
from inferno.errors import ConfigError


def test_fixed_replicas_are_both_bounds() -> None:
    options = RayOptions(replicas=3)
    assert (options.min_replicas, options.max_replicas) == (3, 3)


def test_autoscale_bounds() -> None:
    options = RayOptions(autoscale=RayOptions.parse_autoscale("0:4"))
    assert (options.min_replicas, options.max_replicas) == (0, 4)
    assert RayOptions.parse_autoscale(None) is None


@pytest.mark.parametrize("text", ["4", "a:b", "1-2", ":", "1:2:3"])
def test_autoscale_text_must_be_min_colon_max(text: str) -> None:
    with pytest.raises(ConfigError, match=f"--autoscale: expected MIN:MAX .* got {text!r}"):
        RayOptions.parse_autoscale(text)


@pytest.mark.parametrize(("given", "message"), [
    ({"replicas": 0}, "--replicas: expected at least 1, got 0"),
    ({"autoscale": (3, 2)}, "--autoscale: expected MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got 3:2"),
    ({"autoscale": (0, 0)}, "got 0:0"),
    ({"autoscale": (-1, 2)}, "got -1:2"),
    ({"replica_cpus": 0.0}, "--replica-cpus: expected a positive number, got 0.0"),
    ({"target_batches": -1.0}, "target_batches: expected a positive number"),
])
def test_impossible_placements_are_refused(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RayOptions(**given)  # type: ignore[arg-type]
