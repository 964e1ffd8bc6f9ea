"""Reading request bodies within the upload limit: JSON, or form fields with the same names.

JSON is taken only as `Content-Type: application/json`: a web page can send text/plain (or no type)
to any site with no preflight, so a JSON body of another type is a 415 (server/http/guard.py says
the rest of how pages are kept out)."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from lib.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, forms: bool = False) -> None:
    """415 unless the body is declared JSON (application/json, or a +json type)."""
    kind = media_type(request)
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    also = " (or form fields: multipart/form-data, application/x-www-form-urlencoded)" if forms else ""
    raise UnsupportedMediaType(
        f"send the body as JSON with 'Content-Type: application/json'{also}, not {kind or 'no content type'}",
        hint="curl -H 'Content-Type: application/json' -d '{...}' ...",
    )


def too_large(limit_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the {limit_bytes / 1e6:g} MB limit",
        hint="send a shorter file, or raise AUDIOCRAFT_MAX_UPLOAD_MB on the server",
    )


async def read_body(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise too_large(limit_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_fields(request: Request, limit_bytes: int) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """(fields, files). JSON bodies must be objects; forms give strings that pydantic coerces."""
    content_type = media_type(request)
    if content_type in FORM_TYPES:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit_bytes:
            raise too_large(limit_bytes)
        form = await request.form(max_part_size=limit_bytes)
        fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
        files = {k: v for k, v in form.items() if isinstance(v, UploadFile)}
        return fields, files
    require_json(request, forms=True)
    body = await read_body(request, limit_bytes)
    if not body.strip():
        raise BadRequest(
            code="empty_body", message="the request has no body", hint='send JSON such as {"prompt": "..."}'
        )
    data = json.loads(body)
    if not isinstance(data, dict):
        raise BadRequest(code="invalid_json", message="the body must be a JSON object", hint='e.g. {"prompt": "..."}')
    return data, {}
