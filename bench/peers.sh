# Sourced by the bench scripts: makes bench/.venv-peers (the peers, their own pins) if missing.
peers=bench/.venv-peers
if [ ! -f "$peers/.installed" ] || [ bench/requirements-peers.txt -nt "$peers/.installed" ]; then
    python3 -m venv "$peers"
    "$peers/bin/python" -m pip install -q --upgrade pip
    "$peers/bin/python" -m pip install -q -r bench/requirements-peers.txt
    touch "$peers/.installed"
fi
