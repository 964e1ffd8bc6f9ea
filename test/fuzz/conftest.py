"""The fuzz tier: properties of the request schemas (hypothesis), and the OpenAPI document against a
real server (schemathesis). Marked `fuzz`; `make test` runs it with the rest of test/."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_process import ServerProcess

# The fuzzing config: generated requests stay cheap because the server allows 1 s of audio at most,
# a model that is not installed is a 409 rather than a download, and the queue is short.
FUZZ_SETTINGS = {"max_duration_s": 1, "auto_download": "false", "queue_depth": 16}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):
    """A server on its own copy of the tiny models: the fuzzer deletes and unloads models."""
    from server.tiny.write import write_tiny_models

    root: Path = tmp_path_factory.mktemp("fuzz")
    write_tiny_models(root / "hub")
    server = ServerProcess(root / "hub", root / "data", **FUZZ_SETTINGS).start()
    try:
        yield server
    finally:
        server.terminate()
