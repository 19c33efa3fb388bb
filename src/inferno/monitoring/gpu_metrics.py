"""GPU utilization, memory, power and energy on ``/metrics``, modelled on Triton's ``nv_gpu_*``.

A custom collector reads NVML at scrape time, so the figures are as fresh as the scrape and
nothing runs between scrapes. Every series is labelled ``gpu`` (the NVML index) and
``gpu_uuid``. A reading NVML could not give is left out rather than written as 0, and a
scrape with no GPU emits no family at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferno.hardware.power import GpuReading, gpu_readings

_LABELS = ("gpu", "gpu_uuid")


@dataclass(frozen=True)
class _Series:
    name: str
    help: str
    field: str
    """The GpuReading attribute it shows."""
    counter: bool = False


# The energy counter is exposed as ``..._joules_total``: prometheus_client appends the
# suffix every counter carries.
SERIES = (
    _Series("inferno_gpu_utilization", "Fraction of the last sample period a kernel ran (0..1).",
            "utilization"),
    _Series("inferno_gpu_memory_used_bytes", "GPU memory in use, in bytes.", "memory_used_bytes"),
    _Series("inferno_gpu_memory_total_bytes", "GPU memory in all, in bytes.", "memory_total_bytes"),
    _Series("inferno_gpu_power_usage_watts", "GPU power draw (NVML averages it over ~1 s).",
            "power_w"),
    _Series("inferno_gpu_power_limit_watts", "GPU enforced power limit.", "power_limit_w"),
    _Series("inferno_gpu_energy_consumption_joules", "GPU energy used since the driver loaded.",
            "energy_j", counter=True),
)


class GpuCollector(Collector):
    """Prometheus families for every GPU that ``readings`` returns, read at each scrape."""

    def __init__(self, readings: Callable[[], Iterable[GpuReading]] = gpu_readings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        readings = list(self._readings())
        for series in SERIES:
            family = _family(series)
            for reading in readings:
                value = getattr(reading, series.field)
                if value is not None:
                    family.add_metric((str(reading.index), reading.uuid or ""), float(value))
            if family.samples:
                yield family

    def describe(self) -> Iterator[Metric]:
        """The names, for the registry's clash check, without reading NVML at registration."""
        for series in SERIES:
            yield _family(series)


def _family(series: _Series) -> GaugeMetricFamily | CounterMetricFamily:
    kind = CounterMetricFamily if series.counter else GaugeMetricFamily
    return kind(series.name, series.help, labels=_LABELS)
