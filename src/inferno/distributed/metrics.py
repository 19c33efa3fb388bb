"""Per-replica series on the ingress's ``/metrics``.

Every request passes through the ingress, so its own series (the ones of one machine) already
count the whole stream; these add what only the replicas know: how the batches spread over
them and how long each spent in its runtime. They are read from the answers the ingress got
(each replica says who it is and how long it ran), so one scrape of the ingress covers the
cluster without a scrape per replica. Ray's own ``ray_serve_*`` series stay on Ray's agent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from inferno.distributed.remote import Deployment

LABELS = ("model", "version", "replica")


class ReplicaCollector(Collector):
    """``inferno_replica_batches_total`` and ``inferno_replica_compute_seconds_total`` of every
    deployment that ``deployments()`` lists, at scrape time."""

    def __init__(self, deployments: Callable[[], Sequence[Deployment]]) -> None:
        self.deployments = deployments

    def collect(self) -> Iterator[Metric]:
        batches = CounterMetricFamily("inferno_replica_batches", "Batches a Ray replica ran.", labels=LABELS)
        seconds = CounterMetricFamily("inferno_replica_compute_seconds",
                                      "Seconds a Ray replica spent in its runtime.", labels=LABELS)
        for deployment in self.deployments():
            for replica, n, spent in deployment.counts():
                batches.add_metric([deployment.model, deployment.version, replica], n)
                seconds.add_metric([deployment.model, deployment.version, replica], spent)
        yield batches
        yield seconds
