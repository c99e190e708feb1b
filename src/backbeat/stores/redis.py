"""The distributed store: Redis (≥ 6.2) or Valkey, through redis-py's asyncio client.

Every step of the store contract is one call of one Lua script (`redis.lua`, which
also describes the key layout), so each is atomic, and all keys of a store share
one hash tag (``{prefix}``), so the layout also works on Redis Cluster. Runnable
tasks are entries of one stream per queue and priority, read through a consumer
group inside the claim script; a claim's lease is the task's ``lease_until`` (a
sorted set per queue finds the expired ones), and the stream entry is moved to its
new owner with XCLAIM … JUSTID when it is taken over or renewed. Receipts are the
task id and its attempt number, as on SQL stores: a worker whose lease was lost
cannot settle the task.

An idle worker waits in `wait` on a blocking XREAD of the streams (from the last ids
its claim saw: nothing new is missed, and no entry is consumed outside the claim
script), capped by the soonest delayed or held task's due time.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=NAME]``, also
``rediss://`` (TLS) and ``unix:///path/to/socket``; ``?cluster=yes`` uses redis-py's
cluster client (any node as the entry point). ``timeout`` (seconds, default 2)
bounds each operation, connecting included; past it, or with Redis down, an operation
raises `StoreUnavailable` (a 503 for a request that would store a task). A write of tasks
carries a deadline (half the timeout, on Redis's clock) the script checks: one that lands
after its writer gave up stores nothing. `open` leaves a token under the prefix that each
later call checks: a flush is noticed, said, and the store set up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from backbeat.batching import TurnGroup
from backbeat.logs import log_dead_letters
from backbeat.status import FINISHED, STATES
from backbeat.stores import redis_queues, redis_search
from backbeat.stores.base import (
    STILL_RUNNING,
    ClaimedTask,
    DuplicateTask,
    GatedShare,
    NewTask,
    ScheduleRecord,
    Settlement,
    StoredStatus,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    WorkerInfo,
    after_ids,
    check_purgeable,
    lost_leases_error,
    split_receipt,
)
from backbeat.stores.inspection import AttemptRecord, FailureGroup, GateUsage, TaskFilter, TaskPage
from backbeat.stores.redis_rows import (
    STATUS_FIELDS,
    attempt_record,
    claimed,
    new_row,
    schedule_record,
    status,
    text,
)

T = TypeVar("T")

logger = logging.getLogger("backbeat")

_SCRIPT = resources.files("backbeat.stores").joinpath("redis.lua").read_text()
# The store's own keys, the script's KEYS (`KEY_NAMES` in redis.lua: the same, in this order).
_KEY_NAMES = (
    "ids", "queues", "held", "delayed", "streams", "bell", "made", "paused", "w", "we", "gused",
    "schedules", "gseq",
)  # fmt: skip


def _redis() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise StoreError("the Redis store needs redis-py: pip install 'backbeat[redis]'") from None
    return redis.asyncio


# The URL's query options: backbeat's, then those redis-py takes (and any ``ssl_*``).
_URL_OPTIONS = (
    "prefix",
    "cluster",
    "db",
    "client_name",
    "protocol",
    "max_connections",
    "socket_keepalive",
)


class _Marker:
    """What a store's handles (itself and its twins) know of the Redis under its prefix: the
    token `open` left there (a FLUSHDB or FLUSHALL takes it away), how many unfinished tasks
    it held when last counted (at start-up and at each write of tasks), and its clock."""

    def __init__(self) -> None:
        self.token = ""  # "": not opened for writing; nothing is checked
        self.unfinished = 0
        self.counted_at = 0.0
        self.clock_offset = 0.0  # Redis's clock minus this host's
        self.clock_measured = False


class RedisStore:
    """Tasks in Redis; one client per event loop (`twin` makes another)."""

    def __init__(
        self, url: str, *, prefix: str = "backbeat", timeout: float = 2.0, create: bool = True
    ) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = [
            name for name in query if name not in _URL_OPTIONS and not name.startswith("ssl_")
        ]
        if unknown:
            raise StoreError(
                f"unknown Redis URL option(s) {', '.join(unknown)}: the options are "
                f"{', '.join(_URL_OPTIONS)} and ssl_* (for rediss://)"
            )
        prefix = query.pop("prefix", prefix)
        cluster = query.pop("cluster", "no").lower()
        if cluster not in ("yes", "no", "true", "false", "1", "0"):
            raise StoreError(f"bad Redis URL option cluster={cluster!r}: yes or no")
        self.cluster = cluster in ("yes", "true", "1")
        if not prefix or "{" in prefix or "}" in prefix:
            raise StoreError(f"bad Redis key prefix {prefix!r}: a non-empty name without braces")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        # False (the CLI's read-only commands): `open` writes nothing, and there must be a
        # store under the prefix already.
        self.create = create
        self.db = query.get("db") or parts.path.strip("/") or "0"
        self._connect_url = urlunsplit(parts._replace(query=urlencode(query)))
        self._tag = "{" + prefix + "}"
        self._keys = [f"{self._tag}:{name}" for name in _KEY_NAMES]
        self._marker = _Marker()
        self._client: Any = None
        self._script: Any = None
        self._seen: dict[str, str] = {}  # stream -> the last entry id a claim or wait saw
        self._shares = GatedShare()
        self._enqueues: TurnGroup[list[NewTask], list[str]] = TurnGroup(
            lambda groups: asyncio.ensure_future(self._enqueue_groups(groups))
        )

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> RedisStore:
        return cls(url, create=create)

    def __repr__(self) -> str:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            where = f"unix://{parts.path}"
        else:
            where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
        return f"RedisStore({where}, db={self.db}, prefix={self.prefix!r})"

    def twin(self) -> RedisStore:
        twin = RedisStore(self.url, prefix=self.prefix, timeout=self.timeout, create=self.create)
        twin._marker = self._marker
        return twin

    async def open(self) -> None:
        sent = time.time()
        token, found, unfinished, clock = await self._call(
            "open", sent, uuid.uuid4().hex, int(self.create)
        )
        self._measured(sent, clock)
        if not found:
            raise StoreMissing(
                f"no backbeat store under prefix {self.prefix!r} in {self!r} (nothing was created)"
            )
        self._counted(unfinished)
        if self.create:
            self._marker.token = token
            await self._warn_of_eviction()

    def _counted(self, unfinished: int) -> None:
        self._marker.unfinished = unfinished
        self._marker.counted_at = time.time()

    async def _warn_of_eviction(self) -> None:
        """Redis may evict keys when full, unless told not to: tasks would vanish."""
        try:
            async with asyncio.timeout(self.timeout):
                info = await self._client.info("memory")
        except Exception as exc:  # INFO may be disabled (a managed Redis): not worth failing
            logger.debug("backbeat: cannot read %r's maxmemory-policy: %s", self, exc)
            return
        policy = info.get("maxmemory_policy") if isinstance(info, dict) else None
        if policy not in (None, "noeviction"):
            logger.warning(
                "backbeat: %r has maxmemory-policy %s: when it is full, Redis deletes keys, "
                "tasks among them. Set maxmemory-policy noeviction (a full Redis then refuses "
                "writes: 503s, nothing lost).",
                self,
                policy,
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _connect(self) -> Any:
        if self._client is None:
            redis = _redis()
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError

            client_class = redis.RedisCluster if self.cluster else redis.Redis
            self._client = client_class.from_url(
                self._connect_url,
                decode_responses=True,
                # Bytes that are not UTF-8 (a value written outside backbeat) fail the one
                # task that holds them (its arguments cannot be read), not the whole reply.
                encoding_errors="surrogateescape",
                socket_timeout=self.timeout,
                # One retry on a new connection (a pooled one may have died with a Redis
                # that came back since), both attempts within `timeout`.
                socket_connect_timeout=self.timeout / 2,
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[ConnectionError],
                health_check_interval=30,
            )
            self._script = self._client.register_script(_SCRIPT)
        return self._client

    async def _call(self, step: str, *args: object) -> Any:
        self._connect()
        token = self._marker.token
        try:
            # The whole operation, a reconnection and its retry included, within `timeout`.
            async with asyncio.timeout(self.timeout):
                return await self._script(
                    keys=self._keys,
                    args=[f"{step} {token}" if token else step, self._tag, *args],
                )
        except Exception as exc:
            if str(exc).startswith("GONE "):
                await self._flushed(token)
            raise _translated(exc, self) from exc

    async def _flushed(self, token: str) -> None:
        """The data under the prefix is gone (the token `open` left is): say so once, with
        how many tasks were lost, set the store up again, and refuse this call."""
        marker = self._marker
        if marker.token == token:  # the first of this store's handles to find out
            marker.token = ""
            logger.error(
                "backbeat: the data of %r is gone (FLUSHDB, FLUSHALL, an eviction or its keys "
                "deleted): the %d unfinished task(s) it held when last counted (%s) are lost. "
                "Writes in flight are refused (503); the store is set up again.",
                self,
                marker.unfinished,
                time.strftime("%H:%M:%S", time.localtime(marker.counted_at)),
            )
            self._seen.clear()
            await self.open()
        raise StoreUnavailable(f"{self!r}: its data is gone (flushed or evicted); try again")

    def _measured(self, sent: float, clock: list[str], *, late: bool = False) -> None:
        """Redis's clock minus this host's (for the deadline of writes), from a call sent at
        `sent` that read it: kept if the call was quick (a slow one would skew it by up to
        half its time), if it is the first, or if the write it came with was refused as
        late (the offset known was wrong, or nothing would ever correct it)."""
        answered = time.time()
        marker = self._marker
        if late or not marker.clock_measured or answered - sent < self.timeout / 8:
            seconds, micros = clock
            marker.clock_offset = int(seconds) + int(micros) / 1e6 - (sent + answered) / 2
            marker.clock_measured = True

    # --- writes ----------------------------------------------------------------------------

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        """Enqueues made in one turn of the event loop go in one script call."""
        return await self._enqueues.call(tasks)

    async def _enqueue_groups(self, groups: list[list[NewTask]]) -> list[list[str] | BaseException]:
        # One JSON argument per group: redis-py encodes arguments one by one, in Python.
        sent = time.time()
        # When, on Redis's clock, this write comes too late to store anything: half the
        # timeout from now. Its caller gives up at the timeout (a request answers 503), and
        # a write that lands after that, from a frozen or stalled Redis, must not run.
        deadline = repr(sent + self._marker.clock_offset + self.timeout / 2)
        rows = [json.dumps([new_row(t) for t in tasks]) for tasks in groups]
        reply = await self._call("enqueue", sent, deadline, *rows)
        self._measured(sent, reply.pop(), late=reply[0] == "LATE")
        if reply[0] == "LATE":  # also when the clocks differ more than was measured: now they are
            raise StoreUnavailable(
                f"{self!r}: the write reached Redis {float(reply[1]):.1f}s after its deadline "
                "(a frozen or stalled server); nothing was stored"
            )
        *answers, unfinished = reply
        self._counted(unfinished)
        # A group's ids, or the one id that made it fail (a string).
        return [
            DuplicateTask(answer) if isinstance(answer, str) else list(answer) for answer in answers
        ]

    async def activate(self, ids: list[str]) -> None:
        await self._call("activate", time.time(), json.dumps(ids))

    async def activate_and_claim(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        ids_json = json.dumps(ids)
        rows = await self._call("activate_and_claim", time.time(), lease, worker, limit, ids_json)
        return [claimed(row) for row in rows]

    async def claim(
        self,
        worker: str,
        limit: int,
        lease: float,
        *,
        max_lost: int = 3,
        alone_first: bool = False,
        queues: tuple[str, ...] | None = None,
    ) -> list[ClaimedTask]:
        now = time.time()
        share = self._shares.next(limit)
        rows, dead, streams = await self._call(
            "claim",
            now,
            lease,
            worker,
            limit,
            max_lost,
            int(alone_first),
            share,
            lost_leases_error(max_lost),
            *(queues or ()),
        )
        self._saw(streams)
        log_dead_letters(dead)
        return [claimed(row) for row in rows]

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        args: list[object] = []
        for receipt in receipts:
            args += split_receipt(receipt)
        return list(await self._call("renew", time.time(), lease, *args))

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        rows = []
        for s in settlements:
            task_id, attempt = split_receipt(s.receipt)
            rows.append(
                [
                    task_id,
                    str(attempt),
                    s.state.value,
                    text(s.result),
                    text(s.error),
                    text(s.traceback),
                    text(s.retry_at),
                ]
            )
        return [bool(kept) for kept in await self._call("finish", time.time(), json.dumps(rows))]

    async def progress(self, receipt: str, document: str) -> bool:
        task_id, attempt = split_receipt(receipt)
        return bool(await self._call("progress", task_id, attempt, document))

    async def release(self, receipts: list[str]) -> None:
        args: list[object] = []
        for receipt in receipts:
            args += split_receipt(receipt)
        await self._call("release", time.time(), *args)

    async def cancel(self, ids: list[str], reason: str) -> int:
        return int(await self._call("cancel", time.time(), reason, *ids))

    async def retry(self, ids: list[str] | None) -> int:
        return int(await self._call("retry", time.time(), *(["*"] if ids is None else ids)))

    async def purge(
        self,
        finished_before: float,
        states: tuple[str, ...] = FINISHED,
        *,
        dry_run: bool = False,
    ) -> int:
        check_purgeable(states)
        return int(await self._call("purge", finished_before, int(dry_run), *states))

    async def warm_up(self, queues: tuple[str, ...] | None) -> None:
        """Nothing to get ready: the script is loaded and the pool connected by `open`."""

    async def heartbeat(self, worker: WorkerInfo, expires_in: float) -> None:
        worker.seen_at = time.time()
        document = json.dumps(worker.document())
        await self._call("beat", worker.seen_at, worker.name, document, expires_in)

    # --- reads -----------------------------------------------------------------------------

    async def _read_key(self, read: Callable[[Any], Awaitable[T]]) -> T:
        """`read` (given the client) within `timeout`: a read of one key, outside the script."""
        client = self._connect()
        try:
            async with asyncio.timeout(self.timeout):
                return await read(client)
        except Exception as exc:
            raise _translated(exc, self) from exc

    async def get(self, task_id: str) -> StoredStatus | None:
        key = f"{self._tag}:t:{task_id}"
        values = await self._read_key(lambda client: client.hmget(key, [*STATUS_FIELDS, "after"]))
        if values[1] is None:
            return None
        *fields, after = values
        found = status(task_id, fields)
        found.after = after_ids(after)
        return found

    async def queues(self) -> list[str]:
        return sorted(await self._call("queues"))

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        values = await self._call("counts", time.time(), queue or "")  # in STATES' order
        return dict(zip(STATES, (int(v) for v in values), strict=True))

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        ids = await redis_search.list_ids(self._call, state, queue, name, limit, before)
        found = [await self.get(task_id) for task_id in ids]
        return [found_status for found_status in found if found_status is not None]

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        return await redis_search.search(self._call, where, limit, before, scan)

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        return await redis_search.failure_groups(self._call, scan)

    async def oldest_due(self, queue: str | None = None) -> float | None:
        return await redis_search.oldest_due(self._call, queue)

    async def run_now(self, ids: list[str]) -> int:
        return int(await self._call("run_now", time.time(), *ids)) if ids else 0

    async def delete(self, ids: list[str]) -> int:
        return int(await self._call("delete", *ids)) if ids else 0

    async def workers(self, *, include_expired: bool = False) -> list[WorkerInfo]:
        server_now, *listed = await self._call("workers", "all" if include_expired else "live")
        # Expiry is kept on Redis's clock (hosts' clocks may disagree): given on ours.
        skew = time.time() - float(server_now)
        found = [
            WorkerInfo.from_document(json.loads(document), float(expires_at) + skew)
            for document, expires_at in zip(listed[::2], listed[1::2], strict=True)
        ]
        return sorted(found, key=lambda worker: worker.name)

    async def take_over(self, worker: str) -> list[str]:
        return [text(task_id) for task_id in await self._call("take_over", time.time(), worker)]

    async def schedules(self) -> list[ScheduleRecord]:
        return [schedule_record(values) for values in await self._call("schedules")]

    async def declare_schedules(self, schedules: list[tuple[str, str]]) -> None:
        if schedules:
            await self._call("declare", time.time(), *(part for pair in schedules for part in pair))

    async def fire_schedule(
        self,
        name: str,
        rule: str,
        tick: int,
        task: NewTask | None,
        note: str = "",
        *,
        skip_if_running: bool = False,
    ) -> ScheduleRecord | None:
        row = "" if task is None else json.dumps(new_row(task))
        fired = await self._call(
            "fire", time.time(), name, rule, tick, note, int(skip_if_running), STILL_RUNNING, row
        )
        return None if fired is None else schedule_record(fired)

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        return bool(await self._call("pause", time.time(), name, int(paused)))

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the store contract
        """Block on the streams (XREAD from the last ids seen) until an entry comes, the
        soonest held or delayed task is due, or `timeout` passes."""
        soonest, streams, gate_in = await self._call("due")
        if gate_in:  # a gate opens then (seconds from now, on Redis's clock)
            opens = time.time() + float(gate_in)
            soonest = str(opens) if not soonest else str(min(float(soonest), opens))
        bell = f"{self._tag}:bell"
        if not self._seen:
            # Any task entry there is news; the bell's past rings are not (the soonest due
            # time was just read).
            self._saw(streams)
            self._seen = {key: last if key == bell else "0-0" for key, last in self._seen.items()}
        else:
            self._saw(streams, only_new=True)
        since = dict(self._seen)
        # A ring after `soonest` was read is news even when a claim made meanwhile (a
        # poked worker claims while this wait goes on) has already seen it: that claim
        # took nothing not yet due, and nothing else would time the wait for it.
        rung = dict(zip(streams[::2], streams[1::2], strict=True)).get(bell)
        if rung is not None:
            since[bell] = rung
        # Stay inside the operation timeout: a blocked read is a read.
        timeout = min(timeout, max(self.timeout - 0.5, 0.1))
        due_first = False
        if soonest and float(soonest) - time.time() < timeout:
            timeout, due_first = max(float(soonest) - time.time(), 0.0) + 0.001, True
        if not since:
            await asyncio.sleep(timeout)
            return
        try:
            if due_first:
                # Redis ends a BLOCK only on its own clock tick (1/hz, 100 ms by default):
                # a due time is kept here instead (the read is dropped at the timeout).
                async with asyncio.timeout(timeout):
                    got = await self._client.xread(since, block=int(timeout * 1000) + 200)
            else:
                # BLOCK 0 would wait for ever: a zero timeout reads what is there and goes.
                block = int(timeout * 1000) or None
                got = await self._client.xread(since, block=block)
        except TimeoutError:
            return
        except Exception as exc:
            raise _translated(exc, self) from exc
        for stream, entries in got or ():
            if entries:
                self._seen[stream] = entries[-1][0]

    def _saw(self, streams: list[str], *, only_new: bool = False) -> None:
        for key, last in zip(streams[::2], streams[1::2], strict=True):
            if not only_new or key not in self._seen:
                self._seen[key] = last

    # --- queues and limits (the dashboard) ------------------------------------------------

    async def pause_queue(self, queue: str, paused: bool) -> None:
        await redis_queues.pause(self._call, queue, paused)

    async def paused_queues(self) -> list[str]:
        return await redis_queues.paused_queues(self._call)

    async def gate_usage(self) -> list[GateUsage]:
        return await redis_queues.gate_usage(self._call)

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        key = f"{self._tag}:a:{task_id}"
        listed = await self._read_key(lambda client: client.lrange(key, 0, -1))
        return [attempt_record(json.loads(entry)) for entry in listed]


def _translated(exc: Exception, store: RedisStore) -> StoreError:
    from redis import exceptions

    unreachable = (exceptions.ConnectionError, exceptions.TimeoutError, OSError, TimeoutError)
    if isinstance(exc, unreachable):
        why = str(exc) or f"no answer within {store.timeout}s"
        return StoreUnavailable(f"{store!r} cannot be reached: {why}")
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"{store!r}: {type(exc).__name__}: {exc}")
