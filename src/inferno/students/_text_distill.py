"""The training side of transformer students: sentences, teacher targets, the distillation loop.

The student learns the teacher's function on sentences: its mean-pooled, normalized embedding
(cosine loss) and the token states of matched layers (mean squared error over real tokens),
the two signals MiniLM-style distillation uses. The teacher runs once per sentence, before
training: its targets are kept (token states in FP16) and every epoch reuses them.

Only the bundled sentences are there to learn from, so a share is held out (never trained on,
the reported figures come from it) and the training side is augmented: words dropped, spans
cropped, two sentences joined, words shuffled. Nothing is downloaded. Batches are sorted by
length so that padding costs little; their order is shuffled every epoch; all is seeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inferno.models.student import ProgressFn
from inferno.models.text import TextPreprocessor

HELD_OUT_SHARE = 0.2
"""Share of the sentences never trained on: every reported accuracy figure comes from them."""
AUGMENTED_COPIES = 4
"""Augmented variants of each training sentence, next to the sentence itself."""
BATCH_SIZE = 32
HIDDEN_WEIGHT = 1.0
"""Weight of the token-state loss (per matched layer) next to the embedding's cosine loss."""
WEIGHT_DECAY = 0.01
WARMUP_SHARE = 0.05


@dataclass(frozen=True)
class SentenceSplit:
    """The bundled sentences, split once with a fixed seed."""

    train: list[str]
    held_out: list[str]


def split_sentences(sentences: Sequence[str], seed: int, share: float = HELD_OUT_SHARE) -> SentenceSplit:
    """A seeded split: ``share`` of the sentences held out (at least one on each side)."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    held = min(max(1, round(len(sentences) * share)), len(sentences) - 1)
    return SentenceSplit(train=[sentences[i] for i in sorted(order[held:])],
                         held_out=[sentences[i] for i in sorted(order[:held])])


def augment(sentences: Sequence[str], copies: int, seed: int) -> list[str]:
    """The sentences followed by ``copies`` augmented variants of each (seeded)."""
    rng = random.Random(seed)
    variants = [_variant(list(sentences), i, rng) for _ in range(copies) for i in range(len(sentences))]
    return list(sentences) + variants


def _variant(sentences: list[str], index: int, rng: random.Random) -> str:
    words = sentences[index].split()
    draw = rng.random()
    if draw < 0.3 and len(words) > 2:  # word drop
        kept = [w for w in words if rng.random() > 0.2]
        return " ".join(kept or words)
    if draw < 0.55 and len(words) > 3:  # a contiguous span
        length = rng.randint(3, len(words))
        start = rng.randint(0, len(words) - length)
        return " ".join(words[start:start + length])
    if draw < 0.85:  # two sentences joined
        return f"{sentences[index]} {rng.choice(sentences)}"
    return " ".join(rng.sample(words, len(words)))  # shuffled words


@dataclass
class Batch:
    """One batch of sentences with the teacher's targets."""

    feeds: dict[str, Any]
    """Token tensors, padded to the batch's longest sentence."""
    embedding: Any
    """The teacher's normalized embeddings [batch, width]."""
    states: list[Any]
    """The teacher's token states at the matched layers, FP16 [batch, sequence, width]."""


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """For each student layer, the teacher layer whose output it learns (the last matches the last)."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def pool(hidden: Any, mask: Any) -> Any:
    """Mean over real tokens, L2-normalized: the teacher graph's pooling."""
    from inferno.models.zoo.minilm import mean_pool

    return mean_pool(hidden, mask)


def teacher_targets(teacher: Any, preprocessor: TextPreprocessor, texts: Sequence[str],
                    matched: Sequence[int], progress: ProgressFn | None = None) -> list[Batch]:
    """Length-sorted batches of ``texts`` with the teacher encoder's targets."""
    import torch

    encodings = preprocessor.encodings(list(texts))
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    groups = [order[i:i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)]
    batches = []
    teacher.eval()
    with torch.no_grad():  # not inference_mode: the feeds go on into training
        for done, group in enumerate(groups, 1):
            rows = [encodings[i] for i in group]
            feeds = {k: torch.from_numpy(v) for k, v in
                     preprocessor.feeds(rows, max(len(e.ids) for e in rows)).items()}
            out = teacher(**feeds, output_hidden_states=True)
            batches.append(Batch(feeds, pool(out.last_hidden_state, feeds["attention_mask"]),
                                 [out.hidden_states[t + 1].half() for t in matched]))
            if progress is not None:
                progress("teacher targets", done, len(groups))
    return batches


def cosine_mean(student: Any, teacher: Any, preprocessor: TextPreprocessor,
                sentences: Sequence[str]) -> float:
    """Mean cosine between the two encoders' embeddings of ``sentences`` (PyTorch, one batch)."""
    import torch

    feeds = {k: torch.from_numpy(v) for k, v in preprocessor.encode(list(sentences)).items()}
    mask = feeds["attention_mask"]
    with torch.inference_mode():
        ours, theirs = (pool(m(**feeds).last_hidden_state, mask) for m in (student, teacher))
    return round(float((ours * theirs).sum(1).mean()), 6)


def batch_loss(student: Any, batch: Batch, hidden_weight: float = HIDDEN_WEIGHT) -> Any:
    """1 - cosine to the teacher's embedding, plus the masked MSE of the matched token states."""
    out = student(**batch.feeds, output_hidden_states=True)
    mask = batch.feeds["attention_mask"]
    loss = (1 - (pool(out.last_hidden_state, mask) * batch.embedding).sum(1)).mean()
    if hidden_weight > 0:
        weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        tokens = weights.sum() * out.last_hidden_state.shape[-1]
        for state, target in zip(out.hidden_states[1:], batch.states, strict=True):
            loss = loss + hidden_weight * (((state - target.float()) ** 2) * weights).sum() / tokens
    return loss


def train(student: Any, batches: list[Batch], *, epochs: int, learning_rate: float, seed: int,
          progress: ProgressFn | None = None) -> float:
    """Distill into ``student`` (a ``BertModel``) for ``epochs`` passes; the seconds spent.

    AdamW with a short warm-up and a linear decay; the word embeddings stay the teacher's
    (most of the vocabulary never appears in the training sentences); dropout stays off (the
    student imitates a deterministic teacher: measured, it learns faster and no worse).
    """
    import torch

    torch.manual_seed(seed)
    student.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=WEIGHT_DECAY)
    total = epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total))
    rng = random.Random(seed)
    started = time.perf_counter()
    student.eval()  # dropout off; gradients flow all the same
    for epoch in range(epochs):
        for step, batch in enumerate(rng.sample(batches, len(batches)), 1):
            loss = batch_loss(student, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if progress is not None:
                progress("training", epoch * len(batches) + step, total)
    return time.perf_counter() - started


def _schedule(total: int) -> Callable[[int], float]:
    warmup = max(1, round(total * WARMUP_SHARE))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
