"""The workers' runner for tests/test_flow_limits.py: `backbeat worker
tests.apps.limits_app:runner`, its store from BACKBEAT_TEST_STORE."""

import os

from backbeat import Runner
from tests.apps import limits_tasks  # noqa: F401 - declares the tasks

runner = Runner(
    store=os.environ["BACKBEAT_TEST_STORE"],
    lease=30.0,
    concurrency=10,
    poll_interval=0.2,
    shutdown_timeout=2.0,
)
