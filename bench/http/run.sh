#!/usr/bin/env bash
# One command for bench/http: installs wrk and the peers' venv if missing, then runs.
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
peers=bench/.venv-peers
if [ ! -f "$peers/.installed" ] || [ bench/requirements-peers.txt -nt "$peers/.installed" ]; then
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install -q --upgrade pip
    "$peers/bin/python" -m pip install -q -r bench/requirements-peers.txt
    touch "$peers/.installed"
fi
exec .venv/bin/python bench/http/run.py "$@"
