"""StaticPrograms' bookkeeping (pure logic: a fake OpenVINO core and model)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from inferno.runtimes.openvino import MAX_STATIC_PROGRAMS, STATIC_AFTER, StaticPrograms


class FakeModel:
    def __init__(self, refuse: set[int] | None = None) -> None:
        self.refuse = refuse or set()
        self.shapes: dict[str, list[int]] = {}

    def clone(self) -> FakeModel:
        return FakeModel(self.refuse)

    def reshape(self, shapes: dict[str, list[int]]) -> None:
        if shapes["x"][1] in self.refuse:
            raise RuntimeError("Check 'x' failed at src/core/shape.cpp:1:\nreshape refused for this length")
        self.shapes = shapes


class FakeCompiled:
    outputs = ("y",)

    def __init__(self, model: FakeModel) -> None:
        self.shapes = model.shapes

    def create_infer_request(self) -> object:
        return object()


class FakeCore:
    def __init__(self) -> None:
        self.compiled: list[dict[str, list[int]]] = []

    def compile_model(self, model: FakeModel, device: str, config: dict[str, Any]) -> FakeCompiled:
        self.compiled.append(model.shapes)
        return FakeCompiled(model)


def feeds(length: int, rows: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.zeros((rows, length), np.int64)}


def test_a_shape_compiles_on_its_nth_call_and_once() -> None:
    core = FakeCore()
    programs = StaticPrograms(core, FakeModel(), "CPU", {}, streams=2)
    for _ in range(STATIC_AFTER - 1):
        assert programs.get(feeds(16)) is None
    program = programs.get(feeds(16))
    assert program is not None and len(program.requests) == 2
    assert core.compiled == [{"x": [4, 16]}]
    assert programs.get(feeds(16)) is program
    assert core.compiled == [{"x": [4, 16]}]
    assert programs.latest() is program


def test_programs_are_never_dropped_and_shapes_beyond_the_slots_stay_dynamic() -> None:
    core = FakeCore()
    programs = StaticPrograms(core, FakeModel(), "CPU", {}, streams=1)
    kept = {}
    for length in range(1, MAX_STATIC_PROGRAMS + 3):
        for _ in range(STATIC_AFTER):
            kept[length] = programs.get(feeds(length))
    assert len(programs) == MAX_STATIC_PROGRAMS
    assert len(core.compiled) == MAX_STATIC_PROGRAMS  # no compile for the shapes beyond the slots
    assert all(kept[n] is not None for n in range(1, MAX_STATIC_PROGRAMS + 1))
    assert kept[MAX_STATIC_PROGRAMS + 1] is None and kept[MAX_STATIC_PROGRAMS + 2] is None
    assert programs.get(feeds(1)) is kept[1]  # the first ones still served


def test_compile_builds_ahead_once() -> None:
    core = FakeCore()
    programs = StaticPrograms(core, FakeModel(), "CPU", {}, streams=1)
    key = (("x", (4, 32)),)
    program = programs.compile(key)
    assert program is not None and programs.compile(key) is program
    assert programs.get(feeds(32)) is program
    assert core.compiled == [{"x": [4, 32]}]


def test_a_shape_the_plugin_refuses_stays_dynamic_and_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    core = FakeCore()
    programs = StaticPrograms(core, FakeModel(refuse={7}), "CPU", {}, streams=1)
    with caplog.at_level(logging.WARNING, logger="inferno.runtimes.openvino"):
        for _ in range(STATIC_AFTER + 3):
            assert programs.get(feeds(7)) is None
    assert core.compiled == []
    assert len(programs) == 0
    assert [r.getMessage().count("reshape refused") for r in caplog.records] == [1]


def test_a_stream_of_new_shapes_keeps_the_counts_bounded() -> None:
    programs = StaticPrograms(FakeCore(), FakeModel(), "CPU", {}, streams=1)
    for length in range(1, 64 * MAX_STATIC_PROGRAMS * 3):
        programs.get(feeds(length))
    assert len(programs._seen) <= 64 * MAX_STATIC_PROGRAMS + 1
    assert len(programs) == 0
