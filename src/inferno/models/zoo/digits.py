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

import functools
import inspect
import json
import logging
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from inferno.errors import MissingExtraError, ModelLoadError
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


def _require_torch(purpose: str) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", purpose) from exc
    return torch


def build_network() -> Any:
    """The untrained network: three 3×3 convolutions, one 2×2 pooling, two dense layers.

    ``forward`` returns probabilities (softmax); ``logits`` is what training optimizes.
    """
    _require_torch("the bundled model 'digits'")
    import torch
    from torch import nn

    class DigitsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                nn.Flatten(),
                nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
                nn.Linear(128, NUM_CLASSES),
            )

        def logits(self, pixels: Any) -> Any:
            return self.body(pixels)

        def forward(self, pixels: Any) -> Any:
            return torch.softmax(self.body(pixels), dim=1)

    return DigitsNet()


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


def train(network: Any, x_train: np.ndarray, y_train: np.ndarray) -> None:
    """Seeded Adam on cross-entropy over the logits, one-cycle learning rate, shifted images."""
    torch = _require_torch("training 'digits'")
    torch.manual_seed(SEED)  # numpy draws nothing here: the split has its own random_state
    generator = torch.Generator().manual_seed(SEED)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=EPOCHS * -(-len(x) // BATCH_SIZE)
    )
    network.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            logits = network.logits(shift(x[batch], generator))
            torch.nn.functional.cross_entropy(logits, y[batch]).backward()
            optimizer.step()
            schedule.step()
    network.eval()


def accuracy(network: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the PyTorch network on ``x`` against labels ``y``."""
    torch = _require_torch("evaluating 'digits'")
    with torch.inference_mode():
        predicted = network(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def _train_checked(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray) -> tuple[Any, float, float]:
    """Train deterministically; return the network, its test accuracy and the seconds spent."""
    torch = _require_torch("training 'digits'")
    # One thread: the ops are tiny, so threads cost more than they give (several times
    # slower on a busy 2-core machine), and the summation order no longer depends on the
    # core count. Deterministic kernels are cheap on CPU. The settings are restored after
    # (flush-denormal to torch's default, off: torch has no getter for it), and the global
    # random state too (fork_rng), so building digits inside a user's process leaves no trace.
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)  # the initial weights too
            network = build_network()
            started = time.perf_counter()
            train(network, x_train, y_train)
            seconds = time.perf_counter() - started
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    test_accuracy = accuracy(network, x_test, y_test)
    if test_accuracy < MIN_TEST_ACCURACY:
        raise ModelLoadError(
            f"bundled model 'digits': training reached test accuracy {test_accuracy:.4f}, "
            f"expected >= {MIN_TEST_ACCURACY}; the build is refused"
        )
    return network, test_accuracy, seconds


def _export(network: Any, path: Path) -> None:
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
    _export(network, folder / "model.onnx")
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
    code = "".join(inspect.getsource(f) for f in (build_network, load_split, shift, train, _train_checked, _export))
    return content_key([BUILD_VERSION, code, _version("scikit-learn")])


def restore_network(folder: Path) -> Any:
    """The trained PyTorch network from a cache folder, in eval mode (the eager baseline)."""
    torch = _require_torch("the eager baseline of 'digits'")
    network = build_network()
    network.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return network.eval()


def build() -> Path:
    """The cache folder of a valid build, training first when there is none."""
    return cached_build("digits", cache_key(), _build)


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
