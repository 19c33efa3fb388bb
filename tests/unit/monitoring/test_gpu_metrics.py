"""The GPU collector on fake readings: names, labels, values, gaps, and when a server registers it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferno.hardware.power import GpuReading
from inferno.monitoring import metrics as metrics_module
from inferno.monitoring.gpu_metrics import GpuCollector
from inferno.monitoring.metrics import ServingMetrics

A100 = GpuReading(index=0, name="A100", uuid="GPU-aaaa", utilization=0.37,
                  memory_used_bytes=3 * 2**30, memory_total_bytes=40 * 2**30,
                  power_w=123.5, power_limit_w=300.0, energy_j=5000.25)
# A card that answers neither power query nor the energy counter.
T4 = GpuReading(index=1, name="T4", uuid="GPU-bbbb", utilization=0.0,
                memory_used_bytes=0, memory_total_bytes=16 * 2**30,
                power_w=None, power_limit_w=None, energy_j=None)


def scrape(readings: Callable[[], list[GpuReading]]) -> tuple[str, dict[str, dict[tuple[str, str], float]]]:
    """The text exposition and {sample name: {(gpu, gpu_uuid): value}}."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GpuCollector(readings))
    text = generate_latest(registry).decode()
    samples: dict[str, dict[tuple[str, str], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[(s.labels["gpu"], s.labels["gpu_uuid"])] = s.value
    return text, samples


def test_every_series_per_gpu_with_its_labels() -> None:
    text, samples = scrape(lambda: [A100])
    a = ("0", "GPU-aaaa")
    assert samples == {
        "inferno_gpu_utilization": {a: 0.37},
        "inferno_gpu_memory_used_bytes": {a: 3 * 2**30},
        "inferno_gpu_memory_total_bytes": {a: 40 * 2**30},
        "inferno_gpu_power_usage_watts": {a: 123.5},
        "inferno_gpu_power_limit_watts": {a: 300.0},
        "inferno_gpu_energy_consumption_joules_total": {a: 5000.25},
    }
    assert "# TYPE inferno_gpu_energy_consumption_joules_total counter" in text
    assert "# TYPE inferno_gpu_power_usage_watts gauge" in text


def test_a_missing_reading_is_left_out_not_zero() -> None:
    _, samples = scrape(lambda: [A100, T4])
    a, t = ("0", "GPU-aaaa"), ("1", "GPU-bbbb")
    assert samples["inferno_gpu_memory_total_bytes"] == {a: 40 * 2**30, t: 16 * 2**30}
    assert samples["inferno_gpu_utilization"] == {a: 0.37, t: 0.0}  # a real 0 stays
    assert samples["inferno_gpu_power_usage_watts"] == {a: 123.5}
    assert samples["inferno_gpu_energy_consumption_joules_total"] == {a: 5000.25}

    t4_text, _ = scrape(lambda: [T4])
    assert "inferno_gpu_power_usage_watts" not in t4_text  # no empty family (HELP/TYPE) either
    assert "inferno_gpu_energy_consumption_joules" not in t4_text


def test_no_gpu_emits_nothing() -> None:
    text, samples = scrape(lambda: [])
    assert text == ""
    assert samples == {}


def test_readings_are_taken_at_scrape_not_at_registration() -> None:
    calls = []

    def readings() -> list[GpuReading]:
        calls.append(1)
        return [A100]

    registry = CollectorRegistry(auto_describe=True)
    registry.register(GpuCollector(readings))
    assert calls == []
    generate_latest(registry)
    generate_latest(registry)
    assert len(calls) == 2


def test_a_server_registers_the_collector_only_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "gpu_readings", lambda: [A100])
    rendered = ServingMetrics().render().decode()
    assert 'inferno_gpu_memory_total_bytes{gpu="0",gpu_uuid="GPU-aaaa"}' in rendered

    calls = []

    def no_gpu() -> list[GpuReading]:
        calls.append(1)
        return []

    monkeypatch.setattr(metrics_module, "gpu_readings", no_gpu)
    server = ServingMetrics()
    assert "inferno_gpu_" not in server.render().decode()
    server.render()
    assert len(calls) == 1  # asked once at construction, never per scrape
