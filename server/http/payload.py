"""Reading request bodies within the upload limit: JSON, or form fields with the same names."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from lib.errors import BadRequest, PayloadTooLarge

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit_bytes:
            raise too_large(limit_bytes)
        form = await request.form(max_part_size=limit_bytes)
        fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
        files = {k: v for k, v in form.items() if isinstance(v, UploadFile)}
        return fields, files
    body = await read_body(request, limit_bytes)
    if not body.strip():
        raise BadRequest(
            code="empty_body", message="the request has no body", hint='send JSON such as {"prompt": "..."}'
        )
    data = json.loads(body)
    if not isinstance(data, dict):
        raise BadRequest(code="invalid_json", message="the body must be a JSON object", hint='e.g. {"prompt": "..."}')
    return data, {}
