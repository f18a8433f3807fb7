#!/usr/bin/env bash
# `make lint`: ruff, mypy and the core's import layers (import-linter). `make test` runs it beside the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
set -x
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# mypy in two processes, the CDK app on its own; together they check what pyproject.toml's [tool.mypy] `files` lists.
# A cold run (a clean clone) reads only the aws_cdk modules the stack uses (pyproject.toml): ~20 s and ~24 s of CPU
"$VENV/bin/mypy" --cache-dir .mypy_cache/cdk cdk & cdk=$!
rest=0
"$VENV/bin/mypy" flywheel lambdas app bench || rest=$?
wait $cdk
[ "$rest" -eq 0 ]
"$VENV/bin/lint-imports" --no-cache
