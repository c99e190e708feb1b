# Sourced by the bench scripts: makes a peers' venv (their own pins) if missing or stale.
# `source bench/peers.sh` makes bench/.venv-peers from bench/requirements-peers.txt;
# `PEERS_NAME=queues source bench/peers.sh`, bench/.venv-queues from requirements-queues.txt.
name=${PEERS_NAME:-peers}
peers=bench/.venv-$name
requirements=bench/requirements-$name.txt
if [ ! -f "$peers/.installed" ] || [ "$requirements" -nt "$peers/.installed" ]; then
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install -q --upgrade pip
    "$peers/bin/python" -m pip install -q -r "$requirements"
    touch "$peers/.installed"
fi
