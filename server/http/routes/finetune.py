"""/api/datasets and /api/finetune: datasets from uploads, fine-tune jobs, and their state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.errors import Conflict, Invalid, NotFound
from lib.finetune import DatasetForm, DatasetList, FinetuneRequest
from lib.schemas import JobList
from server.finetune import store as datasets
from server.http.payload import FORM_TYPES, from_strings, read_form, read_json
from server.http.routes.generate import accepted, answer
from server.serving import finetune

if TYPE_CHECKING:
    from server.services import Services

FILES_FIELD = "files"
MAX_FILES = finetune.MAX_DATASET_FILES


def _dataset_answer(svc: Services, job) -> Response:  # noqa: ANN001
    info = datasets.read(svc.settings.data_dir, job.request.name)
    return JSONResponse(info.model_dump(mode="json"), status_code=201)


async def create_dataset(request: Request) -> Response:
    svc: Services = request.app.state.services
    if request.headers.get("content-type", "").split(";")[0].strip() not in FORM_TYPES:
        raise Invalid(
            f"send the dataset as multipart/form-data: audio files (and captions, or a ZIP) in '{FILES_FIELD}'",
            field=FILES_FIELD,
            hint="curl -F name=my-set -F files=@a.wav -F files=@a.txt ...",
        )
    form = await read_form(request, svc.settings, max_files=MAX_FILES, max_fields=16)
    try:
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        uploads = [(v.filename, v.file) for _k, v in form.multi_items() if isinstance(v, UploadFile)]
        options = DatasetForm.model_validate(from_strings(DatasetForm, fields))
        job = await run_in_threadpool(finetune.create_dataset, svc, options, uploads)
    finally:
        await form.close()
    return await answer(svc, job, options.async_, _dataset_answer)


async def list_datasets(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    body = DatasetList(datasets=datasets.all_datasets(svc.settings.data_dir))
    return JSONResponse(body.model_dump(mode="json"))


async def get_dataset(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    return JSONResponse(datasets.read(svc.settings.data_dir, request.path_params["name"]).model_dump(mode="json"))


async def delete_dataset(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    name = request.path_params["name"]
    info = datasets.read(svc.settings.data_dir, name)
    users = [j.id for j in finetune.active_finetunes(svc) if j.request.dataset == name]
    if users:
        raise Conflict(f"dataset {name} is in use by fine-tune job {users[0]}", hint="cancel it or wait for it")
    await run_in_threadpool(datasets.delete, svc.settings.data_dir, name)
    return JSONResponse(info.model_dump(mode="json"))


async def start_finetune(request: Request) -> Response:
    svc: Services = request.app.state.services
    data = await read_json(request, svc.settings)
    req = FinetuneRequest.model_validate(data)
    job = await run_in_threadpool(finetune.start_finetune, svc, req)
    if req.async_:
        return accepted(svc, job)
    return await answer(svc, job, False, lambda svc, job: JSONResponse(job.view().model_dump(mode="json")))


async def list_finetunes(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    jobs = finetune.finetune_jobs(svc, request.query_params.get("state"))
    body = JobList(jobs=[j.view(svc.scheduler.position(j)) for j in jobs], total=len(jobs))
    return JSONResponse(body.model_dump())


def _finetune_job(svc: Services, job_id: str):  # noqa: ANN202
    job = svc.scheduler.get(job_id)
    if job.kind != "finetune":
        raise NotFound(f"job {job_id} is a {job.kind} job, not a fine-tune", hint=f"GET /api/jobs/{job_id}")
    return job


async def get_finetune(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = _finetune_job(svc, request.path_params["job_id"])
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())


async def cancel_finetune(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = svc.scheduler.cancel(_finetune_job(svc, request.path_params["job_id"]).id)
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())
