"""The model repository on disk: ``REPO/<model>/<version>/{model.onnx, plan.json, report.*}``.

Versions are whole numbers. A version folder is written in a hidden staging folder and
renamed into place at the end, so a failed run leaves nothing half-written behind.

The repository is a trust boundary: what a server lists and loads stays inside it. A model
folder, version folder or plan file that is a symlink resolving outside the repository is
skipped (with a warning) unless the caller trusts the repository, and messages name files by
their path relative to the repository, never by an absolute path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from inferno.errors import ConfigError, UnknownModelError

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
MODEL_FILE = "model.onnx"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):  # not match + "$": "$" also matches before a trailing newline
        raise ConfigError(
            f"model name {name!r}: expected letters, digits, '.', '_' or '-' (max 128), "
            "starting with a letter or digit"
        )
    return name


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def relative(path: Path, root: Path) -> str:
    """``path`` as a message shows it: relative to the repository ``root``, never absolute.

    ``path`` is taken as written (not resolved), so a symlink is named where it lies; a path
    that is not under ``root`` is named by its last part only.
    """
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix() or "."
    return path.name


def redact(text: str, root: Path) -> str:
    """``text`` (a third-party error) with the repository's absolute path cut off file names in it."""
    for prefix in {os.path.abspath(root), str(Path(root).resolve())}:
        text = text.replace(prefix + os.sep, "")
    return text


_warned: set[Path] = set()
"""Skipped paths already logged: a server lists its repository on every index request."""


def _kept(path: Path, root: Path, trust: bool) -> bool:
    """False (and a warning, once per path) for a symlink that leads out of the repository,
    unless trusted."""
    if trust or inside(path, root):
        return True
    key = Path(os.path.abspath(path))
    if key not in _warned:
        _warned.add(key)
        log.warning("skipping %s in the repository: a symlink to outside it (a server follows it "
                    "only with --trust)", relative(path, root))
    return False


def versions(repo: Path, name: str, *, trust: bool = False) -> list[int]:
    """The versions of ``name`` that have a plan, oldest first.

    Without ``trust``, a model folder, version folder or plan file that resolves outside
    ``repo`` (a symlink to elsewhere) is skipped with a warning.
    """
    repo = Path(repo)
    folder = repo / name
    if not folder.is_dir() or not _kept(folder, repo, trust):
        return []
    return sorted(
        int(p.name) for p in folder.iterdir()
        if p.name.isdigit() and (p / PLAN_FILE).exists()
        and _kept(p, repo, trust) and _kept(p / PLAN_FILE, repo, trust)
    )


def models(repo: Path, *, trust: bool = False) -> dict[str, list[int]]:
    """Every model with at least one version, by name (``versions`` says which are skipped)."""
    repo = Path(repo)
    if not repo.is_dir():
        return {}
    found = {p.name: versions(repo, p.name, trust=trust) for p in sorted(repo.iterdir()) if p.is_dir()}
    return {name: v for name, v in found.items() if v}


def version_path(repo: Path, name: str, version: int | None = None, *, trust: bool = False) -> Path:
    """The folder of a version (the latest when ``version`` is None), among ``versions(repo, name)``."""
    available = versions(repo, name, trust=trust)
    if not available:
        raise UnknownModelError(f"no model {name!r} in the repository")
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
