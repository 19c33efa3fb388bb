"""Tokenization for text models, with the ``tokenizers`` library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from inferno.models.model import Samples


@dataclass
class TextPreprocessor:
    """Tokenizes a batch of strings, padding only to the longest sentence in the batch."""

    tokenizer_path: Path
    max_length: int = 128
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    kind: str = "text"
    _tokenizer: Tokenizer | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def tokenizer(self) -> Tokenizer:
        """Truncating, never padding: :meth:`feeds` pads each batch to the length it is given."""
        if self._tokenizer is None:
            tok = Tokenizer.from_file(str(self.tokenizer_path))
            tok.no_padding()  # tokenizer files may carry fixed-length padding (MiniLM's: 128)
            tok.enable_truncation(self.max_length)
            self._tokenizer = tok
        return self._tokenizer

    @property
    def unk_id(self) -> int | None:
        """The id of the unknown token, None when the vocabulary has none."""
        unk = getattr(self.tokenizer.model, "unk_token", None)
        return None if unk is None else self.tokenizer.token_to_id(unk)

    def encodings(self, samples: Samples) -> list[Encoding]:
        """Each sample tokenized and truncated, unpadded."""
        if isinstance(samples, (dict, str)):
            raise TypeError("a text model takes a list of strings")
        return self.tokenizer.encode_batch(list(samples))

    def feeds(self, encodings: Sequence[Encoding], length: int) -> dict[str, np.ndarray]:
        """The model's inputs for ``encodings``, zero-padded (and masked) to ``length`` tokens."""
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: columns[name] for name in self.input_names}

    def encode(self, samples: Samples) -> dict[str, np.ndarray]:
        """A batch padded to its longest sample."""
        encodings = self.encodings(samples)
        return self.feeds(encodings, max((len(e.ids) for e in encodings), default=0))

    def token_counts(self, samples: Samples) -> list[int]:
        """Real (unpadded) token count of each sample."""
        return [len(e.ids) for e in self.encodings(samples)]

    def files(self) -> dict[str, Path]:
        return {"tokenizer.json": self.tokenizer_path}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokenizer": "tokenizer.json",
            "max_length": self.max_length,
            "input_names": list(self.input_names),
        }
