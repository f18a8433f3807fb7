# One entry point for every check. `make test` and `make up` do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv tools deploy-tools lock lint test up bench clean
LOCK := $(VENV)/bin/uv pip compile --generate-hashes --no-header --no-annotate -q \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

# uv installs the pinned set with parallel downloads: ~35 s instead of pip's ~150 s on a fresh machine (measured).
# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on the CI machine) every process would
# otherwise compile every module it imports, every time (measured: the suite 11 -> 19 minutes).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $$(grep -E '^uv==' requirements-dev.txt)
	$(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode -r requirements-dev.txt
	$(VENV)/bin/uv pip install --python $(PY) -q --no-deps -e .
	@touch $@

venv: $(STAMP) ## create .venv and install everything Python needs

tools: ## install the system tools the tests use (Debian packages when root, npm packages)
	@bash scripts/install-tools.sh

deploy-tools: ## only what the deploy job needs: the CDK app, the smoke test, the CDK CLI (no test tool chain)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-deploy.txt
	$(PY) -m pip install -q --no-deps -e .
	@bash scripts/install-tools.sh cdk

lock: venv ## re-make the images' hashed locks after changing requirements.txt (tests/ci checks they match)
	$(LOCK) requirements.txt -o requirements.lock
	grep -v -i -E '^(streamlit|authlib|pyjwt\[crypto\]|numba|llvmlite)==' requirements.txt \
		> lambdas/trainer/requirements-trainer.in
	$(LOCK) lambdas/trainer/requirements-trainer.in lambdas/trainer/requirements-image.txt \
		-o lambdas/trainer/requirements.lock
	rm lambdas/trainer/requirements-trainer.in

lint: venv ## ruff, mypy and the core's import layers (import-linter)
	@VENV=$(VENV) bash scripts/lint.sh

# Integration tests mostly wait on servers they start, so more workers than cores pays (measured on 2 cores).
TEST_WORKERS ?= 4

# `make lint` runs beside the suite, not before it: the suite keeps both cores busy (vmstat: 2% idle), the lint
# alone left one idle. Its output comes after the suite's; either failing fails `make test`.
# PYTHONDONTWRITEBYTECODE (set on some machines) is cleared for the suite: each worker would otherwise rewrite
# and compile every test module again (pytest's assertion rewriting caches only where bytecode may be written).
test: venv tools ## lint, types and the whole test suite, on $(TEST_WORKERS) workers
	$(PY) -m compileall -q flywheel app lambdas  # the suite's many processes then load bytecode, not source
	@VENV=$(VENV) bash scripts/lint.sh > $(VENV)/lint.log 2>&1 & lint=$$!; \
	  PYTHONDONTWRITEBYTECODE= $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist load; tests=$$?; \
	  wait $$lint; linted=$$?; echo "--- make lint (scripts/lint.sh, ran beside the suite)"; cat $(VENV)/lint.log; \
	  if [ $$linted -ne 0 ]; then echo "make test: make lint failed (above)"; fi; \
	  [ $$tests -eq 0 ] && [ $$linted -eq 0 ]

up: venv ## run the whole system locally (embedded S3 + SQS, trainer, API replicas, UI, MLflow)
	$(VENV)/bin/flywheel up

bench: venv ## run the benchmarks (print figures; never pass/fail)
	$(PY) bench/train.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache cdk.out
