"""Web pages cannot drive the service: the checks a local service needs against the browser on the
same machine (as Jupyter makes them).

- DNS rebinding: a page on attacker.example whose name is made to resolve to 127.0.0.1 talks to
  this service as if it were its own origin. So the `Host` header must be a name the service
  answers to: localhost, the bound host, AUDIOCRAFT_ALLOWED_HOSTS, or an IP address (rebinding
  needs a name: a page can only reach an address in its own URL). Others get 403.
- Cross-site requests: a page on any origin can make the browser POST a form, or text/plain JSON,
  with no preflight. A state-changing request (anything but GET, HEAD, OPTIONS) whose `Origin` is
  neither this service's own nor in AUDIOCRAFT_ALLOWED_ORIGINS, or that the browser marks
  `Sec-Fetch-Site: cross-site`, gets 403. Clients that are not browsers send neither header.
  The JSON endpoints also want `Content-Type: application/json` (server/http/payload.py).
- CORS: Starlette's CORSMiddleware answers preflights and adds the headers, for the allowed
  origins only (server/http/app.py).

A plain ASGI middleware (not BaseHTTPMiddleware), so streamed answers pass through untouched.
"""

from __future__ import annotations

import fnmatch
import ipaddress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lib.errors import Forbidden
from server.http.errors import to_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SHOWN = 80  # characters of a refused header value quoted back


def host_name(header: str) -> str:
    """The name in a Host header, without its port: `[::1]:7862` -> `::1`, `Localhost.:80` -> `localhost`."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


class RequestGuard:
    def __init__(self, app: ASGIApp, bound_host: str, allowed_hosts: list[str], allowed_origins: list[str]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {"localhost", host_name(bound_host)} | {h for h in allowed_hosts if "*" not in h}
        self.host_patterns = [h for h in allowed_hosts if "*" in h and h != "*"]
        self.origins = set(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await to_response(refusal)(scope, receive, send)

    def host_allowed(self, header: str | None) -> bool:
        if header is None or self.any_host:  # no Host at all: not a browser
            return True
        name = host_name(header)
        return name in self.hosts or _is_ip(name) or any(fnmatch.fnmatchcase(name, p) for p in self.host_patterns)

    def origin_allowed(self, origin: str, scheme: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:  # "*": every page may (an explicit choice)
            return True
        return host is not None and origin == f"{scheme}://{host.strip().lower()}"

    def _refusal(self, scope: Scope, headers: Headers) -> Forbidden | None:
        host = headers.get("host")
        if not self.host_allowed(host):
            return Forbidden(
                f"this service does not answer to the host name {host_name(host or '')[:_SHOWN]!r}",
                code="host_not_allowed",
                hint="reach it as localhost or by its IP address, or add the name to AUDIOCRAFT_ALLOWED_HOSTS "
                "on the server",
            )
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            if self.origin_allowed(origin, scope.get("scheme", "http"), host):
                return None
            return Forbidden(
                f"a web page at {origin[:_SHOWN]!r} may not send this request",
                code="cross_site_request",
                hint="only pages from an origin in AUDIOCRAFT_ALLOWED_ORIGINS may call this service",
            )
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return Forbidden(
                "a web page on another site may not send this request",
                code="cross_site_request",
                hint="only pages from an origin in AUDIOCRAFT_ALLOWED_ORIGINS may call this service",
            )
        return None
