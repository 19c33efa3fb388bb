"""Data validation: inputs checked against the reference profile.

Rules: ``nan`` and ``inf`` (float inputs), ``out_of_range`` (a value outside what the
reference held, widened by ``margin`` × its span), ``unknown_token`` (text the tokenizer
maps to its unknown token). The signature itself (names, dtypes, shapes) is checked
before, when a request is parsed.

Per model, failures are either counted (``inferno_validation_failures_total``, off the
request path) or rejected with 400 naming the input, the rule and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from inferno.monitoring.profile import ReferenceProfile, Tokenize

Mode = Literal["off", "count", "reject"]
REASONS = ("nan", "inf", "out_of_range", "unknown_token")


@dataclass(frozen=True)
class Failure:
    input: str
    reason: str
    detail: str

    def message(self) -> str:
        return f"input {self.input!r}: rule {self.reason}: {self.detail}"


class Validator:
    """Checks one request's decoded inputs (thread-safe: it keeps no state)."""

    def __init__(self, profile: ReferenceProfile, tokenize: Tokenize | None = None,
                 unk_id: int | None = None, margin: float = 0.0) -> None:
        self.profile = profile
        self.tokenize = tokenize
        self.unk_id = unk_id if unk_id is not None else (profile.text.unk_id if profile.text else None)
        self.bounds = {name: (lo - margin * (hi - lo), hi + margin * (hi - lo))
                       for name, (lo, hi) in profile.ranges.items()}

    def check(self, payload: Any) -> list[Failure]:
        """Failures of one request: strings for text models, arrays by input name otherwise."""
        if isinstance(payload, dict):
            return self.tensors(payload)
        if self.tokenize is None:
            return []
        texts = list(payload)
        return self.text(self.tokenize(texts), texts)

    def tensors(self, feeds: dict[str, np.ndarray]) -> list[Failure]:
        failures = []
        for name, array in feeds.items():
            array = np.asarray(array)
            if array.dtype.kind != "f" and name not in self.bounds:
                continue
            values = array.astype(np.float64, copy=False)
            finite = np.isfinite(values)
            if not finite.all():
                where = np.argwhere(~finite)[0]
                value = values[tuple(where)]
                reason = "nan" if np.isnan(value) else "inf"
                failures.append(Failure(name, reason, f"expected finite values, got {value} at {where.tolist()}"))
            bounds = self.bounds.get(name)
            if bounds is None or not finite.any():
                continue
            lo, hi = bounds
            outside = finite & ((values < lo) | (values > hi))
            if outside.any():
                where = np.argwhere(outside)[0]
                failures.append(Failure(
                    name, "out_of_range",
                    f"expected values in [{lo:g}, {hi:g}] (the range of the reference data), "
                    f"got {values[tuple(where)]:g} at {where.tolist()}",
                ))
        return failures

    def text(self, encodings: list[Any], texts: list[str] | None = None) -> list[Failure]:
        if self.unk_id is None:
            return []
        for row, encoding in enumerate(encodings):
            spans = [o for o, i in zip(encoding.offsets, encoding.ids, strict=True) if i == self.unk_id]
            if spans:
                words = f": {', '.join(repr(texts[row][a:b]) for a, b in spans[:3])}" if texts else ""
                return [Failure("text", "unknown_token",
                                f"expected text the tokenizer knows, got {len(spans)} unknown "
                                f"token(s) in string {row}{words}")]
        return []
