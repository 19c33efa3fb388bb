"""ORT's quantization tools print() progress; none of it may reach stdout (``--json`` lives there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inferno.passes import _quant, make_pass

from .graphs import conv_net, random_feeds, save
from .support import context


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("int8_static", {"method": "entropy"}),
        ("int8_static", {"method": "percentile"}),
        ("mixed_precision", {"base": "static", "calibration_method": "percentile"}),
    ],
)
def test_calibrating_passes_write_nothing_to_stdout(
    name: str, options: dict[str, object], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model = conv_net()
    src = save(model, tmp_path / "conv.onnx")
    make_pass(name, **options).run(src, tmp_path / "q.onnx", context(random_feeds(model, 4)))
    captured = capfd.readouterr()
    assert captured.out == ""
    if name == "int8_static":
        assert "Collecting tensor data" in captured.err  # the progress went to stderr instead


def test_pre_processing_prints_go_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from onnxruntime.quantization import shape_inference

    def noisy(src: str, dst: str, **_: object) -> None:
        print("Warning: invalid weight name w found in the graph (not a graph input)")
        shutil.copyfile(src, dst)

    monkeypatch.setattr(shape_inference, "quant_pre_process", noisy)
    src = save(conv_net(), tmp_path / "conv.onnx")
    work = tmp_path / "work"
    work.mkdir()
    assert _quant.preprocess(src, work) == work / "preprocessed.onnx"
    captured = capfd.readouterr()
    assert captured.out == "" and "invalid weight name" in captured.err
