"""Periodic tasks: what a schedule is, when it ticks, and what is done about each tick.

A schedule names a task function, the arguments to call it with, and a rule: a cron
expression in a time zone (`Cron`, parsed by the `cronsim` library, the ``cron``
extra) or a fixed interval (`Every`). Ticks are whole seconds since the epoch, the same
in every process that imports the app: that is what lets every process try to enqueue a
tick while the store lets exactly one of them do it (`backbeat.engine.scheduler`).

`plan` is the decision, as a pure function of the schedule, what the store says of it
and the time: which ticks to enqueue, and which to skip (missed while everything was
down, too late, or a first tick that was not on time).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MissedTicks = Literal["latest", "all", "skip"]
MISSED_POLICIES: tuple[str, ...] = get_args(MissedTicks)

# A tick found this many seconds late or less is on time: the processes wake at each tick,
# and a busy one may be late by this much. A schedule never fired before (or whose rule
# changed) fires only an on-time tick, and ``missed="skip"`` skips any later one.
ON_TIME = 10.0


class Rule(Protocol):
    """When a schedule ticks; `text` is how the store and `backbeat schedules` show it."""

    @property
    def text(self) -> str: ...

    def after(self, moment: int) -> int:
        """The first tick later than `moment`."""
        ...

    def at_or_before(self, moment: int) -> int | None:
        """The latest tick at `moment` or before it (None: there is none)."""
        ...


@dataclass(frozen=True, slots=True)
class Every:
    """A tick every `seconds`, at whole multiples of it since the epoch (UTC): every
    process finds the same ticks, and ``every=timedelta(hours=1)`` ticks on the hour."""

    seconds: int

    @property
    def text(self) -> str:
        return f"every {self.seconds}s"

    def after(self, moment: int) -> int:
        return (moment // self.seconds + 1) * self.seconds

    def at_or_before(self, moment: int) -> int | None:
        return moment // self.seconds * self.seconds


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression (5 fields, or 6 with seconds first) read in a time zone.

    Time zone changes follow Debian's cron (as `cronsim` does): a job set for a time the
    clock skips when it springs forward runs once, at the jump; a job set for a time the
    clock passes twice when it falls back runs once, the first time; a job whose hour is
    a wildcard follows the real clock (``*/30 * * * *`` ticks every 30 minutes of real time).
    """

    expression: str
    zone: str = "UTC"

    def __post_init__(self) -> None:
        self._cronsim()(self.expression, datetime.now(UTC))  # fail now on a bad expression

    @property
    def text(self) -> str:
        return f"cron {self.expression} {self.zone}"

    def after(self, moment: int) -> int:
        ticks = self._cronsim()(self.expression, self._local(moment))
        while True:
            # A fixed time is matched on the wall clock (Debian's way): inside an hour the
            # clock passes twice, the match may be one already passed. Never go back.
            tick = int(next(ticks).timestamp())
            if tick > moment:
                return tick

    def at_or_before(self, moment: int) -> int | None:
        ticks = self._cronsim()(self.expression, self._local(moment + 1), reverse=True)
        try:
            tick = int(next(ticks).timestamp())
            while tick > moment:
                tick = int(next(ticks).timestamp())
        except StopIteration:
            return None
        # Inside a repeated hour the wall clock may also step back past today's tick.
        while (later := self.after(tick)) <= moment:
            tick = later
        return tick

    def _local(self, moment: int) -> datetime:
        return datetime.fromtimestamp(moment, ZoneInfo(self.zone))

    @staticmethod
    def _cronsim() -> Any:
        try:
            from cronsim import CronSim
        except ImportError:
            raise ImportError(
                "cron schedules need the cronsim library: pip install 'backbeat[cron]' "
                "(or use every=timedelta(...))"
            ) from None
        return CronSim


def make_rule(cron: str | None, every: timedelta | float | None, tz: str | None) -> Cron | Every:
    """The rule of ``cron=``/``every=``/``tz=`` options; ValueError naming what is wrong."""
    if (cron is None) == (every is None):
        raise ValueError("a schedule needs exactly one of cron= or every=")
    if every is not None:
        if tz is not None:
            raise ValueError("tz= applies to cron= schedules; every= counts real seconds")
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"every= must be a timedelta or seconds, got {every!r}")
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"every= must be a whole number of seconds >= 1, got {every!r}")
        return Every(int(seconds))
    assert cron is not None
    zone = "UTC" if tz is None else tz
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone tz={zone!r} (an IANA name, e.g. 'Europe/Berlin')"
        ) from None
    if not isinstance(cron, str):
        raise ValueError(f"cron= must be a str, got {cron!r}")
    fields = cron.split()
    if len(fields) == 6 and not fields[2].startswith("*") and _changes_clocks(zone):
        raise ValueError(
            f"cron={cron!r} in tz={zone!r}: six fields (seconds first) follow the real clock, "
            "so a job at a fixed hour would run twice when the clocks fall back and not at all "
            "when they spring forward; use five fields for it (Debian's rules apply to those)"
        )
    try:
        return Cron(cron, zone)
    except ImportError:
        raise
    except Exception as exc:  # cronsim's CronSimError, and what a malformed field raises
        raise ValueError(f"cron={cron!r} is not a cron expression: {exc}") from None


def _changes_clocks(zone: str) -> bool:
    """Whether the zone's offset from UTC differs between January and July (DST)."""
    year = datetime.now(UTC).year
    offsets = {datetime(year, month, 1, tzinfo=ZoneInfo(zone)).utcoffset() for month in (1, 7)}
    return len(offsets) > 1


@dataclass(frozen=True, slots=True)
class Schedule:
    """A task function to enqueue at every tick of a rule."""

    name: str
    func: Callable[..., Any]
    rule: Cron | Every
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # After ticks were missed (every process down): enqueue the latest, all of them (the
    # newest `catch_up`), or none; a tick later than `max_lateness` seconds is skipped.
    missed: MissedTicks = "latest"
    catch_up: int = 10
    max_lateness: float | None = None
    # No tick is enqueued while the previous tick's task is still pending or running.
    skip_if_running: bool = False


def make_schedule(
    func: Callable[..., Any],
    *,
    name: str,
    cron: str | None = None,
    every: timedelta | float | None = None,
    tz: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    missed: MissedTicks = "latest",
    catch_up: int = 10,
    max_lateness: timedelta | float | None = None,
    skip_if_running: bool = False,
) -> Schedule:
    """A checked `Schedule`: ValueError or TypeError naming the first problem."""
    if not callable(func):
        raise TypeError(f"a schedule needs a function, got {func!r}")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"a schedule's name must be a non-empty str without spaces: {name!r}")
    rule = make_rule(cron, every, tz)
    if missed not in MISSED_POLICIES:
        raise ValueError(f"missed= must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
    if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 1:
        raise ValueError(f"catch_up= must be an int >= 1, got {catch_up!r}")
    lateness = max_lateness
    if isinstance(lateness, timedelta):
        lateness = lateness.total_seconds()
    if lateness is not None and (
        isinstance(lateness, bool) or not isinstance(lateness, int | float) or lateness <= 0
    ):
        raise ValueError(f"max_lateness= must be a timedelta or seconds > 0, got {max_lateness!r}")
    kwargs = dict(kwargs or {})
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"schedule {name!r} cannot call {func!r} with its arguments: {exc}"
        ) from None
    except ValueError:
        pass  # no signature to check (some builtins)
    return Schedule(
        name=name,
        func=func,
        rule=rule,
        args=tuple(args),
        kwargs=kwargs,
        missed=missed,
        catch_up=catch_up,
        max_lateness=None if lateness is None else float(lateness),
        skip_if_running=skip_if_running,
    )


@dataclass(frozen=True, slots=True)
class Tick:
    """A decision about one tick: enqueue its task, or record it as skipped (`note`)."""

    at: int
    enqueue: bool
    note: str = ""


def plan(
    schedule: Schedule, rule_stored: str | None, last_tick: int | None, now: float
) -> list[Tick]:
    """What to do now, oldest tick first: nothing when the latest tick was handled.

    `rule_stored` and `last_tick` are the store's record of the schedule (None: no record).
    A schedule never fired, or whose rule changed since, does not catch up: it fires an
    on-time tick only. The store still decides, tick by tick, whether this process is
    the one that handles it.
    """
    moment = int(now)
    latest = schedule.rule.at_or_before(moment)
    if latest is None or (last_tick is not None and latest <= last_tick):
        return []
    if last_tick is None or rule_stored != schedule.rule.text:
        return [_on_time_or_late(schedule, latest, now)] if now - latest <= ON_TIME else []
    if schedule.missed == "all":
        ticks = [latest]
        while len(ticks) < schedule.catch_up:
            earlier = schedule.rule.at_or_before(ticks[-1] - 1)
            if earlier is None or earlier <= last_tick:
                break
            ticks.append(earlier)
        return [_on_time_or_late(schedule, tick, now) for tick in reversed(ticks)]
    if schedule.missed == "skip" and now - latest > ON_TIME:
        return [Tick(latest, False, f"skipped: missed by {now - latest:.0f}s (missed='skip')")]
    return [_on_time_or_late(schedule, latest, now)]


def _on_time_or_late(schedule: Schedule, tick: int, now: float) -> Tick:
    late = now - tick
    if schedule.max_lateness is not None and late > schedule.max_lateness:
        return Tick(
            tick, False, f"skipped: {late:.0f}s late (max_lateness={schedule.max_lateness:g}s)"
        )
    return Tick(tick, True)


def shown_time(tick: int | None, zone: str = "UTC") -> str:
    """A tick as `backbeat schedules` shows it: ISO 8601 in the schedule's zone."""
    if tick is None:
        return "-"
    return datetime.fromtimestamp(tick, ZoneInfo(zone)).isoformat()


def rule_from_text(text: str) -> Cron | Every | None:
    """The rule a store keeps as text (None: not one this version can read)."""
    kind, _, rest = text.partition(" ")
    try:
        if kind == "every" and rest.endswith("s"):
            return Every(int(rest[:-1]))
        if kind == "cron":
            expression, _, zone = rest.rpartition(" ")
            return Cron(expression, zone)
    except (ValueError, ImportError):
        return None
    return None
