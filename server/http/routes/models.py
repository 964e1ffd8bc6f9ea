"""GET /api/models and GET /api/models/{name}: the catalogue with install and load state."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.catalogue import CATALOGUE, ModelSpec, get_spec
from lib.schemas import ModelInfo, ModelList
from server.engine import store
from server.engine.device import dtype_name
from server.services import Services


def model_info(svc: Services, spec: ModelSpec) -> ModelInfo:
    loaded = {lm.spec.name: lm for lm in svc.registry.loaded()}
    lm = loaded.get(spec.name)
    return ModelInfo(
        name=spec.name,
        repo=spec.repo,
        kind=spec.kind,
        capabilities=list(spec.capabilities),
        installed=store.is_installed(spec, svc.settings.hub_cache),
        size_on_disk_bytes=store.size_on_disk_bytes(spec, svc.settings.hub_cache),
        loaded=lm is not None,
        device=lm.device.type if lm else None,
        dtype=dtype_name(lm.dtype) if lm else None,
        licence=spec.licence,
        sample_rate=spec.sample_rate,
        channels=spec.channels,
    )


async def list_models(request: Request) -> JSONResponse:
    svc = request.app.state.services
    body = ModelList(models=[model_info(svc, spec) for spec in CATALOGUE.values()])
    return JSONResponse(body.model_dump())


async def get_model(request: Request) -> JSONResponse:
    svc = request.app.state.services
    return JSONResponse(model_info(svc, get_spec(request.path_params["name"])).model_dump())
