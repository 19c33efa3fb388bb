"""Structured pruning of a BERT encoder: which heads and FFN neurons go, and the smaller weights.

Importance is measured on a few batches of sentences, over real tokens only:

- a head's score is the mean norm of what it adds to the layer's output (its slice of the
  attention context times its columns of the output projection);
- an FFN neuron's score is its mean absolute activation times the norm of its output column.

The weights of the kept heads and neurons are then sliced out of the state dict (rows of
Q/K/V and of the first FFN matrix, columns of the output projections): the result is a
smaller dense encoder that ``minilm.bert_encoder`` builds from the new per-layer widths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

LAYER = "encoder.layer.{}."
ATTENTION_ROWS = ("attention.self.query", "attention.self.key", "attention.self.value")
ATTENTION_COLUMNS = "attention.output.dense"
FFN_ROWS = "intermediate.dense"
FFN_COLUMNS = "output.dense"


def kept(width: int, share: float, multiple: int = 1) -> int:
    """How many of ``width`` stay when ``share`` is removed (rounded to ``multiple``, at least one)."""
    count = round(width * (1 - share) / multiple) * multiple
    return max(multiple, min(width, count))


def importance(encoder: Any, feeds: Iterable[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Per layer: the heads' scores [heads] and the FFN neurons' scores [intermediate]."""
    import torch

    layers = encoder.encoder.layer
    width = encoder.config.hidden_size // encoder.config.num_attention_heads
    heads = [torch.zeros(layer.attention.self.query.out_features // width) for layer in layers]
    neurons = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    mask: list[Any] = [None]

    def on_context(index: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            real = inputs[0][mask[0]]  # [tokens, heads * width]
            split = real.view(len(real), -1, width)
            columns = module.weight.view(module.weight.shape[0], -1, width)  # [out, heads, width]
            added = torch.einsum("thw,ohw->tho", split, columns)
            heads[index] += added.norm(dim=-1).sum(0)
        return hook

    def on_activation(index: int) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            neurons[index] += inputs[0][mask[0]].abs().sum(0) * module.weight.norm(dim=0)
        return hook

    handles = [layer.attention.output.dense.register_forward_pre_hook(on_context(i))
               for i, layer in enumerate(layers)]
    handles += [layer.output.dense.register_forward_pre_hook(on_activation(i))
                for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode():
            for batch in feeds:
                mask[0] = batch["attention_mask"].bool()
                encoder(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return heads, neurons


def strongest(scores: Any, count: int) -> list[int]:
    """Indices of the ``count`` highest scores, in their original order."""
    return sorted(int(i) for i in scores.argsort(descending=True)[:count])


def slice_state(state: dict[str, Any], keep_heads: Sequence[Sequence[int]],
                keep_neurons: Sequence[Sequence[int]], head_width: int) -> dict[str, Any]:
    """A copy of the encoder's state dict with only the kept heads and FFN neurons per layer."""
    import torch

    sliced = dict(state)
    for layer, (heads, neurons) in enumerate(zip(keep_heads, keep_neurons, strict=True)):
        prefix = LAYER.format(layer)
        rows = torch.tensor([h * head_width + i for h in heads for i in range(head_width)])
        index = torch.tensor(list(neurons))
        for name in ATTENTION_ROWS:
            _rows(sliced, prefix + name, rows)
        _columns(sliced, prefix + ATTENTION_COLUMNS, rows)
        _rows(sliced, prefix + FFN_ROWS, index)
        _columns(sliced, prefix + FFN_COLUMNS, index)
    return sliced


def _rows(state: dict[str, Any], name: str, index: Any) -> None:
    state[f"{name}.weight"] = state[f"{name}.weight"][index].clone()
    state[f"{name}.bias"] = state[f"{name}.bias"][index].clone()


def _columns(state: dict[str, Any], name: str, index: Any) -> None:
    state[f"{name}.weight"] = state[f"{name}.weight"][:, index].clone()
