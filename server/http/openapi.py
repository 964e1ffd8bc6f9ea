"""The OpenAPI document, generated from the route table and the pydantic schemas in lib/."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from lib.schemas import ErrorEnvelope

AUDIO_TYPES = ("audio/wav", "audio/flac", "audio/mpeg", "audio/ogg")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Any
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    answers_audio: bool = False
    status: int = 200
    errors: Sequence[int] = ()
    query: Sequence[tuple[str, str]] = field(default=())  # (name, description)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": ep.summary, "operationId": ep.handler.__name__, "responses": {}}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1].split(":")[0] for part in ep.path.split("/") if part.startswith("{"))
    ]
    params += [
        {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
        for n, d in ep.query
    ]
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": _ref(ep.body)},
                "multipart/form-data": {"schema": _ref(ep.body)},
            },
        }
    ok: dict[str, Any] = {"description": "OK"}
    if ep.answers_audio:
        ok["content"] = {t: {"schema": {"type": "string", "format": "binary"}} for t in AUDIO_TYPES}
        ok["headers"] = {
            h: {"schema": {"type": "string"}}
            for h in ("X-Job-Id", "X-Seed", "X-Model", "X-Duration-S", "X-Sample-Rate", "X-Generation-Time-S")
        }
    elif ep.answer is not None:
        ok["content"] = {"application/json": {"schema": _ref(ep.answer)}}
    op["responses"][str(ep.status)] = ok
    # 403 from server/http/guard.py on every path: a Host not served, or a request from another site.
    for status in sorted({403, *ep.errors}):
        op["responses"][str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": _ref(ErrorEnvelope)}},
        }
    return op


def build_document(endpoints: Sequence[Endpoint], title: str, version: str, extra: Sequence[type[BaseModel]] = ()):
    models = {m for ep in endpoints for m in (ep.body, ep.answer) if m is not None} | {ErrorEnvelope, *extra}
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schemas = models_json_schema([(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }
