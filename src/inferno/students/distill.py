"""Distillation: train a smaller student on a teacher's soft outputs, saved as a student folder.

``distill(teacher, "channels=16,32;hidden=64", out)`` builds a narrower or shallower
``digits`` network, trains it on the teacher's training data (digits' training split: the
teacher's ``calibration`` samples, with the shift augmentation the teacher had) against the
teacher's logits softened at a temperature ``T`` (KL divergence, scaled by ``T²``) plus a
weighted cross-entropy on the hard labels, then writes ``model.onnx``, ``weights.pt`` and ``student.json`` with the measured
comparison (``students.measure.compare``). Text teachers (``minilm``) go to
``transformer_student.distill_text``.

Not a ``Pass``: a pass rewrites one ONNX graph into an equivalent one and is chosen by
measurement among variants of the same model. Distillation trains a new network of another
shape from PyTorch, the training data and the teacher, takes tens of seconds to minutes,
and its product is a different model (a student folder that ``load_model`` reads, with its
own accuracy to judge), which ``inferno accelerate`` or ``inferno export`` then optimize like
any model.

Training is seeded and deterministic (one thread, deterministic kernels: see
``digits.deterministic_training``); torch is imported only when a student is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ConfigError
from inferno.models.model import Model
from inferno.models.student import ProgressFn, check_target, write_student
from inferno.students.spec import check_epochs, parse_spec, spec_number, teacher_ref

DEFAULT_SPEC = "channels=16,32;hidden=64"
DEFAULT_EPOCHS = 40
TEMPERATURE = 2.0
"""Softens the teacher's outputs so the student learns which wrong classes are close."""
HARD_WEIGHT = 0.3
"""Share of the loss on the hard labels (the rest on the teacher's softened outputs)."""
LEARNING_RATE = 5e-3
FAMILY = "digits-cnn"


@dataclass(frozen=True)
class DigitsSpec:
    """A ``digits-cnn`` student: its shape and how it is distilled."""

    channels: tuple[int, ...]
    hidden: int
    temperature: float = TEMPERATURE
    hard_weight: float = HARD_WEIGHT

    @property
    def architecture(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden}


SPEC_KEYS = {
    "channels": "1 to 3 convolution widths, comma-separated, each 1..512 (e.g. 16,32)",
    "hidden": "the dense layer's width, 1..1024",
    "temperature": "the distillation temperature, 1..20",
    "hard": "the weight of the hard-label loss, 0..1",
}


def parse_digits_spec(spec: str) -> DigitsSpec:
    """Parse a ``digits-cnn`` student spec, e.g. ``channels=16,32;hidden=64``.

    Keys: ``channels`` (required), ``hidden`` (required), ``temperature``, ``hard``.

    Raises:
        ConfigError: naming the spec, the key and what is allowed.
    """
    values = parse_spec(spec, SPEC_KEYS)
    missing = [k for k in ("channels", "hidden") if k not in values]
    if missing:
        raise ConfigError(f"student spec {spec!r}: missing {', '.join(missing)}; expected e.g. "
                          f"{DEFAULT_SPEC!r}")
    parts = values["channels"].split(",")
    if not 1 <= len(parts) <= 3:
        raise ConfigError(f"student spec {spec!r}: channels={values['channels']!r}: expected "
                          f"{SPEC_KEYS['channels']}")
    channels = tuple(spec_number(spec, "channels", p.strip(), int, 1, 512, SPEC_KEYS["channels"])
                     for p in parts)
    return DigitsSpec(
        channels=channels,
        hidden=spec_number(spec, "hidden", values["hidden"], int, 1, 1024, SPEC_KEYS["hidden"]),
        temperature=spec_number(spec, "temperature", values.get("temperature", str(TEMPERATURE)),
                            float, 1, 20, SPEC_KEYS["temperature"]),
        hard_weight=spec_number(spec, "hard", values.get("hard", str(HARD_WEIGHT)), float, 0, 1,
                            SPEC_KEYS["hard"]),
    )


def check_family(teacher: Model, what: str) -> Callable[[], Any]:
    """The teacher's PyTorch factory, once the teacher is a ``digits-cnn`` network (the bundled
    ``digits`` or a student of it).

    Raises:
        ConfigError: naming the teacher and what is supported.
    """
    if teacher.architecture.get("family") != FAMILY or teacher.torch_factory is None:
        raise ConfigError(f"{what} '{teacher.name}': expected the bundled 'digits' network, a "
                          f"student of it, or a text model like 'minilm'; got a model of family "
                          f"{teacher.architecture.get('family', 'unknown')!r}")
    return teacher.torch_factory


def distill(teacher: Model, spec: str | None, out: Path, *, epochs: int | None = None,
            progress: ProgressFn | None = None) -> Path:
    """Distill ``teacher`` into a smaller student and write its folder at ``out``.

    Args:
        teacher: the loaded teacher (``load_model("digits")``, or a text model).
        spec: the student, e.g. ``channels=16,32;hidden=64`` (default ``DEFAULT_SPEC``);
            text models take ``layers=3`` (see ``transformer_student``).
        out: the student folder (created; an existing student folder is replaced).
        epochs: training epochs (default ``DEFAULT_EPOCHS``).
        progress: ``progress(stage, done, total)`` callback.

    Returns:
        ``out``; its ``student.json`` holds the measured report.

    Raises:
        ConfigError: a bad spec, an unsupported teacher, or ``out`` is not writable as a student.
        MissingExtraError: torch is not installed.
    """
    if teacher.is_text:
        from inferno.students.transformer_student import distill_text  # torch: imported on use

        return distill_text(teacher, spec, out, epochs=epochs, progress=progress)
    check_family(teacher, "distill")
    parsed = parse_digits_spec(spec or DEFAULT_SPEC)
    epochs = check_epochs(epochs, DEFAULT_EPOCHS)
    check_target(out)
    from inferno.models.zoo import digits

    with digits.deterministic_training():
        student = digits.build_network(parsed.channels, parsed.hidden)
        seconds = train_student(teacher, student, epochs=epochs, temperature=parsed.temperature,
                                hard_weight=parsed.hard_weight, progress=progress)
    extra = {"epochs": epochs, "temperature": parsed.temperature, "hard_weight": parsed.hard_weight}
    return save_student(teacher, student, out, method="distill", spec=spec or DEFAULT_SPEC,
                        architecture=parsed.architecture, seconds=seconds, extra=extra,
                        progress=progress)


def _teacher_logits(teacher: Model) -> Callable[[Any], Any]:
    """The teacher's logits on a batch (log-probabilities when it has no ``logits``)."""
    import torch

    module = check_family(teacher, "distill")()
    module.eval()
    if hasattr(module, "logits"):
        return module.logits  # type: ignore[no-any-return]
    return lambda images: torch.log(module(images).clamp_min(1e-30))


def training_data() -> tuple[np.ndarray, np.ndarray]:
    """What ``digits-cnn`` students train on: digits' training split, images and labels (the
    images are the teacher's calibration samples, which carry no labels)."""
    from inferno.models.zoo import digits

    return digits.training_split()


def train_student(teacher: Model, student: Any, *, epochs: int, temperature: float = TEMPERATURE,
                  hard_weight: float = HARD_WEIGHT, learning_rate: float = LEARNING_RATE,
                  after_step: Callable[[], None] | None = None,
                  progress: ProgressFn | None = None) -> float:
    """Train ``student`` on the teacher's softened logits (+ hard labels); the seconds spent.

    Uses the teacher's training data (``training_data``) with shift augmentation, in the
    seeded loop of ``digits.fit``. Call inside ``digits.deterministic_training()``.
    """
    import torch
    from torch.nn import functional

    from inferno.models.zoo import digits

    x_train, y_train = training_data()
    labels = torch.from_numpy(y_train)
    teacher_logits = _teacher_logits(teacher)

    def loss(logits: Any, images: Any, batch: Any) -> Any:
        with torch.no_grad():
            target = functional.log_softmax(teacher_logits(images) / temperature, dim=1)
        soft = functional.kl_div(functional.log_softmax(logits / temperature, dim=1), target,
                                 reduction="batchmean", log_target=True) * temperature**2
        if hard_weight == 0:
            return soft
        return (1 - hard_weight) * soft + hard_weight * functional.cross_entropy(logits, labels[batch])

    def epoch_done(done: int) -> None:
        if progress is not None:
            progress("training", done, epochs)

    started = time.perf_counter()
    digits.fit(student, x_train, loss, epochs=epochs, learning_rate=learning_rate,
               after_step=after_step, after_epoch=epoch_done)
    return time.perf_counter() - started


def save_student(teacher: Model, student: Any, out: Path, *, method: str, spec: str,
                 architecture: dict[str, Any], seconds: float, extra: dict[str, Any],
                 progress: ProgressFn | None = None) -> Path:
    """Export ``student`` and its weights, measure it against the teacher, write the folder."""
    import torch

    from inferno.models.zoo import digits
    from inferno.students.measure import compare

    def fill(staging: Path) -> dict[str, Any]:
        if progress is not None:
            progress("measuring", 0, 1)
        torch.save(student.state_dict(), staging / "weights.pt")
        digits.export_onnx(student, staging / "model.onnx")
        report = compare(teacher, staging / "model.onnx", train_seconds=seconds, extra=extra)
        if progress is not None:
            progress("measuring", 1, 1)
        return report

    write_student(out, teacher=teacher_ref(teacher), method=method, family=FAMILY,
                  architecture=architecture, spec=spec, fill=fill)
    return Path(out)
