#!/usr/bin/env bash
# Set-up, then lint and the fast test suite (slow tests: `pytest -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check .
pytest -q "$@"
