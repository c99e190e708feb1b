#!/usr/bin/env bash
# Retake the dashboard's screenshots in docs/images/ (the browser tests take them; this
# keeps them instead of a tmp dir). Needs /usr/bin/chromium: `bash .ci/chromium` as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
make venv >/dev/null
BACKBEAT_SCREENSHOTS="$PWD/docs/images" .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/dashboard/test_browser.py
ls -l docs/images/*.png
