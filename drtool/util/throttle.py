"""Rate limiters for bytes (repository bandwidth) and documents (reads from the primary).

This is the only module that imports asyncio-throttle. Its ``Throttler(rate_limit, period,
retry_interval)`` is a count-based sliding window (at most ``rate_limit`` acquisitions in any
``period``, polled every ``retry_interval``) with no weighted acquire. So a rate of ``rate``
units per second is turned into permits of a fixed-size *chunk* of units:

* ``period`` is short (``PERIOD`` = 0.1 s), so the largest burst is a tenth of a second's budget,
  never a whole second's; ``retry_interval`` is ``period / 100``.
* ``permits`` per period is a whole number near ``rate * period / chunk_hint`` and the chunk is
  then ``rate * period / permits`` exactly, so ``permits * chunk / period == rate`` (a
  fractional ``rate_limit`` would act as the next whole number and overshoot by up to 100%).
* Callers are served one at a time, first come first served (an ``asyncio.Lock``), so only one
  task ever polls the throttler. asyncio-throttle itself is not fair and, with many waiters
  polling at once, overshoots at window edges; serialising removes both problems.
* A waiter polling every ``retry_interval`` notices a freed slot a little late, so the achieved
  rate falls short of ``permits / period`` by about ``retry_interval / period`` plus event-loop
  latency. The throttler's window is shortened by ``LATENESS`` (measured with
  bench/throttle.py) to compensate.

Units left over from a permit (a request rarely is a whole number of chunks) are kept as
credit for the next request, so the long-run rate is exact whatever the request sizes.

Everything here runs in one event loop (asyncio-throttle is not thread-safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from asyncio_throttle import Throttler

from drtool.util.units import BandwidthSchedule

#: Window of the underlying throttler, seconds: the largest burst is this much of the budget.
PERIOD = 0.1
#: Bytes per permit aimed at by ``ByteRateLimiter`` (the real chunk is within a factor ~1.5).
BYTE_CHUNK = 64 * 1024
#: Documents per permit aimed at by ``DocRateLimiter``.
DOC_CHUNK = 100
#: Fraction of ``PERIOD`` by which the throttler's window is shortened to make up for the
#: waiter's polling delay: it notices a freed slot on average half a ``retry_interval`` late
#: (``PERIOD / 200``). bench/throttle.py, 30 s runs, 4 writers: -0.5..-0.7% without, about 0
#: with it.
LATENESS = 0.005

_EPSILON = 1e-6  # units: a millionth of a byte or document is nothing

#: Builds a throttler: ``factory(rate_limit, period, retry_interval)`` -> an object with
#: ``async acquire()``. Tests substitute a counting fake.
ThrottlerFactory = Callable[[int, float, float], Any]


@dataclass(frozen=True)
class Window:
    """How a rate is put into permits: ``permits`` acquisitions per ``period``, each worth
    ``chunk`` units, from ``throttler``."""

    rate: float
    permits: int
    chunk: float
    throttler: Any


class RateLimiter:
    """Limits a flow of units (bytes, documents) to ``rate`` units per second.

    Contract:

    * ``await acquire(n)`` returns once ``n`` more units may flow. Over any stretch of time the
      units granted are at most ``rate * time`` plus one period's budget (``rate * period``)
      plus one chunk of credit; a single request may be larger than that and is then served
      over as long as its size requires (acquire *before* sending, so nothing is ever sent
      ahead of the budget).
    * ``rate`` None means unlimited: ``acquire`` returns at once without touching the
      throttler (and callers queued behind a limited request are released within one period).
    * ``set_rate`` takes effect for the rest of the request being served and for later ones;
      setting the current rate again changes nothing. A new rate starts a fresh window.
    * Requests are served first come first served. Cancelling ``acquire`` forfeits the permits
      it took (conservative: they are not given to the next caller).
    * Use from one event loop only.
    """

    def __init__(
        self, rate: float | None, *, chunk: float, period: float = PERIOD,
        lateness: float = LATENESS, throttler_factory: ThrottlerFactory = Throttler,
    ) -> None:
        if chunk <= 0 or period <= 0 or not 0 <= lateness < 0.5:
            raise ValueError("chunk and period must be positive, lateness in [0, 0.5)")
        self.chunk_hint = chunk
        self.period = period
        self.lateness = lateness
        self._factory = throttler_factory
        self._window: Window | None = None
        self._credit = 0.0
        self._lock = asyncio.Lock()
        #: Permits taken so far (all windows): for tests and benches.
        self.permits_taken = 0
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        """Units per second now in force; None = unlimited."""
        self._before_acquire()
        return None if self._window is None else self._window.rate

    @property
    def window(self) -> Window | None:
        """The current permit layout (None when unlimited)."""
        return self._window

    def set_rate(self, rate: float | None) -> None:
        """Change the limit (units per second, > 0) or lift it (None)."""
        if rate is not None and not rate > 0:
            raise ValueError(f"a rate must be above zero or None (unlimited), not {rate!r}")
        current = self._window
        if (current.rate if current is not None else None) == rate:
            return
        if rate is None:
            self._window = None
            return
        permits = max(1, round(rate * self.period / self.chunk_hint))
        throttler = self._factory(permits, self.period * (1 - self.lateness), self.period / 100)
        self._window = Window(rate, permits, rate * self.period / permits, throttler)

    async def acquire(self, n: float) -> None:
        """Wait until ``n`` (>= 0) more units may flow (see the class contract)."""
        if n < 0:
            raise ValueError("cannot acquire a negative amount")
        self._before_acquire()
        if self._window is None or n == 0:
            return
        async with self._lock:
            owed = n - self._credit
            self._credit = 0.0
            while owed > _EPSILON:  # not 0: float sums of chunks must not cost an extra permit
                self._before_permit()
                window = self._window
                if window is None:  # lifted while we waited
                    return
                await window.throttler.acquire()
                self.permits_taken += 1
                owed -= window.chunk
            self._credit = max(0.0, -owed)

    # Hooks for subclasses whose rate depends on something else (ScheduledLimiter).
    def _before_acquire(self) -> None:
        """Called at the start of every ``acquire`` (and by ``rate``)."""

    def _before_permit(self) -> None:
        """Called before each permit a request waits for."""


class ByteRateLimiter(RateLimiter):
    """A ``RateLimiter`` for bytes per second, in permits of about ``BYTE_CHUNK`` bytes."""

    def __init__(self, rate: float | None, **kwargs: Any) -> None:
        kwargs.setdefault("chunk", BYTE_CHUNK)
        super().__init__(rate, **kwargs)


class DocRateLimiter(RateLimiter):
    """A ``RateLimiter`` for documents per second, in permits of about ``DOC_CHUNK`` documents.

    For reads from the primary: acquire the size of each batch as it arrives, before using it,
    so that the next batch is requested no sooner than the budget allows. Keep batches small
    against the rate (at most a tenth of a second's worth) or each batch is a burst."""

    def __init__(self, rate: float | None, **kwargs: Any) -> None:
        kwargs.setdefault("chunk", DOC_CHUNK)
        super().__init__(rate, **kwargs)


class ScheduledLimiter(ByteRateLimiter):
    """A ``ByteRateLimiter`` whose rate follows a ``BandwidthSchedule`` for one ``direction``.

    The schedule is read (``limits_at``) when the limiter is made and again only once the clock
    reaches the instant ``next_change_after`` named (or if the clock went backwards, e.g. at the
    end of daylight saving time); in between, each ``acquire`` and each permit waited for costs
    one clock reading and a comparison. A change therefore applies within one permit, even in
    the middle of a large request. ``clock`` returns the wall-clock time the timetable is
    written in (default: local time, ``datetime.now``); tests pass a fake clock.
    """

    def __init__(
        self, schedule: BandwidthSchedule, direction: Literal["upload", "download"], *,
        clock: Callable[[], datetime] = datetime.now, **kwargs: Any,
    ) -> None:
        if direction not in ("upload", "download"):
            raise ValueError(f"direction must be 'upload' or 'download', not {direction!r}")
        self.schedule = schedule
        self.direction = direction
        self._clock = clock
        self._index = 0 if direction == "upload" else 1
        self._read_at: datetime | None = None
        self._next_change: datetime | None = None
        super().__init__(None, **kwargs)
        self._refresh(clock())

    @property
    def next_change(self) -> datetime | None:
        """When the schedule will next be read again (None: it never changes)."""
        return self._next_change

    def _refresh(self, now: datetime) -> None:
        self.set_rate(self.schedule.limits_at(now)[self._index])
        self._read_at = now
        self._next_change = self.schedule.next_change_after(now)

    def _before_acquire(self) -> None:
        if self._next_change is None:  # constant limits: never look at the clock
            return
        now = self._clock()
        if now >= self._next_change or (self._read_at is not None and now < self._read_at):
            self._refresh(now)

    _before_permit = _before_acquire


def bandwidth_limiters(
    schedule: BandwidthSchedule | None, *, clock: Callable[[], datetime] = datetime.now,
) -> tuple[RateLimiter | None, RateLimiter | None]:
    """(upload, download) limiters for ``throttle.bandwidth``; None for a direction that is
    never limited (no schedule, or ``off`` at every time of the week)."""
    if schedule is None:
        return None, None
    result: list[RateLimiter | None] = []
    for index, direction in enumerate(("upload", "download")):
        if all((e.upload, e.download)[index] is None for e in schedule.entries):
            result.append(None)
        else:
            result.append(ScheduledLimiter(schedule, direction, clock=clock))  # type: ignore[arg-type]
    return result[0], result[1]
