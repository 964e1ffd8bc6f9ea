"""Reading request bodies, the one way in for every byte a client sends.

- Every byte is counted against the upload limit as it arrives, whatever the framing: a declared
  Content-Length past it is refused before reading, a chunked body at the byte that crosses it (413).
- A client that pauses longer than the body timeout between two reads gets 408, and the connection
  is closed.
- A compressed body (any Content-Encoding but identity) is refused with 415: nothing is inflated.
- JSON is taken only as `Content-Type: application/json` (415 otherwise): a web page can send
  text/plain to any site with no preflight (server/http/guard.py keeps pages out).
- JSON is read strictly: UTF-8, no lone surrogates, nesting and number size bounded by the parser
  (pydantic-core's), so a hostile body is a 400 that says what is wrong, never a 500.
- Multipart uploads go through Starlette's parser fed by the counted stream; file parts spool to
  disk past 1 MB, so memory holds neither the upload nor more than the limit.
- Form fields and query parameters are strings: `from_strings` gives them the values JSON would
  carry, by the schema's field types (`bit_depth=24` is the 24 of `Literal[16, 24, 32]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import from_json
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from lib.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from lib.settings import Settings

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
FORM_TYPES = (MULTIPART, URLENCODED)


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, forms: bool = False) -> None:
    """415 unless the body is declared JSON (application/json, or a +json type)."""
    kind = content_type(request)
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


def _check_headers(request: Request, limit_bytes: int) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"the body is compressed ({encoding}); this service reads uncompressed bodies only",
            code="unsupported_content_encoding",
            hint="send the body without a Content-Encoding",
        )
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit_bytes:
        raise too_large(limit_bytes)


async def body_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The body as it arrives, counted against the upload limit and timed between reads."""
    limit = settings.max_upload_bytes
    _check_headers(request, limit)
    stream = request.stream()
    size = 0
    try:
        while True:
            try:
                async with asyncio.timeout(settings.body_timeout_s):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise RequestTimeout(
                    f"the client sent nothing for {settings.body_timeout_s:g} s in the middle of the body",
                    hint="send the whole body at once; the server waits AUDIOCRAFT_BODY_TIMEOUT_S between reads",
                ) from None
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            yield chunk
    finally:
        await stream.aclose()


async def read_body(request: Request, settings: Settings) -> bytes:
    async with contextlib.aclosing(body_chunks(request, settings)) as stream:
        return b"".join([chunk async for chunk in stream])


def parse_json(body: bytes) -> Any:
    """A JSON document: 400 when it is not UTF-8, not JSON, nested too deep or has absurd numbers."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the body is not UTF-8 (byte {exc.start} is not valid)",
            code="invalid_json",
            hint="send JSON encoded as UTF-8",
        ) from None
    try:
        return from_json(body)
    except ValueError as exc:
        raise BadRequest(
            f"the body is not valid JSON: {exc}",
            code="invalid_json",
            hint="send one JSON document (strings UTF-8, nested at most 200 deep, integers under 4300 digits)",
        ) from None


async def read_json(request: Request, settings: Settings, forms: bool = False) -> Any:
    """The JSON body, declared as JSON (415 otherwise: a page can post text/plain to any site with no
    preflight; server/http/guard.py says the rest of how pages are kept out)."""
    require_json(request, forms)
    body = await read_body(request, settings)
    if not body.strip():
        raise BadRequest(
            code="empty_body", message="the request has no body", hint='send JSON such as {"prompt": "..."}'
        )
    return parse_json(body)


async def read_form(
    request: Request, settings: Settings, *, max_files: int = 4, max_fields: int = 64, max_part_size: int = 1 << 20
) -> FormData:
    """A multipart or urlencoded form, read from the counted stream. `max_part_size` bounds each
    non-file field; file parts spool to disk and count towards the upload limit like any byte."""
    async with contextlib.aclosing(body_chunks(request, settings)) as stream:
        if content_type(request) == MULTIPART:
            parser: MultiPartParser | FormParser = MultiPartParser(
                request.headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
            )
        else:
            parser = FormParser(request.headers, stream, max_fields=max_fields, max_part_size=max_part_size)
        try:
            return await parser.parse()
        except MultiPartException as exc:
            raise BadRequest(
                f"the form cannot be read: {exc.message}",
                code="invalid_form",
                hint="send multipart/form-data with one part per field (curl -F name=value -F file=@input)",
            ) from None


async def read_fields(
    request: Request, settings: Settings, schema: type[BaseModel], max_files: int = 4
) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """(fields, files): a JSON object, or form fields (as `schema` types them) and up to `max_files`
    file parts. The caller closes the files."""
    if content_type(request) in FORM_TYPES:
        form = await read_form(request, settings, max_files=max_files, max_part_size=settings.max_upload_bytes)
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        return from_strings(schema, fields), files
    data = await read_json(request, settings, forms=True)
    if not isinstance(data, dict):
        raise BadRequest(code="invalid_json", message="the body must be a JSON object", hint='e.g. {"prompt": "..."}')
    return data, {}


async def close_files(files: Mapping[str, UploadFile]) -> None:
    for upload in files.values():
        await upload.close()


# -- strings as the schema types them ---------------------------------------------------------


def _literal_values(annotation: Any) -> dict[str, Any]:
    """The non-string values the Literals in a field's type allow, by their text ({"24": 24}), and a
    boolean's two (the schemas take booleans strictly: in a form, only true or false, in any case)."""
    if annotation is bool:
        return {"true": True, "false": False}
    if get_origin(annotation) is Literal:
        values = [v for v in get_args(annotation) if not isinstance(v, str)]
        return {(str(v).lower() if isinstance(v, bool) else str(v)): v for v in values}
    out: dict[str, Any] = {}
    for arg in get_args(annotation):  # unions, Optional, Annotated
        out.update(_literal_values(arg))
    return out


@functools.cache
def _string_tables(schema: type[BaseModel]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for name, info in schema.model_fields.items():
        table = _literal_values(info.annotation)
        if table:
            tables[name] = table
            if info.alias:
                tables[info.alias] = table
    return tables


def _structured(annotation: Any) -> bool:
    """A list, a dict or a model (or an optional one): in a form, its JSON text."""
    origin = get_origin(annotation)
    if origin in (list, dict) or annotation in (list, dict):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return origin is not Literal and any(_structured(arg) for arg in get_args(annotation))


@functools.cache
def json_fields(schema: type[BaseModel]) -> frozenset[str]:
    """The fields of `schema` that a form carries as JSON text (a mix's `tracks`), by name and alias."""
    names = set()
    for name, info in schema.model_fields.items():
        if _structured(info.annotation):
            names |= {name, *([info.alias] if info.alias else [])}
    return frozenset(names)


def _parsed(value: str) -> Any:
    """JSON text as its value; text that is not JSON stays, for the schema to refuse naming its field."""
    try:
        parsed = from_json(value)
    except ValueError:
        return value
    return value if parsed is None else parsed  # null is not a form value (absence is): the schema refuses it


def _spelled(table: dict[str, Any], value: str) -> Any:
    text = value.strip()
    return table.get(text, table.get(text.lower(), value))


def from_strings(schema: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """Form fields and query parameters as the JSON body would carry them, for `schema`.

    pydantic's lax mode already reads ints, floats and bools from strings; what it does not is a
    Literal of numbers, so a string that spells one of a field's literal values becomes that value.
    A structured field (a list, an object) comes as its JSON text. Anything else is left for the schema to
    accept or refuse (a 422 naming the field)."""
    tables, structured = _string_tables(schema), json_fields(schema)
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and key in tables:
            value = _spelled(tables[key], value)
        elif isinstance(value, str) and key in structured:
            value = _parsed(value)
        out[key] = value
    return out
