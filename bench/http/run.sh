#!/usr/bin/env bash
# One command for bench/http: installs wrk and the peers venv if missing, then runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq wrk
    else
        echo "bench/http needs wrk: sudo apt-get install wrk" >&2
        exit 1
    fi
fi
make --no-print-directory venv >/dev/null
source bench/peers.sh
exec .venv/bin/python bench/http/run.py "$@"
