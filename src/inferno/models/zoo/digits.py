"""``digits``: a small CNN that this module trains on scikit-learn's bundled digits images.

The data ships inside scikit-learn (``sklearn.datasets.load_digits``: 1,797 grayscale 8×8
images, values 0..16), so nothing is downloaded. Training is seeded, runs on one thread with
deterministic kernels (the same graph, byte for byte, on every build on one machine), takes
5-15 s and must reach ``MIN_TEST_ACCURACY`` on the held-out 20% split, or the build fails. The graph ends in a softmax, so it returns class
probabilities. The network is wider than 8×8 digits need, on purpose: its convolutions carry
enough compute for INT8 quantization to pay off.

Run ``python -m inferno.models.zoo.digits`` to build it (or find it in the cache) and print
the test accuracy and the cache path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from inferno.errors import ConfigError, MissingExtraError, ModelLoadError
from inferno.models.model import EvalData, Model, TensorPreprocessor
from inferno.models.signature import Signature, Task
from inferno.models.zoo.cache import cached_build, content_key

log = logging.getLogger(__name__)

BUILD_VERSION = "1"  # bump when the network, the training or the export below changes
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
NUM_CLASSES = 10
SEED = 0
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
TEST_FRACTION = 0.2
MIN_TEST_ACCURACY = 0.97
CHANNELS = (32, 64, 64)
"""The teacher's convolution widths."""
HIDDEN = 128
"""The teacher's hidden dense width."""
MAX_CONVS = 3
POOL_AFTER = 2
"""The 2×2 pooling follows this many convolutions (or all, when there are fewer)."""
POOLED_POSITIONS = 4 * 4
"""Positions per channel after the pooling: the dense layer's input columns per channel."""
FAMILY = "digits-cnn"
"""The student family name of networks that ``build_network`` makes."""


def _require_torch(purpose: str) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", purpose) from exc
    return torch


def build_network(channels: Sequence[int] = CHANNELS, hidden: int = HIDDEN) -> Any:
    """The untrained network: 3×3 convolutions (``channels`` wide, 2×2 pooling after the
    second, or after the only one), then two dense layers (``hidden`` wide, then the classes).

    The defaults are the bundled teacher; students are narrower or shallower. ``forward``
    returns probabilities (softmax); ``logits`` is what training optimizes.

    Raises:
        ConfigError: no convolution, more than ``MAX_CONVS``, or a width below 1.
    """
    _require_torch("the bundled model 'digits'")
    import torch
    from torch import nn

    widths = check_shape(channels, hidden)

    class DigitsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for i, (before, after) in enumerate(itertools.pairwise((1, *widths))):
                layers += [nn.Conv2d(before, after, 3, padding=1), nn.ReLU()]
                layers += [nn.MaxPool2d(2)] if i == min(POOL_AFTER, len(widths)) - 1 else []
            self.body = nn.Sequential(
                *layers, nn.Flatten(),
                nn.Linear(widths[-1] * POOLED_POSITIONS, hidden), nn.ReLU(),
                nn.Linear(hidden, NUM_CLASSES),
            )

        def logits(self, pixels: Any) -> Any:
            return self.body(pixels)

        def forward(self, pixels: Any) -> Any:
            return torch.softmax(self.body(pixels), dim=1)

    return DigitsNet()


def check_shape(channels: Sequence[int], hidden: int) -> tuple[int, ...]:
    """``channels`` as a tuple, once the shape is one ``build_network`` can make.

    Raises:
        ConfigError: naming the value and what is allowed.
    """
    widths = tuple(channels)
    if not 1 <= len(widths) <= MAX_CONVS:
        raise ConfigError(f"digits network: expected 1 to {MAX_CONVS} convolution widths, "
                          f"got {len(widths)} ({list(widths)})")
    if any(not isinstance(w, int) or w < 1 for w in (*widths, hidden)):
        raise ConfigError(f"digits network: expected widths >= 1, got channels={list(widths)} "
                          f"hidden={hidden}")
    return widths


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images scaled to float32 0..1, shape [N, 1, 8, 8], split 80/20 stratified.

    Returns:
        ``x_train, y_train, x_test, y_test``; labels are int64 class ids 0..9.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingExtraError("scikit-learn", "torch", "the bundled model 'digits'") from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=0
    )
    return x_train, y_train, x_test, y_test


def shift(images: Any, generator: Any) -> Any:
    """Move each image by -1, 0 or +1 pixels in each direction (zero fill): augmentation."""
    torch = _require_torch("training 'digits'")
    n = len(images)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    offsets = torch.randint(0, 3, (2, n), generator=generator)
    span = torch.arange(8)
    rows = (offsets[0, :, None] + span)[:, :, None]
    cols = (offsets[1, :, None] + span)[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


BatchLoss = Callable[[Any, Any, Any], Any]
"""``loss(logits, images, batch)``: the loss of one batch; ``images`` are the shifted inputs
the logits came from, ``batch`` the indices of its rows in the training set."""


def fit(network: Any, x_train: np.ndarray, batch_loss: BatchLoss, *, epochs: int = EPOCHS,
        learning_rate: float = LEARNING_RATE, after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[int], None] | None = None) -> None:
    """Seeded Adam over shuffled, shifted batches with a one-cycle learning rate.

    ``after_step`` runs after each optimizer step (e.g. to re-apply pruning masks),
    ``after_epoch(done)`` after each epoch (progress). Leaves the network in eval mode.
    """
    torch = _require_torch("training 'digits'")
    torch.manual_seed(SEED)  # numpy draws nothing here: the split has its own random_state
    generator = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(x_train)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * -(-len(x) // BATCH_SIZE)
    )
    network.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            images = shift(x[batch], generator)
            batch_loss(network.logits(images), images, batch).backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
        if after_epoch is not None:
            after_epoch(epoch + 1)
    network.eval()


def train(network: Any, x_train: np.ndarray, y_train: np.ndarray) -> None:
    """The teacher's training: cross-entropy over the logits (``fit``)."""
    torch = _require_torch("training 'digits'")
    y = torch.from_numpy(y_train)
    fit(network, x_train,
        lambda logits, _images, batch: torch.nn.functional.cross_entropy(logits, y[batch]))


@contextlib.contextmanager
def deterministic_training() -> Iterator[None]:
    """One thread, deterministic kernels, flushed denormals and a forked, seeded random state.

    One thread: the ops are tiny, so threads cost more than they give (several times slower
    on a busy 2-core machine), and the summation order no longer depends on the core count.
    Deterministic kernels are cheap on CPU. The settings are restored after (flush-denormal
    to torch's default, off: torch has no getter for it), and the global random state too
    (fork_rng), so training inside a user's process leaves no trace.
    """
    torch = _require_torch("training 'digits'")
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)  # the initial weights too
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def accuracy(network: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the PyTorch network on ``x`` against labels ``y``."""
    torch = _require_torch("evaluating 'digits'")
    with torch.inference_mode():
        predicted = network(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def _train_checked(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray) -> tuple[Any, float, float]:
    """Train deterministically; return the network, its test accuracy and the seconds spent."""
    with deterministic_training():
        network = build_network()
        started = time.perf_counter()
        train(network, x_train, y_train)
        seconds = time.perf_counter() - started
    test_accuracy = accuracy(network, x_test, y_test)
    if test_accuracy < MIN_TEST_ACCURACY:
        raise ModelLoadError(
            f"bundled model 'digits': training reached test accuracy {test_accuracy:.4f}, "
            f"expected >= {MIN_TEST_ACCURACY}; the build is refused"
        )
    return network, test_accuracy, seconds


def export_onnx(network: Any, path: Path) -> None:
    """Export to ONNX: input ``pixels``, output ``probabilities``, dynamic batch, opset 17."""
    torch = _require_torch("exporting 'digits'")
    example = torch.zeros(2, 1, 8, 8)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network, (example,), str(path), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=17, dynamo=False,
        )


def _build(folder: Path) -> None:
    """Train, check the accuracy, and write model.onnx, weights.pt, split.npz and build.json."""
    torch = _require_torch("the bundled model 'digits'")
    x_train, y_train, x_test, y_test = load_split()
    log.info("training digits CNN on %d images (%d epochs)", len(x_train), EPOCHS)
    network, test_accuracy, seconds = _train_checked(x_train, y_train, x_test, y_test)
    log.info("digits: test accuracy %.4f after %.1f s of training", test_accuracy, seconds)
    torch.save(network.state_dict(), folder / "weights.pt")
    np.savez(folder / "split.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    export_onnx(network, folder / "model.onnx")
    info = {"test_accuracy": test_accuracy, "train_seconds": round(seconds, 2),
            "epochs": EPOCHS, "torch": torch.__version__}
    (folder / "build.json").write_text(json.dumps(info, indent=1))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cache_key() -> str:
    """Hash of everything the build reads: this version, the training code, scikit-learn's version."""
    functions = (build_network, check_shape, load_split, shift, fit, train, deterministic_training,
                 _train_checked, export_onnx)
    code = "".join(inspect.getsource(f) for f in functions)
    shape = repr((CHANNELS, HIDDEN, POOL_AFTER, SEED, EPOCHS, BATCH_SIZE, LEARNING_RATE))
    return content_key([BUILD_VERSION, code, shape, _version("scikit-learn")])


def restore_network(folder: Path) -> Any:
    """The trained PyTorch network from a cache folder, in eval mode (the eager baseline)."""
    torch = _require_torch("the eager baseline of 'digits'")
    network = build_network()
    network.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return network.eval()


def restore_student(folder: Path, architecture: dict[str, Any]) -> Any:
    """A student network (family ``digits-cnn``) from its folder's ``weights.pt``, in eval mode.

    ``architecture`` holds ``channels`` (a list of widths) and ``hidden``.
    """
    torch = _require_torch("a 'digits' student")
    try:
        network = build_network(tuple(architecture["channels"]), int(architecture["hidden"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"digits student {folder}: architecture {architecture}: expected "
                             f"'channels' (a list of widths) and 'hidden' (a width)") from exc
    network.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return network.eval()


def build() -> Path:
    """The cache folder of a valid build, training first when there is none."""
    return cached_build("digits", cache_key(), _build)


def training_split() -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels of the cached build (what students train on)."""
    folder = build()
    try:
        with np.load(folder / "split.npz", allow_pickle=False) as split:
            return split["x_train"], split["y_train"]
    except Exception as exc:  # zipfile and numpy each raise their own errors
        raise ModelLoadError(f"cached digits build at {folder} is unreadable: {exc}") from exc


def load() -> Model:
    """Build (or take from the cache) the digits CNN with its test split as evaluation data."""
    folder = build()
    try:
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        with np.load(folder / "split.npz", allow_pickle=False) as split:
            x_train, x_test, y_test = split["x_train"], split["x_test"], split["y_test"]
        info = json.loads((folder / "build.json").read_text())
    except Exception as exc:  # protobuf, zipfile and json each raise their own errors
        raise ModelLoadError(f"cached digits build at {folder} is unreadable: {exc}") from exc
    share = round(len(x_test) / (len(x_test) + len(x_train)) * 100)
    return Model(
        name="digits",
        onnx_path=folder / "model.onnx",
        signature=Signature.from_onnx(graph),
        task=Task.CLASSIFICATION,
        eval_data=EvalData(
            {INPUT_NAME: x_test}, labels=y_test,
            source=f"digits test split ({share}%, {len(x_test)} images)",
        ),
        preprocessor=TensorPreprocessor(),
        calibration=EvalData(
            {INPUT_NAME: x_train}, source=f"digits training split ({len(x_train)} images)"
        ),
        torch_factory=functools.partial(restore_network, folder),
        architecture={"family": FAMILY, "channels": list(CHANNELS), "hidden": HIDDEN},
        source="bundled:digits",
        description=(
            "CNN on scikit-learn's 8×8 digits, trained by inferno "
            f"(test accuracy {info['test_accuracy']:.4f})"
        ),
    )


def main() -> None:
    """Build (or find) the model, then print its ONNX Runtime test accuracy and cache path."""
    import onnxruntime as ort

    started = time.perf_counter()
    model = load()
    elapsed = time.perf_counter() - started
    info = json.loads((model.onnx_path.parent / "build.json").read_text())
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, model.preprocessor.encode(model.eval_data.samples))
    test_accuracy = float((probabilities.argmax(axis=1) == model.eval_data.labels).mean())
    print(f"digits: test accuracy {test_accuracy:.4f} (onnxruntime, {len(model.eval_data)} images)")
    print(f"training took {info['train_seconds']} s; load took {elapsed:.1f} s")
    print(f"cache: {model.onnx_path.parent}")


if __name__ == "__main__":
    main()
