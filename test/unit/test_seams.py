"""The seams hold in fact: HTTP, serving, the queue and the hub load no torch; every error is a
ServiceError answered by one function; a cause gets one status wherever it is found."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lib.errors
from lib.catalogue import UnknownModel, get_spec
from lib.errors import ServiceError
from lib.schemas import MusicRequest
from server.hub.store import ModelNotInstalled

ROOT = Path(__file__).resolve().parents[2]

TORCH_FREE = (
    "server.http.app",
    "server.services",
    "server.serving.generation",
    "server.serving.codec",
    "server.jobs.scheduler",
    "server.jobs.queue",
    "server.jobs.kinds",
    # The API role (`serve --role api`): its composition, its queue on Redis, its model registry.
    "server.main",
    "server.jobs.cluster.queue",
    "server.jobs.cluster.store",
    "server.models.elsewhere",
    "server.jobs.lanes.decode",
    "server.jobs.lanes.download",
    "server.hub.store",
    "server.hub.download",
    "server.hub.importer",
    "server.models.errors",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_module_imports_without_torch(module):
    """In a fresh interpreter: what one import brings is what a process that serves HTTP loads."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {module} loads torch"


def test_an_api_node_builds_and_serves_without_torch():
    """The whole of an API node's composition and app (Redis is not reached until a request needs it)."""
    code = (
        "import sys\n"
        "from lib.settings import Settings\n"
        "from server.main import build_services\n"
        "from server.http.app import create_app\n"
        "svc = build_services(Settings(role='api', queue_url='redis://127.0.0.1:1/0'))\n"
        "create_app(svc)\n"
        "print(type(svc.scheduler).__name__, type(svc.registry).__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["RedisScheduler", "ModelsElsewhere", "False"]


def _exception_classes() -> list[tuple[str, str]]:
    """(file, class) for every exception class defined in server/ and lib/."""
    found = []
    for path in [*ROOT.glob("server/**/*.py"), *ROOT.glob("lib/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in _ERROR_BASES)
                for b in node.bases
            ):
                found.append((str(path.relative_to(ROOT)), node.name))
    return found


_ERROR_BASES = {name for name, value in vars(lib.errors).items() if isinstance(value, type)}
# Control flow inside one module, never an answer: a decode loop's stop, a stream that cannot
# be resumed, a download stopped by its cancel event, a codec job or a dataset build stopped by
# cancel or shutdown, a training run stopped (server/finetune/train.py: the worker exits on it).
_INTERNAL = {"Cancelled", "NotStreamable", "DownloadCancelled", "_Stopped", "Stopped"}


def test_every_domain_error_is_a_service_error():
    import importlib

    for file, name in _exception_classes():
        if name in _INTERNAL:
            continue
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        cls = getattr(module, name)
        assert issubclass(cls, ServiceError), f"{file}: {name} is not a ServiceError"


def test_errors_become_answers_in_one_function():
    """Only server/http/errors.py builds an error answer; everything else raises."""
    offenders = []
    for path in ROOT.glob("server/**/*.py"):
        text = path.read_text()
        if path.name == "errors.py" and path.parent.name == "http":
            continue
        if '{"error":' in text or "error_response(" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (UnknownModel("musicgen-tiny"), 404, "unknown_model"),
        (ModelNotInstalled(get_spec("musicgen-small")), 409, "model_not_installed"),
        (ServiceError("boom", code="x", status=418), 418, "x"),
    ],
)
def test_the_mapping_answers_with_the_errors_own_status(exc, status, code):
    from server.http.errors import to_response

    response = to_response(exc)
    assert response.status_code == status
    assert b'"code":"' + code.encode() + b'"' in response.body


def test_a_foreign_exception_is_a_500_that_says_to_read_the_log():
    from server.http.errors import to_response

    response = to_response(RuntimeError("secret detail"))
    assert response.status_code == 500 and b"secret detail" not in response.body


def test_a_model_missing_when_the_lane_runs_is_409_as_at_submission(tmp_path):
    """The same cause, the same status: the runner keeps the error's status in the job, and a
    synchronous request answers with it (it was 503 there, and 409 before submission)."""
    from server.http.routes.generate import failed_response
    from server.jobs.artifacts import ArtifactStore
    from server.jobs.job import Job
    from server.jobs.lanes.batch import BatchRunner

    class Gone:
        """A registry whose model was deleted after the job was queued."""

        settings = None

        def acquire(self, name):
            raise ModelNotInstalled(get_spec(name))

    job = Job(kind="music", model="musicgen-small", request=MusicRequest(prompt="a beat", duration=1), seed=1)
    BatchRunner(Gone(), ArtifactStore(tmp_path), "music", "musicgen-small").admit(job)
    assert (job.state, job.error.code, job.error.status) == ("failed", "model_not_installed", 409)
    assert failed_response(job).status_code == 409


def test_no_module_imports_a_private_name_of_another():
    """The circle issue 15 found (tiny <-> codec shapes) ran over a private name; none is left, in
    the code or in bench/."""
    found = []
    for path in [
        *ROOT.glob("server/**/*.py"),
        *ROOT.glob("lib/*.py"),
        *ROOT.glob("cli/**/*.py"),
        *ROOT.glob("bench/*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "server",
                "lib",
                "cli",
                "bench",
            ):
                found += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert found == []
