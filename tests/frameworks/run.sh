#!/usr/bin/env bash
# In .venv-esmerald (Esmerald 3.9.4 pins an older Lilya than the project's venv has):
# backbeat.esmerald's tests, backbeat.lilya's again (on Lilya 0.20), and mypy --strict on
# the Esmerald module and its example.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-esmerald
if [ ! -f "$VENV/.installed" ] || [ tests/frameworks/esmerald.txt -nt "$VENV/.installed" ] \
    || [ pyproject.toml -nt "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r tests/frameworks/esmerald.txt -e ".[dev]"
    touch "$VENV/.installed"
fi
echo "== Esmerald $("$VENV/bin/python" -c 'import esmerald; print(esmerald.__version__)')"
"$VENV/bin/mypy" --strict src/backbeat/esmerald.py examples/esmerald_app.py
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_esmerald.py tests/test_lilya.py "$@"
