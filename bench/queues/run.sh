#!/usr/bin/env bash
# One command for bench/queues: makes the project's venv and the peers' (bench/.venv-queues).
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory venv >/dev/null
PEERS_NAME=queues source bench/peers.sh
exec .venv/bin/python bench/queues/run.py "$@"
