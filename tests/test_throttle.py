"""Rate limiters: permit arithmetic, rate changes, unlimited pass-through, fairness, schedules.

No test measures time: the throttler is replaced by a counting fake (``FakeThrottlers``), and
schedules read an injected clock. bench/throttle.py measures the real rates.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import datetime, timedelta

import pytest

from drtool.util.throttle import (
    BYTE_CHUNK,
    LATENESS,
    PERIOD,
    ByteRateLimiter,
    DocRateLimiter,
    RateLimiter,
    ScheduledLimiter,
    bandwidth_limiters,
)
from drtool.util.units import BandwidthSchedule

MiB = 1024 * 1024
MONDAY = datetime(2024, 1, 1)  # a Monday


class FakeThrottler:
    def __init__(self, owner: "FakeThrottlers", rate_limit: int, period: float, retry: float):
        self.owner = owner
        self.args = (rate_limit, period, retry)
        self.acquired = 0

    async def acquire(self) -> None:
        self.owner.inside += 1
        self.owner.max_inside = max(self.owner.max_inside, self.owner.inside)
        try:
            await asyncio.sleep(0)  # let other tasks run, as a real wait would
            self.acquired += 1
            self.owner.total += 1
            if self.owner.on_acquire is not None:
                self.owner.on_acquire(self)
        finally:
            self.owner.inside -= 1


class FakeThrottlers:
    """A throttler factory that records every throttler it made and every permit taken."""

    def __init__(self) -> None:
        self.made: list[FakeThrottler] = []
        self.total = 0
        self.inside = 0
        self.max_inside = 0
        self.on_acquire = None

    def __call__(self, rate_limit: int, period: float, retry: float) -> FakeThrottler:
        throttler = FakeThrottler(self, rate_limit, period, retry)
        self.made.append(throttler)
        return throttler


@pytest.fixture
def fakes() -> FakeThrottlers:
    return FakeThrottlers()


# --- the permit layout ----------------------------------------------------------------------
@pytest.mark.parametrize("rate", [10 * 1024, 1 * MiB, 5 * MiB, 20 * MiB, 1.5 * MiB, 1024 * MiB])
def test_window_has_whole_permits_that_add_up_to_the_rate(fakes, rate):
    limiter = ByteRateLimiter(rate, throttler_factory=fakes)
    w = limiter.window
    assert isinstance(w.permits, int) and w.permits >= 1
    assert w.permits * w.chunk / PERIOD == pytest.approx(rate, rel=1e-12)
    if rate * PERIOD >= BYTE_CHUNK:
        assert BYTE_CHUNK / 1.5 <= w.chunk <= BYTE_CHUNK * 1.5
    assert fakes.made[-1].args == (w.permits, PERIOD * (1 - LATENESS), PERIOD / 100)


def test_real_throttler_is_configured_for_short_windows():
    w = ByteRateLimiter(8 * MiB).window
    assert type(w.throttler).__module__.startswith("asyncio_throttle")
    assert w.throttler.rate_limit == w.permits == 13  # 0.8 MiB per 0.1 s in ~64 KiB permits
    assert w.throttler.period == pytest.approx(PERIOD * (1 - LATENESS))
    assert w.throttler.retry_interval == pytest.approx(PERIOD / 100)


async def test_real_throttler_grants_one_windows_budget():
    limiter = ByteRateLimiter(1024 * MiB)
    await limiter.acquire(limiter.window.permits * limiter.window.chunk)
    assert limiter.permits_taken == limiter.window.permits


# --- counting permits -----------------------------------------------------------------------
async def test_a_request_takes_one_permit_per_chunk(fakes):
    limiter = ByteRateLimiter(5 * MiB, throttler_factory=fakes)
    chunk = limiter.window.chunk
    await limiter.acquire(10 * chunk)
    assert fakes.total == 10
    await limiter.acquire(0)
    assert fakes.total == 10


async def test_leftover_of_a_permit_is_credit_for_the_next_request(fakes):
    limiter = ByteRateLimiter(5 * MiB, throttler_factory=fakes)
    chunk = limiter.window.chunk
    await limiter.acquire(1)
    assert fakes.total == 1
    await limiter.acquire(chunk - 1)  # covered by the first permit
    assert fakes.total == 1
    await limiter.acquire(1)
    assert fakes.total == 2


async def test_many_odd_sized_requests_are_charged_exactly(fakes):
    limiter = ByteRateLimiter(3 * MiB, throttler_factory=fakes)
    rng = random.Random(7)
    sizes = [rng.randrange(1, 300_000) for _ in range(500)]
    for n in sizes:
        await limiter.acquire(n)
    assert fakes.total == math.ceil(sum(sizes) / limiter.window.chunk)


async def test_doc_limiter_counts_documents(fakes):
    limiter = DocRateLimiter(20_000, throttler_factory=fakes)
    assert limiter.window.permits == 20 and limiter.window.chunk == pytest.approx(100)
    for _ in range(10):
        await limiter.acquire(1000)
    assert fakes.total == 100


async def test_negative_request_and_bad_rates_are_refused(fakes):
    limiter = ByteRateLimiter(MiB, throttler_factory=fakes)
    with pytest.raises(ValueError):
        await limiter.acquire(-1)
    for bad in (0, -5.0):
        with pytest.raises(ValueError):
            limiter.set_rate(bad)
    assert limiter.rate == MiB


# --- unlimited and rate changes -------------------------------------------------------------
async def test_unlimited_passes_through_without_a_throttler(fakes):
    limiter = ByteRateLimiter(None, throttler_factory=fakes)
    await limiter.acquire(10**12)
    assert limiter.rate is None and limiter.window is None
    assert fakes.made == [] and fakes.total == 0


async def test_set_rate_swaps_the_window_and_none_lifts_it(fakes):
    limiter = ByteRateLimiter(MiB, throttler_factory=fakes)
    first = limiter.window
    limiter.set_rate(MiB)  # same rate: same window, no fresh burst
    assert limiter.window is first and len(fakes.made) == 1
    limiter.set_rate(20 * MiB)
    assert limiter.rate == 20 * MiB and limiter.window.permits == 32 and len(fakes.made) == 2
    await limiter.acquire(limiter.window.chunk * 3)
    assert fakes.made[0].acquired == 0 and fakes.made[1].acquired == 3
    limiter.set_rate(None)
    await limiter.acquire(100 * MiB)
    assert fakes.total == 3


async def test_rate_change_applies_in_the_middle_of_a_request(fakes):
    limiter = RateLimiter(100, chunk=10, period=0.1, throttler_factory=fakes)  # 1 permit of 10
    assert limiter.window.chunk == 10

    def switch(throttler):
        if throttler is fakes.made[0] and throttler.acquired == 4:
            limiter.set_rate(400)  # 4 permits of 10 per period

    fakes.on_acquire = switch
    await limiter.acquire(100)
    assert fakes.made[0].acquired == 4 and fakes.made[1].acquired == 6


async def test_lifting_the_limit_ends_a_waiting_request(fakes):
    limiter = RateLimiter(100, chunk=10, period=0.1, throttler_factory=fakes)
    fakes.on_acquire = lambda t: limiter.set_rate(None) if t.acquired == 3 else None
    await limiter.acquire(1000)
    assert fakes.total == 3


# --- many callers ---------------------------------------------------------------------------
async def test_concurrent_callers_are_served_one_at_a_time_in_order(fakes):
    limiter = ByteRateLimiter(MiB, throttler_factory=fakes)
    chunk = limiter.window.chunk
    finished: list[int] = []

    async def caller(i: int) -> None:
        await limiter.acquire(3 * chunk)
        finished.append(i)

    await asyncio.gather(*(caller(i) for i in range(20)))
    assert fakes.max_inside == 1  # only one task ever polls the throttler
    assert finished == list(range(20))
    assert fakes.total == 60


async def test_cancelled_request_does_not_leave_debt_or_credit(fakes):
    limiter = RateLimiter(100, chunk=10, period=0.1, throttler_factory=fakes)
    task = asyncio.create_task(limiter.acquire(10_000))
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    before = fakes.total
    assert 0 < before < 1000
    await limiter.acquire(10)
    assert fakes.total == before + 1


# --- schedules ------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


class SpySchedule:
    """Delegates to a BandwidthSchedule, counting how often it is read."""

    def __init__(self, text: str) -> None:
        self.inner = BandwidthSchedule.parse(text)
        self.entries = self.inner.entries
        self.reads = 0

    def limits_at(self, dt):
        self.reads += 1
        return self.inner.limits_at(dt)

    def next_change_after(self, dt):
        return self.inner.next_change_after(dt)


TIMETABLE = "08:00,1MiB/s:2MiB/s 20:00,off Sat-00:00,off"


def test_scheduled_limiter_switches_at_the_timetable_boundaries(fakes):
    clock = Clock(MONDAY + timedelta(hours=7, minutes=59))
    up = ScheduledLimiter(BandwidthSchedule.parse(TIMETABLE), "upload", clock=clock,
                          throttler_factory=fakes)
    down = ScheduledLimiter(BandwidthSchedule.parse(TIMETABLE), "download", clock=clock,
                            throttler_factory=fakes)
    assert (up.rate, down.rate) == (None, None)
    assert up.next_change == MONDAY + timedelta(hours=8)
    clock.now = MONDAY + timedelta(hours=8)
    assert (up.rate, down.rate) == (MiB, 2 * MiB)
    clock.now = MONDAY + timedelta(hours=19, minutes=59, seconds=59)
    assert (up.rate, down.rate) == (MiB, 2 * MiB)
    clock.now = MONDAY + timedelta(hours=20)
    assert (up.rate, down.rate) == (None, None)
    clock.now = MONDAY + timedelta(days=5, hours=7)  # Saturday: off from 00:00 to 08:00
    assert up.rate is None and up.next_change == MONDAY + timedelta(days=5, hours=8)


async def test_schedule_is_read_only_at_its_change_instants(fakes):
    clock = Clock(MONDAY + timedelta(hours=9))
    schedule = SpySchedule(TIMETABLE)
    limiter = ScheduledLimiter(schedule, "upload", clock=clock, throttler_factory=fakes)
    assert schedule.reads == 1
    for _ in range(200):
        await limiter.acquire(200_000)
    assert schedule.reads == 1 and fakes.total > 200
    clock.now = MONDAY + timedelta(hours=20, minutes=1)
    await limiter.acquire(200_000)
    assert schedule.reads == 2 and limiter.rate is None


async def test_schedule_change_applies_in_the_middle_of_a_request(fakes):
    clock = Clock(MONDAY + timedelta(hours=19, minutes=59))
    limiter = ScheduledLimiter(BandwidthSchedule.parse(TIMETABLE), "upload", clock=clock,
                               throttler_factory=fakes)

    def tick(throttler):
        if throttler.acquired == 5:
            clock.now = MONDAY + timedelta(hours=20)

    fakes.on_acquire = tick
    await limiter.acquire(50 * MiB)  # would need ~800 permits at 1 MiB/s
    assert fakes.total == 5 and limiter.rate is None


def test_clock_going_backwards_rereads_the_schedule(fakes):
    clock = Clock(MONDAY + timedelta(hours=8, minutes=30))
    limiter = ScheduledLimiter(BandwidthSchedule.parse(TIMETABLE), "upload", clock=clock,
                               throttler_factory=fakes)
    assert limiter.rate == MiB
    clock.now = MONDAY + timedelta(hours=7)
    assert limiter.rate is None


async def test_constant_schedule_never_reads_the_clock_again(fakes):
    clock = Clock(MONDAY)
    limiter = ScheduledLimiter(BandwidthSchedule.parse("4MiB/s:off"), "upload", clock=clock,
                               throttler_factory=fakes)
    assert clock.reads == 1 and limiter.next_change is None
    for _ in range(50):
        await limiter.acquire(100_000)
    assert clock.reads == 1 and limiter.rate == 4 * MiB


def test_scheduled_limiter_refuses_an_unknown_direction():
    with pytest.raises(ValueError):
        ScheduledLimiter(BandwidthSchedule.parse("1MiB/s"), "sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "limited"),
    [
        (None, (False, False)),
        ("off", (False, False)),
        ("10MiB/s", (True, True)),
        ("10MiB/s:off", (True, False)),
        ("off:3MiB/s", (False, True)),
        ("08:00,5MiB/s:off 20:00,off", (True, False)),
        (TIMETABLE, (True, True)),
    ],
)
def test_bandwidth_limiters_skip_directions_that_are_never_limited(text, limited):
    schedule = None if text is None else BandwidthSchedule.parse(text)
    up, down = bandwidth_limiters(schedule, clock=lambda: MONDAY + timedelta(hours=9))
    assert (up is not None, down is not None) == limited
    for limiter in (up, down):
        assert limiter is None or isinstance(limiter, ScheduledLimiter)
