"""Shared fixtures for every test suite.

Tests never reach the network: the Hugging Face libraries are switched offline here, at import
time, before any test module imports them (huggingface_hub reads these variables on import).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub-cache-layout directory holding every tiny model but htdemucs (written once per session).

    Shared by the whole session: treat it as read-only. A test that changes or deletes models
    writes its own copy with `server.tiny.write.write_tiny_models(tmp_path, names=[...])`.
    """
    from lib.catalogue import CATALOGUE, HTDEMUCS
    from server.tiny.dims import SUPPORTED_KINDS
    from server.tiny.write import write_tiny_models

    hub = tmp_path_factory.mktemp("hub")
    # Not htdemucs: with it installed, melody requests take their chroma from stems by default, which
    # costs seconds per request; the stems tests (test/integration/test_melody_stems.py) write their own.
    write_tiny_models(hub, [s.name for s in CATALOGUE.values() if s.kind in SUPPORTED_KINDS and s is not HTDEMUCS])
    return hub


# -- the job queue's backends ------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes `backend` runs against both job queues, unless marked sqlite_only."""
    if "backend" in metafunc.fixturenames:
        names = ["sqlite"] if metafunc.definition.get_closest_marker("sqlite_only") else ["sqlite", "redis"]
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One redis-server for the session (AOF, fsync always), on a free loopback port; stopped after."""
    from redis_server import RedisServer, ensure_installed

    why_not = ensure_installed()
    if why_not:
        pytest.skip(why_not)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """A database of the session's Redis, emptied for this test."""
    import redis

    url = redis_server.url(db=1)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    from job_backends import Backend

    if request.param == "redis":
        return Backend("redis", tmp_path, request.getfixturevalue("redis_url"))
    return Backend("sqlite", tmp_path)
