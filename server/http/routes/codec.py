"""POST /api/encode and POST /api/decode: EnCodec as a codec service.

The upload (multipart field `file`, or the raw body) goes to a temporary file, never wholly into
memory; options come as form fields or query parameters. The work runs in a worker thread, one
codec request at a time per process (the model's own threads use the cores), and the answer is
streamed from a temporary file that is removed once sent.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from lib.errors import Invalid, UnsupportedMediaType
from lib.schemas import DecodeOptions, EncodeOptions, default_bandwidth
from server.engine import threads
from server.engine.codec.codec import Codec
from server.engine.codec.service import decode_file, encode_file, open_ecdc
from server.engine.errors import UnsupportedRequest
from server.http.payload import FORM_TYPES, too_large
from server.services import Services

UPLOAD_FIELD = "file"
_SPOOL_IN_MEMORY = 1 << 20  # raw bodies past 1 MB go to disk, as Starlette does with form files
_JSON_TYPES = ("application/json", "text/plain", "text/html")
_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot(app: Any) -> threading.BoundedSemaphore:
    with _lock:
        return _slots.setdefault(id(app), threading.BoundedSemaphore(1))


class _Upload:
    def __init__(self, file: BinaryIO, size: int, filename: str | None, closer: Any):
        self.file, self.size, self.filename, self._closer = file, size, filename, closer

    async def close(self) -> None:
        await self._closer()


async def _receive(request: Request, limit: int, what: str) -> tuple[_Upload, dict[str, str]]:
    """The uploaded file and the option fields (query parameters, then form fields on top)."""
    fields: dict[str, str] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    if content_type in FORM_TYPES:
        form = await request.form(max_files=4, max_fields=32)
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
        size = upload.size if upload.size is not None else _size_of(upload.file)
        if size > limit:
            await form.close()
            raise too_large(limit)
        return _Upload(upload.file, size, upload.filename, form.close), fields
    if content_type in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the {what} as a multipart upload (field '{UPLOAD_FIELD}') or as the raw body with its own "
            f"content type, not {content_type}",
            hint="curl --data-binary @input -H 'Content-Type: application/octet-stream' ...",
        )
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    async def close() -> None:
        spool.close()

    return _Upload(spool, size, None, close), fields


def _numbers(fields: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Form and query values are strings; the schema's integer literals (bit_depth) want ints."""
    out = dict(fields)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            out[key] = int(value)
    return out


def _size_of(f: BinaryIO) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _codec_for(svc: Services):
    def get(name: str) -> Codec:
        spec = svc.registry.spec(name)
        if spec.kind != "encodec":
            codecs = ", ".join(n for n, s in _catalogue().items() if s.kind == "encodec")
            raise UnsupportedRequest(f"{spec.name} is not a codec model", field="model", hint=f"use one of: {codecs}")
        return Codec.of(svc.registry.get(spec.name))

    return get


def _catalogue():
    from lib.catalogue import CATALOGUE

    return CATALOGUE


def _file_response(path: Path, media_type: str, filename: str, headers: dict[str, str]) -> Response:
    headers = {**headers, "Content-Disposition": f'attachment; filename="{filename}"'}
    return FileResponse(path, media_type=media_type, headers=headers, background=BackgroundTask(os.unlink, path))


def _stem(filename: str | None, default: str) -> str:
    if not filename:
        return default
    stem = Path(filename).name.rsplit(".", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe or default


async def encode(request: Request) -> Response:
    svc: Services = request.app.state.services
    upload, fields = await _receive(request, int(svc.settings.max_upload_mb * 1e6), "audio")
    try:
        opts = EncodeOptions.model_validate(fields, context={"default_codec_model": svc.settings.default_codec_model})
        model = opts.model or svc.settings.default_codec_model
        svc.registry.spec(model)  # unknown (404) or not installed (409): before any work
        codec_for = _codec_for(svc)

        def work():
            codec = codec_for(model)  # loads on first use; refuses models that are not codecs
            bandwidth = opts.bandwidth_kbps if opts.bandwidth_kbps is not None else default_bandwidth(model)
            with _slot(request.app):
                return encode_file(codec, upload.file, upload.size, upload.filename, bandwidth, opts.format)

        result = await run_in_threadpool(threads.in_own_thread, work)
    finally:
        await upload.close()
    headers = {
        "X-Model": result.codec.spec.name,
        "X-Bandwidth-Kbps": f"{result.bandwidth_kbps:g}",
        "X-Codebooks": str(result.header.num_codebooks),
        "X-Sample-Rate": str(result.codec.layout.sample_rate),
        "X-Frame-Rate": f"{result.codec.layout.sample_rate / result.codec.layout.hop_length:g}",
        "X-Audio-Length": str(result.header.audio_length),
        "X-Duration-S": f"{result.duration_s:.6g}",
        "X-Input-Bytes": str(result.input_bytes),
        "X-Output-Bytes": str(result.output_bytes),
        "X-Ecdc-Bytes": str(result.ecdc_bytes),
        "X-Compression-Ratio": f"{result.compression_ratio:.2f}",
        "X-Bitrate-Kbps": f"{result.bitrate_kbps:.3f}",
        "X-Encode-Time-S": f"{result.result.seconds:.3f}",
    }
    ext = ".json" if opts.format == "json" else ".ecdc"
    return _file_response(result.path, result.media_type, _stem(upload.filename, "audio") + ext, headers)


async def decode(request: Request) -> Response:
    svc: Services = request.app.state.services
    upload, fields = await _receive(request, int(svc.settings.max_upload_mb * 1e6), ".ecdc file")
    try:
        opts = DecodeOptions.model_validate(_numbers(fields, ("bit_depth", "sample_rate")))
        codec_for = _codec_for(svc)

        def work():
            plan = open_ecdc(codec_for, upload.file, upload.size)
            with _slot(request.app):
                return decode_file(plan, upload.file, opts, svc.settings.max_duration_s)

        result = await run_in_threadpool(threads.in_own_thread, work)
    finally:
        await upload.close()
    headers = {
        "X-Model": result.codec.spec.name,
        "X-Sample-Rate": str(result.sample_rate),
        "X-Channels": str(result.channels),
        "X-Audio-Length": str(result.frames),
        "X-Duration-S": f"{result.duration_s:.6g}",
        "X-Codebooks": str(result.header.num_codebooks),
    }
    return _file_response(result.path, result.media_type, _stem(upload.filename, "audio") + result.extension, headers)


def document_uploads(document: dict) -> None:
    """The OpenAPI request bodies of the two routes: a multipart upload, or the raw file."""
    for path, schema, what, types in (
        ("/api/encode", "EncodeOptions", "audio (wav, flac, ogg, mp3, m4a; any rate and channels)", "audio/*"),
        ("/api/decode", "DecodeOptions", "an .ecdc file", "application/octet-stream"),
    ):
        op = document.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        options = {"$ref": f"#/components/schemas/{schema}"}
        form = {
            "allOf": [
                options,
                {
                    "type": "object",
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary", "description": what}},
                    "required": [UPLOAD_FIELD],
                },
            ]
        }
        op["requestBody"] = {
            "required": True,
            "description": f"{what}: in the multipart field '{UPLOAD_FIELD}' with the options as form fields, or "
            "as the raw body with the options as query parameters",
            "content": {
                "multipart/form-data": {"schema": form},
                types: {"schema": {"type": "string", "format": "binary"}},
            },
        }
        if path == "/api/encode":
            ok = op["responses"]["200"]
            ok["content"] = {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/CodecCodes"}},
            }
            ok["headers"] = {
                h: {"schema": {"type": "string"}}
                for h in (
                    "X-Model",
                    "X-Bandwidth-Kbps",
                    "X-Codebooks",
                    "X-Sample-Rate",
                    "X-Frame-Rate",
                    "X-Audio-Length",
                    "X-Duration-S",
                    "X-Input-Bytes",
                    "X-Output-Bytes",
                    "X-Compression-Ratio",
                    "X-Bitrate-Kbps",
                )
            }
