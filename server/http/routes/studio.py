"""GET /: the studio page, a person's way into the service. Static files shipped in the package
(server/http/studio/: plain HTML, CSS and JS, no build step, nothing fetched from elsewhere).

The page holds nothing private, so it is open like /health; everything it does goes through /api/
with the same API key and the same Origin checks as any other client (server/http/guard.py): its
requests are same-origin. A strict Content-Security-Policy keeps anything but the page's own files
from running in it, and it may not be framed (clickjacking a page that can spend the machine's CPU).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from lib.errors import NotFound

STUDIO_DIR = Path(__file__).resolve().parents[1] / "studio"
PREFIX = "/studio/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only the page's own files: scripts and styles from this origin, no inline code, no plug-ins, no
# framing. blob: is the audio the page fetched (with the key header <audio src> cannot send) and its
# MediaSource while a stream plays; data: is for nothing but the canvas' own images.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version of the service shows its new page
    # The page records a melody from the microphone; nothing else.
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}


def _files() -> dict[str, Path]:
    """The servable files by name, read once: a request can name only one of these."""
    return {p.name: p for p in STUDIO_DIR.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}


def _answer(path: Path) -> Response:
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


def routes() -> list[Route]:
    files = _files()

    async def page(_request: Request) -> Response:
        return _answer(files["index.html"])

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files or name == "index.html":
            raise NotFound(f"the studio has no file {name[:80]!r}", code="not_found", hint="open / for the studio")
        return _answer(files[name])

    return [Route("/", page, methods=["GET"]), Route(PREFIX + "{name}", asset, methods=["GET"])]
