"""Tokenization for text models, with the ``tokenizers`` library."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

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
        if self._tokenizer is None:
            tok = Tokenizer.from_file(str(self.tokenizer_path))
            tok.enable_truncation(self.max_length)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            self._tokenizer = tok
        return self._tokenizer

    def encode(self, samples: Samples) -> dict[str, np.ndarray]:
        if isinstance(samples, (dict, str)):
            raise TypeError("a text model takes a list of strings")
        encodings = self.tokenizer.encode_batch(list(samples))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.input_names}

    def token_counts(self, samples: Samples) -> list[int]:
        """Real (unpadded) token count of each sample."""
        tok = Tokenizer.from_file(str(self.tokenizer_path))
        tok.no_padding()  # tokenizer files may carry fixed-length padding (MiniLM's: 128)
        tok.enable_truncation(self.max_length)
        return [len(e.ids) for e in tok.encode_batch(list(samples))]

    def files(self) -> dict[str, Path]:
        return {"tokenizer.json": self.tokenizer_path}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokenizer": "tokenizer.json",
            "max_length": self.max_length,
            "input_names": list(self.input_names),
        }
