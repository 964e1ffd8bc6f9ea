# One entry point for people and CI. Each target installs what it needs on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 7862

.PHONY: kernels install install-test run run-cluster test lint unit integration conformance tiny clean test-docker docker-base docker-image

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamps re-run the install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e '.[server]'
	touch $@

# Playwright (test extra) drives Debian's chromium (test/browser/ensure-chromium.sh): no browser download.
$(VENV)/.installed-test: $(VENV)/.installed
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PIP) install -q -e '.[server,test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The engine's C++ kernels (server/engine/native), for each instruction level this CPU runs: cached, so
# this is quick once built. Without a compiler the engine runs on torch's ops and says so in /health.
kernels: install
	$(PY) -m server.engine.native || echo "the engine's kernels did not build: the engine uses torch's ops"

run: install kernels
	$(VENV)/bin/resource-audiocraft serve --host $(HOST) --port $(PORT)

# Past one machine, on this one: Redis (Debian's redis-server, installed when missing), one API node on
# PORT and WORKERS workers sharing it (config/cluster.Procfile, run by honcho; Ctrl-C stops them all).
WORKERS ?= 2
CLUSTER_DIR ?= $(CURDIR)/.cache/cluster
run-cluster: install
	bash test/redis/ensure-redis.sh
	mkdir -p $(CLUSTER_DIR)/redis
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH CLUSTER_DIR=$(CLUSTER_DIR) AUDIOCRAFT_HOST=$(HOST) \
		AUDIOCRAFT_QUEUE_URL=redis://127.0.0.1:$$(($(PORT) - 100))/0 AUDIOCRAFT_ARTIFACTS_DIR=$(CLUSTER_DIR)/artifacts \
		$(VENV)/bin/honcho -f config/cluster.Procfile start -p $$(($(PORT) - 100)) -c worker=$(WORKERS)

lint: install-test
	$(VENV)/bin/ruff check .

# The pytest suites, then the docker phase (which reports SKIPPED, not a failure, without a way to run
# a Docker engine).
# The Redis queue's tests start their own redis-server (Debian's, installed here when missing; without
# it they skip and say why); the studio page's browser tests drive Debian's chromium, the same way.
test: install-test lint kernels
	-bash test/redis/ensure-redis.sh
	-bash test/browser/ensure-chromium.sh
	$(VENV)/bin/pytest test
	$(MAKE) --no-print-directory test-docker

# The docker phase: installs docker.io and starts dockerd when needed (root), builds the debootstrap
# base image when absent, builds the server image through the CLI, then runs test/docker against the
# container. Exit 2 from the phase is "skipped".
test-docker: install-test
	@bash test/phases/test-docker.sh; rc=$$?; \
	if [ $$rc -eq 2 ]; then echo "docker phase: SKIPPED (the reason is above)"; exit 0; fi; exit $$rc

# The registry-free base image (Debian bookworm minbase + python3 + venv, via debootstrap).
BASE_IMAGE ?= audiocraft-base:bookworm
docker-base:
	bash test/docker/ensure-engine.sh
	bash test/docker/build-base.sh $(BASE_IMAGE)

# The server image through the CLI: make docker-image [IMAGE=tag] [TORCH=cpu|cuda|cu128] [BASE_IMAGE=...]
IMAGE ?= resource-audiocraft:latest
TORCH ?= auto
docker-image: install
	AUDIOCRAFT_IMAGE=$(IMAGE) AUDIOCRAFT_TORCH=$(TORCH) $(if $(filter command line environment,$(origin BASE_IMAGE)),AUDIOCRAFT_BASE_IMAGE=$(BASE_IMAGE)) \
		$(VENV)/bin/resource-audiocraft --runtime docker manage install --force

# The engine against the audiocraft package (spec §4): test/conformance/setup-env.sh installs
# audiocraft 1.3.0 and its pinned torch into a venv of its own, cached in
# $${AUDIOCRAFT_ORACLE_ENV:-~/.cache/audiocraft-oracle/venv}; `make test` runs it too (test/ holds it).
conformance: install-test
	$(VENV)/bin/pytest test/conformance -v

unit: install-test
	$(VENV)/bin/pytest test/unit

integration: install-test
	$(VENV)/bin/pytest test/integration

# Tiny random-weight checkpoints for every catalogue entry, for offline use: make tiny DIR=/tmp/tiny
DIR ?= .cache/tiny-models
tiny: install
	$(VENV)/bin/resource-audiocraft models make-tiny --dir $(DIR)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache build *.egg-info
