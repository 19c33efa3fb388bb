"""What a profile run executes: the model file and its input feeds, written where the child reads them.

MODEL is an edge bundle folder (``manifest.json`` of format ``inferno-edge-bundle``: its model
file and the input rows of its ``samples.npz``, already tokenized for text), or anything
``load_model`` accepts (an ``.onnx`` file, a bundled name, a student folder): its graph and
its evaluation samples through its preprocessor. Rows are repeated or cut to the batch size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferno.edge.bundle import SAMPLES, is_bundle, read_manifest
from inferno.errors import ConfigError, DataMismatchError, ModelLoadError


@dataclass(frozen=True)
class Target:
    """A model file and the feeds of one batch, saved as ``feeds.npz`` for the child."""

    name: str
    """What the report calls the model."""
    model_path: Path
    feeds_path: Path
    batch: int
    kind: str
    """``bundle``, or ``model`` (anything ``load_model`` accepts)."""
    inputs: str
    """Where the rows came from, e.g. ``samples.npz of the bundle (16 rows)``."""

    @property
    def model_mb(self) -> float:
        return self.model_path.stat().st_size / 2**20


@contextmanager
def prepare(ref: str, batch: int = 1, data: Path | None = None) -> Iterator[Target]:
    """The Target for MODEL ``ref``, its feeds in a temporary folder removed on exit.

    Raises:
        ConfigError: ``batch`` below 1.
        ModelLoadError: a bundle whose manifest, model file or samples are missing or wrong,
            or a model ``load_model`` cannot load.
        DataMismatchError / UserInputError: ``data`` does not fit the model's inputs.
    """
    if batch < 1:
        raise ConfigError(f"--batch {batch}: expected a whole number >= 1")
    with tempfile.TemporaryDirectory(prefix="inferno-profile-") as folder:
        feeds_path = Path(folder) / "feeds.npz"
        if is_bundle(ref):
            model_path, name, feeds, inputs = _from_bundle(Path(ref), data)
            kind = "bundle"
        else:
            model_path, name, feeds, inputs = _from_model(ref, data, batch)
            kind = "model"
        arrays = {k: tile(v, batch) for k, v in feeds.items()}
        np.savez(feeds_path, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword
        yield Target(name, model_path, feeds_path, batch, kind, inputs)


def tile(array: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` rows of ``array``, its rows repeated in order when it has fewer."""
    return np.ascontiguousarray(array[np.arange(batch) % len(array)])


def _from_bundle(folder: Path, data: Path | None) -> tuple[Path, str, dict[str, np.ndarray], str]:
    manifest = read_manifest(folder)
    model_path = folder / str(manifest["model"])
    names = [str(spec["name"]) for spec in manifest.get("inputs", [])]
    source = data if data is not None else folder / SAMPLES
    try:
        with np.load(source) as archive:
            missing = [n for n in names if n not in archive.files]
            if not names or missing:
                raise ModelLoadError(f"{source}: expected arrays named like the bundle's inputs "
                                     f"{names}, found {sorted(archive.files)}")
            feeds = {n: archive[n] for n in names}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{source}: expected an .npz of input rows, could not read it ({exc})") from exc
    _check_dtypes(manifest, feeds, source)
    rows = len(next(iter(feeds.values())))
    where = f"{source.name} ({rows} rows)" if data is None else f"{source} ({rows} rows)"
    return model_path, str(manifest.get("name") or folder.name), feeds, where


def _check_dtypes(manifest: dict[str, Any], feeds: dict[str, np.ndarray], source: Path) -> None:
    for spec in manifest.get("inputs", []):
        array = feeds[str(spec["name"])]
        if str(array.dtype) != str(spec.get("dtype", array.dtype)):
            raise DataMismatchError(f"{source}: input {spec['name']!r}: expected {spec['dtype']} "
                                    f"{spec.get('shape')}, got {array.dtype} {list(array.shape)}")


def _from_model(ref: str, data: Path | None, batch: int) -> tuple[Path, str, dict[str, np.ndarray], str]:
    from inferno.models.loaders import load_model
    from inferno.models.model import count_samples

    model = load_model(ref, data=data)
    samples = model.eval_data.samples
    picked = np.arange(batch) % count_samples(samples)
    if isinstance(samples, dict):
        rows: Any = {name: array[picked] for name, array in samples.items()}
    else:
        rows = [samples[int(i)] for i in picked]
    feeds = model.preprocessor.encode(rows)
    model.signature.check_feeds(feeds)
    return model.onnx_path, model.name, feeds, model.eval_data.source
