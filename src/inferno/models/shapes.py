"""Concrete sizes for a graph's dynamic axes: ``--shape``, or a search for sizes the graph accepts.

A graph that says ``x [N, 3, H, W]`` runs only at some ``H, W`` (a detector whose feature
pyramid concatenates needs multiples of 32; an OCR recognizer wants height 48). Measuring at
an arbitrary size either fails or measures something the model never sees. So before any
data is synthesized, the sizes are fixed:

1. ``--shape NAME:DIMS`` (``x:1,3,320,320``; the batch axis may be written ``N``, ``?`` or
   ``-1``) fixes an input's axes; a fixed axis of the graph must agree.
2. Axes still dynamic are filled from the usual sizes of what the input looks like (images,
   audio, token ids; ``CANDIDATES``), trying each candidate in turn on ONNX Runtime at batch 1
   until the graph runs; axes that share a name share a size. The first that runs is run
   again at batch 2, which also tells each output's batch axis (the one that doubled).
3. When nothing runs, ``ShapeSearchError`` names the input and suggests ``--shape``/``--data``.

The result is recorded (report, plan) and ``inferno serve`` warms up with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferno.errors import ShapeSearchError as ShapeSearchError  # re-export
from inferno.errors import UserInputError
from inferno.models.signature import Dim, Signature, TensorSpec

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]
"""Input name → one call's shape at batch 1, in the graph's layout."""

IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (224, 224), (320, 320), (48, 192), (48, 320), (32, 320), (640, 640), (256, 256),
    (64, 64), (32, 32),
)
"""(height, width) of images: ImageNet, detector and OCR line crops, small inputs."""
AUDIO_LENGTHS = (512, 16000, 1024, 256, 8000, 4096, 160)
"""Samples of a mono audio chunk: VAD frames at 16/8 kHz, one second, STFT-friendly sizes."""
TOKEN_LENGTHS = (16, 128, 32, 64, 8)
GENERIC_SIZES = (16, 32, 64, 128, 224, 8, 1)
RATE_NAMES = re.compile(r"(^|_)(sr|sample_?rate|sampling_?rate|rate)$", re.IGNORECASE)
SAMPLE_RATES = (16000, 8000)
"""Values for a scalar integer input named like a sample rate."""


@dataclass(frozen=True)
class Found:
    """What the search settled on."""

    shapes: Shapes
    signature: Signature
    """The signature with batch axes checked at batch 2 (outputs' taken from the run)."""
    source: str
    """``--shape``, ``graph`` (every axis fixed) or ``probe``."""


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int | None, ...]]:
    """``--shape NAME:DIMS`` values → dims by input name; None stands for the batch axis.

    Raises:
        UserInputError: an item is not ``NAME:DIMS`` with whole-number dims.
    """
    shapes: dict[str, tuple[int | None, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        parts = [p for p in re.split(r"[,x×\s]+", dims.strip()) if p] if sep else []
        if not name or not parts:
            raise UserInputError(f"--shape {item!r}: expected NAME:DIMS such as x:1,3,224,224")
        values: list[int | None] = []
        for part in parts:
            if part in ("N", "n", "?", "-1", "batch"):
                values.append(None)
            elif part.isdigit() and int(part) > 0:
                values.append(int(part))
            else:
                raise UserInputError(f"--shape {item!r}: dimension {part!r}: expected a positive "
                                     f"whole number, or N for the batch axis")
        shapes[name] = tuple(values)
    return shapes


def apply_given(signature: Signature, given: dict[str, tuple[int | None, ...]]) -> Signature:
    """The signature with ``--shape`` sizes fixed in (the batch axis stays as it is).

    Raises:
        UserInputError: an unknown input, a wrong rank, or a size the graph fixes otherwise.
    """
    unknown = sorted(set(given) - set(signature.input_names))
    if unknown:
        raise UserInputError(f"--shape {unknown[0]}: no such input; the model's inputs are "
                             f"{list(signature.input_names)}")
    inputs = []
    for spec in signature.inputs:
        dims = given.get(spec.name)
        if dims is None:
            inputs.append(spec)
            continue
        if len(dims) != len(spec.shape):
            raise UserInputError(f"--shape {spec.name}: expected {len(spec.shape)} dims like "
                                 f"{spec.describe()}, got {len(dims)}")
        shape: list[Dim] = []
        for axis, (declared, wanted) in enumerate(zip(spec.shape, dims, strict=True)):
            if axis == spec.batch_axis or wanted is None:
                shape.append(declared)
            elif isinstance(declared, int) and declared != wanted:
                raise UserInputError(f"--shape {spec.name}: axis {axis} is fixed at {declared} "
                                     f"in the graph ({spec.describe()}), got {wanted}")
            else:
                shape.append(wanted)
        inputs.append(TensorSpec(spec.name, spec.dtype, tuple(shape), spec.batch_axis))
    return Signature(tuple(inputs), signature.outputs)


def candidates(spec: TensorSpec) -> list[dict[int, int]]:
    """Sizes to try for ``spec``'s dynamic non-batch axes, most usual first (axis → size)."""
    axes = [i for i, d in enumerate(spec.shape) if isinstance(d, str) and i != spec.batch_axis]
    if not axes:
        return [{}]
    floating = spec.dtype.startswith(("float", "bfloat"))
    rank = len(spec.shape)
    if floating and rank == 4:
        channels_first = isinstance(spec.shape[1], int) and spec.shape[1] in (1, 3, 4)
        spatial = (2, 3) if channels_first or not isinstance(spec.shape[3], int) else (1, 2)
        options = [{spatial[0]: h, spatial[1]: w} for h, w in IMAGE_SIZES]
        rest = [a for a in axes if a not in spatial]
        return [{a: s for a, s in {**o, **dict.fromkeys(rest, 3)}.items() if a in axes}
                for o in options]
    sizes = (AUDIO_LENGTHS if floating and len(axes) == 1 and rank <= 3 else
             TOKEN_LENGTHS if not floating else GENERIC_SIZES)
    return [dict.fromkeys(axes, s) for s in sizes]


def search(session: Any, signature: Signature, given: dict[str, tuple[int | None, ...]],
           feeds_for: Any) -> Found:
    """Find sizes that ``session`` (an ORT InferenceSession of the graph) runs at.

    ``feeds_for(signature, shapes, rows)`` builds the feeds to try (the loader's synthesizer).

    Raises:
        UserInputError: ``--shape`` does not fit the graph.
        ShapeSearchError: no candidate ran.
    """
    declared, signature = signature, apply_given(signature, given)
    per_input = {s.name: candidates(s) for s in signature.inputs}
    rounds = max(len(c) for c in per_input.values())
    dynamic = any(len(c[0]) for c in per_input.values())
    source = "probe" if dynamic else ("--shape" if given else "graph")
    tried: list[str] = []
    errors: list[str] = []
    for k in range(rounds):
        sizes = _shared_sizes(signature, {n: c[min(k, len(c) - 1)] for n, c in per_input.items()})
        shapes = {s.name: _one_call(s, sizes) for s in signature.inputs}
        label = _label(signature, shapes)
        if label in tried:
            continue
        tried.append(label)
        try:
            outputs = _run(session, feeds_for(signature, shapes, 1))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            errors.append(f"{label}: {_first_line(exc)}")
            continue
        # the declared dims stay in the signature (serving takes any size the graph takes)
        checked = _check_batch(session, declared, shapes, outputs, feeds_for)
        log.info("input sizes: %s (%s)", label, source)
        return Found(shapes, checked, source)
    worst = _most_dynamic(signature)
    hint = ", ".join(f"{s.name}:{','.join(str(d) if isinstance(d, int) else ('N' if i == s.batch_axis else 'SIZE') for i, d in enumerate(s.shape))}"
                     for s in signature.inputs if any(isinstance(d, str) for d in s.shape))
    raise ShapeSearchError(
        f"input {worst.name!r} {worst.describe()}: no size tried ran ({'; '.join(errors[:3])}"
        f"{'; ...' if len(errors) > 3 else ''}); pass --shape {hint} or --data FILE.npz"
    )


def _shared_sizes(signature: Signature, choice: dict[str, dict[int, int]]) -> dict[Dim, int]:
    """Axis name → size: the first input naming an axis decides it for every input."""
    sizes: dict[Dim, int] = {}
    for spec in signature.inputs:
        for axis, size in choice[spec.name].items():
            sizes.setdefault(spec.shape[axis], size)
    return sizes


def _one_call(spec: TensorSpec, sizes: dict[Dim, int]) -> tuple[int, ...]:
    return tuple(1 if i == spec.batch_axis else d if isinstance(d, int) else sizes.get(d, 1)
                 for i, d in enumerate(spec.shape))


def _label(signature: Signature, shapes: Shapes) -> str:
    """The shapes tried, those of inputs with dynamic axes only (all when none has any)."""
    shown = [n for n in shapes if any(isinstance(d, str) for d in _spec(signature, n).shape)]
    return " ".join(f"{n}[{'x'.join(map(str, shapes[n]))}]" for n in shown or shapes)


def _spec(signature: Signature, name: str) -> TensorSpec:
    return next(s for s in signature.inputs if s.name == name)


def _most_dynamic(signature: Signature) -> TensorSpec:
    return max(signature.inputs, key=lambda s: sum(isinstance(d, str) for d in s.shape))


def _run(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o) for o in session.run(None, feeds)]


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text if len(text) <= 160 else text[:157] + "..."


def _check_batch(session: Any, signature: Signature, shapes: Shapes, at_one: list[np.ndarray],
                 feeds_for: Any) -> Signature:
    """Run at batch 2: outputs' batch axes are where the size doubled; a graph that refuses
    batch 2 has no batch axis at all (every input and output: one fixed-size call)."""
    if not signature.batched:
        return signature.with_batch_axes({s.name: None for s in signature.outputs})
    try:
        at_two = _run(session, feeds_for(signature, shapes, 2))
    except Exception as exc:  # the guessed batch axes are not the graph's
        log.warning("the graph runs at batch 1 but not at batch 2 (%s): treating it as taking "
                    "one fixed-size call", _first_line(exc))
        names = [s.name for s in (*signature.inputs, *signature.outputs)]
        return signature.with_batch_axes(dict.fromkeys(names))
    axes: dict[str, int | None] = {}
    for spec, one, two in zip(signature.outputs, at_one, at_two, strict=False):
        grown = [i for i, (a, b) in enumerate(zip(one.shape, two.shape, strict=False)) if b == 2 * a]
        axes[spec.name] = spec.batch_axis if spec.batch_axis in grown else (grown[0] if grown else None)
    return signature.with_batch_axes(axes)
