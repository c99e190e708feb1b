#!/usr/bin/env bash
# One command for bench/sqlite: makes the peers venv (with huey) if missing, then runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
peers=bench/.venv-peers
if [ ! -f "$peers/.installed" ] || [ bench/requirements-peers.txt -nt "$peers/.installed" ]; then
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install -q --upgrade pip
    "$peers/bin/python" -m pip install -q -r bench/requirements-peers.txt
    touch "$peers/.installed"
fi
exec .venv/bin/python bench/sqlite/run.py "$@"
