"""Build-once cache for bundled models, keyed by a content hash of everything the build reads.

Layout: ``<cache_dir>/<name>/<key>/`` holding the built files and ``manifest.json`` with the
sha256 of each. An entry whose files are missing or whose hashes differ is rebuilt. Builds
write to a temporary sibling folder and are renamed into place, so a crash never leaves a
half-built entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from inferno.config import cache_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(parts: Iterable[str | bytes | Path]) -> str:
    """A short hash over strings, bytes and file contents."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(sha256_file(part).encode())
        elif isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def is_valid(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return bool(manifest) and all(
            sha256_file(folder / name) == digest for name, digest in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_build(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return the folder of a valid build, running ``build(tmp_folder)`` when there is none."""
    root = cache_dir() / name
    folder = root / key
    if is_valid(folder):
        return folder
    if folder.exists():
        log.warning("cached %s at %s is incomplete or corrupt; rebuilding", name, folder)
        shutil.rmtree(folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        build(tmp)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "key": key, "files": files}, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same build first
            if not is_valid(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
