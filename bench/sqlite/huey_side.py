"""huey's half of bench/sqlite, run in the peers' venv (bench/.venv-peers).

python huey_side.py enqueue N DB     -> {"rate": enqueues/s}        (32 producer threads)
python huey_side.py e2e N DB         -> {"rate": tasks/s}           (one process, 4 worker threads)
python huey_side.py consume DB       -> a consumer process (4 worker threads) until killed
python huey_side.py count DB         -> {"done": results stored}
"""

import json
import sys
import threading
import time

from huey import SqliteHuey

PRODUCERS = 32
WORKERS = 4


def make_huey(path: str) -> SqliteHuey:
    return SqliteHuey("bench", filename=path)


def register(huey: SqliteHuey):  # type: ignore[no-untyped-def]
    @huey.task()
    def noop(index: int) -> int:
        return 1

    return noop


def produce(noop, total: int) -> float:  # type: ignore[no-untyped-def]
    per = total // PRODUCERS

    def producer() -> None:
        for index in range(per):
            noop(index)

    threads = [threading.Thread(target=producer) for _ in range(PRODUCERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per * PRODUCERS / (time.perf_counter() - started)


def consumer(huey: SqliteHuey):  # type: ignore[no-untyped-def]
    # Short idle polling (huey's default backs off to 10 s), like backbeat's 0.05 s poll.
    return huey.create_consumer(
        workers=WORKERS,
        worker_type="thread",
        periodic=False,
        initial_delay=0.01,
        backoff=1.15,
        max_delay=0.1,
    )


def main() -> None:
    command = sys.argv[1]
    if command == "enqueue":
        total, path = int(sys.argv[2]), sys.argv[3]
        huey = make_huey(path)
        print(json.dumps({"rate": produce(register(huey), total)}))
    elif command == "e2e":
        total, path = int(sys.argv[2]), sys.argv[3]
        huey = make_huey(path)
        noop = register(huey)
        running = consumer(huey)
        running.start()
        started = time.perf_counter()
        produce(noop, total)
        expected = total // PRODUCERS * PRODUCERS
        while huey.result_count() < expected:
            time.sleep(0.01)
        rate = expected / (time.perf_counter() - started)
        running.stop(graceful=False)
        print(json.dumps({"rate": rate}))
    elif command == "consume":
        huey = make_huey(sys.argv[2])
        register(huey)
        consumer(huey).run()
    elif command == "count":
        print(json.dumps({"done": make_huey(sys.argv[2]).result_count()}))
    elif command == "produce":
        total, path = int(sys.argv[2]), sys.argv[3]
        huey = make_huey(path)
        print(json.dumps({"rate": produce(register(huey), total)}))


if __name__ == "__main__":
    main()
