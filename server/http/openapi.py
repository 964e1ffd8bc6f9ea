"""The OpenAPI document, generated from the route table (server/http/app.py ENDPOINTS), the pydantic
schemas in lib/ and the validation context the server checks requests with (Services.context), so it
states the limits of the server that serves it.

A schema that checks more than its fields' types says so in JSON Schema through a `document`
classmethod beside its validators (lib/schemas.py); this module calls it on the schema of every model.
Form bodies and query parameters are derived from the same schemas: the same names, no null (a form
field or a query parameter is a string or absent) and the upload fields as files.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from lib.schemas import ErrorEnvelope

MULTIPART = "multipart/form-data"
BINARY = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Upload:
    """A file field of a multipart body."""

    name: str
    description: str
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """A successful answer: JSON of `model` and/or a file in one of `files` (media types), with headers."""

    status: int = 200
    model: type[BaseModel] | None = None
    files: Sequence[str] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # name: description
    description: str = "OK"
    schemas: Mapping[str, Any] = field(default_factory=dict)  # media type: its schema, where not binary


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Any
    summary: str
    answers: Sequence[Answer] = (Answer(),)
    errors: Sequence[int] = ()  # statuses of error answers (ErrorEnvelope)
    body: type[BaseModel] | None = None  # the request's fields
    json_body: bool = True  # the fields as a JSON object
    forms: Sequence[str] = ()  # form content types that carry the same fields, and the uploads
    uploads: Sequence[Upload] = ()
    raw: str | None = None  # the file as the whole body (of this media type), the fields in the query
    query: type[BaseModel] | None = None  # the query parameters, as the route validates them
    query_defaults: bool = True  # False: an absent parameter keeps what the job has, not the schema's default
    any_uploads: str | None = None  # multipart: file parts of any other name are uploads too (their description)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _generator(context: Mapping[str, Any]) -> type[GenerateJsonSchema]:
    class Documented(GenerateJsonSchema):
        """Pydantic's JSON Schema, then the model's own `document` with the validation context."""

        def model_schema(self, schema):  # type: ignore[no-untyped-def]
            out = super().model_schema(schema)
            document = getattr(schema["cls"], "document", None)
            if document is not None:
                document(out, context)
            return out

    return Documented


def _without_null(node: Any) -> Any:
    """The schema for a form field or a query parameter: null is not a value there, only absence is."""
    if isinstance(node, list):
        return [_without_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_null(v) for k, v in node.items()}
    if "anyOf" in out:
        branches = [b for b in out["anyOf"] if b != {"type": "null"}]
        if len(branches) == 1:
            del out["anyOf"]
            out = {**branches[0], **out}
        else:
            out["anyOf"] = branches
    if isinstance(out.get("enum"), list):
        out["enum"] = [v for v in out["enum"] if v is not None]
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def _form(schema: dict[str, Any], uploads: Sequence[Upload], any_uploads: str | None = None) -> dict[str, Any]:
    form = _without_null(copy.deepcopy(schema))
    for upload in uploads:
        form["properties"][upload.name] = {**BINARY, "description": upload.description}
        if upload.required:
            form.setdefault("required", []).append(upload.name)
    if any_uploads is not None:
        form["additionalProperties"] = {**BINARY, "description": any_uploads}
    form.pop("title", None)
    return form


def _encoding(ep: Endpoint) -> dict[str, Any]:
    """How a multipart body's parts are sent: the uploads as files, structured fields as JSON text."""
    from server.http.payload import json_fields

    encoding = {u.name: {"contentType": "application/octet-stream"} for u in ep.uploads}
    assert ep.body is not None
    for name in sorted(json_fields(ep.body)):
        if name in ep.body.model_fields:
            encoding[name] = {"contentType": "application/json"}
    return encoding


def _parameters(ep: Endpoint, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1].split(":")[0] for part in ep.path.split("/") if part.startswith("{"))
    ]
    if ep.query is not None:
        schema = schemas[ep.query.__name__]
        required = set(schema.get("required", ()))
        for name, prop in _without_null(schema["properties"]).items():
            prop.pop("title", None)
            if not ep.query_defaults:
                prop.pop("default", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append(param)
    return params


def _request_body(ep: Endpoint, schemas: dict[str, Any]) -> dict[str, Any] | None:
    if ep.body is None:
        return None
    name = ep.body.__name__
    content: dict[str, Any] = {}
    if ep.json_body:
        content["application/json"] = {"schema": ref(name)}
    if ep.forms:
        schemas.setdefault(f"{name}Form", _form(schemas[name], ep.uploads, ep.any_uploads))
        for media_type in ep.forms:
            content[media_type] = {"schema": ref(f"{name}Form")}
            encoding = _encoding(ep) if media_type == MULTIPART else {}
            if encoding:
                content[media_type]["encoding"] = encoding
    if ep.raw is not None:
        content[ep.raw] = {"schema": BINARY}
    return {"required": True, "content": content}


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    content: dict[str, Any] = {}
    if answer.model is not None:
        content["application/json"] = {"schema": ref(answer.model.__name__)}
    for media_type in answer.files:
        content[media_type] = {"schema": answer.schemas.get(media_type, BINARY)}
    if content:
        out["content"] = content
    if answer.headers:
        out["headers"] = {h: {"description": d, "schema": {"type": "string"}} for h, d in answer.headers.items()}
    return out


def _operation(ep: Endpoint, schemas: dict[str, Any], protected: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": ep.summary, "operationId": ep.handler.__name__}
    params = _parameters(ep, schemas)
    if params:
        op["parameters"] = params
    body = _request_body(ep, schemas)
    if body is not None:
        op["requestBody"] = body
    responses = {str(a.status): _answer(a) for a in ep.answers}
    # 403 from server/http/guard.py on every path: a Host not served, or a request from another site.
    errors = {403, *ep.errors, *((413, 415) if body is not None else ()), *((401,) if protected else ())}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": ref("ErrorEnvelope")}},
        }
    op["responses"] = responses
    if protected:
        op["security"] = [{"bearer": []}]
    return op


def build_document(
    endpoints: Sequence[Endpoint],
    title: str,
    version: str,
    context: Mapping[str, Any],
    protected: str | None = None,
) -> dict[str, Any]:
    """The document. `context` is the validation context the routes check requests with; `protected`
    is the path prefix that needs the API key (None: no key is set)."""
    models = {m for ep in endpoints for m in (ep.body, ep.query) if m is not None}
    models |= {a.model for ep in endpoints for a in ep.answers if a.model is not None} | {ErrorEnvelope}
    ordered = sorted(models, key=lambda m: m.__name__)
    _, found = models_json_schema(
        [(m, "validation") for m in ordered],
        ref_template="#/components/schemas/{model}",
        schema_generator=_generator(context),
    )
    schemas: dict[str, Any] = found.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        guarded = protected is not None and ep.path.startswith(protected)
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, schemas, guarded)
    components: dict[str, Any] = {"schemas": dict(sorted(schemas.items()))}
    if protected is not None:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths, "components": components}
