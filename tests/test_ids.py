import threading
import time

from backbeat.ids import id_timestamp, new_id

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_ids_are_ulid_shaped():
    task_id = new_id()
    assert len(task_id) == 26
    assert set(task_id) <= CROCKFORD


def test_ids_sort_by_creation_even_within_one_millisecond():
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_from_many_threads_are_unique():
    results: list[list[str]] = [[] for _ in range(4)]

    def make(bucket: list[str]) -> None:
        bucket.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [task_id for bucket in results for task_id in bucket]
    assert len(set(every)) == len(every)
    for bucket in results:
        assert bucket == sorted(bucket)


def test_id_encodes_its_creation_time():
    before = time.time()
    task_id = new_id()
    after = time.time()
    assert before - 0.002 <= id_timestamp(task_id) <= after + 0.002
