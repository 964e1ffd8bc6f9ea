# One entry point for people and CI. Each target installs what it needs on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 7862

.PHONY: install install-test run test lint unit integration tiny clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamps re-run the install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e '.[server]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[server,test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/resource-audiocraft serve --host $(HOST) --port $(PORT)

lint: install-test
	$(VENV)/bin/ruff check .

test: install-test lint
	$(VENV)/bin/pytest test

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
