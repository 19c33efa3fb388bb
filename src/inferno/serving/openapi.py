"""The OpenAPI 3.1 description of the server's endpoints, served at ``/openapi.json``.

It states the constraints the server enforces (name and version patterns, non-empty and
unique tensor names, shapes >= 0), so a client or a schema-driven fuzzer such as
Schemathesis knows what is refused before it sends it.
"""

from __future__ import annotations

from typing import Any

from inferno.protocol.datatypes import DATATYPES

MODEL_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A model name as the repository accepts it (``inferno.repository.check_name``)."""

VERSION_PATTERN = "^[1-9][0-9]{0,17}$"
"""A version as the repository writes it: canonical decimal, no leading zero (others: 404)."""

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_DATATYPE = {"type": "string", "enum": list(DATATYPES)}
_TENSOR_META: dict[str, Any] = {"type": "object", "required": ["name", "datatype", "shape"],
                "properties": {"name": {"type": "string"}, "datatype": _DATATYPE,
                               "shape": {"type": "array", "items": {"type": "integer"},
                                         "description": "-1: a variable dimension"}}}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_INFER_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"},
            "timeout": {"type": "integer", "minimum": 0, "description": "microseconds"}}},
        "inputs": {"type": "array", "minItems": 1, "description": "input names are unique", "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string", "minLength": 1}, "datatype": _DATATYPE, "shape": _SHAPE,
                           "parameters": {"type": "object", "properties": {
                               "binary_data_size": {"type": "integer", "minimum": 0, "description":
                                   "bytes of this tensor after the JSON header (instead of 'data'); "
                                   "float tensors hold finite values only"}}},
                           "data": {"type": "array", "description":
                                    "flat in row-major order, or nested exactly as 'shape' (each level's "
                                    "length is that dimension, at most 32 levels); as many elements as "
                                    "the shape's product"}}}},
        "outputs": {"type": "array", "description":
                    "output names are unique: a name asked for twice is refused (400); none or [] asks "
                    "for every output", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "parameters": {"type": "object", "properties": {
                "binary_data": {"type": "boolean", "description":
                                "binary carries every value exactly; a float output holding NaN or Inf "
                                "cannot be sent as JSON (400)"},
                "classification": {"type": "integer", "minimum": 0}}}}}},
    },
}
_INFER_RESPONSE = {
    "type": "object", "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                   "outputs": {"type": "array", "items": {**_TENSOR_META, "properties": {
                       **_TENSOR_META["properties"], "shape": _SHAPE, "data": {"type": "array"},
                       "parameters": {"type": "object"}}}}},
}
_STAT = {"type": "object", "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}}}


_ALLOW = {"Allow": {"required": True, "description": "the method this endpoint takes",
                    "schema": {"type": "string"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad request: the message names the input, what was expected and what was found",
            401: "missing or wrong bearer token", 404: "unknown model, version or endpoint",
            405: "wrong method (the Allow header names the one this endpoint takes)", 413: "body over the size limit",
            500: "model UNAVAILABLE: its load failed for good (the message says why; a retry will not help "
                 "until its files are fixed and it is loaded again)",
            503: "transient: queue full, model LOADING or unloading, server shutting down (Retry-After)",
            504: "request timeout ran out"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}},
                     **({"headers": _ALLOW} if c == 405 else {})} for c in codes}


def _ok(schema: dict[str, Any] | None = None, description: str = "OK") -> dict[str, Any]:
    if schema is None:
        return {"200": {"description": description}}
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def _flag(name: str, value: bool | None = None) -> dict[str, Any]:
    """``{name: true|false}``, the body KServe's SDK reads from the health endpoints."""
    flag: dict[str, Any] = {"type": "boolean"} if value is None else {"const": value}
    return {"type": "object", "required": [name], "properties": {name: flag}}


_MODEL = {"name": "model", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN, "maxLength": 128}}
_VERSION = {"name": "version", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": VERSION_PATTERN, "maxLength": 18,
                       "description": "canonical decimal, no leading zero ('01' is not version 1)"}}


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                               "platform": {"type": "string"},
                               "inputs": {"type": "array", "items": _TENSOR_META},
                               "outputs": {"type": "array", "items": _TENSOR_META}}}
    return {
        prefix: {"get": {"summary": "Model metadata", "parameters": params,
                         "responses": {**_ok(metadata), **_errors(401, 404, 500, 503)}}},
        f"{prefix}/ready": {"get": {"summary": "Model ready (status code only)", "parameters": params,
                                    "responses": {**_ok(), "404": {"description": "not loaded"},
                                                  "503": {"description": "not ready"}}}},
        f"{prefix}/config": {"get": {"summary": "Model configuration (Triton's shape)", "parameters": params,
                                     "responses": {**_ok({"type": "object"}), **_errors(401, 404, 500, 503)}}},
        f"{prefix}/stats": {"get": {"summary": "Statistics (Triton's shape)", "parameters": params,
                                    "responses": {**_ok({"type": "object"}), **_errors(401, 404)}}},
        f"{prefix}/infer": {"post": {
            "summary": "Inference: JSON tensors, or Triton's binary tensor extension",
            # The binary form is not declared as a content type or header parameter: its body is
            # the JSON header of Inference-Header-Content-Length bytes followed by raw tensor bytes,
            # which no schema states, and a declared header would be sent with JSON bodies too.
            "description": "Triton's binary tensor extension: send header Inference-Header-Content-Length "
                           "with the length of the JSON part; the tensors' bytes follow it "
                           "(parameters.binary_data_size per input). Outputs come back the same way when "
                           "asked with binary_data / binary_data_output.",
            "parameters": params,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _INFER_REQUEST}}},
            "responses": {**_ok(_INFER_RESPONSE), **_errors(400, 401, 404, 405, 413, 500, 503, 504)}}},
    }


def openapi(version: str) -> dict[str, Any]:
    """The document; ``version`` is inferno's."""
    stats = {"type": "object", "properties": {"model_stats": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                         "inference_count": {"type": "integer"},
                                         "execution_count": {"type": "integer"},
                                         "inference_stats": {"type": "object",
                                                             "additionalProperties": _STAT}}}}}}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "Server live", "responses": _ok(_flag("live", True))}},
        "/v2/health/ready": {"get": {"summary": "Server ready: startup over, models loaded and warm; one that failed does not hold the others back",
                                     "responses": {**_ok(_flag("ready", True)), "503": {
                                         "description": "not ready",
                                         "content": {"application/json": {"schema": _flag("ready", False)}}}}}},
        "/v2": {"get": {"summary": "Server metadata", "responses": {**_ok({
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}}}), **_errors(401)}}},
        **_model_paths("/v2/models/{model}", [_MODEL]),
        **_model_paths("/v2/models/{model}/versions/{version}", [_MODEL, _VERSION]),
        "/v2/models/stats": {"get": {"summary": "Statistics of every loaded model",
                                     "responses": {**_ok(stats), **_errors(401)}}},
        "/v2/repository/index": {"post": {"summary": "Models in the repository, with their state",
                                          "responses": {**_ok({"type": "array", "items": {"type": "object"}}),
                                                        **_errors(400, 401)}}},
        "/v2/repository/models/{model}/load": {"post": {
            "summary": "Load or reload (hot swap: new versions warm up before they take traffic)",
            "parameters": [_MODEL], "responses": {**_ok(), **_errors(400, 401, 404, 503)}}},
        "/v2/repository/models/{model}/unload": {"post": {
            "summary": "Unload after finishing accepted requests",
            "parameters": [_MODEL], "responses": {**_ok(), **_errors(401, 404)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": _ok({"type": "object"})}},
    }
    for path, item in paths.items():
        for operation in item.values():
            # any endpoint: a method it does not take is 405 with Allow; past the health checks,
            # the bearer token is checked (401) and a header sent twice is refused (400)
            guarded = () if path.startswith("/v2/health/") else (400, 401)
            responses = {**_errors(*guarded, 405), **operation["responses"]}
            operation["responses"] = dict(sorted(responses.items()))
    return {
        "openapi": "3.1.0",
        "info": {"title": "inferno: Open Inference Protocol v2", "version": version,
                 "description": "KServe/Triton compatible inference over HTTP. Every endpoint but the health "
                                "checks takes 'Authorization: Bearer <token>' (once) when the server has a "
                                "token. A method an endpoint does not take is answered 405 with an Allow "
                                "header naming the one it takes."},
        "paths": paths,
    }
