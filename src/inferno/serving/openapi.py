"""The OpenAPI 3.1 description of the server's endpoints, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_DATATYPE = {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                        "INT64", "FP16", "FP32", "FP64", "BYTES"]}
_TENSOR_META: dict[str, Any] = {"type": "object", "required": ["name", "datatype", "shape"],
                "properties": {"name": {"type": "string"}, "datatype": _DATATYPE,
                               "shape": {"type": "array", "items": {"type": "integer"}}}}
_INFER_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"},
            "timeout": {"type": "integer", "minimum": 0, "description": "microseconds"}}},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "datatype": _DATATYPE,
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "parameters": {"type": "object", "properties": {
                               "binary_data_size": {"type": "integer", "minimum": 0}}},
                           "data": {"type": "array"}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object", "properties": {
                "binary_data": {"type": "boolean"}, "classification": {"type": "integer", "minimum": 0}}}}}},
    },
}
_INFER_RESPONSE = {
    "type": "object", "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                   "outputs": {"type": "array", "items": {**_TENSOR_META, "properties": {
                       **_TENSOR_META["properties"], "data": {"type": "array"},
                       "parameters": {"type": "object"}}}}},
}
_STAT = {"type": "object", "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad request: the message names the input, what was expected and what was found",
            401: "missing or wrong bearer token", 404: "unknown model, version or endpoint",
            405: "wrong method", 413: "body over the size limit",
            503: "queue full, model unloading, or model UNAVAILABLE (its load failed: the message says why)", 504: "request timeout ran out"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(schema: dict[str, Any] | None = None, description: str = "OK") -> dict[str, Any]:
    if schema is None:
        return {"200": {"description": description}}
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                               "platform": {"type": "string"},
                               "inputs": {"type": "array", "items": _TENSOR_META},
                               "outputs": {"type": "array", "items": _TENSOR_META}}}
    return {
        prefix: {"get": {"summary": "Model metadata", "parameters": params,
                         "responses": {**_ok(metadata), **_errors(401, 404, 503)}}},
        f"{prefix}/ready": {"get": {"summary": "Model ready (status code only)", "parameters": params,
                                    "responses": {**_ok(), "404": {"description": "not loaded"},
                                                  "503": {"description": "not ready"}}}},
        f"{prefix}/config": {"get": {"summary": "Model configuration (Triton's shape)", "parameters": params,
                                     "responses": {**_ok({"type": "object"}), **_errors(401, 404, 503)}}},
        f"{prefix}/stats": {"get": {"summary": "Statistics (Triton's shape)", "parameters": params,
                                    "responses": {**_ok({"type": "object"}), **_errors(401, 404)}}},
        f"{prefix}/infer": {"post": {
            "summary": "Inference: JSON tensors, or Triton's binary tensor extension "
                       "(header Inference-Header-Content-Length)",
            "parameters": [*params, {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                                     "schema": {"type": "integer", "minimum": 1}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _INFER_REQUEST},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {**_ok(_INFER_RESPONSE), **_errors(400, 401, 404, 405, 413, 503, 504)}}},
    }


def openapi(version: str) -> dict[str, Any]:
    """The document; ``version`` is inferno's."""
    stats = {"type": "object", "properties": {"model_stats": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                         "inference_count": {"type": "integer"},
                                         "execution_count": {"type": "integer"},
                                         "inference_stats": {"type": "object",
                                                             "additionalProperties": _STAT}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "inferno: Open Inference Protocol v2", "version": version,
                 "description": "KServe/Triton compatible inference over HTTP. Every endpoint but the health "
                                "checks takes 'Authorization: Bearer <token>' when the server has a token."},
        "paths": {
            "/v2/health/live": {"get": {"summary": "Server live (status code only)", "responses": _ok()}},
            "/v2/health/ready": {"get": {"summary": "Server ready: startup over, models loaded and warm; one that failed does not hold the others back (status code only)",
                                         "responses": {**_ok(), "503": {"description": "not ready"}}}},
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
        },
    }
