"""`datasets add|list|show|delete` and `finetune start|list|show|cancel` against a real server."""

from __future__ import annotations

import json

import pytest
from server_process import ServerProcess
from test_cli_support import Cli
from test_finetune_api import wav
from waiting import HANG_GUARD_S

from server.tiny.write import write_tiny_models


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-cli")
    write_tiny_models(root / "hub", names=["musicgen-small"])
    server = ServerProcess(root / "hub", root / "data", finetune_threads=1, auto_download="false").start()
    yield server, root
    server.terminate()


def test_dataset_and_finetune_from_the_cli(served):
    server, root = served
    cli = Cli(root / "cli-data", server.port, cwd=root)
    folder = root / "my-set"
    folder.mkdir()
    (folder / "a.wav").write_bytes(wav(2.0, 220))
    (folder / "a.txt").write_text("slow pad")
    (folder / "b.wav").write_bytes(wav(1.5, 330))
    (folder / "junk.wav").write_bytes(b"nope")

    r = cli("datasets", "add", str(folder), "--caption", "default words", "--server", server.base, timeout=HANG_GUARD_S)
    assert r.code == 0, r.err
    assert "my-set" in r.out and "junk.wav" in r.out and "skipped" in r.out
    listed = json.loads(cli("datasets", "list", "-f", "json", "--server", server.base).out)
    assert [d["name"] for d in listed["datasets"]] == ["my-set"]

    r = cli(
        "finetune", "start", "musicgen-small", "my-set", "--name", "cli", "--steps", "3", "--rank", "4",
        "--server", server.base, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "musicgen-small+cli" in r.err  # the success line (stderr, as every command's)
    jobs = json.loads(cli("finetune", "list", "-f", "json", "--server", server.base).out)["jobs"]
    assert jobs[0]["state"] == "succeeded" and jobs[0]["request"]["name"] == "musicgen-small+cli"
    r = cli("finetune", "show", jobs[0]["id"], "--server", server.base)
    assert r.code == 0 and "succeeded" in r.out and "total_steps 3" in r.out
    r = cli("finetune", "start", "musicgen-small", "nope", "--name", "x", "--server", server.base)
    assert r.code != 0 and "nope" in r.err
    assert cli("datasets", "delete", "my-set", "--server", server.base).code == 0
    assert cli("datasets", "show", "my-set", "--server", server.base).code != 0
