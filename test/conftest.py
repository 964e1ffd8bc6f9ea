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
    """A hub-cache-layout directory holding every tiny model (written once per session).

    Shared by the whole session: treat it as read-only. A test that changes or deletes models
    writes its own copy with `server.tiny.write.write_tiny_models(tmp_path, names=[...])`.
    """
    from server.tiny.write import write_tiny_models

    hub = tmp_path_factory.mktemp("hub")
    write_tiny_models(hub)
    return hub
