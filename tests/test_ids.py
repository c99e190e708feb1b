import itertools
import threading
import time
from collections import Counter

import pytest

from backbeat.ids import _ALPHABET, id_timestamp, new_id

CROCKFORD = set(_ALPHABET)


def random_part(task_id: str) -> int:
    value = 0
    for char in task_id[10:]:
        value = value * 32 + _ALPHABET.index(char)
    return value


def test_ids_are_ulid_shaped():
    task_id = new_id()
    assert len(task_id) == 26
    assert set(task_id) <= CROCKFORD


def test_ids_sort_by_creation_time_to_the_millisecond():
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    prefixes = [task_id[:10] for task_id in ids]
    assert prefixes == sorted(prefixes)
    time.sleep(0.002)
    assert new_id() > ids[-1]


def test_consecutive_ids_share_no_predictable_relation():
    # Before: 40 random bits per process, then a counter, so the next user's id
    # was one's own plus one. Now each id has 80 fresh bits from the CSPRNG.
    ids = [new_id() for _ in range(2_000)]
    parts = [random_part(task_id) for task_id in ids]
    assert all(0 <= part < 1 << 80 for part in parts)
    differences = Counter(b - a for a, b in itertools.pairwise(parts))
    assert differences.most_common(1)[0][1] == 1  # no common step between neighbours
    assert sum(b > a for a, b in itertools.pairwise(parts)) < 0.6 * len(parts)
    # Every one of the 80 bits varies, and each is set about half of the time.
    for bit in range(80):
        ones = sum(part >> bit & 1 for part in parts)
        assert 800 < ones < 1200, bit
    # Neighbours differ in about half their bits (a counter flips one or two).
    flipped = [bin(a ^ b).count("1") for a, b in itertools.pairwise(parts)]
    assert 30 < sum(flipped) / len(flipped) < 50


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


def test_id_encodes_its_creation_time():
    before = time.time()
    task_id = new_id()
    after = time.time()
    assert before - 0.002 <= id_timestamp(task_id) <= after + 0.002


@pytest.mark.process
def test_a_forked_child_does_not_reuse_its_parents_random_bytes():
    import os

    new_id()  # the parent has a buffer of random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave at once
        os.write(write, new_id()[10:].encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_part = os.read(read, 100).decode()
    assert len(child_part) == 16
    assert child_part != new_id()[10:]
