"""The dashboard's reads and acts on the store contract (`Store.search`, `failure_groups`,
`oldest_due`, `run_now`, `delete`), on every store (the `store` fixture, as in
test_contract.py)."""

import asyncio
import time

import pytest

from backbeat.stores.inspection import TaskFilter
from tests.stores.rows import made_at, make, new_task

pytestmark = pytest.mark.anyio

STATES = ("pending", "scheduled", "running", "succeeded", "failed", "cancelled")


async def ids_of(store, where: TaskFilter | None = None, **options) -> list[str]:
    page = await store.search(where or TaskFilter(), **options)
    return [status.id for status in page.tasks]


def newest_first(ids) -> list[str]:
    return sorted(ids, reverse=True)


async def everything(store, where: TaskFilter, limit: int, scan: int = 10_000) -> list[str]:
    """Every match, page after page until the cursor says no older task can match."""
    found: list[str] = []
    before = None
    for _ in range(1000):
        page = await store.search(where, limit=limit, before=before, scan=scan)
        assert len(page.tasks) <= limit and page.scanned <= scan
        found += [status.id for status in page.tasks]
        if page.cursor is None:
            return found
        before = page.cursor
    raise AssertionError("the search never ended")


async def test_each_state_alone(store):
    made = {state: [await make(store, state) for _ in range(2)] for state in STATES}
    held = await make(store, "held")  # shown as pending
    for state in STATES:
        expected = made[state] + ([held] if state == "pending" else [])
        assert await ids_of(store, TaskFilter(state=state)) == newest_first(expected), state
    every = [task_id for ids in made.values() for task_id in ids] + [held]
    page = await store.search(TaskFilter())
    assert [status.id for status in page.tasks] == newest_first(every)
    assert page.cursor is None
    assert page.scanned == len(every)


async def test_queue_name_id_argument_and_error_alone(store):
    mail = await make(store, "pending", queue="mail")
    report = await make(store, "pending", name="reports.build")
    argued = await make(store, "succeeded")
    plain = await make(store, "failed", error="KeyError: 'user'")
    other = await make(store, "failed", error="ValueError: no such user 42")
    assert await ids_of(store, TaskFilter(queue="mail")) == [mail]
    assert await ids_of(store, TaskFilter(queue="nope")) == []
    assert await ids_of(store, TaskFilter(name="reports.build")) == [report]
    assert await ids_of(store, TaskFilter(id=argued[:20])) == [argued]
    assert await ids_of(store, TaskFilter(id=argued)) == [argued]
    assert await ids_of(store, TaskFilter(id=argued.lower())) == []  # matched as given
    every = [mail, report, argued, plain, other]
    assert await ids_of(store, TaskFilter(argument='"hi"')) == newest_first(every)
    assert await ids_of(store, TaskFilter(argument="bye")) == []
    assert await ids_of(store, TaskFilter(error="user")) == newest_first([plain, other])
    assert await ids_of(store, TaskFilter(error="no such user")) == [other]
    # A piece of the JSON as stored, not of the decoded arguments.
    special = new_task()
    special.payload = '{"args": [{"email": "ann@example.com"}], "kwargs": {"n": 7}}'
    await store.enqueue([special])
    assert await ids_of(store, TaskFilter(argument='"email": "ann@')) == [special.id]
    assert await ids_of(store, TaskFilter(argument='"n": 7')) == [special.id]
    assert await ids_of(store, TaskFilter(argument="ann@example.org")) == []


async def test_filters_combined_must_all_match(store):
    target = await make(store, "failed", queue="mail", name="emails.send", error="SMTPError: 421")
    await make(store, "failed", queue="mail", name="emails.send", error="KeyError: x")
    await make(store, "failed", queue="other", name="emails.send", error="SMTPError: 421")
    await make(store, "succeeded", queue="mail", name="emails.send")
    await make(store, "failed", queue="mail", name="emails.other", error="SMTPError: 421")
    where = TaskFilter(state="failed", queue="mail", name="emails.send", error="SMTP")
    assert await ids_of(store, where) == [target]
    assert await ids_of(store, TaskFilter(state="failed", queue="mail", error="SMTP")) != [target]
    where = TaskFilter(
        state="failed",
        queue="mail",
        name="emails.send",
        id=target[:12],
        argument="hi",
        error="421",
        created_after=time.time() - 60,
        created_before=time.time() + 60,
    )
    assert await ids_of(store, where) == [target]
    assert await ids_of(store, TaskFilter(state="succeeded", error="SMTP")) == []


async def test_paging_with_the_cursor_gives_every_match_once_newest_first(store):
    ids = [await make(store, "pending", name="a" if n % 3 else "b") for n in range(23)]
    assert await everything(store, TaskFilter(), limit=5) == newest_first(ids)
    b = [task_id for n, task_id in enumerate(ids) if n % 3 == 0]
    assert await everything(store, TaskFilter(name="b"), limit=2) == newest_first(b)
    assert await everything(store, TaskFilter(name="b"), limit=2, scan=4) == newest_first(b)
    # A full page's cursor is its last match; the page after it starts below.
    first = await store.search(TaskFilter(), limit=5)
    assert first.cursor == first.tasks[-1].id
    second = await store.search(TaskFilter(), limit=5, before=first.cursor)
    assert [s.id for s in first.tasks + second.tasks] == newest_first(ids)[:10]


async def test_a_small_scan_on_a_state_still_finds_every_match_once(store):
    # Whether a store reads a state's own index or walks every task (a state holding more
    # tasks than `scan`), paging goes through every match exactly once.
    made = {state: [await make(store, state) for _ in range(4)] for state in STATES}
    for state in STATES:
        for scan in (1, 3, 50):
            found = await everything(store, TaskFilter(state=state), limit=2, scan=scan)
            assert found == newest_first(made[state]), (state, scan)


async def test_the_scan_bound_ends_a_page_short_and_the_cursor_goes_on(store):
    base = time.time() - 100
    old = [await make(store, "pending", name="wanted", at=base + n) for n in range(3)]
    new = [await make(store, "pending", name="other", at=base + 10 + n) for n in range(6)]
    page = await store.search(TaskFilter(name="wanted"), limit=10, scan=4)
    assert page.tasks == []
    assert page.scanned == 4
    assert page.cursor == newest_first(new)[3]  # the last task looked at
    page = await store.search(TaskFilter(name="wanted"), limit=10, scan=4, before=page.cursor)
    assert [s.id for s in page.tasks] == newest_first(old)[:2]
    assert page.scanned == 4
    assert page.cursor == newest_first(old)[1]
    page = await store.search(TaskFilter(name="wanted"), limit=10, scan=4, before=page.cursor)
    assert [s.id for s in page.tasks] == [min(old)]
    assert (page.scanned, page.cursor) == (1, None)  # nothing older: the end


async def test_a_long_scan_goes_through_every_task_it_may(store):
    # Past a thousand: a store may look in stretches (Redis does, to serve others between).
    needle = new_task(name="needle")
    needle.id = made_at(time.time() - 100)
    hay = [new_task() for _ in range(1100)]
    await store.enqueue([needle, *hay])
    page = await store.search(TaskFilter(name="needle"))
    assert ([s.id for s in page.tasks], page.scanned, page.cursor) == ([needle.id], 1101, None)
    page = await store.search(TaskFilter(name="needle"), scan=1050)
    assert (page.tasks, page.scanned) == ([], 1050)
    assert page.cursor == newest_first(t.id for t in hay)[1049]
    page = await store.search(TaskFilter(), limit=1020, before=newest_first(t.id for t in hay)[9])
    assert [s.id for s in page.tasks] == newest_first(t.id for t in hay)[10:1030]


async def test_created_after_and_before_bound_the_ids(store):
    base = time.time() - 1000
    ids = {}
    for second in (0, 10, 20, 30):
        task = new_task()
        task.id = made_at(base + second)
        task.created_at = base + second
        await store.enqueue([task])
        ids[second] = task.id

    async def between(after, before) -> list[str]:
        where = TaskFilter(
            created_after=None if after is None else base + after,
            created_before=None if before is None else base + before,
        )
        page = await store.search(where)
        assert page.cursor is None
        return [status.id for status in page.tasks]

    assert await between(10, None) == [ids[30], ids[20], ids[10]]  # inclusive
    assert await between(None, 20) == [ids[10], ids[0]]  # exclusive
    assert await between(5, 25) == [ids[20], ids[10]]
    assert await between(11, 19) == []
    assert await between(20, 10) == []
    # created_after ends the search: older tasks are not even looked at.
    page = await store.search(TaskFilter(created_after=base + 20), scan=10_000)
    assert page.scanned == 2


async def test_failure_groups_group_by_name_and_exception_largest_first(store):
    base = time.time() - 100
    errors = ("ValueError: a", "ValueError: b", "KeyError: 'k'", "ValueError: c")
    for n, error in enumerate(errors):
        await make(store, "failed", name="emails.send", error=error, at=base + n)
    last = await make(store, "failed", name="reports.build", error="KeyError: 'z'", at=base + 9)
    await make(store, "succeeded", name="emails.send")
    await make(store, "cancelled", name="emails.send")
    groups = await store.failure_groups()
    assert [(g.name, g.exception, g.count) for g in groups] == [
        ("emails.send", "ValueError", 3),
        ("reports.build", "KeyError", 1),  # of two groups of one: the later failure first
        ("emails.send", "KeyError", 1),
    ]
    latest = await store.get(last)
    assert (groups[1].latest_id, groups[1].latest_at) == (last, latest.finished_at)
    assert groups[1].example == "KeyError: 'z'"
    top = groups[0]
    assert top.example == "ValueError: c"
    assert top.latest_at == (await store.get(top.latest_id)).finished_at
    # Of the most recently created failed tasks only.
    small = await store.failure_groups(scan=2)
    assert [(g.name, g.exception, g.count) for g in small] == [
        ("reports.build", "KeyError", 1),
        ("emails.send", "ValueError", 1),
    ]
    # Retried: no longer failed, in no group.
    assert await store.retry([last]) == 1
    assert [g.name for g in await store.failure_groups()] == ["emails.send", "emails.send"]


async def test_oldest_due_is_the_longest_waiting_runnable_task(store):
    assert await store.oldest_due() is None
    await make(store, "scheduled")
    await make(store, "held")
    await make(store, "running")
    await make(store, "failed")
    assert await store.oldest_due() is None  # none of those is pending and due
    first = new_task(due_in=-30)
    second = new_task(queue="mail", due_in=-10)
    await store.enqueue([first, second])
    assert await store.oldest_due() == pytest.approx(first.due_at)
    assert await store.oldest_due("mail") == pytest.approx(second.due_at)
    assert await store.oldest_due("nope") is None
    [claim] = await store.claim("w", 1, 30, queues=("default",))
    assert claim.id == first.id
    assert await store.oldest_due() == pytest.approx(second.due_at)


async def test_run_now_makes_waiting_tasks_due_and_leaves_the_others(store):
    later = new_task(due_in=60)
    await store.enqueue([later])
    assert await store.claim("w", 10, 30) == []
    untouched = [await make(store, state) for state in ("held", "running", "succeeded")]
    assert await store.run_now([later.id, *untouched, "no-such-id"]) == 1
    status = await store.get(later.id)
    assert status.state == "pending" and status.due_at <= time.time()
    assert [c.id for c in await store.claim("w", 10, 30)] == [later.id]
    states = [(await store.get(task_id)).state for task_id in untouched]
    assert states == ["held", "running", "succeeded"]
    assert await store.run_now([later.id]) == 0  # running now


async def test_run_now_puts_a_gated_task_in_its_line_at_once(store):
    gated = new_task(due_in=60, rate_gate="r", rate_limit=5, rate_window=60)
    await store.enqueue([gated])
    assert await store.claim("w", 10, 30) == []
    assert await store.run_now([gated.id]) == 1
    assert [c.id for c in await store.claim("w", 10, 30)] == [gated.id]


async def test_run_now_wakes_a_waiting_worker(store):
    later = new_task(due_in=60)
    await store.enqueue([later])
    await store.claim("w", 10, 30)
    await store.wait(0)  # the write's own signal taken
    waiter = asyncio.create_task(store.wait(20))
    started = time.monotonic()
    await asyncio.sleep(0)
    assert await store.run_now([later.id]) == 1
    await asyncio.wait_for(waiter, 10)
    # Woken, not timed out (Redis's wait also ends after its operation timeout, 2 s).
    assert time.monotonic() - started < 1.0
    assert [c.id for c in await store.claim("w", 10, 30)] == [later.id]


async def test_delete_removes_finished_tasks_only(store):
    finished = [await make(store, state) for state in ("succeeded", "failed", "cancelled")]
    live = [await make(store, state) for state in ("pending", "scheduled", "held", "running")]
    assert await store.delete([*finished, *live, "no-such-id"]) == 3
    for task_id in finished:
        assert await store.get(task_id) is None
    assert [(await store.get(task_id)).state for task_id in live] == [
        "pending",
        "pending",
        "held",
        "running",
    ]
    assert await store.delete(finished) == 0
    assert set(await ids_of(store)) == set(live)
    assert await store.failure_groups() == []


async def test_bad_input_is_refused_naming_the_problem(store):
    with pytest.raises(ValueError, match="limit"):
        await store.search(TaskFilter(), limit=0)
    with pytest.raises(ValueError, match="scan"):
        await store.search(TaskFilter(), scan=0)
    with pytest.raises(ValueError, match="scan"):
        await store.failure_groups(scan=-1)
    with pytest.raises(ValueError, match=r"'done'.*pending, scheduled, running, succeeded"):
        await store.search(TaskFilter(state="done"))


async def test_get_names_the_tasks_a_sequence_member_runs_after(store):
    first, second = new_task(), new_task()
    third = new_task(after=(first.id, second.id))
    await store.enqueue([first, second, third])
    assert (await store.get(third.id)).after == (first.id, second.id)
    assert (await store.get(first.id)).after == ()
    [found] = (await store.search(TaskFilter(id=third.id))).tasks
    assert found.after == ()  # searches leave it out, to stay cheap
