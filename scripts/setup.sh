#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch and acompile.
# Idempotent: re-running only re-installs when pyproject.toml changed. Pip's output goes to .venv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.acompile-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing torch (CPU build) and acompile into .venv" >&2
  log=.venv/setup.log
  pip_install() { python -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
  : >"$log"
  pip_install --upgrade pip
  # Pin torch to the CPU build first: an unpinned torch would pull a multi-GB CUDA build.
  pip_install "torch==2.13.0"
  pip_install -e ".[dev]"
  # Ray (`--workers` / `--ray` of explore and eval) is optional: a platform without its wheels keeps the
  # serial path, and those flags say how to get it.
  if ! python -m pip install --disable-pip-version-check "ray>=2.9" >>"$log" 2>&1; then
    echo "setup: warning: could not install ray (optional: acompile explore/eval --workers, --ray)" >&2
  fi
  python -c "import torch, onnx, onnxruntime, compiler, runtime, hwtrain"
  echo "$want" >"$stamp"
fi
