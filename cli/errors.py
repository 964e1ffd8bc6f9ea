"""Errors the CLI turns into one clear line and a contract exit code (no traceback)."""

from __future__ import annotations

# The lifecycle contract's exit codes.
OK = 0
FAILURE = 1
SKIPPED = 2  # already installed / already running / not running / not found / exists / none


class CliError(Exception):
    """A failure the user can act on: `message`, then `hint` (what to do next), exit `code`."""

    def __init__(self, message: str, hint: str | None = None, code: int = FAILURE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class Skipped(CliError):
    """The contract's "skipped" case (exit 2): nothing to do, e.g. already running."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, SKIPPED)


class ApiError(CliError):
    """An error answer from the service: {"error": {"code", "message", "field"?, "hint"?}}."""

    def __init__(
        self, status: int, code: str, message: str, hint: str | None = None, field: str | None = None
    ):
        text = f"{message} (field: {field})" if field and field not in message else message
        super().__init__(text, hint, FAILURE)
        self.status = status
        self.error_code = code
        self.field = field
        self.body: object = None  # the parsed answer, when it was JSON


class ServiceDown(CliError):
    def __init__(self, endpoint: str, detail: str = ""):
        super().__init__(
            f"the service is not reachable at {endpoint}" + (f" ({detail})" if detail else ""),
            "start it with `resource-audiocraft manage start --wait`, or point --server at a running one",
            FAILURE,
        )
        self.endpoint = endpoint
