# Every README command goes through here and installs what it needs on first use: `make synth`
# the synth set (requirements.txt, the pinned CDK CLI and Node, the function's wheels), `make
# test` adds the test tools (requirements-dev.txt, checkov), `make catalog` the maintainer tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# node_modules/.bin first: the pinned Node 22 (package.json) runs the CDK CLI and jsii.
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup setup-test setup-maintainer synth test lint local catalog schema clean

WHEELHOUSE := .wheelhouse
# The gateway runtime's requirements ship inside its package (lambda/llm_gateway/).
RUNTIME_REQUIREMENTS := lambda/llm_gateway/requirements.txt
# The gateway function's dependencies as Lambda-platform wheels, so synth bundles offline
# (keep the Python version in step with PYTHON_VERSION in llm_serving/bundling.py).
LAMBDA_PLATFORM_PIP := --python-version 3.13 --implementation cp --only-binary=:all:

setup: $(VENV)/.installed $(VENV)/.editable node_modules/.installed $(WHEELHOUSE)/.installed
setup-test: setup $(VENV)/.test-tools
setup-maintainer: setup-test $(VENV)/.maintainer-tools

$(VENV)/.installed: requirements.txt constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt -c constraints.txt
	@touch $@

$(VENV)/.test-tools: requirements-dev.txt $(RUNTIME_REQUIREMENTS) constraints.txt | $(VENV)/.installed
	$(PIP_INSTALL) -r requirements-dev.txt -c constraints.txt
	@touch $@

$(VENV)/.maintainer-tools: requirements-maintainer.txt constraints.txt | $(VENV)/.test-tools
	$(PIP_INSTALL) -r requirements-maintainer.txt -c constraints.txt
	@touch $@

# This project itself, editable (llm_serving and, from lambda/, llm_gateway: the bundler finds
# the runtime where Python imports it from). Offline: setuptools is pinned in requirements-dev.
# (The warning silenced is setuptools' note that ./llm_serving shadows the install: it is the
# same directory.)
$(VENV)/.editable: pyproject.toml llm_serving/__init__.py | $(VENV)/.installed
	PYTHONWARNINGS='ignore:Editable installation' \
	  $(PY) -m pip install --quiet --no-index --no-deps --no-build-isolation --editable .
	@touch $@

$(WHEELHOUSE)/.installed: $(RUNTIME_REQUIREMENTS) constraints.txt | $(VENV)/.installed
	rm -rf $(WHEELHOUSE)
	for arch in aarch64 x86_64; do \
	  $(PY) -m pip download --quiet --disable-pip-version-check -r $(RUNTIME_REQUIREMENTS) \
	    -c constraints.txt --platform manylinux2014_$$arch $(LAMBDA_PLATFORM_PIP) \
	    -d $(WHEELHOUSE)/$$arch || exit 1; \
	done
	@touch $@

# checkov scans the synthesized templates in tests/test_compliance.py; its pins conflict with
# the test tools', so it lives in a venv of its own (only `make test` needs it).
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r requirements-checkov.txt -c constraints-checkov.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## Synthesize the app (default config from cdk.json) into cdk.out/, with cdk-nag and
## CloudFormation validation on. Override with e.g. `make synth CDK_ARGS="-c stage=prod"`.
synth: setup
	cdk synth --quiet $(CDK_ARGS)

## Offline `cdk diff` (no AWS account): synthesize BASE (default origin/main, else main, else
## HEAD~1) in a temporary git worktree and the working tree, unbundled, and diff every stack's
## template. A report, not a gate. E.g. `make diff BASE=v1.2 CDK_ARGS="-c stage=prod"`.
.PHONY: diff
diff: setup
	$(PY) scripts/offline_diff.py $(if $(BASE),--base '$(BASE)') $(CDK_ARGS)

## The whole test suite (lint and type checks included), one pytest worker per core; a module's
## tests stay on one worker, so its servers and synthesized apps are built once.
test: setup-test lint $(CHECKOV_VENV)/.installed
	$(PY) -m pytest -n auto --dist loadfile

lint: setup-test
	ruff check .
	ruff format --check .
	mypy

## The gateway and a SageMaker-runtime emulator on loopback (no AWS account): the OpenAI API
## on http://127.0.0.1:8080/v1. Ctrl-C stops both. Options: make local LOCAL_ARGS="--port 9000"
local: setup-test
	$(PY) -m local.run $(LOCAL_ARGS)

## Benchmarks: gateway overhead, relay throughput, cold start, synth and test time (a few
## minutes; writes bench-results.json). Figures and method: docs/benchmarks.md.
bench: setup-test
	$(PY) -m bench $(BENCH_ARGS)

## Maintainers: regenerate the pinned image catalog from the SageMaker SDK, then check it
## against the SDK (maintainer/: the tests that need the SDK, which nothing else installs).
catalog: setup-maintainer
	$(PY) scripts/update_image_catalog.py
	$(PY) -m pytest maintainer

## Regenerate docs/schema/*.schema.json and docs/configuration.md from the config models.
schema: setup
	$(PY) scripts/export_schema.py

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
