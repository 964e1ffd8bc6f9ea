"""The docker runtime: the server image, run as one container through the Docker SDK (no `docker` CLI).

    manage install    builds the image from the checkout's Dockerfile (or pulls AUDIOCRAFT_IMAGE when it
                      names a registry); the host's pip CA bundle and local torch wheels go into the
                      build context, never into the final image
    manage start      runs container `audiocraft` (AUDIOCRAFT_CONTAINER_NAME): port 7862 published on
                      AUDIOCRAFT_HOST (127.0.0.1 by default), volumes for the model cache and the data,
                      restart policy unless-stopped, GPUs when the engine has the NVIDIA runtime, the
                      settings as AUDIOCRAFT_* environment
    stop / status / logs   act on that container; uninstall removes it, the image and (unless
                      --keep-data) the volumes

In the container: HF_HOME=/models (hub cache /models/hub), AUDIOCRAFT_DATA_DIR=/data, port 7862.
AUDIOCRAFT_MODELS_DIR, when set, is bind-mounted at /models/hub, over the models volume's hub/.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from cli import paths, ui
from cli.errors import CliError, Skipped
from cli.runtime.base import Runtime, RuntimeStatus
from lib.files import private_dir
from lib.settings import UNSAFE_BIND_HINT, Settings

CONTAINER_PORT = 7862
CONTAINER_MODELS = "/models"
CONTAINER_HUB = "/models/hub"
CONTAINER_DATA = "/data"
LABEL = "io.resource-audiocraft"
# Settings that describe the container itself, not the server in it: not passed as environment.
HOST_ONLY_SETTINGS = (
    "runtime",
    "host",
    "port",
    "data_dir",
    "models_dir",
    "image",
    "base_image",
    "torch",
    "container_name",
    "models_readonly",
)
# What the image must import for the server to run (the post-install check).
IMAGE_CHECK = "import torch, transformers, starlette, uvicorn, soundfile, av, soxr; import server.main, cli.main"


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers (what `--runtime auto` asks)."""
    try:
        client = _client(timeout)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _client(timeout: float):  # noqa: ANN202 - docker.DockerClient (imported lazily)
    import docker

    return docker.from_env(timeout=timeout)


def connect(timeout: float = 60.0):  # noqa: ANN201 - docker.DockerClient
    """A client whose engine answered a ping, or one clear line saying there is none."""
    try:
        import docker  # noqa: F401 - the SDK is a CLI dependency; checked here for a clear message
    except ImportError:
        raise CliError(
            "the docker runtime needs the `docker` Python package (pip install docker); or use --runtime native"
        ) from None
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = _client(timeout)
        client.ping()
    except Exception as e:
        reason = _short_reason(e)
        raise CliError(
            f"no Docker engine answers at {where} ({reason}): start dockerd, or use --runtime native"
        ) from None
    return client


def _short_reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker in str(e):
            return marker.lower()
    return text[:160]


def torch_pin(root: Path | None = None) -> str | None:
    """The torch version pinned in pyproject.toml's server extra (the image must use the same)."""
    import tomllib

    try:
        data = tomllib.loads(((root or paths.project_root()) / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return None
    for req in data.get("project", {}).get("optional-dependencies", {}).get("server", []):
        m = re.fullmatch(r"\s*torch\s*==\s*([0-9][^;,\s]*)\s*", req)
        if m:
            return m.group(1)
    return None


def dockerignore_patterns(root: Path) -> list[str]:
    """.dockerignore, read the way the Docker SDK reads it."""
    try:
        lines = (root / ".dockerignore").read_text().splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def host_pip_config(python: str | None = None) -> dict[str, list[str]]:
    """The host pip's settings that matter to a build: cert, index-url, extra-index-url, find-links.

    Read with `pip config list` (files and PIP_* variables, as pip itself sees them). Keys are the
    bare option names; values are split on whitespace. Empty when pip is not there.
    """
    try:
        res = subprocess.run(
            [python or sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^[^.=]*\.([a-z-]+)='(.*)'$", line.strip())
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if key in ("cert", "index-url", "extra-index-url", "find-links"):
            values = found.setdefault(key, [])
            values.extend(v for v in value.split() if v not in values)
    return found


def is_remote_ref(image: str) -> bool:
    """`registry.example.com/x/y:tag` or `localhost:5000/y`: an image to pull, not to build."""
    first = image.split("/", 1)[0] if "/" in image else ""
    return bool(first) and ("." in first or ":" in first or first == "localhost")


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, settings: Settings, client: Any = None):
        super().__init__(settings)
        self.client = client if client is not None else connect()
        self.root = paths.project_root()
        self.container_name = settings.container_name
        self.image = settings.image
        self.data_dir = Path(settings.data_dir)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def volume_names(self) -> dict[str, str]:
        return {"models": f"{self.container_name}-models", "data": f"{self.container_name}-data"}

    def _container(self):  # noqa: ANN202 - docker Container or None
        from docker.errors import NotFound

        try:
            return self.client.containers.get(self.container_name)
        except NotFound:
            return None

    def _image(self):  # noqa: ANN202 - docker Image or None
        from docker.errors import ImageNotFound

        try:
            return self.client.images.get(self.image)
        except ImageNotFound:
            return None

    def _volumes(self) -> list[Any]:
        from docker.errors import NotFound

        found = []
        for name in self.volume_names.values():
            try:
                found.append(self.client.volumes.get(name))
            except NotFound:
                continue
        return found

    def nvidia_runtime(self) -> bool:
        try:
            runtimes = self.client.info().get("Runtimes") or {}
        except Exception:
            return False
        return "nvidia" in runtimes

    # -- install ---------------------------------------------------------------------------------

    def is_installed(self) -> bool:
        return self._image() is not None

    def install(self, force: bool = False, skip_validation: bool = False) -> None:
        if not force and self.is_installed():
            raise Skipped(f"already installed (image {self.image})", "use --force to rebuild it")
        if is_remote_ref(self.image) and not force:
            self._pull()
        else:
            self.build()
        if not skip_validation:
            self.validate()

    def _pull(self) -> None:
        ui.info(f"pulling {self.image} ...")
        try:
            self.client.images.pull(self.image)
        except Exception as e:
            raise CliError(
                f"cannot pull {self.image}: {_short_reason(e)}",
                "check the tag and the registry login, or unset AUDIOCRAFT_IMAGE to build from this checkout",
            ) from None

    def build_args(self) -> dict[str, str]:
        s = self.settings
        args: dict[str, str] = {}
        if s.base_image:
            args["BASE_IMAGE"] = s.base_image
        torch_variant = s.torch
        if torch_variant == "auto":
            torch_variant = "cuda" if self.nvidia_runtime() else "cpu"
        args["TORCH"] = torch_variant
        pin = torch_pin(self.root)
        if pin:
            args["TORCH_VERSION"] = pin
        return args

    def build_context(self, pip_config: dict[str, list[str]] | None = None) -> tuple[io.BufferedIOBase, list[str]]:
        """The checkout (minus .dockerignore) as a tar, plus the host's pip CA bundle and pinned torch
        wheels under wheels/ (in the tar only; nothing is written to the checkout). Returns the tar,
        rewound, and what was added."""
        from docker.utils.build import tar

        dockerfile = self.root / "Dockerfile"
        if not dockerfile.is_file():
            raise CliError(
                f"no Dockerfile in {self.root}",
                "run from the project checkout, or set AUDIOCRAFT_IMAGE to a registry image to pull",
            )
        pip_config = host_pip_config() if pip_config is None else pip_config
        ctx = tar(str(self.root), exclude=dockerignore_patterns(self.root), dockerfile=("Dockerfile", None))
        added: list[str] = []
        extra: dict[str, Path] = {}
        wheels = self.root / "wheels"
        cert = next((Path(c) for c in pip_config.get("cert", []) if Path(c).is_file()), None)
        if cert is not None and not (wheels / "ca-bundle.crt").exists():
            extra["wheels/ca-bundle.crt"] = cert
            added.append(f"pip's CA bundle {cert}")
        pin = torch_pin(self.root)
        if pin:
            for link in pip_config.get("find-links", []):
                folder = Path(link.removeprefix("file://"))
                if not folder.is_dir():
                    continue
                for whl in sorted(folder.glob(f"torch-{pin}*.whl")):
                    if not (wheels / whl.name).exists() and f"wheels/{whl.name}" not in extra:
                        extra[f"wheels/{whl.name}"] = whl
                        added.append(f"the wheel {whl}")
        if extra:
            ctx.seek(0)
            with tarfile.open(fileobj=ctx, mode="a") as t:
                for arcname, src in extra.items():
                    t.add(str(src), arcname=arcname, recursive=False)
        ctx.seek(0)
        return ctx, added

    def build(self) -> None:
        args = self.build_args()
        pip_config = host_pip_config()
        ctx, added = self.build_context(pip_config)
        index_args = {
            "PIP_INDEX_URL": [u for u in pip_config.get("index-url", []) if u.startswith(("http://", "https://"))],
            "PIP_EXTRA_INDEX_URL": [
                u for u in pip_config.get("extra-index-url", []) if u.startswith(("http://", "https://"))
            ],
        }
        for key, urls in index_args.items():
            if urls:
                args[key] = " ".join(urls) if key == "PIP_EXTRA_INDEX_URL" else urls[0]
        shown = ", ".join(f"{k}={v}" for k, v in args.items())
        ui.info(f"building {self.image} from {self.root / 'Dockerfile'} ({shown})")
        for what in added:
            ui.info(f"  build context: + {what}")
        started = time.monotonic()
        tail: list[str] = []
        try:
            stream = self.client.api.build(
                # Builds go quiet for minutes (pip installing torch): no read timeout.
                timeout=None,
                fileobj=ctx,
                custom_context=True,
                tag=self.image,
                buildargs=args,
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    raise CliError(
                        f"the image build failed: {detail.strip().splitlines()[-1][:300]}",
                        "read the build output above; fix it and rerun `manage install --force`",
                    )
                text = chunk.get("stream")
                if text:
                    sys.stderr.write(text)
                    sys.stderr.flush()
                    tail = (tail + text.splitlines())[-5:]
        except CliError:
            raise
        except Exception as e:
            raise CliError(f"the image build failed: {_short_reason(e)}", "read the output above") from None
        finally:
            ctx.close()
        if self._image() is None:
            raise CliError(f"the build ended without an image {self.image}", "; ".join(tail)[-300:] or None)
        ui.info(f"built {self.image} in {time.monotonic() - started:.0f} s")

    def validate(self) -> None:
        """The image's Python imports the server (a throwaway container, no network)."""
        container = self.client.containers.create(
            self.image, entrypoint=["python", "-c", IMAGE_CHECK], command=[], network_mode="none"
        )
        try:
            container.start()
            code = container.wait(timeout=300).get("StatusCode")
            if code != 0:
                lines = container.logs().decode(errors="replace").strip().splitlines() or [f"exit {code}"]
                raise CliError(
                    f"the image {self.image} does not import the server: {lines[-1][:300]}", "rebuild with --force"
                )
        except CliError:
            raise
        except Exception as e:
            raise CliError(f"cannot check the image {self.image}: {_short_reason(e)}", "rebuild with --force") from None
        finally:
            # v=True: the anonymous volumes the image's VOLUMEs made go with it.
            with contextlib.suppress(Exception):
                container.remove(v=True, force=True)

    # -- one-off commands in the image (models pull) --------------------------------------------

    container_hub_cache = CONTAINER_HUB

    def hub_cache_description(self) -> str:
        if self.settings.models_dir is not None:
            return f"{Path(self.settings.models_dir).expanduser()} (mounted at {CONTAINER_HUB})"
        return f"the volume {self.volume_names['models']}"

    def run_python(self, code: str, args: list[str]) -> tuple[int, str]:
        """Run `python -c code args...` in a throwaway container of the image with the service's
        volumes and settings (network on); its output goes to stderr. Returns (exit code, last line)."""
        if self._image() is None:
            raise CliError(
                f"not installed: no image {self.image}", "run `resource-audiocraft --runtime docker manage install`"
            )
        if self.settings.models_dir is not None and self.settings.models_readonly:
            raise CliError(
                "the models dir is mounted read-only (AUDIOCRAFT_MODELS_READONLY)",
                "unset it to download into AUDIOCRAFT_MODELS_DIR",
            )
        vols, _ = self.mounts()
        container = self.client.containers.create(
            self.image,
            entrypoint=["python", "-c", code],
            command=args,
            environment=self.environment(),
            volumes=vols,
            labels={f"{LABEL}.managed": "true"},
        )
        last = ""
        try:
            container.start()
            pending = b""
            for chunk in container.logs(stream=True, follow=True):
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
                pending = (pending + chunk)[-4096:]
            code_rc = int(container.wait(timeout=60).get("StatusCode", 1))
            lines = pending.decode(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit {code_rc}"
        finally:
            with contextlib.suppress(Exception):
                container.remove(v=True, force=True)
        return code_rc, last

    def uninstall(self, force: bool = False, keep_data: bool = False) -> list[str]:
        container = self._container()
        image = self._image()
        volumes = [] if keep_data else self._volumes()
        host_data = self._host_data() if not keep_data else None
        if container is None and image is None and not volumes and host_data is None:
            raise Skipped(f"not installed (no image {self.image}, no container {self.container_name})")
        removed: list[str] = []
        if container is not None:
            container.reload()
            if container.status in ("running", "restarting"):
                self.stop(force=force, timeout=10.0 if force else self.settings.stop_timeout_s)
                removed.append("the running server")
            container.remove(force=True, v=True)
            removed.append(f"container {self.container_name}")
        if image is not None:
            from docker.errors import APIError

            try:
                self.client.images.remove(self.image, force=True)
                removed.append(f"image {self.image}")
            except APIError as e:
                raise CliError(f"cannot remove the image {self.image}: {_short_reason(e)}") from None
        for vol in volumes:
            vol.remove(force=True)
            removed.append(f"volume {vol.name}")
        if host_data is not None:
            removed.extend(host_data.remove())
        return removed

    def _host_data(self) -> Any:
        """The CLI's own data on the host (content, logs) — what native uninstall also removes."""
        from cli.runtime.native import NativeRuntime

        native = NativeRuntime(self.settings)
        if native.status().running or not native._has_data():
            return None

        class _HostData:
            def remove(self) -> list[str]:
                return native._remove_data()

        return _HostData()

    # -- process ---------------------------------------------------------------------------------

    def mounts(self) -> tuple[dict[str, dict[str, str]], list[str]]:
        """Volumes for containers.run, and the names of the named volumes among them."""
        s = self.settings
        vols: dict[str, dict[str, str]] = {
            self.volume_names["data"]: {"bind": CONTAINER_DATA, "mode": "rw"},
            # Always mounted (else the image's VOLUME /models makes an anonymous one each start).
            self.volume_names["models"]: {"bind": CONTAINER_MODELS, "mode": "rw"},
        }
        named = list(self.volume_names.values())
        if s.models_dir is not None:
            host = Path(s.models_dir).expanduser().resolve()
            if not host.is_dir():
                raise CliError(
                    f"AUDIOCRAFT_MODELS_DIR {host} is not a directory",
                    "create it, or unset it to use the container's model volume",
                )
            # The host's hub cache replaces the volume's hub/ (the rest of HF_HOME stays in the volume).
            vols[str(host)] = {"bind": CONTAINER_HUB, "mode": "ro" if s.models_readonly else "rw"}
        return vols, named

    def environment(self) -> dict[str, str]:
        from cli.runtime.native import settings_env

        hidden = {f"AUDIOCRAFT_{n.upper()}" for n in HOST_ONLY_SETTINGS}
        env = {k: v for k, v in settings_env(self.settings).items() if k not in hidden}
        env.update(
            {
                "AUDIOCRAFT_HOST": "0.0.0.0",
                "AUDIOCRAFT_PORT": str(CONTAINER_PORT),
                "AUDIOCRAFT_DATA_DIR": CONTAINER_DATA,
                "HF_HOME": CONTAINER_MODELS,
            }
        )
        if self.published().unsafe_bind() is None and not self.settings.api_key:
            # The server binds 0.0.0.0 inside the container, which it refuses to serve without a key;
            # published on loopback only, the container is as private as a native 127.0.0.1 server.
            env["AUDIOCRAFT_ALLOW_UNAUTHENTICATED"] = "true"
        return env

    def published(self) -> Settings:
        """The settings as the network sees the container: bound where its port is published."""
        return self.settings.model_copy(update={"host": self.publish_host()})

    def publish_host(self) -> str:
        host = self.settings.host
        return "0.0.0.0" if host in ("0.0.0.0", "", "*") else host

    def device_requests(self, image_labels: dict[str, str] | None = None) -> list[Any]:
        """GPUs for the container: all of them when the engine has the NVIDIA runtime (and the device
        setting allows), none otherwise, with a note saying why."""
        from docker.types import DeviceRequest

        device = self.settings.device
        if device == "cpu":
            return []
        if not self.nvidia_runtime():
            if device == "cuda":
                raise CliError(
                    "AUDIOCRAFT_DEVICE=cuda but this Docker engine has no NVIDIA runtime",
                    "install the NVIDIA Container Toolkit (nvidia-ctk runtime configure), or use --device cpu",
                )
            ui.info("[dim]note: no NVIDIA runtime in this Docker engine: the container runs on CPU[/dim]")
            return []
        if (image_labels or {}).get(f"{LABEL}.torch") == "cpu":
            ui.warn(f"the image {self.image} has CPU torch: rebuild it with AUDIOCRAFT_TORCH=cuda to use the GPUs")
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]

    def container_config(self) -> dict[str, Any]:
        image = self._image()
        if image is None:
            raise CliError(
                f"not installed: no image {self.image}",
                "run `resource-audiocraft --runtime docker manage install`",
            )
        problem = self.published().unsafe_bind()
        if problem is not None:  # published beyond loopback with no key: said here, not by a dying container
            raise CliError(problem, UNSAFE_BIND_HINT)
        vols, _ = self.mounts()
        s = self.settings
        return {
            "image": self.image,
            "name": self.container_name,
            "detach": True,
            "environment": self.environment(),
            "ports": {f"{CONTAINER_PORT}/tcp": (self.publish_host(), s.port)},
            "volumes": vols,
            "restart_policy": {"Name": "unless-stopped"},
            "device_requests": self.device_requests(image.labels or {}),
            "init": True,
            "stop_signal": "SIGTERM",
            "labels": {f"{LABEL}.managed": "true", f"{LABEL}.port": str(s.port)},
        }

    def status(self) -> RuntimeStatus:
        s = self.settings
        container = self._container()
        if container is None:
            return RuntimeStatus(
                runtime=self.name,
                running=False,
                endpoint=s.endpoint,
                port=s.port,
                detail={"container": self.container_name, "image": self.image, "state": "absent"},
            )
        attrs = container.attrs
        state = attrs.get("State") or {}
        # A crash-looping container (restarting) counts as running: status says unhealthy (1), stop stops it.
        running = bool(state.get("Running") or state.get("Restarting"))
        port, host = s.port, s.host
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{CONTAINER_PORT}/tcp") or []
        if bindings:
            port = int(bindings[0].get("HostPort") or port)
            host = bindings[0].get("HostIp") or host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        health = (state.get("Health") or {}).get("Status")
        started_at = _parse_docker_time(state.get("StartedAt"))
        return RuntimeStatus(
            runtime=self.name,
            running=running,
            endpoint=f"http://{host}:{port}",
            port=port,
            pid=(state.get("Pid") or None) if running else None,
            managed=True,
            started_at=started_at if running else None,
            detail={
                "container": self.container_name,
                "container_id": container.short_id,
                "image": (attrs.get("Config") or {}).get("Image") or self.image,
                "state": state.get("Status"),
                "health": health,
                "exit_code": state.get("ExitCode") if not running else None,
                "restarts": attrs.get("RestartCount", 0),
            },
        )

    def health_state(self) -> str | None:
        """The container's own health (its HEALTHCHECK): starting, healthy, unhealthy; None without one."""
        container = self._container()
        if container is None:
            return None
        return ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")

    def start(self) -> RuntimeStatus:
        current = self.status()
        if current.running:
            raise Skipped(f"already running (container {self.container_name}) at {current.endpoint}")
        config = self.container_config()
        s = self.settings
        from cli.runtime.native import port_in_use

        if port_in_use(s.host, s.port):
            raise CliError(
                f"port {s.port} is already in use by another program ({s.endpoint})",
                "stop it, or start this service on another port with --port",
            )
        # A stopped container from an earlier start: replaced, so the current settings apply.
        old = self._container()
        if old is not None:
            old.remove(force=True, v=True)
        private_dir(self.data_dir)  # 0700: the job store and content are the user's
        from docker.errors import APIError

        try:
            container = self.client.containers.run(**config)
        except APIError as e:
            with contextlib.suppress(Exception):
                self.client.containers.get(self.container_name).remove(force=True, v=True)
            raise CliError(
                f"cannot start the container: {_short_reason(e)}", "see `docker info`; rerun with --debug"
            ) from None
        # A server that cannot start at all dies at once: say so now, with its last line.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            container.reload()
            if container.status in ("exited", "dead") or container.attrs["State"].get("Restarting"):
                code = container.attrs["State"].get("ExitCode")
                last = [ln for ln in container.logs(tail=5).decode(errors="replace").splitlines() if ln.strip()]
                with contextlib.suppress(Exception):
                    container.stop(timeout=1)  # no restart loop behind the error
                raise CliError(
                    f"the server exited at once (code {code})" + (f": {last[-1].strip()}" if last else ""),
                    "see `resource-audiocraft --runtime docker logs`",
                )
            time.sleep(0.1)
        return self.status()

    def stop(self, force: bool = False, timeout: float = 30.0) -> bool:
        container = self._container()
        if container is None or not self.status().running:
            raise Skipped("not running")
        if force:
            # stop with no grace: SIGKILL at once, and (unlike kill) fine on a restarting container too.
            container.stop(timeout=0)
            return False
        # The server drains for stop_timeout_s itself; the engine kills after `timeout`.
        container.stop(timeout=max(1, math.ceil(timeout)))
        container.reload()
        return container.attrs["State"].get("ExitCode") != 137

    # -- logs ------------------------------------------------------------------------------------

    def has_logs(self) -> bool:
        container = self._container()
        if container is None:
            return False
        try:
            return bool(container.logs(tail=1))
        except Exception:
            return False

    def logs(self, tail: int | None, since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        container = self._container()
        if container is None or not self.has_logs():
            raise Skipped(f"no logs yet (no container {self.container_name})", "start the service first")
        kwargs: dict[str, Any] = {"tail": "all" if tail is None else tail}
        if since is not None:
            kwargs["since"] = max(1.0, since.timestamp())
        if tail == 0 and not follow:
            return
        if not follow:
            data = container.logs(**kwargs).decode("utf-8", errors="replace")
            yield from data.splitlines()
            return
        pending = b""
        for chunk in container.logs(stream=True, follow=True, **kwargs):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")


def _parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, Z) as a Unix timestamp."""
    if not value or value.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$", value)
    if not m:
        return None
    frac = float(m.group(2) or 0)
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + tz).timestamp() + frac
    except ValueError:
        return None


def make_runtime(settings: Settings) -> DockerRuntime:
    return DockerRuntime(settings)


__all__ = [
    "DockerRuntime",
    "connect",
    "docker_available",
    "host_pip_config",
    "make_runtime",
    "torch_pin",
]
