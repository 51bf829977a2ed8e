# The two commands of the README. Each sets up what it needs first.
#   make demo   build and run the demo application (examples/app)
#   make test   build and run every test (what CI runs)

SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc)
# The Python environment the package, torch and the tests go into.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup c c-asan python demo demo-c test check-layout test-c test-asan test-fuzz test-python lint bench clean wheel test-wheel docs

setup:
	./setup.sh

c: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

c-asan: setup
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPYI_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# pyisolate itself (C library + cffi module, built by pip), pytest (with
# pytest-timeout: a hung test fails), numpy, the CPU build of torch
# (torch==2.13.0 lies on this machine's disk), and pyzmq and matplotlib for
# the benchmark suite (perf/suite.py), prometheus_client for the metrics
# export's tests, and ray for RayLauncher's tests.
python: setup
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0" pytest pytest-timeout numpy pyzmq matplotlib prometheus_client "ray==2.60.0"
	$(PY) -m pip install -q .

demo: python
	cd examples/app && ../../$(PY) main.py

demo-c: c
	$(BUILD)/examples/c/pyi_demo_host

test-c: c
	cd $(BUILD) && ctest --output-on-failure -j 2

test-asan: c-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

test-fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run $(FUZZ_BUILD)

# The suite runs over the local lane (the default transport), then the
# tests of calls, failures, tensors, nesting and sandboxing again over the
# broker path (ExtensionConfig.transport="broker" for every extension).
BROKER_PATH_TESTS := tests/python/test_calls.py tests/python/test_failures.py \
	tests/python/test_tensors.py tests/python/test_tensor_local.py \
	tests/python/test_sandbox.py tests/python/test_processes.py tests/python/test_sync.py
test-python: python
	$(PY) -m pytest tests/python -q -rs
	PYISOLATE_TRANSPORT=broker $(PY) -m pytest $(BROKER_PATH_TESTS) -q -rs

# ruff (lint and format) on the package, ffi_build.py, the tests and
# examples; mypy --strict on the package (pyproject.toml configures both).
LINT_PATHS := bindings/python tests/python tests/check_layout.py examples
lint: python
	$(PY) -m pip install -q ruff mypy types-cffi
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

# One direction between C folders, no import cycle in the Python package,
# no C file over 800 lines.
check-layout:
	python3 tests/check_layout.py

test: check-layout test-c test-asan test-fuzz test-python

# The sdist and a manylinux wheel that carries its C libraries, in dist/
# (packaging/build-wheel); the wheel installed and the README's quick start
# run in a Debian root without libzmq or czmq (tests/wheel/run, needs root).
wheel: setup
	JOBS=$(JOBS) packaging/build-wheel $(BUILD)

test-wheel: wheel
	tests/wheel/run $(BUILD)

# The documentation site (mkdocs.yml): MkDocs with the Material theme and
# mkdocstrings, into .venv; built with --strict (a broken link or reference
# fails) into build/site. Its samples run in tests/python/test_docs.py.
DOC_TOOLS := "mkdocs==1.6.*" "mkdocs-material==9.*" "mkdocstrings-python==2.*" "pymdown-extensions>=10,<14"

docs: python
	$(PY) -m pip install -q $(DOC_TOOLS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(BUILD)/site

bench: c
	$(BUILD)/perf/pyi_bench --json $(BUILD)/pyi_bench.json

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(VENV) dist
