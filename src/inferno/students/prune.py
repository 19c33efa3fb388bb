"""Pruning: a smaller dense network (structured) or a sparser one (unstructured), fine-tuned.

Structured (``ratio``): in every convolution, the ``ratio`` share of filters with the smallest
L1 norm is removed, and so is that share of the hidden dense neurons (also by L1 norm over
the columns that survive); the input and the classes keep their widths. A smaller **dense**
network is built and the surviving weights are copied into it: each convolution's kept
filters, the next convolution's matching input channels, the dense layer's input columns of
the kept last-convolution channels (``digits.POOLED_POSITIONS`` columns per channel) and
the classifier's columns of the kept neurons. A short fine-tune follows, against the
teacher's outputs and the labels (``distill.train_student``). The graph is smaller and faster.

Unstructured (``sparsity``): the ``sparsity`` share of smallest-magnitude weights of each
layer is set to zero and kept at zero while fine-tuning. The graph keeps its shape: its only
gain is size after compression (the report gives the gzip size against the teacher's);
speed is unchanged, since dense kernels multiply zeros like any number.

Text teachers go to ``transformer_student.prune_text`` (attention heads, FFN neurons).

Not a ``Pass``, for the reasons ``distill`` gives: it trains, and it changes the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ConfigError
from inferno.models.model import Model
from inferno.models.student import ProgressFn, check_target
from inferno.students.distill import (
    check_epochs,
    check_family,
    save_student,
    train_student,
)

DEFAULT_RATIO = 0.4
DEFAULT_EPOCHS = 15
POSITIONS = 16
"""Input columns of the first dense layer per channel of the last convolution (4×4)."""

State = dict[str, np.ndarray]


def kept(width: int, ratio: float) -> int:
    """How many of ``width`` units survive removing a ``ratio`` share (at least one)."""
    return max(1, round(width * (1 - ratio)))


def strongest(weights: np.ndarray, count: int) -> np.ndarray:
    """Indices (ascending) of the ``count`` output units with the largest L1 norm.

    ``weights`` has the output units on axis 0 (a Conv2d's filters, a Linear's rows).
    Ties go to the lower index, so the choice is deterministic.
    """
    norms = np.abs(weights.reshape(len(weights), -1)).sum(axis=1)
    order = np.argsort(-norms, kind="stable")
    return np.sort(order[:count])


def layers(state: State) -> tuple[list[str], list[str]]:
    """The prefixes of the convolutions and of the dense layers, in network order."""
    prefixes = sorted({k.rsplit(".", 1)[0] for k in state if k.endswith(".weight")},
                      key=lambda p: [int(x) if x.isdigit() else x for x in p.split(".")])
    convs = [p for p in prefixes if state[f"{p}.weight"].ndim == 4]
    denses = [p for p in prefixes if state[f"{p}.weight"].ndim == 2]
    if not convs or len(denses) != 2:
        raise ConfigError(f"pruning: expected convolutions then two dense layers, got layers "
                          f"{prefixes}")
    return convs, denses


def prune_state(state: State, ratio: float, positions: int = POSITIONS) -> tuple[State, dict[str, Any]]:
    """Structured L1 pruning of a ``digits-cnn`` state dict (numpy arrays).

    Returns:
        The smaller state dict and its architecture (``channels``, ``hidden``).
    """
    convs, (dense, classifier) = layers(state)
    new: State = {}
    previous = np.arange(state[f"{convs[0]}.weight"].shape[1])  # the input keeps its channels
    channels = []
    for conv in convs:
        weight = state[f"{conv}.weight"][:, previous]
        keep = strongest(weight, kept(len(weight), ratio))
        new[f"{conv}.weight"] = weight[keep]
        new[f"{conv}.bias"] = state[f"{conv}.bias"][keep]
        previous = keep
        channels.append(len(keep))
    columns = (previous[:, None] * positions + np.arange(positions)).ravel()
    weight = state[f"{dense}.weight"][:, columns]
    neurons = strongest(weight, kept(len(weight), ratio))
    new[f"{dense}.weight"] = weight[neurons]
    new[f"{dense}.bias"] = state[f"{dense}.bias"][neurons]
    new[f"{classifier}.weight"] = state[f"{classifier}.weight"][:, neurons]
    new[f"{classifier}.bias"] = state[f"{classifier}.bias"]
    return new, {"channels": channels, "hidden": len(neurons)}


def magnitude_masks(state: State, sparsity: float) -> dict[str, np.ndarray]:
    """Per layer weight (biases untouched): True where the weight is kept, i.e. outside the
    ``sparsity`` share of smallest magnitudes (ties broken by position: exact counts)."""
    masks = {}
    for key, weight in state.items():
        if key.endswith(".weight") and weight.ndim >= 2:
            flat = np.abs(weight).ravel()
            zeros = round(sparsity * flat.size)
            mask = np.ones(flat.size, dtype=bool)
            mask[np.argsort(flat, kind="stable")[:zeros]] = False
            masks[key] = mask.reshape(weight.shape)
    return masks


def check_share(value: float, flag: str) -> float:
    """A share in (0, 1): ConfigError otherwise."""
    if not 0 < value < 1:
        raise ConfigError(f"{flag}: expected a share between 0 and 1 (exclusive), got {value}")
    return value


def prune(teacher: Model, out: Path, *, ratio: float | None = None,
          sparsity: float | None = None, heads: float | None = None, ffn: float | None = None,
          epochs: int | None = None, progress: ProgressFn | None = None) -> Path:
    """Prune ``teacher`` and fine-tune; write the student folder at ``out``.

    Args:
        ratio: structured: share of conv filters and hidden neurons removed per layer
            (default ``DEFAULT_RATIO`` when neither ``ratio`` nor ``sparsity`` is given).
        sparsity: unstructured: share of each layer's weights set to zero (same shape).
        heads, ffn: text models only: shares of attention heads / FFN neurons removed.
        epochs: fine-tune epochs (default ``DEFAULT_EPOCHS``).
        progress: ``progress(stage, done, total)`` callback.

    Raises:
        ConfigError: options that do not fit the model or each other, a share outside (0, 1),
            an unsupported teacher, or ``out`` not writable as a student.
        MissingExtraError: torch is not installed.
    """
    if teacher.is_text:
        if ratio is not None or sparsity is not None:
            raise ConfigError(f"prune '{teacher.name}': a text model takes --heads and --ffn, "
                              f"not --ratio or --sparsity")
        shares = {k: v for k, v in (("heads", heads), ("ffn", ffn)) if v is not None}
        from inferno.students.transformer_student import prune_text  # torch: imported on use

        return prune_text(teacher, out, epochs=epochs, progress=progress, **shares)
    if heads is not None or ffn is not None:
        raise ConfigError(f"prune '{teacher.name}': --heads and --ffn are for transformers; "
                          f"expected --ratio or --sparsity")
    if ratio is not None and sparsity is not None:
        raise ConfigError(f"prune: expected --ratio (structured) or --sparsity (unstructured), "
                          f"got both ({ratio} and {sparsity})")
    check_family(teacher, "prune")
    epochs = check_epochs(epochs, DEFAULT_EPOCHS)
    check_target(out)
    if sparsity is not None:
        return _unstructured(teacher, out, check_share(sparsity, "--sparsity"), epochs, progress)
    return _structured(teacher, out, check_share(DEFAULT_RATIO if ratio is None else ratio,
                                                 "--ratio"), epochs, progress)


def _state(network: Any) -> State:
    return {k: v.detach().numpy().copy() for k, v in network.state_dict().items()}


def _structured(teacher: Model, out: Path, ratio: float, epochs: int,
                progress: ProgressFn | None) -> Path:
    state, architecture = prune_state(_state(check_family(teacher, "prune")()), ratio)
    extra = {"mode": "structured", "ratio": ratio, "epochs": epochs,
             "note": "smaller dense network: fewer parameters and faster"}
    return _fine_tune(teacher, out, state, architecture, f"ratio={ratio:g}", extra, progress)


def _unstructured(teacher: Model, out: Path, sparsity: float, epochs: int,
                  progress: ProgressFn | None) -> Path:
    state = _state(check_family(teacher, "prune")())
    architecture = {k: teacher.architecture[k] for k in ("channels", "hidden")}
    extra = {"mode": "unstructured", "sparsity": sparsity, "epochs": epochs,
             "note": "same dense shape with zeros: smaller only once compressed (gzip_bytes); "
                     "speed unchanged"}
    return _fine_tune(teacher, out, state, architecture, f"sparsity={sparsity:g}", extra,
                      progress, magnitude_masks(state, sparsity))


def _fine_tune(teacher: Model, out: Path, state: State, architecture: dict[str, Any], spec: str,
               extra: dict[str, Any], progress: ProgressFn | None,
               masks: dict[str, np.ndarray] | None = None) -> Path:
    """Load ``state`` into a network of ``architecture``, fine-tune it (``masks``: weights kept
    at zero where False), and save the student folder."""
    import torch

    from inferno.models.zoo import digits

    with digits.deterministic_training():
        student = digits.build_network(tuple(architecture["channels"]), architecture["hidden"])
        student.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        parameters = dict(student.named_parameters())
        held = {k: torch.from_numpy(m) for k, m in (masks or {}).items()}

        def apply_masks() -> None:
            with torch.no_grad():
                for key, mask in held.items():
                    parameters[key].mul_(mask)

        apply_masks()
        seconds = train_student(teacher, student, epochs=extra["epochs"],
                                after_step=apply_masks if held else None, progress=progress)
    return save_student(teacher, student, out, method="prune", spec=spec,
                        architecture=architecture, seconds=seconds, extra=extra,
                        progress=progress)
