"""The package surface: registry contents, curated exports, option validation, error translation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import inferno.passes
from inferno.errors import PassError
from inferno.passes import PASSES, make_pass

from ..exports import export_problems, imports
from .graphs import mlp, random_feeds
from .support import context, corrupt_model

EXPECTED = {
    "prepare": "fp32",
    "graph_optimization": "fp32",
    "transformer_fusion": "fp32",
    "int8_dynamic": "int8",
    "int8_static": "int8",
    "int8_nncf": "int8",
    "int8_weight_only": "int8w",
    "mixed_precision": "int8",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp16_compute": "fp16",
}


def test_importing_the_package_registers_every_pass_with_its_precision() -> None:
    assert {name: cls.precision for name, cls in PASSES.items()} == EXPECTED


def test_all_is_curated_and_importable() -> None:
    """``__all__`` is exactly what the package imports, each name the very object imported."""
    origins = imports(inferno.passes)
    assert export_problems(inferno.passes.__all__, origins, inferno.passes) == []
    for name in inferno.passes.__all__:
        assert getattr(inferno.passes, name) is not None


def test_every_registered_pass_is_exported_under_its_class_name() -> None:
    for cls in PASSES.values():
        assert cls.__name__ in inferno.passes.__all__
        assert getattr(inferno.passes, cls.__name__) is cls


def test_importing_the_package_does_not_import_ort_tools() -> None:
    import subprocess
    import sys

    code = (
        "import sys, inferno.passes; "
        "assert 'onnxruntime.quantization' not in sys.modules; "
        "assert 'onnxruntime.transformers' not in sys.modules; "
        "assert not any(p.endswith('onnxruntime/transformers') for p in sys.path)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("graph_optimization", {"level": "everything"}),
        ("int8_dynamic", {"per_chanel": True}),
        ("int8_static", {"method": "kl"}),
        ("mixed_precision", {"target_cosine": 1.5}),
        ("mixed_precision", {"max_fp32_fraction": -0.1}),
        ("transformer_fusion", {"num_heads": -2}),
    ],
)
def test_bad_options_are_rejected_when_the_pass_is_built(
    name: str, options: dict[str, object]
) -> None:
    with pytest.raises(ValidationError):
        make_pass(name, **options)


def test_describe_names_the_options() -> None:
    assert (
        make_pass("int8_dynamic", per_channel=True)
        .describe()
        .startswith("int8_dynamic(per_channel=True")
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_corrupt_model_file_raises_pass_error_naming_it(name: str, tmp_path: Path) -> None:
    src = corrupt_model(tmp_path / "broken.onnx")
    ctx = context(calibration=random_feeds(mlp(), 2))
    with pytest.raises(PassError, match=r"broken\.onnx"):
        make_pass(name).run(src, tmp_path / "out.onnx", ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_missing_model_file_raises_pass_error(name: str, tmp_path: Path) -> None:
    ctx = context(calibration=random_feeds(mlp(), 2))
    with pytest.raises(PassError, match=r"missing\.onnx.*does not exist"):
        make_pass(name).run(tmp_path / "missing.onnx", tmp_path / "out.onnx", ctx)


def test_an_empty_file_is_not_a_model(tmp_path: Path) -> None:
    src = tmp_path / "empty.onnx"
    src.write_bytes(b"")
    with pytest.raises(PassError, match=r"empty\.onnx' is not an ONNX model"):
        make_pass("int8_dynamic").run(src, tmp_path / "out.onnx", context())
