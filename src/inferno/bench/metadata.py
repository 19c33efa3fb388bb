"""The model's side of the protocol: its metadata, read once before any load is sent."""

from __future__ import annotations

from typing import Any

import orjson

from inferno.errors import DataMismatchError, UnknownModelError, UserInputError
from inferno.protocol.address import Address, unreachable
from inferno.protocol.aio import ResponseError, build_request, fetch
from inferno.protocol.codec import error_text
from inferno.protocol.datatypes import KNOWN
from inferno.protocol.metadata import TensorSpec, model_path, named


async def fetch_inputs(
    url: str,
    model: str,
    version: str | None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[TensorSpec, ...]:
    """GET the model's metadata from ``url`` (``http(s)://host[:port]``) and return its inputs.

    Redirects are not followed: the generator contacts nothing but ``url``.

    Raises:
        UserInputError: the server cannot be reached, refuses, or answers nonsense.
        UnknownModelError: the server does not serve ``model`` (HTTP 404).
    """
    path = model_path(model, version)
    target = url + path
    address = Address.of(url)
    request = build_request(address, "GET", path, {"Accept": "application/json", **(headers or {})})
    try:
        status, body = await fetch(address, request, timeout_s)
    except (TimeoutError, OSError) as exc:
        raise UserInputError(unreachable(url, exc, timeout_s)) from exc
    except ResponseError as exc:
        raise UserInputError(f"{url} did not answer HTTP/1.1: {exc}") from exc
    which = named(model, version)
    detail = error_text(body)
    if status == 404:
        raise UnknownModelError(f"{which} is not served at {url} (HTTP 404: {detail})")
    if status in (401, 403):
        raise UserInputError(
            f"{url} refused the metadata request for {which} (HTTP {status}: "
            f"{detail}); pass the server's token with --token"
        )
    if status != 200:
        raise UserInputError(f"{which}: metadata request to {target} failed: HTTP {status}: {detail}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UserInputError(f"{which}: {target} did not answer JSON: {body[:80]!r}") from exc
    return parse_metadata(doc, model)


def parse_metadata(doc: Any, model: str) -> tuple[TensorSpec, ...]:
    """The inputs of a model-metadata response.

    Raises:
        UserInputError: the document has no usable ``inputs`` list.
        DataMismatchError: an input's datatype is not one the generator can make.
    """
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise UserInputError(f"model {model!r}: the server's metadata lists no inputs")
    specs = []
    for item in inputs:
        try:
            spec = TensorSpec.from_dict(item)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"model {model!r}: malformed input in metadata: {item!r}") from exc
        if spec.datatype not in KNOWN:
            raise DataMismatchError(
                f"input {spec.name!r}: datatype {spec.datatype} is not one of {', '.join(KNOWN)}"
            )
        specs.append(spec)
    return tuple(specs)
