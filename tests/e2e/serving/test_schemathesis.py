"""Schemathesis over the server's own ``/openapi.json``, against a real server, with every check.

Each run is the ``schemathesis run`` command line (every check, positive and negative data,
the examples, coverage, fuzzing and stateful phases, ``--continue-on-failure`` so that
one failure does not hide the next), pointed at a real server on 127.0.0.1 that serves the
session repository. The command line rather than ``schemathesis.pytest.from_fixture``: that
lazy loader reads ``request.node._nodeid``, which pytest 9.2 no longer has; and a whole run
gives every distinct failure at once, which is what the failure message lists.

Path parameters: one run draws them from the schema (so a model name is whatever the schema
allows, mostly unknown names answered 404), and the other runs pin ``model`` to a real model
(digits, minilm) and ``version`` to 1, so that metadata, readiness, config, statistics,
inference and loading are exercised on a model that exists (Schemathesis then also knows the
resource is real and does not excuse a 404). Unloading a real model runs on its own, last,
and the model is loaded back after every run, so each run starts from the same server.

Bounded: at most ``MAX_EXAMPLES`` fuzzed cases per operation, a fixed seed, one worker, no
deadline (Schemathesis sets none).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.checks import load_all_checks

from .support import Server, running

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
SEED = 0
MODELS = ("digits", "minilm")

# Every check of the installed Schemathesis, named in the run's config (not left to defaults);
# the registry's list, so that a check a newer release adds runs here too.
load_all_checks()
CHECKS = tuple(CHECK_REGISTRY.get_all_names())

# Checks that cannot apply to an operation, for a documented reason: (operation, check) → why.
_SHAPE_RULE = (
    "positive_data_acceptance wants every request the schema allows to be accepted. On infer, the "
    "Open Inference Protocol makes a request valid only when 'data' holds as many elements as the "
    "product of its 'shape' and names, datatypes and shapes match the model's metadata "
    "(GET /v2/models/{model}); JSON Schema cannot state the first (arithmetic across two fields), "
    "and a request schema shared by every model cannot state the second, so a schema-valid request "
    "the protocol requires refusing (400) always exists. Every other check still runs on infer."
)
EXCLUDED: dict[tuple[str, str], str] = {
    ("POST /v2/models/{model}/infer", "positive_data_acceptance"): _SHAPE_RULE,
    ("POST /v2/models/{model}/versions/{version}/infer", "positive_data_acceptance"): _SHAPE_RULE,
}


@dataclass(frozen=True)
class Run:
    """One ``schemathesis run``: the path parameters it pins and the operations it selects."""

    pinned: dict[str, str] = field(default_factory=dict)
    options: tuple[str, ...] = ()


RUNS = {
    "schema-drawn": Run(),
    "digits": Run({"model": "digits", "version": "1"},
                  ("--include-path-regex", r"\{model\}", "--exclude-path-regex", r"/unload$")),
    "minilm": Run({"model": "minilm", "version": "1"},
                  ("--include-path-regex", r"\{model\}", "--exclude-path-regex", r"/unload$")),
    "digits-unload": Run({"model": "digits"}, ("--include-path-regex", r"/unload$")),
}


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository) as s:
        yield s


@pytest.mark.parametrize("name", list(RUNS))
def test_schemathesis_finds_nothing(server: Server, tmp_path: Path, name: str) -> None:
    run = RUNS[name]
    if "model" in run.pinned:  # the run is about a model that is there
        assert server.request("GET", f"/v2/models/{run.pinned['model']}/ready").status == 200
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(run))
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
               "run", f"{server.url}/openapi.json", "--mode", "all",
               "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(MAX_EXAMPLES),
               "--continue-on-failure", "--seed", str(SEED), "--workers", "1", "--request-timeout", "30",
               "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
               *run.options]
    try:
        # cwd: Schemathesis keeps its cache (.schemathesis) in the working directory
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    finally:
        _load_back(server)
    assert report.exists(), f"schemathesis did not run (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    doc = json.loads(report.read_text())
    assert doc.get("operations", {}).get("tested", 0) > 0, result.stdout
    assert result.returncode == 0, _summary(doc, result.stdout)


def _config(run: Run) -> str:
    """The run's schemathesis.toml: every check on, pinned path parameters, the per-operation exclusions.

    (Not ``--checks all`` on the command line: that overrides the per-operation ``enabled = false``.)
    """
    lines = ["[checks]", *(f"{check}.enabled = true" for check in CHECKS),
             "", "[parameters]", *(f'"path.{k}" = {json.dumps(v)}' for k, v in run.pinned.items())]
    for (operation, check), why in EXCLUDED.items():
        lines += ["", f"# {why}", "[[operations]]", f"include-name = {json.dumps(operation)}",
                  f"checks.{check}.enabled = false"]
    return "\n".join(lines) + "\n"


def _load_back(server: Server) -> None:
    """Load a real model back if the run unloaded it (its own unload run, or a stateful step)."""
    for model in MODELS:
        if server.request("GET", f"/v2/models/{model}/ready", headers=server.auth).status != 200:
            response = server.request("POST", f"/v2/repository/models/{model}/load", b"", server.auth, timeout=300)
            assert response.status == 200, response.body


def _summary(doc: dict[str, Any], stdout: str) -> str:
    """Every distinct failure: one line per check and operation, then Schemathesis's own details
    (each with the response it got and a curl command that reproduces it)."""
    errors = doc.get("errors") or []
    lines = [f"Schemathesis {doc.get('schemathesis_version')} (seed {doc.get('seed')}): "
             f"{doc.get('test_cases', {}).get('unique_failures')} distinct failures, {len(errors)} errors"]
    for failure in doc.get("failures") or []:
        lines += [f"  {failure.get('code')} {failure.get('title')}: {operation}"
                  for operation in failure.get("operations", [])]
    lines += [f"  error: {json.dumps(error)[:300]}" for error in errors]
    details = stdout[stdout.find("=== FAILURES ==="):] if "=== FAILURES ===" in stdout else stdout
    return "\n".join(lines) + "\n\n" + details
