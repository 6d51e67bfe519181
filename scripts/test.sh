#!/usr/bin/env bash
# The test command: install what is missing, lint, type-check, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check trust pull policy run tests benchmarks
.venv/bin/ruff format --check trust pull policy run tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest -n 2 -q "$@"
