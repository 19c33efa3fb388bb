"""Students of ``minilm`` for real, on a tiny budget: a 3-layer student from alternate teacher
layers and a head/FFN-pruned one, each trained one epoch on short bundled sentences, exported,
run by ONNX Runtime, loaded back through ``load_model`` and compared with the teacher."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.models.loaders import load_model
from inferno.models.model import EvalData, Model
from inferno.passes._io import cpu_session
from inferno.students.distill import distill
from inferno.students.prune import prune
from inferno.students.transformer_student import layer_student

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SHORT_WORDS = 8
SENTENCES = 20


@pytest.fixture(scope="module")
def teacher() -> Model:
    """``minilm`` with its evaluation data cut to 20 short sentences: 16 train, 4 held out."""
    model = load_model("minilm")
    short = [s for s in model.eval_data.samples if len(str(s).split()) <= SHORT_WORDS][:SENTENCES]
    return dataclasses.replace(model, eval_data=EvalData(short, source="short bundled sentences"))


@pytest.fixture(scope="module")
def students(teacher: Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-students")
    return {  # through distill/prune: their dispatch to the text functions is part of the test
        "distill": distill(teacher, "layers=3", root / "distilled", epochs=1),
        "prune": prune(teacher, root / "pruned", heads=0.25, ffn=0.5, epochs=1),
    }


def _report(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "student.json").read_text())  # type: ignore[no-any-return]


def _matrices(path: Path) -> list[tuple[int, ...]]:
    graph = onnx.load(str(path))
    return sorted(tuple(t.dims) for t in graph.graph.initializer if len(t.dims) == 2)


def test_alternate_layers_carry_the_teachers_weights(teacher: Model) -> None:
    encoder = teacher.torch_factory().encoder  # type: ignore[misc]
    student, architecture = layer_student(encoder, (1, 3, 5))
    assert architecture["config"]["num_hidden_layers"] == 3 and len(student.encoder.layer) == 3
    ours, theirs = student.state_dict(), encoder.state_dict()
    for position, layer in enumerate((1, 3, 5)):
        for name in ("attention.self.query.weight", "intermediate.dense.bias", "output.LayerNorm.weight"):
            assert torch.equal(ours[f"encoder.layer.{position}.{name}"], theirs[f"encoder.layer.{layer}.{name}"])
    assert not torch.equal(ours["encoder.layer.0.attention.self.query.weight"],
                           theirs["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(ours["embeddings.word_embeddings.weight"], theirs["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("method", ["distill", "prune"])
def test_student_graph_has_the_teachers_names_and_dynamic_axes(students: dict[str, Path],
                                                             teacher: Model, method: str) -> None:
    graph = onnx.load(str(students[method] / "model.onnx"), load_external_data=False)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in graph.graph.input}
    assert inputs == {name: ["batch", "sequence"] for name in
                      ("input_ids", "attention_mask", "token_type_ids")}
    assert [o.name for o in graph.graph.output] == ["embedding"]
    session = cpu_session(students[method] / "model.onnx", 1)
    for sentences in (["A short one."], ["Two sentences here,", "of different lengths, padded to the longest."]):
        embedding = session.run(None, teacher.preprocessor.encode(sentences))[0]
        assert embedding.shape == (len(sentences), 384)
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_distilled_student_has_three_layers_and_loads_back(students: dict[str, Path], teacher: Model) -> None:
    info = _report(students["distill"])
    assert info["family"] == "bert" and info["method"] == "distill" and info["teacher"] == "minilm"
    assert info["architecture"]["config"]["num_hidden_layers"] == 3
    assert info["architecture"]["teacher_layers"] == [1, 3, 5]
    assert info["architecture"]["num_heads"] == 12 and info["architecture"]["hidden_size"] == 384
    report = info["report"]
    assert report["student"]["params"] < 0.8 * report["teacher"]["params"]
    assert report["eval_samples"] == 4  # 20% of the 20 sentences, never trained on
    student = load_model(str(students["distill"]))
    sentences = ["The quick brown fox.", "Can I pay by card?"]
    feeds = teacher.preprocessor.encode(sentences)
    with torch.inference_mode():
        eager = student.torch_factory()(*(torch.from_numpy(feeds[n]) for n in student.signature.input_names))  # type: ignore[misc]
    onnx_out = cpu_session(student.onnx_path, 1).run(None, feeds)[0]
    np.testing.assert_allclose(eager.numpy(), onnx_out, atol=1e-4)


def test_pruned_student_is_a_smaller_dense_graph(students: dict[str, Path]) -> None:
    info = _report(students["prune"])
    assert info["architecture"]["heads"] == [9] * 6 and info["architecture"]["intermediate"] == [768] * 6
    teacher_shapes = _matrices(load_model("minilm").onnx_path)
    shapes = _matrices(students["prune"] / "model.onnx")
    assert (384, 1536) in teacher_shapes and (384, 1536) not in shapes
    assert shapes.count((384, 768)) == 6 and shapes.count((768, 384)) == 6  # FFN in and out
    assert shapes.count((384, 288)) == 18 and shapes.count((288, 384)) == 6  # Q, K, V and output
    hints = load_model(str(students["prune"])).architecture  # for ORT's attention fusion
    assert hints["num_heads"] == 9 and hints["hidden_size"] == 9 * 32
    report = info["report"]
    assert report["student"]["nonzero_params"] > 0.999 * report["student"]["params"]  # dense, not masked
    assert report["ratios"]["params"] < 0.85


@pytest.mark.parametrize(("method", "bound"), [("distill", 0.4), ("prune", 0.6)])
def test_students_stay_close_to_the_teacher(students: dict[str, Path], method: str, bound: float) -> None:
    student = _report(students[method])["report"]["student"]
    assert student["cosine_mean"] > bound and student["cosine_min"] > bound - 0.2
    assert 0 <= student["neighbour_agreement"] <= 1 and -1 <= student["spearman"] <= 1
    assert student["latency_ms_p50"] > 0 and student["throughput_per_s"] > 0
