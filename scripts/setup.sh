#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch and acompile.
# Idempotent: re-running after the first time only re-installs when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.acompile-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
  # Pin torch to the CPU build first: an unpinned torch would pull a multi-GB CUDA build.
  python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  python -c "import torch, onnx, onnxruntime, compiler, runtime, hwtrain" 
  echo "$want" > "$stamp"
fi
