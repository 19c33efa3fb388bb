"""Which runtime × provider pairs ``accelerate --device`` measures on, and what it says when a GPU is missing."""

from __future__ import annotations

import pytest

from inferno.errors import ConfigError
from inferno.tuning import targets as targets_module
from inferno.tuning.targets import Target, select_targets

from ..passes.support import fake_hardware, gpu

CPU_ONLY = fake_hardware()
ORT_GPU = fake_hardware(gpus=[gpu("9.0")], providers=(
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))


@pytest.fixture
def torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend torch sees a GPU (the probe is a cached import of torch.cuda)."""
    monkeypatch.setattr(targets_module, "torch_sees_cuda", lambda: True)


def labels(found: list[Target]) -> list[str]:
    return [t.label for t in found]


def test_cpu_measures_every_installed_runtime_but_the_baseline_and_compile() -> None:
    found, notes = select_targets("cpu", None, CPU_ONLY)
    assert "onnxruntime" in labels(found)
    assert not {"torch", "torch-compile"} & set(labels(found))
    assert all(t.device == "cpu" and t.provider is None for t in found)
    assert notes == []


def test_cuda_without_a_gpu_is_an_error_naming_what_was_tried() -> None:
    with pytest.raises(ConfigError, match="--device cuda: no GPU runtime") as err:
        select_targets("cuda", None, CPU_ONLY)
    assert "onnxruntime:tensorrt" in str(err.value) and "CUDAExecutionProvider" in str(err.value)


def test_all_without_a_gpu_measures_the_cpu_and_says_so() -> None:
    found, notes = select_targets("all", None, CPU_ONLY)
    assert found == select_targets("cpu", None, CPU_ONLY)[0]
    assert notes == ["no CUDA GPU runtime found: measured on the CPU only"]


def test_ort_gpu_providers_become_targets_in_preference_order() -> None:
    found, notes = select_targets("cuda", ("onnxruntime",), ORT_GPU)
    assert labels(found) == ["onnxruntime:tensorrt", "onnxruntime:cuda"]
    assert {t.device for t in found} == {"cuda"}
    assert notes == []


def test_all_with_gpus_lists_cpu_then_gpu_and_notes_the_missing_ones() -> None:
    found, notes = select_targets("all", ("onnxruntime", "torch"), ORT_GPU)
    assert labels(found)[0] == "onnxruntime"
    assert labels(found)[1:] == ["onnxruntime:tensorrt", "onnxruntime:cuda"]
    if not targets_module.torch_sees_cuda():
        assert any("torch:cuda" in n for n in notes)


@pytest.mark.usefixtures("torch_cuda")
def test_torch_gpu_targets_when_torch_sees_cuda() -> None:
    found, _ = select_targets("cuda", None, CPU_ONLY)
    assert {"torch:cuda", "torch-compile:cuda"} <= set(labels(found))
    assert not any(t.runtime == "onnxruntime" for t in found)


@pytest.mark.parametrize(("device", "runtimes", "fragment"), [
    ("tpu", None, "--device 'tpu'"),
    ("cpu", ("onnxruntime", "tvm"), "tvm"),
])
def test_bad_device_or_runtime(device: str, runtimes: tuple[str, ...] | None, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        select_targets(device, runtimes, CPU_ONLY)


def test_target_labels_are_unique_per_provider() -> None:
    assert Target("onnxruntime").label == "onnxruntime"
    assert Target("onnxruntime", "tensorrt").label == "onnxruntime:tensorrt"
    assert Target("torch", "cuda:1").device == "cuda"
