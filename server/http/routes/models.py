"""/api/models: the catalogue with install and load state; download, delete, load, unload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.catalogue import ModelSpec, all_specs, get_spec
from lib.schemas import ModelInfo, ModelList
from server.http.routes.generate import accepted
from server.hub import finetuned, store
from server.serving import downloads

if TYPE_CHECKING:
    from server.services import Services


def model_info(svc: Services, spec: ModelSpec) -> ModelInfo:
    loaded = {lm.spec.name: lm for lm in svc.registry.loaded()}
    lm = loaded.get(spec.name)
    downloading = downloads.active(svc, spec)
    return ModelInfo(
        name=spec.name,
        aliases=list(spec.aliases),
        repo=spec.repo,
        kind=spec.kind,
        capabilities=list(spec.capabilities),
        installed=svc.registry.is_installed(spec),
        size_on_disk_bytes=store.size_on_disk_bytes(spec, svc.settings.hub_cache),
        loaded=lm is not None,
        device=lm.device_type if lm else None,
        dtype=lm.precision if lm else None,
        licence=spec.licence,
        sample_rate=spec.sample_rate,
        channels=spec.channels,
        memory_bytes=svc.registry.memory_of(spec.name) if lm else None,
        in_use=svc.registry.in_use(spec.name),
        last_used_at=lm.last_used if lm else None,
        download_job=downloading.id if downloading else None,
        base=spec.base,
        finetune=_facts(svc, spec),
    )


def _facts(svc: Services, spec: ModelSpec) -> dict | None:
    if spec.base is None:
        return None
    facts = finetuned.facts(spec, svc.settings.hub_cache)
    return facts.model_dump(mode="json", exclude={"base_shape", "base"}) if facts else None


def _spec(request: Request) -> ModelSpec:
    return get_spec(request.path_params["name"])


async def list_models(request: Request) -> JSONResponse:
    svc = request.app.state.services
    finetuned.refresh(svc.settings.hub_cache)  # another process (a worker) may have made one
    body = ModelList(models=[model_info(svc, spec) for spec in all_specs()])
    return JSONResponse(body.model_dump())


async def get_model(request: Request) -> JSONResponse:
    svc = request.app.state.services
    return JSONResponse(model_info(svc, _spec(request)).model_dump())


async def download_model(request: Request) -> JSONResponse:
    """202 with the download job (the running one if there is one); 200 with the model when it is
    already installed."""
    svc: Services = request.app.state.services
    spec = _spec(request)
    if svc.registry.is_installed(spec) and downloads.active(svc, spec) is None:
        return JSONResponse(model_info(svc, spec).model_dump())
    return accepted(svc, downloads.start(svc, spec))


async def delete_model(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    spec = _spec(request)
    await run_in_threadpool(svc.remove_model, spec)
    return JSONResponse(model_info(svc, spec).model_dump())


async def load_model(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    spec = _spec(request)
    await run_in_threadpool(svc.load_model, spec)
    return JSONResponse(model_info(svc, spec).model_dump())


async def unload_model(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    spec = _spec(request)
    await run_in_threadpool(svc.registry.unload, spec.name)
    return JSONResponse(model_info(svc, spec).model_dump())
