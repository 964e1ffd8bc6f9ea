"""POST /api/mix: parse (JSON, or multipart with `tracks` as JSON text and a file part per uploaded
track), hand to serving, then answer as a generation does: the audio, or 202 with the job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from lib.schemas import MixRequest
from server.http.payload import close_files, read_fields
from server.http.routes.generate import answer
from server.serving import mix as mixing

if TYPE_CHECKING:
    from server.services import Services

UPLOADS = (
    "A track's audio: any part name that a track gives as its `upload` (wav, mp3, flac, ogg or m4a; any "
    "sample rate, up to 6 channels)"
)


async def mix(request: Request) -> Response:
    svc: Services = request.app.state.services
    fields, files = await read_fields(request, svc.settings, MixRequest, max_files=svc.settings.max_mix_tracks)
    try:
        req = MixRequest.model_validate(fields, context=svc.context)
        job = await mixing.submit(svc, req, files)
    finally:
        await close_files(files)
    return await answer(svc, job, req.async_)
