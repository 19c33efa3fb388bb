"""How ``inferno serve --ray`` places model replicas: pure data, importable without Ray."""

from __future__ import annotations

from dataclasses import dataclass

from inferno.errors import ConfigError


@dataclass(frozen=True)
class RayOptions:
    """Where replicas run and how many.

    ``address`` None starts a local Ray instance for this server and stops it on exit;
    otherwise it names a running cluster (``auto``, ``HOST:PORT``; ``ray start --head`` or
    KubeRay made it), which the server joins and leaves as it found it.
    """

    address: str | None = None
    replicas: int = 1
    """Replicas per model version, when not autoscaled."""
    autoscale: tuple[int, int] | None = None
    """(min, max) replicas, scaled by Ray Serve on the batches in flight per replica; a
    minimum of 0 scales an idle model to zero (its next request waits for a replica)."""
    replica_cpus: float | None = None
    """Ray CPUs each replica reserves; None: the plan's threads (what its session uses)."""
    target_batches: float = 1.0
    """Batches in flight per replica that autoscaling aims at: more, and Serve adds one."""
    batches_per_replica: int = 1
    """Batches the ingress keeps in flight per replica (at the most replicas): more overlap
    the Ray hop with compute, but split the queue into smaller batches."""
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0
    num_cpus: int | None = None
    """CPUs of a local instance (None: this machine's); ignored when joining a cluster."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"--replicas: expected at least 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if low < 0 or high < max(1, low):
                raise ConfigError(f"--autoscale: expected MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, "
                                  f"got {low}:{high}")
        if self.replica_cpus is not None and self.replica_cpus <= 0:
            raise ConfigError(f"--replica-cpus: expected a positive number, got {self.replica_cpus}")
        if self.batches_per_replica < 1:
            raise ConfigError(f"batches_per_replica: expected at least 1, got {self.batches_per_replica}")
        if self.target_batches <= 0:
            raise ConfigError(f"target_batches: expected a positive number, got {self.target_batches}")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale is not None else self.replicas

    @property
    def min_replicas(self) -> int:
        return self.autoscale[0] if self.autoscale is not None else self.replicas

    @staticmethod
    def parse_autoscale(text: str | None) -> tuple[int, int] | None:
        """``MIN:MAX`` as two ints (None stays None)."""
        if text is None:
            return None
        low, sep, high = text.partition(":")
        try:
            if not sep:
                raise ValueError
            return int(low), int(high)
        except ValueError:
            raise ConfigError(f"--autoscale: expected MIN:MAX (two whole numbers, e.g. 1:4), got {text!r}") from None
