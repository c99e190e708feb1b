"""Stored steps and retries start on time on every store, with nothing else running:
the next step of a sequence when its predecessor ends, a retry when it falls due —
not at the next poll (`poll_interval` is 5 s here, so a poll cannot hide a late start)."""

import itertools

import pytest

from backbeat import BackgroundTask, BackgroundTasks
from tests.apps import durable_tasks
from tests.apps.durable_tasks import fails_then_succeeds, timed, timings

pytestmark = pytest.mark.anyio

# Generous against a loaded CI machine; a missed wake-up costs the whole poll (5 s).
ON_TIME = 0.5


async def test_each_step_of_a_sequence_starts_when_the_one_before_ends(db):
    timings.clear()
    steps = ["one", "two", "three"]
    async with durable_tasks.runner(db, poll_interval=5) as runner:
        await runner.asubmit(BackgroundTasks([BackgroundTask(timed, label) for label in steps]))
        await runner.join(timeout=20)
    gaps = [timings[later][0] - timings[earlier][1] for earlier, later in itertools.pairwise(steps)]
    assert all(gap < ON_TIME for gap in gaps), gaps


async def test_a_retry_starts_when_it_falls_due(db):
    timings.clear()
    async with durable_tasks.runner(db, poll_interval=5) as runner:
        await runner.asubmit(BackgroundTask(fails_then_succeeds, "r"))
        await runner.join(timeout=20)
    starts = timings["r"]
    assert len(starts) == 3
    # backoff 0.05 s: each attempt starts about 0.05 s after the one before failed
    late = [later - earlier - 0.05 for earlier, later in itertools.pairwise(starts)]
    assert all(delay < ON_TIME for delay in late), late
