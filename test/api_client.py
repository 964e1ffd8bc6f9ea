"""The app behind an in-process ASGI client, on a given models dir (the API tests' way in)."""

from __future__ import annotations

from starlette.testclient import TestClient
from waiting import wait_job as wait_job  # polls while the job gets on: test/waiting.py

from lib.settings import Settings
from server.http.app import create_app
from server.main import build_services


def make_client(models_dir, tmp_path, **overrides) -> TestClient:
    settings = Settings(models_dir=models_dir, data_dir=tmp_path / "data", device="cpu", dtype="float32", **overrides)
    # As a local client reaches it: a Host the service answers to (server/http/guard.py).
    return TestClient(create_app(build_services(settings)), base_url="http://localhost", raise_server_exceptions=False)
