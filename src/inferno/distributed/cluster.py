"""``inferno serve --ray``: inferno's server in front, one Ray Serve deployment per model version.

Where each part runs, and why:

- The ingress is inferno's own server (``InfernoApp``: HTTP and gRPC) in the process that ran
  ``inferno serve --ray``. Ray Serve's HTTP proxy is not started: a single Python proxy with a
  pickled hop per request is Ray Serve's known bottleneck. Requests are decoded, checked,
  cached, batched and watched for drift in the ingress, exactly as on one machine, so the
  protocol surface is the same, ``/metrics`` counts the whole stream and one monitor per
  model sees every replica's traffic.
- Each batch goes to a replica through a ``DeploymentHandle`` (``distributed.remote``): one
  Ray call per batch. The ingress runs ``batches_per_replica`` batch workers per replica
  (at the most replicas): one, by default, keeps batches as large as on one machine; more
  overlap the hop with compute but split the queue into smaller batches (measured: one was
  the faster on a pinned core for minilm at concurrency 64).
- A replica (``distributed.replica``) loads the plan with its own runtime. Resources come
  from the plan: its threads are the replica's ``num_cpus``, a GPU plan takes ``num_gpus=1``.
- A version is an application of its own (``inferno-<token>-<model>-<version>-<n>``): a hot
  swap deploys the new one beside the old, publishes it once warm, drains the old one and
  then deletes it, so no request meets a replica that is going away.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from inferno.distributed.metrics import ReplicaCollector
from inferno.distributed.options import RayOptions
from inferno.distributed.remote import Deployment, RemoteRuntime
from inferno.distributed.replica import ModelReplica
from inferno.errors import ConfigError, MissingExtraError, ModelLoadError
from inferno.repository.plan import PlanRunner
from inferno.serving.config import ModelServeConfig

log = logging.getLogger(__name__)

HEALTH_CHECK_PERIOD_S = 2.0
"""How often Serve's controller checks a replica (its default is 10 s): a dead replica is
replaced sooner, and the router stops choosing it sooner."""


class RayCluster:
    """A Ray instance (local, or a cluster joined) and the model deployments made on it.

    ``runners`` is the ``RunnerFactory`` an ``InfernoApp`` takes; ``close`` deletes every
    deployment made here and leaves a joined cluster as it was found.
    """

    def __init__(self, options: RayOptions) -> None:
        try:
            import ray
            from ray import serve
        except ImportError as exc:
            raise MissingExtraError(exc.name or "ray", "ray", "inferno serve --ray") from None
        self.options = options
        self.local = options.address is None
        self._token = secrets.token_hex(3)
        self._count = itertools.count(1)
        self._apps: set[str] = set()
        self._live: dict[str, Deployment] = {}
        """The connected deployments, by application: the per-replica ``/metrics`` series."""
        self._lock = threading.Lock()
        if self.local:
            # Serve's controller loops every 0.1 s by default: 3.5% of a core on an idle local
            # instance, 1.8% at 0.5 s (measured, 2 cores); health checks and autoscaling
            # decisions come at most 0.4 s later. A value the user set is kept.
            os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
            ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        else:
            _check_reachable(options.address)
            try:
                ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"--address {options.address}: could not join a Ray cluster there: "
                                  f"{_last_line(exc)}") from None
        # no proxy: requests reach replicas through inferno's server and DeploymentHandles
        serve.start(proxy_location="Disabled",
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        log.info("Ray Serve up (%s): %s CPUs", "local instance" if self.local else options.address,
                 ray.cluster_resources().get("CPU", 0))

    @property
    def where(self) -> str:
        """The instance, as the server's first line says it."""
        return "a local Ray instance" if self.local else f"the cluster at {self.options.address}"

    def runners(self, name: str, version: int, folder: Path, config: ModelServeConfig,
                trust: bool) -> list[PlanRunner]:
        """Deploy the version in ``folder`` and return the ingress's runners of it (blocking:
        the manager calls it from a worker thread)."""
        from ray import serve

        app = f"inferno-{self._token}-{name}-{version}-{next(self._count)}"
        deployment = Deployment(app, name, version, config.timeout_s)
        label = deployment.label
        made: list[PlanRunner] = []
        try:
            # the plan, signature and preprocessor are read here first: a bad plan fails with
            # inferno's own words before any replica starts
            for _ in range(self.options.max_replicas * self.options.batches_per_replica):
                made.append(PlanRunner(folder, config.threads, trust=trust, runtime=RemoteRuntime(deployment)))
            plan = made[0].plan
            cpus = self.options.replica_cpus or float(config.threads or plan.threads)
            self._check_room(label, cpus)
            body = serve.deployment(
                name=f"{name}-{version}", max_ongoing_requests=2, max_constructor_retry_count=1,
                health_check_period_s=HEALTH_CHECK_PERIOD_S,
                ray_actor_options={"num_cpus": cpus, "num_gpus": 1 if plan.device == "cuda" else 0},
                **self._scaling(),
            )(ModelReplica)
            log.info("deploying %s on Ray Serve: %s, %g CPUs each", label, self._describe_scaling(), cpus)
            try:
                handle = serve.run(body.bind(str(Path(folder).resolve()), config.threads, trust, config.group_by_length),
                                   name=app, route_prefix=None)
            except Exception as exc:
                raise ModelLoadError(f"{label}: its Ray Serve deployment failed: {_last_line(exc)}") from exc
            finally:
                with self._lock:
                    self._apps.add(app)
            deployment.connect(handle, self._release)
            with self._lock:
                self._live[app] = deployment
        except BaseException:
            for runner in made:
                runner.close()
            self._delete(app, blocking=False)
            raise
        return made

    def live(self) -> list[Deployment]:
        with self._lock:
            return list(self._live.values())

    def export_metrics(self, registry: CollectorRegistry) -> None:
        """Put the per-replica series on the ingress's ``/metrics`` (``registry``: its app's)."""
        registry.register(ReplicaCollector(self.live))

    def _scaling(self) -> dict[str, Any]:
        o = self.options
        if o.autoscale is None:
            return {"num_replicas": o.replicas}
        low, high = o.autoscale
        return {"autoscaling_config": {
            "min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
            "target_ongoing_requests": o.target_batches, "upscale_delay_s": o.upscale_delay_s,
            "downscale_delay_s": o.downscale_delay_s, "look_back_period_s": min(5.0, o.upscale_delay_s + 2),
        }}

    def _describe_scaling(self) -> str:
        o = self.options
        if o.autoscale is None:
            return f"{o.replicas} replica{'s' if o.replicas > 1 else ''}"
        return f"{o.autoscale[0]} to {o.autoscale[1]} replicas (autoscaled)"

    def _check_room(self, label: str, cpus: float) -> None:
        """Refuse a deployment a local instance cannot place (Serve would wait for it forever)."""
        import ray

        needed = cpus * max(1, self.options.min_replicas)
        free = ray.available_resources().get("CPU", 0.0)
        if needed <= free + 1e-9:
            return
        if not self.local:
            log.warning("%s needs %g Ray CPUs and the cluster has %g free: waiting for the cluster to "
                        "grow (an autoscaler) or for other deployments to end", label, needed, free)
            return
        total = ray.cluster_resources().get("CPU", 0.0)
        held = (" (the rest held by other deployments; a version being replaced holds its replicas until "
                "the new one is ready)") if free < total else ""
        raise ConfigError(
            f"{label}: expected {needed:g} free Ray CPUs for {max(1, self.options.min_replicas)} replica(s) of "
            f"{cpus:g} CPUs, found {free:g} of {total:g}{held}; pass --replica-cpus lower, "
            "fewer --replicas, or join a larger cluster with --address")

    def _release(self, deployment: Deployment) -> None:
        self._delete(deployment.app, blocking=False)

    def _delete(self, app: str, *, blocking: bool) -> None:
        from ray import serve

        with self._lock:
            if app not in self._apps:
                return
            self._apps.discard(app)
            self._live.pop(app, None)
        try:
            serve.delete(app, _blocking=blocking)
        except Exception as exc:  # the cluster may be gone already; nothing is left to free
            log.warning("deleting Ray Serve application %s failed: %s", app, _last_line(exc))

    def close(self) -> None:
        """Delete every deployment made here; stop a local instance, leave a joined cluster."""
        import ray
        from ray import serve

        for app in sorted(self._apps):
            self._delete(app, blocking=True)
        if self.local:
            serve.shutdown()
        ray.shutdown()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` nothing listens on at once: Ray itself retries for minutes.
    (``auto``, ``local`` and ``ray://`` addresses are Ray's to resolve.)"""
    if address is None or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address: expected auto or HOST:PORT (a Ray head's GCS port, 6379 by default), "
                          f"got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: nothing answers there within {timeout_s:g} s ({exc.strerror or exc}); "
                          "expected a Ray head's GCS port (`ray start --head` prints it; 6379 by default)") from None


def _last_line(exc: BaseException) -> str:
    """The informative end of an error Ray wraps in a traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else exc.__class__.__name__
