"""Students of a BERT sentence-embedding teacher (the bundled ``minilm``): fewer layers, or
fewer attention heads and FFN neurons, written as student folders (family ``bert``).

``distill_text(teacher, "layers=3", out)`` builds an encoder of 3 layers initialized from
alternate teacher layers (embeddings copied), and distills the teacher into it on sentences
(``_text_distill``). ``prune_text(teacher, out, ffn=0.5)`` removes the least important FFN
neurons and/or attention heads of every layer (``_bert_prune``), rebuilds a smaller dense
encoder and fine-tunes it the same way.

Every figure is measured on held-out sentences, never trained on: cosine to the teacher's
embeddings (mean and worst), how well the student keeps the teacher's similarity ranking
(Spearman correlation of the two pairwise cosine matrices) and its nearest neighbours; sizes
from the two ONNX files; speed from both graphs in ONNX Runtime, interleaved (2 threads).
torch and transformers are imported only when a student is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ConfigError
from inferno.models.model import Model
from inferno.models.student import ProgressFn, check_target, write_student
from inferno.models.text import TextPreprocessor
from inferno.students import _bert_prune, _text_distill
from inferno.students.spec import check_epochs, parse_spec, teacher_ref

FAMILY = "bert"
SEED = 0
DEFAULT_LAYERS = 3
DEFAULT_DISTILL_EPOCHS = 40
"""Measured on 2 shared cores (load ~2): 6.5 minutes in all, held-out cosine 0.843; 20 epochs
take 3.4 minutes for 0.834: the curve has flattened."""
DEFAULT_PRUNE_EPOCHS = 8
"""Measured (ffn=0.5): about 2 minutes of training, held-out cosine 0.898 (4 epochs: 0.888)."""
DEFAULT_FFN = 0.5
LEARNING_RATE = 3e-4
IMPORTANCE_SENTENCES = 128
FFN_MULTIPLE = 16
"""Kept FFN widths are multiples of this: GEMM kernels like round widths."""
TIMING_THREADS = 2
TIMING_SECONDS = 1.0
"""Per model and mode: at 0.3 s the batch-1 ratio moved by ±30% between runs here."""
SPEC_KEYS = {"layers": "a layer count (alternate teacher layers, ending with the last) or "
                       "comma-separated teacher layer indices, e.g. 3 or 1,3,5"}


@dataclass(frozen=True)
class TextSpec:
    """A distilled text student: the teacher layers it starts from, in order."""

    layers: tuple[int, ...]


def alternate_layers(count: int, total: int) -> tuple[int, ...]:
    """``count`` of ``total`` teacher layers evenly spaced and ending with the last (3 of 6: 1, 3, 5)."""
    return tuple(_text_distill.layer_map(count, total))


def parse_text_spec(spec: str | None, total: int) -> TextSpec:
    """Parse ``layers=N`` or ``layers=i,j,k`` against a teacher of ``total`` layers.

    Raises:
        ConfigError: naming the spec, the key and what is allowed.
    """
    spec = spec or f"layers={DEFAULT_LAYERS}"
    values = parse_spec(spec, SPEC_KEYS)
    if "layers" not in values:
        raise ConfigError(f"student spec {spec!r}: missing layers; expected e.g. 'layers=3'")
    text = values["layers"]
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and 1 <= numbers[0] < total:
        return TextSpec(alternate_layers(numbers[0], total))
    if len(numbers) > 1 and numbers == sorted(set(numbers)) and numbers[0] >= 0 and numbers[-1] < total:
        return TextSpec(tuple(numbers))
    raise ConfigError(f"student spec {spec!r}: layers={text!r}: expected a count from 1 to "
                      f"{total - 1}, or increasing distinct teacher layer indices from 0 to "
                      f"{total - 1} (the teacher has {total} layers)")


def _teacher_parts(teacher: Model, what: str) -> tuple[Any, TextPreprocessor]:
    """The teacher's BERT encoder (its sentence-embedding module's ``encoder``, in eval mode)
    and its tokenizer.

    Raises:
        ConfigError: the teacher is not a BERT sentence-embedding model with a PyTorch source.
    """
    module = teacher.torch_factory() if teacher.torch_factory is not None else None
    encoder = getattr(module, "encoder", None)
    if not isinstance(teacher.preprocessor, TextPreprocessor) or encoder is None \
            or getattr(encoder.config, "model_type", None) != "bert":
        raise ConfigError(f"{what} '{teacher.name}': expected a BERT sentence-embedding model "
                          f"with its PyTorch source (the bundled 'minilm' or a student of it), "
                          f"got {teacher.architecture.get('model_type', 'another model')!r}")
    return encoder.eval(), teacher.preprocessor


def _sentences(teacher: Model) -> _text_distill.SentenceSplit:
    samples = teacher.eval_data.samples
    if isinstance(samples, dict) or len(samples) < 2:
        raise ConfigError(f"teacher '{teacher.name}': expected at least 2 evaluation sentences")
    return _text_distill.split_sentences(list(samples), SEED)


def distill_text(teacher: Model, spec: str | None, out: Path, *, epochs: int | None = None,
                 progress: ProgressFn | None = None) -> Path:
    """Distill a BERT sentence-embedding teacher into fewer layers; write the student folder.

    Args:
        teacher: the loaded teacher (``load_model("minilm")`` or a ``bert`` student).
        spec: ``layers=3`` (alternate teacher layers) or ``layers=1,3,5``; default ``layers=3``.
        out: the student folder (an existing student folder is replaced).
        epochs: passes over the augmented training sentences (default ``DEFAULT_DISTILL_EPOCHS``).
        progress: ``progress(stage, done, total)`` callback.

    Returns:
        ``out``; its ``student.json`` holds the measured report.

    Raises:
        ConfigError: a bad spec or epochs, an unsupported teacher, an unusable ``out``.
        MissingExtraError: torch or transformers are not installed.
    """
    epochs = check_epochs(epochs, DEFAULT_DISTILL_EPOCHS)
    check_target(out)
    source, preprocessor = _teacher_parts(teacher, "distill")
    parsed = parse_text_spec(spec, source.config.num_hidden_layers)
    student, architecture = layer_student(source, parsed.layers)
    split = _sentences(teacher)
    matched = _text_distill.layer_map(len(parsed.layers), source.config.num_hidden_layers)
    texts = _text_distill.augment(split.train, _text_distill.AUGMENTED_COPIES, SEED)
    batches = _text_distill.teacher_targets(source, preprocessor, texts, matched, progress)
    before = _text_distill.cosine_mean(student, source, preprocessor, split.held_out)
    seconds = _text_distill.train(student, batches, epochs=epochs, seed=SEED,
                                  learning_rate=LEARNING_RATE, progress=progress)
    extra = {"epochs": epochs, "cosine_mean_before_training": before,
             "teacher_layers": list(parsed.layers),
             "matched_layers": matched, "train_texts": len(texts)}
    return _save(teacher, student, out, method="distill", spec=spec or f"layers={DEFAULT_LAYERS}",
                 architecture={**architecture, "teacher_layers": list(parsed.layers)},
                 split=split, seconds=seconds, extra=extra, progress=progress)


def layer_student(teacher: Any, layers: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
    """An encoder of ``len(layers)`` layers holding copies of those teacher layers and the
    teacher's embeddings; and its architecture (what ``minilm.bert_encoder`` takes)."""
    from inferno.models.zoo import minilm

    shape = minilm.encoder_architecture(teacher)
    architecture = _with_hints({
        "config": {**shape["config"], "num_hidden_layers": len(layers)},
        "heads": [shape["heads"][i] for i in layers],
        "intermediate": [shape["intermediate"][i] for i in layers],
    })
    student = minilm.bert_encoder(architecture)
    state = {name: value for name, value in teacher.state_dict().items()
             if not name.startswith(("encoder.layer.", "pooler."))}
    for position, layer in enumerate(layers):
        prefix = _bert_prune.LAYER.format(layer)
        state.update({_bert_prune.LAYER.format(position) + name[len(prefix):]: value
                      for name, value in teacher.state_dict().items() if name.startswith(prefix)})
    student.load_state_dict(state)
    return student.eval(), architecture


def _with_hints(architecture: dict[str, Any]) -> dict[str, Any]:
    """``architecture`` plus ``num_heads`` and ``hidden_size`` when every layer keeps the same
    heads: the hints ORT's attention fusion takes (it cannot read the head count from this
    export; with fewer heads it wants their total width, not the model's)."""
    if len(set(architecture["heads"])) != 1:
        return architecture
    config = architecture["config"]
    width = config["hidden_size"] // config["num_attention_heads"]
    return {**architecture, "num_heads": architecture["heads"][0],
            "hidden_size": architecture["heads"][0] * width}


def prune_text(teacher: Model, out: Path, *, heads: float | None = None,
               ffn: float | None = None, epochs: int | None = None,
               progress: ProgressFn | None = None) -> Path:
    """Remove a share of each layer's attention heads and/or FFN neurons, fine-tune; write the
    student folder.

    Args:
        heads: share of attention heads removed per layer, in [0, 1).
        ffn: share of FFN neurons removed per layer, in [0, 1) (default ``DEFAULT_FFN`` when
            neither share is given).
        epochs: fine-tune passes over the augmented training sentences
            (default ``DEFAULT_PRUNE_EPOCHS``).

    Raises:
        ConfigError: a share outside [0, 1), both shares 0, bad epochs, an unsupported teacher,
            an unusable ``out``.
        MissingExtraError: torch or transformers are not installed.
    """
    if heads is None and ffn is None:
        ffn = DEFAULT_FFN
    shares = {"--heads": heads or 0.0, "--ffn": ffn or 0.0}
    for flag, share in shares.items():
        if not 0 <= share < 1:
            raise ConfigError(f"prune {flag}: expected a share from 0 up to (not including) 1, "
                              f"got {share}")
    if not any(shares.values()):
        raise ConfigError("prune: expected --heads or --ffn above 0, got neither")
    epochs = check_epochs(epochs, DEFAULT_PRUNE_EPOCHS)
    check_target(out)
    source, preprocessor = _teacher_parts(teacher, "prune")
    split = _sentences(teacher)
    texts = _text_distill.augment(split.train, _text_distill.AUGMENTED_COPIES, SEED)
    student, architecture = pruned_student(source, preprocessor, split.train,
                                           heads=shares["--heads"], ffn=shares["--ffn"])
    matched = list(range(source.config.num_hidden_layers))
    batches = _text_distill.teacher_targets(source, preprocessor, texts, matched, progress)
    before = _text_distill.cosine_mean(student, source, preprocessor, split.held_out)
    seconds = _text_distill.train(student, batches, epochs=epochs, seed=SEED,
                                  learning_rate=LEARNING_RATE, progress=progress)
    spec = f"heads={shares['--heads']:g};ffn={shares['--ffn']:g}"
    extra = {"epochs": epochs, "cosine_mean_before_training": before, "heads_removed": shares["--heads"], "ffn_removed": shares["--ffn"],
             "train_texts": len(texts)}
    return _save(teacher, student, out, method="prune", spec=spec, architecture=architecture,
                 split=split, seconds=seconds, extra=extra, progress=progress)


def pruned_student(teacher: Any, preprocessor: TextPreprocessor, sentences: list[str], *,
                   heads: float, ffn: float) -> tuple[Any, dict[str, Any]]:
    """The teacher encoder without its least important heads and FFN neurons (a smaller dense
    encoder, not fine-tuned), and its architecture."""
    import torch

    from inferno.models.zoo import minilm

    shape = minilm.encoder_architecture(teacher)
    width = shape["config"]["hidden_size"] // shape["config"]["num_attention_heads"]
    samples = sentences[:IMPORTANCE_SENTENCES]
    feeds = [{k: torch.from_numpy(v) for k, v in preprocessor.encode(samples[i:i + 32]).items()}
             for i in range(0, len(samples), 32)]
    head_scores, neuron_scores = _bert_prune.importance(teacher, feeds)
    keep_heads = [_bert_prune.strongest(s, _bert_prune.kept(len(s), heads)) for s in head_scores]
    keep_neurons = [_bert_prune.strongest(s, _bert_prune.kept(len(s), ffn, FFN_MULTIPLE))
                    for s in neuron_scores]
    architecture = _with_hints({**shape, "heads": [len(k) for k in keep_heads],
                                "intermediate": [len(k) for k in keep_neurons]})
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("pooler.")}
    student = minilm.bert_encoder(architecture)
    student.load_state_dict(_bert_prune.slice_state(state, keep_heads, keep_neurons, width))
    return student.eval(), architecture


def _save(teacher: Model, student: Any, out: Path, *, method: str, spec: str,
          architecture: dict[str, Any], split: _text_distill.SentenceSplit, seconds: float,
          extra: dict[str, Any], progress: ProgressFn | None) -> Path:
    """Export the student, measure it against the teacher on the held-out sentences, write it."""
    import torch

    from inferno.models.zoo import minilm

    module = minilm.sentence_embedding(student).eval()

    def fill(staging: Path) -> dict[str, Any]:
        torch.save(module.state_dict(), staging / "weights.pt")
        minilm.export_onnx(module, staging / "model.onnx")
        return compare_text(teacher, staging / "model.onnx", split, train_seconds=seconds,
                            extra=extra)

    if progress is not None:
        progress("measuring", 0, 1)
    write_student(out, teacher=teacher_ref(teacher), method=method, family=FAMILY,
                  architecture=architecture, spec=spec, fill=fill)
    if progress is not None:
        progress("measuring", 1, 1)
    return Path(out)


def embedding_figures(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """How close the student's embeddings are to the teacher's, on the same sentences.

    ``cosine_mean``/``cosine_min``: row-wise cosine; ``spearman``: rank correlation of the two
    pairwise cosine matrices (upper triangle): does the student order sentence pairs by
    similarity as the teacher does; ``neighbour_agreement``: share of sentences whose nearest
    other sentence is the same for both.
    """
    from scipy.stats import spearmanr

    a, b = (x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True) for x in (student, teacher))
    cosine = (a * b).sum(1)
    sim_a, sim_b = a @ a.T, b @ b.T
    upper = np.triu_indices(len(a), 1)
    np.fill_diagonal(sim_a, -np.inf)
    np.fill_diagonal(sim_b, -np.inf)
    rank = spearmanr(sim_a[upper], sim_b[upper]).statistic if len(a) > 2 else 1.0
    return {"cosine_mean": round(float(cosine.mean()), 6), "cosine_min": round(float(cosine.min()), 6),
            "spearman": round(float(rank), 6),
            "neighbour_agreement": round(float((sim_a.argmax(1) == sim_b.argmax(1)).mean()), 6)}


def compare_text(teacher: Model, student_path: Path, split: _text_distill.SentenceSplit, *,
                 train_seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The report of a text student against its teacher (both FP32 ONNX, through ORT).

    Returns:
        ``{"teacher": {...}, "student": {...}, "ratios", "eval_data", "eval_samples",
        "train_seconds", "timing", "train_sentences_cosine_mean", ...extra}``; each side has
        params, nonzero_params, onnx_bytes, latency_ms_p50 (batch 1), throughput_per_s
        (batch 32) and the embedding figures (the teacher's against itself: 1.0).
    """
    from inferno.passes._io import cpu_session
    from inferno.students import measure as student_measure

    paths = {"teacher": teacher.onnx_path, "student": student_path}
    encode = teacher.preprocessor.encode
    sessions = {role: cpu_session(path, TIMING_THREADS) for role, path in paths.items()}

    def embed(role: str, sentences: list[str]) -> np.ndarray:
        return np.concatenate([sessions[role].run(["embedding"], encode(sentences[i:i + 64]))[0]
                               for i in range(0, len(sentences), 64)])

    held = {role: embed(role, split.held_out) for role in paths}
    sides: dict[str, dict[str, Any]] = {}
    for role, path in paths.items():
        total, nonzero = student_measure.parameters(path)
        sides[role] = {"params": total, "nonzero_params": nonzero,
                       "onnx_bytes": path.stat().st_size,
                       **embedding_figures(held[role], held["teacher"])}
    on_train = embedding_figures(embed("student", split.train), embed("teacher", split.train))
    sessions.clear()  # free them before the timing sessions load
    timing = student_measure.speed_figures(
        paths, encode(split.held_out[:1]), encode((split.held_out * 32)[:32]), threads=TIMING_THREADS,
        seconds=TIMING_SECONDS)
    for role in sides:
        sides[role].update(timing[role])
    return {**sides, "ratios": student_measure.ratios(sides["teacher"], sides["student"]),
            "eval_data": f"{len(split.held_out)} held-out bundled sentences (never trained on)",
            "eval_samples": len(split.held_out), "train_seconds": round(train_seconds, 2),
            "train_sentences_cosine_mean": on_train["cosine_mean"],
            "timing": (f"ONNX Runtime CPU, {TIMING_THREADS} threads, batch 1 p50 and batch 32 "
                       f"throughput, interleaved rounds: rough figures"),
            **extra}
