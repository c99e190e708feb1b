#!/usr/bin/env bash
# `make test`'s suites: the project's pytest run, and beside it (they mostly wait on
# processes and servers: two cores stay half idle with one suite at a time) the Redis
# store's tests on other servers (tests/compat) and the Esmerald venv's (tests/frameworks).
# Each side suite's output is shown once it ends; any failure fails the whole.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
bash tests/compat/run.sh --basetemp="$logs/compat-tmp" >"$logs/compat.log" 2>&1 &
compat=$!
bash tests/frameworks/run.sh --basetemp="$logs/frameworks-tmp" >"$logs/frameworks.log" 2>&1 &
frameworks=$!
.venv/bin/python -m pytest --durations=25 "$@"
main_status=$?
wait "$compat"
compat_status=$?
wait "$frameworks"
frameworks_status=$?
echo "== tests/compat (Redis 6.2, Valkey, a Redis Cluster): exit $compat_status"
cat "$logs/compat.log"
echo "== tests/frameworks (Esmerald's venv): exit $frameworks_status"
cat "$logs/frameworks.log"
rm -rf "$logs"
[ "$main_status" = 0 ] && [ "$compat_status" = 0 ] && [ "$frameworks_status" = 0 ]
