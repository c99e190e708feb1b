#!/usr/bin/env bash
# One command for bench/sqlite: makes the peers venv (with huey) if missing, then runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory venv >/dev/null
source bench/peers.sh
exec .venv/bin/python bench/sqlite/run.py "$@"
