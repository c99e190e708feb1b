"""A task every second, for tests/test_periodic.py: each run appends a line to the
file BACKBEAT_TEST_OUT names; the store is BACKBEAT_TEST_STORE."""

import os
import time

from backbeat import Runner, task


@task(name="every_second", cron="* * * * * *")
def every_second() -> None:
    with open(os.environ["BACKBEAT_TEST_OUT"], "a") as out:
        out.write(f"{os.getpid()} {time.time()}\n")


runner = Runner(store=os.environ["BACKBEAT_TEST_STORE"], lease=5.0)
