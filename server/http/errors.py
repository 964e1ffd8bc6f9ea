"""The one place where domain errors become HTTP answers: {"error": {code, message, field?, hint?}}."""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.catalogue import UnknownModel
from lib.content import ContentError, ContentNotFound
from server.audio.errors import AudioInputError
from server.engine.codec.errors import EcdcError
from server.engine.errors import EngineError, ModelLoadFailed, UnsupportedRequest
from server.hub.store import ModelNotInstalled
from server.jobs.scheduler import JobNotFound, QueueFull
from server.models.registry import ModelInUse

log = logging.getLogger("audiocraft.http")


class ApiError(Exception):
    """An HTTP-level refusal raised by a route (body too large, bad JSON, wrong state, ...)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.hint = status, code, message, field, hint


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, str] = {"code": code, "message": message}
    if field:
        body["field"] = field
    if hint:
        body["hint"] = hint
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_name(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _validation(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = _field_name(first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown field '{field}'"
    elif first["type"] == "missing":
        message = f"'{field}' is required"
    else:
        message = f"{field}: {first['msg'].removeprefix('Value error, ')}"
    more = len(exc.errors()) - 1
    hint = f"{more} more problem(s) in the request; see /openapi.json for the fields" if more else None
    return error_response(422, "invalid_field", message, field=field, hint=hint)


def to_response(exc: Exception) -> JSONResponse:
    match exc:
        case ApiError():
            return error_response(exc.status, exc.code, exc.message, exc.field, exc.hint)
        case ValidationError():
            return _validation(exc)
        case UnknownModel():
            # The close matches are in the message; the hint has every name and alias (GET /api/models too).
            return error_response(404, "unknown_model", exc.message, field="model", hint=exc.hint)
        case ModelNotInstalled():
            return error_response(409, "model_not_installed", str(exc), field="model", hint=exc.hint)
        case UnsupportedRequest():
            return error_response(422, exc.code, exc.message, exc.field, exc.hint)
        case ModelInUse():
            return error_response(409, exc.code, exc.message, exc.field, exc.hint)
        case ModelLoadFailed():
            return error_response(503, exc.code, exc.message, exc.field, exc.hint)
        case EngineError():
            return error_response(503, exc.code, exc.message, exc.field, exc.hint)
        case AudioInputError():
            return error_response(422, "invalid_audio", str(exc), field=exc.field or "audio")
        case ContentNotFound():
            return error_response(404, "content_not_found", str(exc), hint=exc.hint)
        case ContentError():
            return error_response(422, "invalid_content", str(exc), hint=exc.hint)
        case EcdcError():
            return error_response(422, exc.code, exc.message, exc.field, exc.hint)
        case QueueFull():
            return error_response(
                429,
                "queue_full",
                str(exc),
                hint=f"retry in about {exc.retry_after_s} s",
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        case JobNotFound():
            return error_response(
                404, "job_not_found", f"there is no job '{exc.job_id}'", hint="GET /api/jobs lists them"
            )
        case HTTPException():
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            return error_response(exc.status_code, code, str(exc.detail))
        case json.JSONDecodeError():
            return error_response(400, "invalid_json", f"the body is not valid JSON: {exc.msg} at position {exc.pos}")
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "the server hit an unexpected error; see its logs")


async def handle(_request: Request, exc: Exception) -> JSONResponse:
    return to_response(exc)


HANDLED = (
    ApiError,
    ValidationError,
    UnknownModel,
    ModelNotInstalled,
    EngineError,
    AudioInputError,
    ContentError,
    EcdcError,
    QueueFull,
    JobNotFound,
    HTTPException,
    json.JSONDecodeError,
    Exception,
)
