"""The smoke suite talks to the RUNNING service at the settings' endpoint (AUDIOCRAFT_HOST/PORT).

With no service there, the tests skip, so a plain `pytest test` passes on a machine where nothing
runs. `resource-audiocraft test smoke` sets SMOKE_REQUIRE_SERVICE=1: then a missing service fails.

The time limits follow the phase's budget, SMOKE_BUDGET_S (30 s): with it raised (a loaded machine,
the integration tests that run this suite), each check's own limit grows in proportion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
import pytest

from lib.settings import load_settings

DEFAULT_BUDGET_S = 30.0


def patience() -> float:
    """How much longer than on a quiet machine the checks may take: SMOKE_BUDGET_S / 30 s (at least 1)."""
    return max(1.0, float(os.environ.get("SMOKE_BUDGET_S") or DEFAULT_BUDGET_S) / DEFAULT_BUDGET_S)


@dataclass
class Service:
    endpoint: str
    headers: dict[str, str]
    patience: float = 1.0

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.endpoint, headers=self.headers, timeout=timeout * self.patience)


@pytest.fixture(scope="session")
def smoke_service() -> Service:
    settings = load_settings()
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    endpoint = settings.endpoint
    problem = None
    try:
        httpx.get(f"{endpoint}/health", headers=headers, timeout=3.0 * patience())
    except httpx.HTTPError as e:
        problem = f"no service answers at {endpoint} ({e.__class__.__name__})"
    if problem is not None:
        message = f"{problem}; start it with `resource-audiocraft manage start --wait`"
        if os.environ.get("SMOKE_REQUIRE_SERVICE") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return Service(endpoint, headers, patience())
