"""The optional API key: when `AUDIOCRAFT_API_KEY` is set, /api/* needs `Authorization: Bearer <key>`
(the scheme in any case, as HTTP has it; the key compared in constant time).

/health, /metrics and /openapi.json stay open: orchestrators and monitoring probe them without
credentials, and they hold nothing private. A plain ASGI middleware (not BaseHTTPMiddleware), so
streamed answers (SSE, audio) pass through untouched.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from lib.errors import ServiceError
from server.http.errors import to_response

PROTECTED_PREFIX = "/api/"


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = to_response(
            ServiceError(
                "this service needs an API key",
                code="unauthorized",
                status=401,
                hint="send the header 'Authorization: Bearer <key>' (the CLI reads AUDIOCRAFT_API_KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        sent = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = sent.strip().partition(b" ")
        # constant time over the key: no key guessing by timing (the scheme is no secret)
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
