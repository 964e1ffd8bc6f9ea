# The resource-audiocraft server image: the Starlette API on port 7862, as a non-root user.
#
#   docker build -t resource-audiocraft .                          # CPU torch, python:3.11-slim-bookworm
#   docker build -t resource-audiocraft --build-arg TORCH=cuda .   # CUDA torch (PyPI's default Linux build)
#   docker build -t resource-audiocraft --build-arg TORCH=cu128 .  # torch from PyTorch's cu128 index
#   docker build --build-arg BASE_IMAGE=audiocraft-base:bookworm . # any Debian-like base with python3.11 + venv
#
# Usually built through the CLI: `resource-audiocraft --runtime docker manage install`.
#
# Build inputs in wheels/ (git-ignored except its README; only the build stages read them):
#   wheels/*.whl            extra wheels pip may use (--find-links), e.g. a local CPU torch build
#   wheels/ca-bundle.crt    a CA bundle pip trusts during the build (TLS-intercepting proxies); it never
#                           reaches the final image, which only copies the finished venv
#
# Layers: torch first (changes only with TORCH / TORCH_VERSION), then the other dependencies (change
# with pyproject.toml), then the project's own code (a small wheel): a code change rebuilds seconds.
# Works with the classic builder (what the Docker SDK drives) and with BuildKit.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS deps
ARG TORCH=cpu
# Must equal the torch pin in pyproject.toml (the CLI passes the pin; a test checks the default).
ARG TORCH_VERSION=2.13.0
# Optional mirrors, as pip reads them.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PIP_DEFAULT_TIMEOUT=120
# python:*-slim keeps python3 in /usr/local/bin, Debian's in /usr/bin: a venv works on both.
RUN python3 -m venv /opt/venv && python3 -m venv /opt/build
COPY wheels/ /tmp/wheels/
# pip-env: the CA bundle (when given) and torch's index for the chosen variant.
RUN set -eu; \
    { echo 'set -eu'; \
      if [ -f /tmp/wheels/ca-bundle.crt ]; then echo 'export PIP_CERT=/tmp/wheels/ca-bundle.crt'; fi; \
    } > /tmp/pip-env.sh; \
    . /tmp/pip-env.sh; \
    case "${TORCH}" in \
      cpu) if ls /tmp/wheels/torch-"${TORCH_VERSION}"+cpu-*.whl >/dev/null 2>&1; then extra=""; \
           else extra="--extra-index-url https://download.pytorch.org/whl/cpu"; fi ;; \
      cuda) rm -f /tmp/wheels/torch-*+cpu-*.whl; extra="" ;; \
      cu[0-9]*|rocm[0-9]*) rm -f /tmp/wheels/torch-*+cpu-*.whl; extra="--extra-index-url https://download.pytorch.org/whl/${TORCH}" ;; \
      *) echo "TORCH must be cpu, cuda, cuNNN or rocmN.N (got ${TORCH})" >&2; exit 1 ;; \
    esac; \
    /opt/venv/bin/pip install --find-links /tmp/wheels ${extra} "torch==${TORCH_VERSION}"; \
    # torch's C++ test binaries (about 130 MB) serve no purpose here; torch_shm_manager stays.
    site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
    rm -rf "${site}/torch/test"; \
    find "${site}/torch/bin" -type f ! -name torch_shm_manager -delete; \
    /opt/venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# The other dependencies, read from pyproject.toml (the base and server extras), and the wheel builder.
COPY pyproject.toml /tmp/project/pyproject.toml
RUN /opt/venv/bin/python -c "import tomllib; p = tomllib.load(open('/tmp/project/pyproject.toml', 'rb'))['project']; \
print('\\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt
RUN . /tmp/pip-env.sh; \
    /opt/venv/bin/pip install --find-links /tmp/wheels -r /tmp/requirements.txt; \
    /opt/venv/bin/pip check; \
    /opt/build/bin/pip install --find-links /tmp/wheels "setuptools>=68" wheel

# --------------------------------------------------------------------------------------------------
FROM deps AS code
COPY pyproject.toml README.md /src/
COPY lib/ /src/lib/
COPY cli/ /src/cli/
COPY server/ /src/server/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src

# --------------------------------------------------------------------------------------------------
# The engine's C++ kernels (server/engine/native), prebuilt for x86-64-v3 (AVX2) and v4 (AVX-512): the
# final image carries no compiler, and the engine loads the build for the CPU it runs on. Where this stage
# cannot build them (no compiler to be had, another architecture, NATIVE_KERNELS=0), the image still
# works, on torch's ops, and its /health says so (cpu.native).
FROM code AS kernels
ARG NATIVE_KERNELS=1
RUN set -eu; mkdir -p /opt/native; \
    if [ "${NATIVE_KERNELS}" = 1 ] && [ "$(uname -m)" = x86_64 ]; then \
      include=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
      need=""; command -v g++ >/dev/null || need="g++"; [ -f "${include}/Python.h" ] || need="${need} python3-dev"; \
      if [ -n "${need}" ]; then \
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${need} >/dev/null) \
          || echo "WARNING: could not install ${need}"; \
      fi; \
      PYTHONPATH=/src /opt/venv/bin/python -m server.engine.native --dir /opt/native --levels x86-64-v3 x86-64-v4 \
        || echo "WARNING: the engine's kernels were not prebuilt: the image runs on torch's ops"; \
    fi

# --------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG TORCH=cpu
LABEL org.opencontainers.image.title="resource-audiocraft" \
      org.opencontainers.image.description="Self-hosted AudioCraft service: MusicGen, AudioGen, EnCodec over HTTP on port 7862" \
      org.opencontainers.image.licenses="MIT (code); model weights CC-BY-NC-4.0" \
      io.resource-audiocraft.torch="${TORCH}"

RUN groupadd --system --gid 1000 audiocraft \
    && useradd --system --uid 1000 --gid 1000 --create-home --home-dir /home/audiocraft audiocraft \
    && mkdir -p /models /data /artifacts \
    && chown audiocraft:audiocraft /models /data /artifacts

# Dependencies (torch included): a layer that stays while only the code changes.
COPY --from=deps /opt/venv /opt/venv
# The project itself.
COPY --from=code /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist
# The prebuilt kernels (read-only: a build for another level is not attempted at run time).
COPY --from=kernels /opt/native /opt/native

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HF_HOME=/models \
    AUDIOCRAFT_HOST=0.0.0.0 \
    AUDIOCRAFT_PORT=7862 \
    AUDIOCRAFT_DATA_DIR=/data \
    AUDIOCRAFT_NATIVE_DIR=/opt/native
# The Hugging Face cache (weights; the hub cache is /models/hub) and the jobs and artifacts.
VOLUME ["/models", "/data"]
EXPOSE 7862
USER audiocraft
WORKDIR /data

# Healthy when /health answers {"status": "ok"} (python: the image has no curl). Every 30 s: each check
# is a line in the access log. `manage start --wait` polls /health itself and does not wait for this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import json, os, sys, urllib.request as u; r = u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AUDIOCRAFT_PORT', '7862'), timeout=4); sys.exit(0 if json.load(r).get('status') == 'ok' else 1)"]

# `docker run IMAGE` serves; `docker run IMAGE models make-tiny --dir /models/hub` runs another command.
ENTRYPOINT ["resource-audiocraft"]
CMD ["serve"]
