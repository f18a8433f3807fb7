#!/usr/bin/env bash
# Installs the non-Python tools the tests use, when they are missing.
# Debian packages need root; without root a missing tool is reported and its tests fail loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
# `install-tools.sh cdk`: the AWS CDK CLI only (the deploy job: `make deploy-tools`)
only=${1:-all}

need_apt=()
if [[ $only == cdk ]]; then need_apt_skip=1; else need_apt_skip=0; fi
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# actionlint runs ShellCheck over the workflows' `run:` scripts when it is installed (tests/ci).
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# the UI's one real-browser test (tests/e2e/test_ui_browser.py) drives Debian's Chromium with Playwright
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# the open-loop load client's tests (tests/unit/test_open_loop.py): gcc compiles bench/open_loop.c; wrk + Lua is
# the client it is checked against
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)

if ((need_apt_skip)); then need_apt=(); fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing tools (install them, or run as root): ${need_apt[*]}" >&2
  fi
fi

# The AWS CDK CLI for `cdk synth` (tests/cdk, docs/deploy.md), in a local prefix: nothing global.
CDK_CLI_VERSION=2.1148.1
installed_cdk=$(.tools/node_modules/.bin/cdk --version 2>/dev/null | cut -d' ' -f1 || true)
if [[ "$installed_cdk" != "$CDK_CLI_VERSION" ]]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing aws-cdk@$CDK_CLI_VERSION into .tools/"
    npm install --prefix .tools --no-fund --no-audit --loglevel=error "aws-cdk@$CDK_CLI_VERSION" >/dev/null
  else
    echo "missing tool: npm (needed for the AWS CDK CLI in .tools/)" >&2
  fi
fi

[[ $only == cdk ]] && exit 0

# Schemas of the prometheus-operator custom resources (ServiceMonitor, PrometheusRule) for tests/k8s and
# tests/monitoring: an npm package pinned by tests/k8s/crd/package-lock.json, installed beside it.
crd=tests/k8s/crd
if [[ ! -f $crd/node_modules/.package-lock.json || $crd/package-lock.json -nt $crd/node_modules/.package-lock.json ]]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing the prometheus-operator schemas into $crd/node_modules"
    npm ci --prefix "$crd" --no-fund --no-audit --loglevel=error >/dev/null
  else
    echo "missing tool: npm (needed for the schemas in $crd)" >&2
  fi
fi

# kubectl (with its built-in kustomize v5) renders k8s/ in the tests and at synth. Debian's
# kubernetes-client is far too old for that, so it is not installed from here.
command -v kubectl >/dev/null 2>&1 || echo "missing tool: kubectl >= 1.27 (renders k8s/ with kustomize v5)" >&2
