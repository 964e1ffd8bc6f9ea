"""The one error type of the service. Every domain error is a ServiceError and carries its HTTP status,
so a cause gets the same answer wherever it is found: at the edge, in serving, or in a job's lane.

`server/http/errors.py` turns one into `{"error": {code, message, field?, hint?}}` in one function;
a job that fails keeps the same fields (and the status) in its `error`. Stdlib only: the CLI and
the torch-free HTTP layer import it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """`code` is the stable machine-readable name, `message` is written for the person who sent the
    request, `field` names the request field at fault, `hint` says what to do next."""

    status: ClassVar[int] = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status  # type: ignore[misc]  # an instance may answer otherwise than its class
        self.field = field
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The answer's `error` object: code and message, field and hint when known."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.hint:
            out["hint"] = self.hint
        return out


class BadRequest(ServiceError):
    """The body cannot be read at all: not JSON, not UTF-8, nested too deep, empty."""

    status = 400
    code = "bad_request"


class Forbidden(ServiceError):
    """Refused whoever asks this way: a request from another site, or to a host name not served."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """Well-formed, but the state of the service refuses it now (not installed, in use, not finished)."""

    status = 409
    code = "conflict"


class RequestTimeout(ServiceError):
    """The client stopped sending in the middle of its request; the connection is closed after the answer."""

    status = 408
    code = "request_timeout"

    def __init__(self, message: str, **kwargs: Any):
        kwargs.setdefault("headers", {"Connection": "close"})
        super().__init__(message, **kwargs)


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class Invalid(ServiceError):
    """A field, a file or a combination of them that the service cannot use."""

    status = 422
    code = "invalid_field"


class TooManyRequests(ServiceError):
    status = 429
    code = "too_many_requests"


class Unavailable(ServiceError):
    """The request was fine; the service could not do it (a model that fails to load, the hub unreachable)."""

    status = 503
    code = "unavailable"


class InsufficientStorage(ServiceError):
    """A disk the service writes to is full, or below its free-space floor: the request was fine, and
    the same request works once there is room (nothing needs a restart)."""

    status = 507
    code = "insufficient_storage"


class Internal(ServiceError):
    """A bug: the message is generic, the details go to the log."""

    status = 500
    code = "internal_error"
