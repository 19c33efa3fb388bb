"""The model's side of the protocol: its metadata, read once before any load is sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from inferno.bench.rawhttp import Address, ResponseError, build_request, fetch
from inferno.errors import DataMismatchError, UnknownModelError, UserInputError

DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "float32",
    "BYTES": "object",
}
"""Protocol datatype → the numpy dtype its JSON values are generated in."""


@dataclass(frozen=True)
class InputSpec:
    """One input from the model's metadata; ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {list(self.shape)}"


def metadata_path(model: str, version: str | None) -> str:
    """``/v2/models/{model}[/versions/{version}]``, each part URL-quoted."""
    path = f"/v2/models/{quote(model, safe='')}"
    return path + (f"/versions/{quote(version, safe='')}" if version else "")


def unreachable(url: str, exc: BaseException) -> str:
    """The one line for a server that does not answer: ``cannot reach URL: why — hint``."""
    os_error = getattr(exc, "os_error", exc)  # a wrapped OSError (client libraries), or the OSError
    if isinstance(os_error, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(exc, asyncio.TimeoutError):
        why = "no answer in time"
    elif isinstance(os_error, OSError) and os_error.strerror:
        why = os_error.strerror.lower()
    else:
        why = str(exc) or type(exc).__name__
    return f"cannot reach {url}: {why} — is `inferno serve` running?"


async def fetch_inputs(
    url: str,
    model: str,
    version: str | None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[InputSpec, ...]:
    """GET the model's metadata from ``url`` (``http(s)://host[:port]``) and return its inputs.

    Redirects are not followed: the generator contacts nothing but ``url``.

    Raises:
        UserInputError: the server cannot be reached, refuses, or answers nonsense.
        UnknownModelError: the server does not serve ``model`` (HTTP 404).
    """
    target = url + metadata_path(model, version)
    address = Address.of(url)
    request = build_request(
        address,
        "GET",
        metadata_path(model, version),
        {"Accept": "application/json", **(headers or {})},
    )
    try:
        status, body = await fetch(address, request, timeout_s)
    except (TimeoutError, OSError) as exc:
        raise UserInputError(unreachable(url, exc)) from exc
    except ResponseError as exc:
        raise UserInputError(f"{url} did not answer HTTP/1.1: {exc}") from exc
    named = f"model {model!r}" + (f" version {version!r}" if version else "")
    detail = error_text(body)
    if status == 404:
        raise UnknownModelError(f"{named} is not served at {url} (HTTP 404: {detail})")
    if status in (401, 403):
        raise UserInputError(
            f"{url} refused the metadata request for {named} (HTTP {status}: "
            f"{detail}); pass the server's token with --token"
        )
    if status != 200:
        raise UserInputError(
            f"{named}: metadata request to {target} failed: HTTP {status}: {detail}"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UserInputError(f"{named}: {target} did not answer JSON: {body[:80]!r}") from exc
    return parse_metadata(doc, model)


def error_text(body: bytes) -> str:
    """The ``error`` of a JSON error body, or the start of the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "empty body"
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return str(doc)[:200]


def parse_metadata(doc: Any, model: str) -> tuple[InputSpec, ...]:
    """The inputs of a model-metadata response.

    Raises:
        UserInputError: the document has no usable ``inputs`` list.
    """
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise UserInputError(f"model {model!r}: the server's metadata lists no inputs")
    specs = []
    for item in inputs:
        try:
            spec = InputSpec(
                str(item["name"]),
                str(item["datatype"]).upper(),
                tuple(int(d) for d in item["shape"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"model {model!r}: malformed input in metadata: {item!r}") from exc
        if spec.datatype not in DTYPES:
            raise DataMismatchError(
                f"input {spec.name!r}: datatype {spec.datatype} is not one of {', '.join(DTYPES)}"
            )
        specs.append(spec)
    return tuple(specs)
