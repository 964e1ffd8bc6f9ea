"""A small httpx client for the service's REST API; every failure becomes a CliError."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cli.errors import ApiError, CliError, ServiceDown
from lib.schemas import INPUT_FIELDS, Health, Job, JobAccepted, JobList, ModelList

# Endpoints per generation type. "continue" is the client command's name for continuation.
GENERATE_PATHS = {
    "music": "/api/generate/music",
    "sound": "/api/generate/sound",
    "melody": "/api/generate/melody",
    "continuation": "/api/generate/continuation",
    "style": "/api/generate/style",
    "mix": "/api/mix",
}
# Error codes meaning "no such route" rather than e.g. "no such model".
_ROUTE_MISSING = (
    "not_found",
    "http_404",
    "http_405",
    "method_not_allowed",
    "route_not_found",
    "unknown_route",
)


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    try:
        parsed = httpx.URL(url)
    except Exception:
        raise CliError(f"invalid --server URL {url!r}", "e.g. --server http://127.0.0.1:7862") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(f"invalid --server URL {url!r}", "e.g. --server http://127.0.0.1:7862")
    return url


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0):
        self.base_url = normalize_server(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> httpx.Response:
        try:
            if timeout is not None:
                kw["timeout"] = timeout
            resp = self._http.request(method, path, **kw)
        except httpx.ConnectError as e:
            raise ServiceDown(self.base_url, _short(e)) from None
        except httpx.TimeoutException:
            raise CliError(
                f"the service at {self.base_url} did not answer {method} {path} in time",
                "check `resource-audiocraft status` and `resource-audiocraft logs`",
            ) from None
        except httpx.HTTPError as e:
            raise CliError(f"{method} {self.base_url}{path} failed: {_short(e)}") from None
        if resp.status_code >= 400:
            raise api_error(resp)
        return resp

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kw: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, **kw) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise api_error(resp)
                yield resp
        except httpx.ConnectError as e:
            raise ServiceDown(self.base_url, _short(e)) from None
        except httpx.TimeoutException:
            raise CliError(f"the service at {self.base_url} stopped answering {method} {path}") from None

    # -- endpoints -------------------------------------------------------------------------------

    def health(self, timeout: float = 3.0) -> Health:
        """/health; a degraded service answers 503 with the same body, which is still a Health."""
        try:
            resp = self.request("GET", "/health", timeout=timeout)
        except ApiError as e:
            body = getattr(e, "body", None)
            if e.status == 503 and isinstance(body, dict) and "status" in body:
                return Health.model_validate(body)
            raise
        return Health.model_validate(resp.json())

    def models(self) -> ModelList:
        return ModelList.model_validate(self.request("GET", "/api/models", timeout=10.0).json())

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/api/jobs/{job_id}", timeout=10.0).json())

    def job_events(self, job_id: str) -> Iterator[Job]:
        """The job as its server-sent events report it: progress updates, then its final state."""
        with self.stream("GET", f"/api/jobs/{job_id}/events", timeout=httpx.Timeout(30.0, read=None)) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    yield Job.model_validate_json(line.removeprefix("data: "))

    def jobs(self, state: str | None = None, limit: int | None = None, offset: int | None = None) -> JobList:
        params = {
            k: v for k, v in {"state": state, "limit": limit, "offset": offset}.items() if v is not None
        }
        return JobList.model_validate(self.request("GET", "/api/jobs", params=params, timeout=10.0).json())

    def cancel(self, job_id: str) -> Job | None:
        resp = self.request("DELETE", f"/api/jobs/{job_id}", timeout=10.0)
        try:
            body = resp.json()
        except ValueError:
            return None
        if isinstance(body, dict) and "job" in body and isinstance(body["job"], dict):
            body = body["job"]
        try:
            return Job.model_validate(body)
        except Exception:
            return None

    def download_audio(self, job_id: str, dest: Path) -> httpx.Headers:
        """Stream the job's audio into `dest` (written next to it, then renamed)."""
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.stream("GET", f"/api/jobs/{job_id}/audio", timeout=60.0) as resp:
            with open(tmp, "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
            headers = resp.headers
        tmp.replace(dest)
        return headers

    def submit(
        self,
        kind: str,
        body: dict[str, Any],
        input_file: Path | None = None,
        files: dict[str, Path] | None = None,
    ) -> JobAccepted | httpx.Response:
        """POST a generation or a mix with async:true: JobAccepted (202), or the audio response if answered
        at once. `input_file` is the kind's input audio (a melody); `files` more uploads (part -> file)."""
        path = GENERATE_PATHS[kind]
        body = {k: v for k, v in body.items() if v is not None}
        body["async"] = True
        uploads = dict(files or {})
        if input_file is not None:
            uploads[INPUT_FIELDS[kind]] = input_file
        try:
            if uploads:
                # Form fields are strings: structured ones (a mix's tracks) and booleans as JSON text.
                form = {
                    k: (json.dumps(v) if isinstance(v, bool | dict | list) else str(v))
                    for k, v in body.items()
                }
                with contextlib.ExitStack() as stack:
                    parts = {
                        name: (p.name, stack.enter_context(open(p, "rb")), "application/octet-stream")
                        for name, p in uploads.items()
                    }
                    resp = self.request("POST", path, data=form, files=parts, timeout=120.0)
            else:
                resp = self.request("POST", path, json=body, timeout=120.0)
        except ApiError as e:
            if e.status in (404, 405) and e.error_code in _ROUTE_MISSING:
                raise CliError(
                    f"{kind} is not available on this server yet ({path} answered {e.status})",
                    "use `generate music`, or upgrade the service",
                ) from None
            raise
        if resp.status_code == 202:
            return JobAccepted.model_validate(resp.json())
        return resp


def _short(e: Exception) -> str:
    text = str(e) or e.__class__.__name__
    return text.splitlines()[0][:200]


def api_error(resp: httpx.Response) -> ApiError:
    """The service's error envelope as an ApiError; a sensible one when the body is not the envelope."""
    code, message, hint, field = f"http_{resp.status_code}", "", None, None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        hint = err.get("hint")
        field = err.get("field")
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    if not message:
        reason = resp.reason_phrase or "error"
        message = f"{resp.request.method} {resp.request.url.path} answered {resp.status_code} {reason}"
    if resp.status_code == 404 and code == f"http_{resp.status_code}":
        code = "not_found"
    if resp.status_code == 401 and not hint:
        hint = "set AUDIOCRAFT_API_KEY to the service's API key"
    if resp.status_code == 429 and not hint:
        retry = resp.headers.get("Retry-After")
        hint = f"the queue is full; retry in {retry} s" if retry else "the queue is full; retry later"
    err = ApiError(resp.status_code, code, message, hint, field)
    err.body = body
    return err
