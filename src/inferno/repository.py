"""The model repository on disk: ``REPO/<model>/<version>/{model.onnx, plan.json, report.*}``.

Versions are whole numbers. A version folder is written in a hidden staging folder and
renamed into place at the end, so a failed run leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from inferno.errors import ConfigError, UnknownModelError

PLAN_FILE = "plan.json"
MODEL_FILE = "model.onnx"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"model name {name!r}: expected letters, digits, '.', '_' or '-' (max 128), "
            "starting with a letter or digit"
        )
    return name


def versions(repo: Path, name: str) -> list[int]:
    folder = Path(repo) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / PLAN_FILE).exists())


def models(repo: Path) -> dict[str, list[int]]:
    repo = Path(repo)
    if not repo.is_dir():
        return {}
    found = {p.name: versions(repo, p.name) for p in sorted(repo.iterdir()) if p.is_dir()}
    return {name: v for name, v in found.items() if v}


def version_path(repo: Path, name: str, version: int | None = None) -> Path:
    """The folder of a version (the latest when ``version`` is None)."""
    available = versions(repo, name)
    if not available:
        raise UnknownModelError(f"no model {name!r} in repository {repo}")
    chosen = available[-1] if version is None else version
    if chosen not in available:
        raise UnknownModelError(f"model {name!r} has no version {chosen}; versions: {available}")
    return Path(repo) / name / str(chosen)


def write_version(repo: Path, name: str, fill: Callable[[Path, Path], None]) -> Path:
    """Create the next version of ``name``: ``fill(staging, final)`` writes its files, then it is published.

    ``final`` is the folder the version will have once published (for files that name it).

    On any error the staging folder (and any folder this call created) is removed.
    """
    check_name(name)
    repo = Path(repo)
    created = [p for p in (repo, repo / name) if not p.exists()]
    (repo / name).mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=repo / name))
        try:
            target = repo / name / str(max(_numbers(repo / name), default=0) + 1)
            fill(staging, target)
            os.rename(staging, target)  # fails if a concurrent run took the number
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty
        raise


def _numbers(folder: Path) -> Iterator[int]:
    return (int(p.name) for p in folder.iterdir() if p.name.isdigit())
