"""The layers of DESIGN.md hold: import-linter checks the contract in pyproject.toml.

Three checks: the contract is kept; every package and top-level module of ``inferno`` is in a
layer (a new package cannot slip past the rules); and the same checker, given the layers
upside down, reports the tree as broken — so a kept contract means something.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "inferno"


def _contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = (c for c in config["contracts"] if c["id"] == "layers")
    return contract


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    return subprocess.run([found, "--no-cache", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_layer_contract_is_kept() -> None:
    result = _lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_package_of_inferno_is_in_a_layer() -> None:
    layered = {name.strip() for layer in _contract()["layers"]
               for name in layer.replace("|", ":").split(":")}
    present = {f"inferno.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    present |= {f"inferno.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert present - layered == set(), "add these to the layers in pyproject.toml"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """tuning imports models; with models drawn above tuning the same tree must break."""
    config = tmp_path / "upside-down.ini"
    config.write_text("[importlinter]\nroot_package = inferno\n\n"
                      "[importlinter:contract:upside-down]\nname = upside down\ntype = layers\n"
                      "layers =\n    inferno.models\n    inferno.tuning\n")
    result = _lint_imports(config)
    assert result.returncode != 0
    assert "inferno.tuning is not allowed to import inferno.models" in result.stdout
