"""POST /api/encode and POST /api/decode: EnCodec as a codec service.

The upload (multipart field `file`, or the raw body) goes to a temporary file, never wholly into
memory; options come as form fields or query parameters. Serving makes it a job of the codec lane
(server/jobs/lanes/codec.py), which holds the concurrency; the answer is the job's artifact, streamed
from disk, with the job's facts as headers.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from lib.errors import Invalid, UnsupportedMediaType
from lib.schemas import DecodeOptions, EncodeOptions, info_header
from lib.settings import Settings
from server.http.payload import FORM_TYPES, body_chunks, content_type, from_strings, read_form
from server.http.routes.generate import answer
from server.jobs.job import Job
from server.serving import codec

if TYPE_CHECKING:
    from server.services import Services

UPLOAD_FIELD = "file"
_SPOOL_IN_MEMORY = 1 << 20  # raw bodies past 1 MB go to disk, as Starlette does with form files
_JSON_TYPES = ("application/json", "text/plain", "text/html")


class _Upload:
    def __init__(self, file: BinaryIO, size: int, filename: str | None, closer: Any):
        self.file, self.size, self.filename, self._closer = file, size, filename, closer

    async def close(self) -> None:
        await self._closer()


async def _receive(request: Request, settings: Settings, what: str) -> tuple[_Upload, dict[str, str]]:
    """The uploaded file and the option fields (query parameters, then form fields on top)."""
    fields: dict[str, str] = dict(request.query_params)
    kind = content_type(request)
    if kind in FORM_TYPES:
        form = await read_form(request, settings, max_files=4, max_fields=32)
        upload = form.get(UPLOAD_FIELD)
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                fields[key] = value
        if not isinstance(upload, UploadFile):
            await form.close()
            raise Invalid(
                f"send the {what} in the multipart field '{UPLOAD_FIELD}'",
                field=UPLOAD_FIELD,
                hint=f"curl -F {UPLOAD_FIELD}=@input ...",
            )
        return _Upload(upload.file, _size_of(upload.file), upload.filename, form.close), fields
    if kind in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the {what} as a multipart upload (field '{UPLOAD_FIELD}') or as the raw body with its own "
            f"content type, not {kind}",
            hint="curl --data-binary @input -H 'Content-Type: application/octet-stream' ...",
        )
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    size = 0
    try:
        async with contextlib.aclosing(body_chunks(request, settings)) as stream:
            async for chunk in stream:
                size += len(chunk)
                spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    async def close() -> None:
        spool.close()

    return _Upload(spool, size, None, close), fields


def _size_of(f: BinaryIO) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _stem(filename: str | None, default: str) -> str:
    if not filename:
        return default
    stem = Path(filename).name.rsplit(".", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe or default


def answer_headers(table: dict[str, str]) -> dict[str, str]:
    """The headers of a codec answer (a table of lib/schemas: ENCODE_INFO, DECODE_INFO) and their meaning."""
    return {info_header(key): text for key, text in table.items()} | {"X-Job-Id": "The codec job"}


def _answer(svc: Services, job: Job, upload_name: str | None) -> Response:
    """The codec job's artifact, with its facts as headers (the same table as the OpenAPI's). The
    file is named after the upload; Starlette writes a name that is not ASCII as RFC 5987
    `filename*=utf-8''...`, which every browser and curl -J read."""
    assert job.result is not None and job.result.file is not None
    path = svc.scheduler.artifacts.path(job.id, job.result.file)
    headers = {info_header(key): value for key, value in job.result.info.items()}
    headers["X-Job-Id"] = job.id
    filename = f"{_stem(upload_name, 'audio')}{path.suffix}"
    return FileResponse(path, media_type=job.result.media_type, headers=headers, filename=filename)


async def encode(request: Request) -> Response:
    svc: Services = request.app.state.services
    upload, fields = await _receive(request, svc.settings, "audio")
    try:
        opts = EncodeOptions.model_validate(from_strings(EncodeOptions, fields), context=svc.context)
        job = await run_in_threadpool(codec.encode, svc, upload.file, upload.filename, opts)
    finally:
        await upload.close()
    return await answer(svc, job, False, lambda svc, job: _answer(svc, job, upload.filename))


async def decode(request: Request) -> Response:
    svc: Services = request.app.state.services
    upload, fields = await _receive(request, svc.settings, ".ecdc file")
    try:
        opts = DecodeOptions.model_validate(from_strings(DecodeOptions, fields))
        job = await run_in_threadpool(codec.decode, svc, upload.file, upload.filename, opts)
    finally:
        await upload.close()
    return await answer(svc, job, False, lambda svc, job: _answer(svc, job, upload.filename))
