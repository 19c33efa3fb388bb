"""Students of ``digits`` for real: distilled and pruned with tiny epochs, written as student
folders, loaded back through ``load_model``, run by ONNX Runtime and compared with the teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import ConfigError, ModelLoadError
from inferno.models.loaders import load_model
from inferno.models.model import Model
from inferno.models.student import read_student_info
from inferno.passes._io import cpu_session
from inferno.students.distill import distill
from inferno.students.prune import prune, prune_state

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def teacher() -> Model:
    return load_model("digits")


@pytest.fixture(scope="module")
def students(teacher: Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {
        "distill": distill(teacher, "channels=8,16;hidden=32", root / "distilled", epochs=2),
        "prune": prune(teacher, root / "pruned", ratio=0.5, epochs=1),
        "sparse": prune(teacher, root / "sparse", sparsity=0.8, epochs=1),
    }


def _run(model: Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(cpu_session(model.onnx_path, 1).run(None, {"pixels": x})[0])


def _weights(path: Path) -> dict[str, tuple[int, ...]]:
    graph = onnx.load(str(path))
    return {t.name: tuple(t.dims) for t in graph.graph.initializer if len(t.dims) >= 2}


def test_a_student_folder_loads_with_the_teachers_data(teacher: Model, students: dict[str, Path]) -> None:
    student = load_model(str(students["distill"]))
    assert student.name == "distilled" and student.source == str(students["distill"])
    assert student.onnx_path == students["distill"] / "model.onnx"
    assert student.eval_data.source == teacher.eval_data.source
    np.testing.assert_array_equal(student.eval_data.samples["pixels"],  # type: ignore[call-overload]
                                  teacher.eval_data.samples["pixels"])  # type: ignore[call-overload]
    np.testing.assert_array_equal(student.eval_data.labels, teacher.eval_data.labels)  # type: ignore[arg-type]
    assert student.signature.inputs == teacher.signature.inputs
    assert [o.name for o in student.signature.outputs] == ["probabilities"]
    assert student.architecture["family"] == "digits-cnn"
    assert student.architecture["channels"] == [8, 16] and student.architecture["hidden"] == 32
    info = read_student_info(students["distill"])
    assert (info.teacher, info.method, info.spec) == ("digits", "distill", "channels=8,16;hidden=32")
    assert "student of 'digits'" in student.description


def test_the_rebuilt_module_matches_the_graph(teacher: Model, students: dict[str, Path]) -> None:
    student = load_model(str(students["prune"]))
    assert student.torch_factory is not None
    module = student.torch_factory()
    x = teacher.eval_data.samples["pixels"][:32]  # type: ignore[call-overload]
    with torch.no_grad():
        eager = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(eager, _run(student, x), rtol=1e-4, atol=1e-5)
    assert _run(student, x[:3]).shape == (3, 10)  # the batch axis is dynamic


def test_a_few_epochs_are_well_above_chance_and_the_report_says_so(students: dict[str, Path]) -> None:
    for name in ("distill", "prune"):
        report = read_student_info(students[name]).report
        assert report["teacher"]["accuracy"] >= 0.97
        assert report["student"]["accuracy"] > 0.5, (name, report["student"])
        assert 0 < report["agreement"] <= 1
        assert 0.1 < report["student"]["mean_top_probability"] <= 1
        assert report["student"]["latency_ms_p50"] > 0 and report["student"]["throughput_per_s"] > 0
        assert report["train_seconds"] > 0 and report["eval_samples"] == 360


def test_structured_pruning_writes_a_smaller_dense_graph(teacher: Model, students: dict[str, Path]) -> None:
    shapes = sorted(_weights(students["prune"] / "model.onnx").values())
    assert shapes == sorted([(16, 1, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (64, 512), (10, 64)])
    report = read_student_info(students["prune"]).report
    assert report["student"]["params"] == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 32 * 9 + 32 \
        + 64 * 512 + 64 + 10 * 64 + 10
    assert report["teacher"]["params"] == sum(p.numel() for p in teacher.torch_factory().parameters())  # type: ignore[misc]
    assert report["ratios"]["params"] < 0.3 and report["ratios"]["onnx_bytes"] < 0.3
    assert (report["mode"], report["ratio"]) == ("structured", 0.5)


def test_pruning_only_removes_what_contributes_nothing(teacher: Model) -> None:
    """Units whose weights are zero contribute nothing: removing them keeps the outputs."""
    from inferno.models.zoo import digits

    assert teacher.torch_factory is not None
    network = teacher.torch_factory()
    state = {k: v.clone() for k, v in network.state_dict().items()}
    for key, count in (("body.0", 8), ("body.2", 16), ("body.5", 16), ("body.8", 32)):
        state[f"{key}.weight"][-count:] = 0  # a quarter of each layer
        state[f"{key}.bias"][-count:] = 0
    network.load_state_dict(state)
    small, architecture = prune_state({k: v.numpy() for k, v in state.items()}, 0.25)
    assert architecture == {"channels": [24, 48, 48], "hidden": 96}
    pruned = digits.build_network(tuple(architecture["channels"]), architecture["hidden"])
    pruned.load_state_dict({k: torch.from_numpy(v) for k, v in small.items()})
    x = torch.from_numpy(teacher.eval_data.samples["pixels"][:64])  # type: ignore[call-overload]
    with torch.no_grad():
        np.testing.assert_allclose(pruned.eval()(x).numpy(), network(x).numpy(), atol=1e-6)


def test_unstructured_pruning_keeps_the_shape_and_wins_only_once_compressed(
        students: dict[str, Path]) -> None:
    report = read_student_info(students["sparse"]).report
    teacher, student = report["teacher"], report["student"]
    assert student["params"] == teacher["params"] and student["onnx_bytes"] == teacher["onnx_bytes"]
    assert student["nonzero_params"] / student["params"] == pytest.approx(0.2, abs=0.01)
    assert report["ratios"]["gzip_bytes"] < 0.5
    assert report["mode"] == "unstructured" and "speed unchanged" in report["note"]


def test_training_is_deterministic(teacher: Model, students: dict[str, Path], tmp_path: Path) -> None:
    again = distill(teacher, "channels=8,16;hidden=32", tmp_path / "again", epochs=2)
    first = torch.load(students["distill"] / "weights.pt", weights_only=True)
    second = torch.load(again / "weights.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_student_can_teach_and_its_folder_is_replaced_not_merged(
        students: dict[str, Path], tmp_path: Path) -> None:
    distilled = load_model(str(students["distill"]))
    folder = tmp_path / "grandchild"
    prune(distilled, folder, ratio=0.5, epochs=1)
    (folder / "stale.txt").write_text("from the first run")
    prune(distilled, folder, ratio=0.5, epochs=1)
    assert not (folder / "stale.txt").exists()
    grandchild = load_model(str(folder))
    assert grandchild.architecture["channels"] == [4, 8] and grandchild.architecture["hidden"] == 16
    assert read_student_info(folder).teacher == str(students["distill"].resolve())
    assert len(grandchild.eval_data) == 360


def test_a_foreign_folder_is_never_overwritten(teacher: Model, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty folder"):
        prune(teacher, mine, ratio=0.5, epochs=1)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("corrupt", "fragment"), [
    (lambda f: (f / "student.json").write_text("{oops"), "cannot be read as JSON"),
    (lambda f: (f / "student.json").write_text(json.dumps({"format": "inferno-student", "version": 9})),
     "expected version 1, got 9"),
    (lambda f: (f / "model.onnx").write_bytes(b"not a graph"), "cannot be read"),
    (lambda f: (f / "student.json").unlink(), "expected a student folder"),
])
def test_a_corrupt_student_folder_is_a_model_load_error(
        students: dict[str, Path], tmp_path: Path, corrupt: object, fragment: str) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(students["prune"], folder)
    corrupt(folder)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=fragment) as caught:
        load_model(str(folder))
    assert "copy" in str(caught.value)


def test_options_that_do_not_fit_are_config_errors(teacher: Model, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="got both"):
        prune(teacher, tmp_path / "x", ratio=0.5, sparsity=0.5)
    with pytest.raises(ConfigError, match="--heads and --ffn are for transformers"):
        prune(teacher, tmp_path / "x", heads=0.5)
    with pytest.raises(ConfigError, match="--epochs: expected a whole number >= 1, got 0"):
        distill(teacher, None, tmp_path / "x", epochs=0)
    with pytest.raises(ConfigError, match="unknown key 'layers'"):
        distill(teacher, "layers=3", tmp_path / "x")
    assert not (tmp_path / "x").exists()
