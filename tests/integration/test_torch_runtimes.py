"""The PyTorch runtimes (eager and compiled) on tiny real modules: answers, precisions, devices.

CPU tests run everywhere torch is installed; ``gpu`` tests need torch with a CUDA GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferno.errors import ConfigError, DataMismatchError, RuntimeUnavailableError
from inferno.runtimes import RUNTIMES, Artifact, RuntimeOptions, RuntimeSettings
from inferno.runtimes._torch_common import (
    DeviceRequest,
    PrecisionPlan,
    precision_plan,
    requested_device,
)
from inferno.runtimes.torch_compile import CompileOptions

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 8)).astype(np.float32)
B = RNG.normal(size=(8,)).astype(np.float32)
VOCAB, WIDTH = 50, 8


def linear() -> Any:
    layer = torch.nn.Linear(16, 8)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W.T.copy()))
        layer.bias.copy_(torch.from_numpy(B))
    return layer


class MeanPool(torch.nn.Module):
    """A text model in miniature: embedding, a projection, masked mean pooling; token states too."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embedding = torch.nn.Embedding(VOCAB, WIDTH)
        self.projection = torch.nn.Linear(WIDTH, WIDTH)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        tokens = torch.tanh(self.projection(self.embedding(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return pooled, tokens


def text_feeds(rows: int, length: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    for r in range(rows):  # shorter sentences, padded and masked as a tokenizer does
        real = int(rng.integers(1, length + 1))
        ids[r, real:] = 0
        mask[r, real:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def text_artifact(precision: str = "fp32", **options: Any) -> Artifact:
    return Artifact(None, ("input_ids", "attention_mask"), compute_precision=precision, torch_factory=MeanPool,
                    options=RuntimeOptions(sequence_inputs=("input_ids", "attention_mask"), **options))


def loaded(runtime: str, artifact: Artifact, provider: str | None = None) -> Any:
    rt = RUNTIMES[runtime](RuntimeSettings(threads=2, provider=provider))
    rt.load(artifact)
    return rt


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- pure choices ----------------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "request_"), [
    (None, DeviceRequest("cpu")), ("cpu", DeviceRequest("cpu")), ("CPU", DeviceRequest("cpu")),
    ("cuda", DeviceRequest("cuda")), ("cuda:1", DeviceRequest("cuda", 1)), ("CUDA:0", DeviceRequest("cuda", 0)),
])
def test_requested_device(provider: str | None, request_: DeviceRequest) -> None:
    assert requested_device(provider) == request_


@pytest.mark.parametrize("provider", ["tensorrt", "cuda:x", "rocm", "cpu:1"])
def test_requested_device_rejects_non_torch_providers(provider: str) -> None:
    with pytest.raises(RuntimeUnavailableError, match="not a torch device"):
        requested_device(provider)


def test_precision_plan() -> None:
    assert precision_plan("fp32", "cpu") == PrecisionPlan("float32")
    assert precision_plan("bf16", "cpu") == PrecisionPlan("float32", autocast="bfloat16")
    assert precision_plan("fp16", "cuda") == PrecisionPlan("float16")
    assert precision_plan("bf16", "cuda") == PrecisionPlan("bfloat16")
    with pytest.raises(RuntimeUnavailableError, match="'fp16' is not available on cpu"):
        precision_plan("fp16", "cpu")


@pytest.mark.parametrize("runtime", ["torch", "torch-compile"])
@pytest.mark.parametrize(("precision", "graph", "provider", "factory", "expected"), [
    ("fp32", "fp32", None, True, True),
    ("bf16", "fp32", None, True, True),
    ("fp16", "fp32", None, True, False),  # no FP16 on the CPU
    ("fp16", "fp32", "cpu", True, False),
    ("fp32", "fp32", "cuda", True, True),
    ("fp16", "fp32", "cuda", True, True),
    ("bf16", "fp32", "cuda:1", True, True),
    ("fp32", "fp32", "tensorrt", True, False),  # an ONNX Runtime provider
    ("fp32", "fp32", None, False, False),  # no source module
    ("fp32", "int8", None, True, False),  # a rewritten graph has no torch twin
    ("fp32", "fp16", "cuda", True, False),
    ("int8", "fp32", None, True, False),
])
def test_supports_matrix(runtime: str, precision: str, graph: str, provider: str | None,
                         factory: bool, expected: bool) -> None:
    artifact = Artifact(Path("m.onnx"), ("x",), graph, precision, torch_factory=linear if factory else None)
    assert RUNTIMES[runtime].supports(artifact, provider) is expected


def test_compile_options_from_hints() -> None:
    names = ("input_ids", "attention_mask")

    def from_hints(hints: dict[str, Any], cuda: bool = True) -> CompileOptions:  # as a plan.json records them
        return CompileOptions.from_options(RuntimeOptions.from_dict(hints), names, cuda=cuda)

    assert from_hints({}) == CompileOptions()
    assert from_hints({}, cuda=False).cuda_graphs is False  # none on the CPU
    options = from_hints({"compile_mode": "default", "cuda_graphs": False, "max_batch_size": np.int64(64),
                          "sequence_inputs": ["input_ids"]})
    assert options == CompileOptions("default", False, 64, ("input_ids",))
    for hints, message in [
        ({"compile_mode": "fast"}, "compile_mode"),
        ({"compile_mode": "reduce-overhead"}, "cannot nest"),
        ({"cuda_graphs": "yes"}, "cuda_graphs"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"sequence_inputs": "input_ids"}, "list of input names"),
        ({"sequence_inputs": ["token_type_ids"]}, "not inputs of the model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_hints(hints)
    # inductor's own graphs are fine when ours are off
    assert from_hints({"compile_mode": "reduce-overhead", "cuda_graphs": False})


# --- eager on the CPU ------------------------------------------------------------------------

def test_eager_fp32_matches_numpy() -> None:
    rt = loaded("torch", Artifact(None, ("x",), torch_factory=linear))
    x = RNG.normal(size=(5, 16)).astype(np.float32)
    (y,) = rt.run({"x": x, "unused": np.zeros(1)})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x @ W + B, rtol=1e-5, atol=1e-5)
    assert rt.provider == "torch cpu"
    with pytest.raises(DataMismatchError, match=r"missing \['x'\]"):
        rt.run({"y": x})


def test_eager_bf16_is_bf16_and_close_to_fp32() -> None:
    rt = loaded("torch", Artifact(None, ("x",), compute_precision="bf16", torch_factory=linear))
    x = RNG.normal(size=(5, 16)).astype(np.float32)
    (y,) = rt.run({"x": x})
    reference = x @ W + B
    assert y.dtype == np.float32  # computed in BF16, returned as FP32
    np.testing.assert_allclose(y, reference, rtol=5e-2, atol=0.15)
    assert not np.allclose(y, reference, rtol=1e-6, atol=1e-6)  # autocast really ran in BF16
    assert cosine(y, reference) > 0.999


def test_eager_keeps_integer_outputs_and_casts_float64_inputs() -> None:
    class ArgMax(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.argmax(-1), x * 2

    rt = loaded("torch", Artifact(None, ("x",), torch_factory=ArgMax))
    x = RNG.normal(size=(4, 6))  # float64: cast to the weights' FP32
    labels, doubled = rt.run({"x": x})
    assert labels.dtype == np.int64 and doubled.dtype == np.float32
    np.testing.assert_array_equal(labels, x.argmax(-1))
    np.testing.assert_allclose(doubled, 2 * x, rtol=1e-6)


@pytest.mark.parametrize("runtime", ["torch", "torch-compile"])
@pytest.mark.parametrize("provider", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_an_error_not_a_fallback(runtime: str, provider: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here")
    rt = RUNTIMES[runtime](RuntimeSettings(provider=provider))
    with pytest.raises(RuntimeUnavailableError, match=rf"^{runtime}: CUDA device '{provider}' was requested") as info:
        rt.load(Artifact(None, ("x",), torch_factory=linear))
    assert "\n" not in str(info.value)


# --- torch.compile on the CPU ----------------------------------------------------------------

@pytest.mark.slow
def test_compile_matches_eager_through_padded_batch_buckets() -> None:
    artifact = Artifact(None, ("x",), torch_factory=linear, options=RuntimeOptions(max_batch_size=4))
    compiled = loaded("torch-compile", artifact)
    assert compiled.provider == "torch-compile cpu" and compiled.captured_buckets == ()
    for rows in (3, 1, 4, 11):  # 11 rows: chunks of 4, 4, 3 (padded to 4)
        x = RNG.normal(size=(rows, 16)).astype(np.float32)
        (y,) = compiled.run({"x": x})
        assert y.shape == (rows, 8)
        np.testing.assert_allclose(y, x @ W + B, rtol=1e-5, atol=1e-5)
    assert [k.batch for k in compiled.compiled_buckets] == [4, 1]  # 3 and 11 rows reuse bucket 4
    compiled.close()


@pytest.mark.slow
def test_compile_sequence_padding_gives_the_unpadded_result() -> None:
    eager = loaded("torch", text_artifact())
    compiled = loaded("torch-compile", text_artifact(max_batch_size=8))
    long, short = text_feeds(2, 40, seed=1), text_feeds(3, 5, seed=2)
    for feeds in (long, short):  # 40 sets the cap; 5 then pads to 32
        pooled, tokens = compiled.run(feeds)
        ref_pooled, ref_tokens = eager.run(feeds)
        assert tokens.shape == ref_tokens.shape  # the token axis is trimmed back
        np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tokens, ref_tokens, rtol=1e-5, atol=1e-6)
    assert [(k.batch, k.sequence) for k in compiled.compiled_buckets] == [(2, 40), (4, 32)]


# --- CUDA ------------------------------------------------------------------------------------

@pytest.fixture
def cuda() -> str:
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA GPU here")
    return "cuda"


def _mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 32))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_eager_cuda_half_precisions_are_close_to_fp32(cuda: str, precision: str) -> None:
    x = RNG.normal(size=(32, 64)).astype(np.float32)
    (reference,) = loaded("torch", Artifact(None, ("x",), torch_factory=_mlp), cuda).run({"x": x})
    rt = loaded("torch", Artifact(None, ("x",), compute_precision=precision, torch_factory=_mlp), cuda)
    (y,) = rt.run({"x": x})
    assert y.dtype == np.float32 and y.shape == reference.shape
    assert cosine(y, reference) > 0.999
    assert not np.array_equal(y, reference)  # the weights really are 16-bit
    assert rt.provider.startswith("torch cuda:0 (") and torch.cuda.get_device_name(0) in rt.provider


@pytest.mark.gpu
def test_a_cuda_device_torch_cannot_see_is_an_error(cuda: str) -> None:
    rt = RUNTIMES["torch"](RuntimeSettings(provider="cuda:99"))
    with pytest.raises(RuntimeUnavailableError, match=r"'cuda:99' was requested but torch sees \d+ GPU"):
        rt.load(Artifact(None, ("x",), torch_factory=_mlp))


def _check_calls(compiled: Any, eager: Any, feeds: Callable[[int, int], dict[str, np.ndarray]],
                 calls: list[tuple[int, int]]) -> None:
    for rows, length in calls:
        f = feeds(rows, length)
        got, want = compiled.run(f), eager.run(f)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_compile_cuda_graphs_per_bucket_match_eager(cuda: str) -> None:
    # compile_mode "default": the graph logic is the same; max-autotune would spend minutes per bucket.
    compiled = loaded("torch-compile", text_artifact(compile_mode="default"), cuda)
    eager = loaded("torch", text_artifact(), cuda)
    assert compiled.provider.endswith(", CUDA graphs") and compiled.provider.startswith("torch-compile cuda:0 (")
    calls = [(rows, length) for length in (64, 20) for rows in (1, 3, 32, 300)]
    _check_calls(compiled, eager, lambda rows, length: text_feeds(rows, length, seed=rows + length), calls)
    buckets = {(k.batch, k.sequence) for k in compiled.captured_buckets}
    assert buckets == {(b, s) for s in (64, 32) for b in (1, 4, 32, 256, 64)}  # 300 = 256 + 44 → 64
    assert len(compiled.captured_buckets) == len(buckets)  # each captured once
    _check_calls(compiled, eager, lambda rows, length: text_feeds(rows, length, seed=7), [(3, 20), (300, 64)])
    assert len(compiled.captured_buckets) == len(buckets)  # replays, no new captures


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_compile_cuda_graph_outputs_are_not_aliased(cuda: str, precision: str) -> None:
    # The default compile mode (max-autotune-no-cudagraphs), one bucket.
    compiled = loaded("torch-compile", Artifact(None, ("x",), compute_precision=precision, torch_factory=_mlp), cuda)
    eager = loaded("torch", Artifact(None, ("x",), compute_precision=precision, torch_factory=_mlp), cuda)
    a = RNG.normal(size=(3, 64)).astype(np.float32)
    b = RNG.normal(size=(3, 64)).astype(np.float32)
    (ya,) = compiled.run(a_feeds := {"x": a})
    kept = ya.copy()
    (yb,) = compiled.run({"x": b})  # same bucket: same static output buffer on the GPU
    assert len(compiled.captured_buckets) == 1
    assert not np.shares_memory(ya, yb)
    np.testing.assert_array_equal(ya, kept)
    assert not np.allclose(ya, yb)
    (want,) = eager.run(a_feeds)
    assert cosine(ya, want) > 0.9999
