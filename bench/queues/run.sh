#!/usr/bin/env bash
# One command for bench/queues: makes the project's venv and the peers' (bench/.venv-queues).
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory venv >/dev/null
peers=bench/.venv-queues
if [ ! -f "$peers/.installed" ] || [ bench/requirements-queues.txt -nt "$peers/.installed" ]; then
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install -q --upgrade pip
    "$peers/bin/python" -m pip install -q -r bench/requirements-queues.txt
    touch "$peers/.installed"
fi
exec .venv/bin/python bench/queues/run.py "$@"
