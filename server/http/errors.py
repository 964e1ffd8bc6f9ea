"""The one place where errors become HTTP answers: {"error": {code, message, field?, hint?}}.

Every domain error is a lib.errors.ServiceError and carries its status; the few foreign exceptions an
HTTP request can raise (pydantic's, Starlette's, json's) are translated to one first. Anything else
is a bug: a 500 with a generic message, the traceback in the log.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from lib.errors import BadRequest, Internal, Invalid, ServiceError
from lib.files import TEMP_DIR, disk_full, no_space

log = logging.getLogger("audiocraft.http")


def field_name(loc: tuple) -> str:
    """A pydantic error's location as the request names it: tracks[2].offset_s."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


def _invalid(exc: ValidationError) -> Invalid:
    first = exc.errors()[0]
    field = field_name(first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown field '{field}'"
    elif first["type"] == "missing":
        message = f"'{field}' is required"
    else:
        message = f"{field}: {first['msg'].removeprefix('Value error, ')}"
    more = len(exc.errors()) - 1
    hint = f"{more} more problem(s) in the request; see /openapi.json for the fields" if more else None
    return Invalid(message, field=field, hint=hint)


def _as_service_error(exc: Exception) -> ServiceError:
    match exc:
        case ServiceError():
            return exc
        case ValidationError():
            return _invalid(exc)
        case HTTPException():
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            return ServiceError(str(exc.detail), code=code, status=exc.status_code, headers=dict(exc.headers or {}))
        case json.JSONDecodeError():
            return BadRequest(f"the body is not valid JSON: {exc.msg} at position {exc.pos}", code="invalid_json")
        case ClientDisconnect():  # nobody hears this answer; it is no server error
            return BadRequest("the client went away before the whole body was sent", code="client_disconnected")
    if disk_full(exc):  # the data dir's writes say so themselves: this is an upload spooled to a temporary file
        return no_space(TEMP_DIR)
    log.exception("unhandled error", exc_info=exc)
    return Internal("the server hit an unexpected error; see its logs")


class _ErrorResponse(JSONResponse):
    """JSON in ASCII: a message may quote what the client sent, and that may not be encodable as
    UTF-8 (a lone surrogate), which must not turn a 4xx into a failure to answer."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def to_response(exc: Exception) -> JSONResponse:
    err = _as_service_error(exc)
    return _ErrorResponse({"error": err.body()}, status_code=err.status, headers=err.headers or None)


async def handle(_request: Request, exc: Exception) -> JSONResponse:
    return to_response(exc)
