#!/usr/bin/env bash
# The test command: install what is missing, lint, type-check, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The real peers of the interop tests (cosign, notation, crane, an OCI 1.1 registry, Sigstore's
# Fulcio, Rekor v2, timestamp authority and a CT log) build with
# Go in the background while Debian's and Python's packages install (minutes the first time on a
# machine, nothing after: they are cached outside the checkout).
peers_log=$(mktemp)
bash scripts/peers.sh >"$peers_log" 2>&1 &
peers_pid=$!
bash scripts/setup.sh
.venv/bin/ruff check trust pull policy run tests benchmarks setup.py
.venv/bin/ruff format --check trust pull policy run tests benchmarks setup.py
.venv/bin/mypy
if ! wait "$peers_pid"; then
    cat "$peers_log" >&2
    echo "test: building the interop peers failed (scripts/peers.sh)" >&2
    exit 1
fi
exec .venv/bin/pytest -n 2 -q "$@"
