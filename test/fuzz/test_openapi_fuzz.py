"""Schemathesis against /openapi.json of a real server on the tiny models: every check (`--checks all`),
so no 5xx, every answer matches its documented status, content type, headers and schema, requests the
document calls invalid are refused, and the stateful phase follows the links between operations.

Bounded: a fixed number of examples per operation and phase, one worker, a hang guard on the whole run;
the fuzzing config (conftest.FUZZ_SETTINGS) keeps each generation at 1 s of audio at most. The seed is
fixed so CI runs the same cases every time; FUZZ_SEED=<n> (or FUZZ_SEED=random) explores others, and
FUZZ_EXAMPLES=<n> more of them.

Checks left out, and why:
- use_after_free: DELETE /api/jobs/{id} cancels a job and DELETE /api/models/{name} deletes a model's
  files; the job and the catalogue entry stay, by design (SPEC §3), so they are not a freed resource.
- max_response_time is not left out (`all` has it) but set to the request timeout, a hang guard: the
  machine's load decides response times, and no test asserts on them.
- positive_data_acceptance ("a request the document calls valid is accepted") is not run: rules
  between fields (melody_end after melody_start; a job-audio query against the job's own options) and
  the content of an uploaded file cannot be stated in OpenAPI, and which such cases a run reaches
  depends on the server's state, so the check failed one run in three. test_openapi_document.py
  checks the document's rules one by one instead.
- Everything else runs as schemathesis has it, with no exemption: no 5xx, every status documented.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S

EXCLUDED = ("use_after_free", "positive_data_acceptance")
SEED = "20160"
EXAMPLES = "25"

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e, pytest.mark.slow]


def _st() -> str:
    return str(Path(sys.executable).with_name("st"))


def test_the_server_matches_its_openapi_document(fuzz_server, tmp_path):
    seed = os.environ.get("FUZZ_SEED", SEED)
    command = [
        _st(),
        "run",
        f"{fuzz_server.base}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED),
        "--max-examples",
        os.environ.get("FUZZ_EXAMPLES", EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        str(QUICK_HANG_GUARD_S),
        "--max-response-time",
        str(QUICK_HANG_GUARD_S),
        "--no-color",
        "--output-truncate",
        "false",
        *(() if seed == "random" else ("--seed", seed)),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-60000:]}\n{run.stderr[-5000:]}"
