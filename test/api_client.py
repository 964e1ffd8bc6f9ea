"""The app behind an in-process ASGI client, on a given models dir (the API tests' way in)."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from lib.settings import Settings
from server.http.app import create_app


def make_client(models_dir, tmp_path, **overrides) -> TestClient:
    settings = Settings(models_dir=models_dir, data_dir=tmp_path / "data", device="cpu", dtype="float32", **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def wait_job(client, job_id: str, timeout_s: float = 120) -> dict:  # noqa: ANN001
    """Poll the job until it ends (through a TestClient or an httpx.Client); its final view."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")
