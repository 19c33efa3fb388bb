"""The trust boundary of a plan folder: no Python code imported from a plan, no file read from
outside the repository, no absolute path in an error, unless the runner is trusted.

Real plan folders (a tiny ONNX graph on ONNX Runtime, as ``accelerate`` writes them) whose
``plan.json`` is then edited the way an attacker would; real symlinks in ``tmp_path``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferno import repository
from inferno.errors import ModelLoadError
from inferno.repository.plan import Plan, PlanRunner, load_plan

from .serving import plans

PROBE = "inferno_trust_probe"
"""A module a hostile plan names: importing it writes ``imported.txt`` next to it."""


tiny = plans.relu


def edit(folder: Path, **changes: Any) -> None:
    path = folder / repository.PLAN_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def refusal(folder: Path, *, trust: bool = False) -> str:
    with pytest.raises(ModelLoadError) as info:
        PlanRunner(folder, trust=True) if trust else PlanRunner(folder)  # untrusted by default
    return str(info.value)


@pytest.fixture
def folder(repo: Path) -> Path:
    return plans.write_plan(repo, "tiny", tiny())


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module that records its import in a file (and would build a torch model)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{PROBE}.py").write_text(
        "from pathlib import Path\n"
        "Path(__file__).with_name('imported.txt').write_text('imported')\n"
        "def build():\n"
        "    import torch\n"
        "    module = torch.nn.Linear(2, 2)\n"
        "    module.example_inputs = (torch.ones(1, 2),)\n"
        "    return module\n"
    )
    monkeypatch.syspath_prepend(str(code))
    yield code / "imported.txt"
    sys.modules.pop(PROBE, None)


# -- code ------------------------------------------------------------------------------------------


def test_a_torch_plan_is_refused_without_trust_and_its_source_never_imported(folder: Path, probe: Path) -> None:
    edit(folder, runtime="torch", source=f"{PROBE}:build")
    message = refusal(folder)
    assert message == (
        f"plan runs on torch from source '{PROBE}:build': that imports Python code; a server loads such "
        "a plan only with --trust (start it with --trust for repositories you wrote)"
    )
    assert not probe.exists() and PROBE not in sys.modules


@pytest.mark.parametrize("runtime", ["torch", "torch-compile"])
def test_os_abort_as_a_source_is_refused_before_anything_runs(folder: Path, runtime: str) -> None:
    edit(folder, runtime=runtime, source="os:abort")
    assert refusal(folder) == (
        f"plan runs on {runtime} from source 'os:abort': that imports Python code; a server loads such "
        "a plan only with --trust (start it with --trust for repositories you wrote)"
    )


def test_load_plan_has_the_same_gate(folder: Path, probe: Path) -> None:
    edit(folder, runtime="torch", source=f"{PROBE}:build")
    with pytest.raises(ModelLoadError, match="only with --trust"):
        load_plan(folder)
    assert not probe.exists()


def test_a_trusted_torch_plan_rebuilds_its_source_and_runs(folder: Path, probe: Path) -> None:
    pytest.importorskip("torch")
    edit(folder, runtime="torch", provider="cpu", requested_provider=None, source=f"{PROBE}:build")
    runner = PlanRunner(folder, trust=True)
    try:
        out = runner.predict(np.ones((3, 2), np.float32))
    finally:
        runner.close()
    assert probe.exists()
    assert out.shape == (3, 2)


def test_trust_reaches_the_loader(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that is itself gated (a pickle) is read only when the runner is trusted."""
    import inferno.models.loaders as loaders

    seen: list[bool] = []

    def load_model(ref: str, *, trust: bool = False, **_: Any) -> Any:
        seen.append(trust)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(loaders, "load_model", load_model)
    edit(folder, runtime="torch", source="model.pkl")
    assert "stop here" in refusal(folder, trust=True)
    assert seen == [True]


def test_an_onnx_plan_imports_nothing_from_its_source(folder: Path, probe: Path) -> None:
    edit(folder, source=f"{PROBE}:build")  # onnxruntime: the source is only a record
    PlanRunner(folder).close()
    assert not probe.exists()


# -- paths -----------------------------------------------------------------------------------------


def text_plan(folder: Path, tokenizer: str) -> None:
    edit(folder, preprocessor={"kind": "text", "tokenizer": tokenizer, "max_length": 8,
                               "input_names": ["x"]})


def test_a_tokenizer_outside_the_repository_is_refused(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    text_plan(folder, "../../../secret.json")
    message = refusal(folder)
    assert message.startswith("tokenizer '../../../secret.json': outside the repository;"), message
    assert "--trust" in message and str(tmp_path) not in message


def test_a_tokenizer_symlink_to_outside_is_refused(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    (folder / "tokenizer.json").symlink_to(tmp_path / "secret.json")
    text_plan(folder, "tokenizer.json")
    message = refusal(folder)
    assert message.startswith("tokenizer 'tokenizer.json': outside the repository;"), message
    assert str(tmp_path) not in message


def test_an_absolute_tokenizer_is_refused(folder: Path, tmp_path: Path) -> None:
    inside = folder / "tokenizer.json"
    inside.write_text("{}")
    text_plan(folder, str(inside))  # even one that points inside: a plan names files relative to it
    message = refusal(folder)
    assert message.startswith("tokenizer: expected a path relative to the version folder tiny/1, "
                              "got an absolute path"), message
    assert str(tmp_path) not in message


def test_a_tokenizer_inside_the_repository_is_taken(folder: Path) -> None:
    shared = folder.parent.parent / "shared"
    shared.mkdir()
    (shared / "tokenizer.json").write_text("{}")
    text_plan(folder, "../../shared/tokenizer.json")
    runner = PlanRunner(folder)  # the tokenizer is read on first use, not here
    try:
        assert runner.preprocessor.kind == "text"
    finally:
        runner.close()


def test_trust_lifts_the_path_checks(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    text_plan(folder, str(tmp_path / "secret.json"))
    PlanRunner(folder, trust=True).close()


def test_a_model_file_symlink_to_outside_is_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    (folder / repository.MODEL_FILE).rename(outside)
    (folder / repository.MODEL_FILE).symlink_to(outside)
    message = refusal(folder)
    assert message.startswith("model file 'tiny/1/model.onnx': outside the repository;"), message
    assert str(tmp_path) not in message
    PlanRunner(folder, trust=True).close()


def test_a_model_file_symlink_inside_the_repository_works(repo: Path, folder: Path) -> None:
    second = plans.write_plan(repo, "tiny", tiny())
    (second / repository.MODEL_FILE).unlink()
    (second / repository.MODEL_FILE).symlink_to(folder / repository.MODEL_FILE)
    PlanRunner(second).close()


def test_a_plan_file_symlink_to_outside_is_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "plan.json"
    (folder / repository.PLAN_FILE).rename(outside)
    (folder / repository.PLAN_FILE).symlink_to(outside)
    message = refusal(folder)
    assert message.startswith("plan file 'tiny/1/plan.json': outside the repository;"), message
    assert str(tmp_path) not in message


def test_a_version_folder_symlink_to_outside_is_refused(repo: Path, folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    folder.rename(outside)
    folder.symlink_to(outside, target_is_directory=True)
    message = refusal(folder)
    assert message.startswith("version folder 'tiny/1': outside the repository;"), message
    assert str(tmp_path) not in message


# -- messages without absolute paths ---------------------------------------------------------------


def test_a_missing_plan_is_named_relative_to_the_repository(repo: Path) -> None:
    (repo / "digits" / "1").mkdir(parents=True)
    with pytest.raises(ModelLoadError) as info:
        Plan.load(repo / "digits" / "1")
    assert str(info.value) == ("no plan at digits/1/plan.json: expected a version folder written by "
                               "`inferno accelerate`")


def test_an_unreadable_plan_is_named_relative_to_the_repository(folder: Path, tmp_path: Path) -> None:
    (folder / repository.PLAN_FILE).write_text("{not json")
    message = refusal(folder)
    assert message.startswith("plan tiny/1/plan.json is unreadable:"), message
    assert str(tmp_path) not in message


def test_a_broken_preprocessor_is_a_load_error(folder: Path, tmp_path: Path) -> None:
    edit(folder, preprocessor={"kind": "text", "max_length": 8})
    message = refusal(folder)
    assert message.startswith("plan tiny/1/plan.json is unreadable: preprocessor"), message


def test_a_corrupt_model_file_is_a_load_error_without_the_absolute_path(folder: Path, tmp_path: Path) -> None:
    (folder / repository.MODEL_FILE).write_bytes(b"not a graph")
    message = refusal(folder)
    assert message.startswith("model file 'tiny/1/model.onnx': onnxruntime cannot load it:"), message
    assert str(tmp_path) not in message and str(tmp_path.resolve()) not in message


def test_a_source_recorded_by_its_absolute_path_is_named_by_its_file_name(folder: Path, tmp_path: Path) -> None:
    edit(folder, runtime="torch", source=str(tmp_path / "models" / "net.pt"))
    message = refusal(folder)
    assert message.startswith("plan runs on torch from source 'net.pt': that imports Python code;"), message
    assert str(tmp_path) not in message
    message = refusal(folder, trust=True)  # the loader's own words, without the path either
    assert message.startswith("plan runs on torch from source 'net.pt', which cannot be loaded here:"), message
    assert str(tmp_path) not in message
