"""`backbeat queues` as an operator meets it: counts per queue, pause and resume kept in the
store, `backbeat status` naming the paused ones. Real subprocesses on a real SQLite store."""

import json

import pytest

from backbeat.stores import SQLiteStore
from tests.stores.rows import new_task
from tests.test_cli import backbeat

pytestmark = [pytest.mark.anyio, pytest.mark.process]


async def test_queues_are_listed_paused_and_resumed_in_the_store(tmp_path):
    url = f"sqlite:///{tmp_path}/tasks.db"
    store = SQLiteStore(tmp_path / "tasks.db")
    await store.enqueue([new_task(queue="mail") for _ in range(3)] + [new_task(queue="default")])
    [claim] = await store.claim("w", 1, 30, queues=("mail",))
    await store.close()

    listed = backbeat("queues", "--store", url)
    assert listed.returncode == 0, listed.stderr
    header, default, mail = listed.stdout.splitlines()
    assert header.split()[:4] == ["QUEUE", "PAUSED", "PENDING", "SCHEDULED"]
    assert default.split()[:3] == ["default", "-", "1"]
    assert mail.split()[:5] == ["mail", "-", "2", "0", "1"]  # two pending, one running

    paused = backbeat("queues", "pause", "mail", "--store", url)
    assert (paused.returncode, paused.stderr) == (0, "")
    assert paused.stdout.startswith("queue mail paused: none of its tasks starts")
    ahead = backbeat("queues", "pause", "reports", "--store", url)
    assert "(it has no task yet: paused ahead)" in ahead.stdout
    documents = [
        json.loads(line)
        for line in backbeat("queues", "--json", "--store", url).stdout.splitlines()
    ]
    assert [(d["queue"], d["paused"]) for d in documents] == [
        ("default", False),
        ("mail", True),
        ("reports", True),
    ]
    assert documents[1]["counts"]["pending"] == 2
    assert documents[1]["counts"]["running"] == 1
    status = backbeat("status", "--store", url)
    assert "paused queues: mail, reports" in status.stdout
    assert "mail (paused)" in status.stdout

    # The pause is in the store: another process claims nothing of the queue.
    store = SQLiteStore(tmp_path / "tasks.db")
    assert [c.queue for c in await store.claim("w2", 10, 30)] == ["default"]
    await store.close()

    resumed = backbeat("queues", "resume", "mail", "--store", url)
    assert (resumed.returncode, resumed.stdout) == (0, "queue mail resumed: its tasks run again\n")
    assert "paused queues: reports" in backbeat("status", "--store", url).stdout

    again = backbeat("queues", "resume", "mail", "--store", url)
    assert again.returncode == 1
    assert again.stderr == (
        "backbeat queues: error: queue 'mail' is not paused (paused: reports)\n"
    )
    nameless = backbeat("queues", "pause", "--store", url)
    assert nameless.returncode == 1
    assert "say which queue to pause" in nameless.stderr
    missing = backbeat("queues", "--store", f"sqlite:///{tmp_path}/none.db")
    assert missing.returncode == 2
    assert claim.queue == "mail"
