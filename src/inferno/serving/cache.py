"""A response cache bounded in bytes, keyed by model, version and the request's input bytes.

Least recently used entries go first. It lives on the event loop (no locks): lookups and
inserts happen in request handlers, never in worker threads.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from inferno.serving.protocol import InferRequest

Outputs = dict[str, np.ndarray]


def cache_key(model: str, version: str, request: InferRequest) -> bytes:
    """A digest of everything that decides the outputs: model, version, and each input's name,
    datatype, shape and data. Not the requested outputs: an entry holds every output."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{model}\0{version}\0".encode())
    for name in sorted(request.inputs):
        tensor = request.inputs[name]
        h.update(f"{name}\0{tensor.datatype}\0{tensor.shape}\0".encode())
        h.update(tensor.raw())
    return h.digest()


class ResponseCache:
    """Outputs by key, evicting the least recently used beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[Outputs, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Outputs) -> None:
        size = len(key) + sum(_nbytes(a) for a in outputs.values())
        if size > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything for one entry
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        # copies: a cached entry must not pin the whole batch array it was sliced from
        self._entries[key] = ({n: np.array(a, copy=True) for n, a in outputs.items()}, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(x) if isinstance(x, bytes) else 64 for x in array.reshape(-1)) + 8 * array.size
    return int(array.nbytes)
