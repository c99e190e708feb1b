"""A dashboard served alone by uvicorn, over the store in $BACKBEAT_TEST_STORE."""

import os

from backbeat.dashboard import dashboard

app = dashboard(
    os.environ["BACKBEAT_TEST_STORE"],
    refresh=float(os.environ.get("BACKBEAT_TEST_REFRESH", "0.2")),
)
