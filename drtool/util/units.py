"""Parsing and formatting of sizes, rates, durations and bandwidth timetables.

Pure functions, standard library only. Every parser raises ``ValueError`` whose text is a short
``expected ...`` phrase (no "got" part): callers such as ``drtool.config.policy`` append the offending
value and the key path to build their one-line error.

Units are bytes, never bits. Suffixes are case-insensitive: ``B``; SI ``k``/``KB`` (1000),
``M``/``MB``, ``G``/``GB``, ``T``/``TB``; binary ``KiB`` (1024), ``MiB``, ``GiB``, ``TiB``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _SIZE_UNITS[_p] = _SIZE_UNITS[_p + "b"] = 1000**_i
    _SIZE_UNITS[_p + "ib"] = 1024**_i

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_DOC_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([km]?)\s*docs?/s")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_UNLIMITED = ("off", "unlimited")

SIZE_EXPECTED = 'a size like "20MiB"'
RATE_EXPECTED = 'a rate like "20MiB/s" or "off"'
DOC_RATE_EXPECTED = 'a document rate like "20000docs/s"'
DURATION_EXPECTED = 'a duration like "6h", "90m" or "1h30m"'
BANDWIDTH_EXPECTED = 'a rate like "20MiB/s" or a timetable'
PERCENT_EXPECTED = 'a percentage like "30%"'


def parse_size(text: str) -> int:
    """``"20MiB"`` -> 20971520. A bare number is bytes; decimals are allowed ("1.5GiB").

    Raises ValueError("expected a size ...") for anything else, including negative numbers."""
    m = _SIZE_RE.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if m is None or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"expected {SIZE_EXPECTED}")
    return round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_rate(text: str) -> float | None:
    """``"20MiB/s"`` -> bytes per second; ``"off"`` or ``"unlimited"`` -> None (no limit).

    The ``/s`` is optional (``"20MiB"`` is the same rate, as in rclone). A rate must be > 0.
    Raises ValueError("expected a rate ...")."""
    if not isinstance(text, str):
        raise ValueError(f"expected {RATE_EXPECTED}")
    body = text.strip()
    if body.lower() in _UNLIMITED:
        return None
    if body.lower().endswith("/s"):
        body = body[:-2]
    try:
        value = parse_size(body)
    except ValueError:
        raise ValueError(f"expected {RATE_EXPECTED}") from None
    if value <= 0:
        raise ValueError(f"expected {RATE_EXPECTED} (a rate must be above zero)")
    return float(value)


def parse_doc_rate(text: str) -> float:
    """``"20000docs/s"`` (or ``"20k docs/s"``, ``"1M docs/s"``) -> documents per second, > 0.

    Raises ValueError("expected a document rate ...")."""
    m = _DOC_RATE_RE.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"expected {DOC_RATE_EXPECTED}")
    return float(m.group(1)) * {"": 1, "k": 1000, "m": 1000000}[m.group(2)]


def parse_percent(text: str) -> float:
    """``"30%"`` -> 0.3 (more than 0, at most 1000%). Raises ValueError("expected ...")."""
    try:
        value = float(text.strip().removesuffix("%")) / 100 if text.strip().endswith("%") else -1
    except (AttributeError, ValueError):
        value = -1
    if not 0 < value <= 10:
        raise ValueError(f"expected {PERCENT_EXPECTED}")
    return value


def parse_duration(text: str) -> float:
    """``"6h"``, ``"90m"``, ``"30s"``, ``"1d"``, ``"2w"``, ``"1h30m"`` -> seconds (>= 0).

    Parts go from the largest unit to the smallest, each unit at most once; a bare number (no
    unit) is refused as ambiguous. Raises ValueError("expected a duration ...")."""
    body = text.strip().lower() if isinstance(text, str) else ""
    parts = list(_DURATION_PART_RE.finditer(body))
    order = [list(_DURATION_UNITS).index(p.group(2)) for p in parts]
    if (
        not parts
        or "".join(p.group(0) for p in parts) != body
        or any(a >= b for a, b in zip(order, order[1:]))
    ):
        raise ValueError(f"expected {DURATION_EXPECTED}")
    return float(sum(float(p.group(1)) * _DURATION_UNITS[p.group(2)] for p in parts))


def format_bytes(n: float) -> str:
    """Human-readable binary size: ``512 B``, ``12.3 MiB``, ``1.0 GiB``."""
    value = float(n)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(value) < 1024:
            break
    else:
        value /= 1024
        unit = "PiB"
    return f"{value:.1f} {unit}"


def format_rate(bps: float | None) -> str:
    """``12.3 MiB/s``; None (no limit) -> ``unlimited``."""
    return "unlimited" if bps is None else f"{format_bytes(bps)}/s"


# --- bandwidth schedules --------------------------------------------------------------------
WEEK = timedelta(days=7)
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_ENTRY_EXPECTED = 'a timetable like "08:00,5MiB/s 20:00,off Sat-00:00,off"'

Limits = tuple[float | None, float | None]


def _parse_limits(text: str) -> Limits:
    """A rate applying both ways, or ``up:down``."""
    up, sep, down = text.partition(":")
    if not sep:
        rate = parse_rate(text)
        return rate, rate
    if ":" in down:
        raise ValueError('expected an "upload:download" pair like "10MiB/s:off"')
    return parse_rate(up), parse_rate(down)


@dataclass(frozen=True)
class BandwidthEntry:
    """From ``at`` (offset from Monday 00:00 in the weekly cycle) until the next entry, upload
    and download are limited to these bytes per second (None = unlimited)."""

    at: timedelta
    upload: float | None
    download: float | None


@dataclass(frozen=True)
class BandwidthSchedule:
    """A parsed ``throttle.bandwidth``: upload and download byte-rate limits over the week.

    Forms (``parse``):
      * ``"20MiB/s"`` — both directions; ``"off"`` — no limit;
      * ``"10MiB/s:off"`` — ``upload:download``;
      * a timetable (rclone style): space-separated ``HH:MM,RATE`` or ``Day-HH:MM,RATE`` entries
        (Day = Mon..Sun or the full name), RATE a rate, ``off`` or ``up:down``. An entry without
        a day applies every day at that time; a day entry wins over a daily entry at the same
        time. The limits at an instant are those of the latest entry at or before it in the
        weekly cycle, wrapping around to the last entry of the week.

    ``entries`` is the expanded weekly table, sorted by ``at``, never empty; a plain rate is one
    entry at Monday 00:00. ``text`` is the source text.
    """

    text: str
    entries: tuple[BandwidthEntry, ...] = field(repr=False)
    timetable: bool = False

    @classmethod
    def parse(cls, text: str) -> "BandwidthSchedule":
        """Parse one of the forms above; raise ValueError("expected ...") otherwise."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"expected {BANDWIDTH_EXPECTED}")
        if "," not in text:
            try:
                up, down = _parse_limits(text.strip())
            except ValueError:
                raise ValueError(f"expected {BANDWIDTH_EXPECTED}") from None
            return cls(text, (BandwidthEntry(timedelta(0), up, down),))
        table: dict[timedelta, tuple[bool, BandwidthEntry]] = {}
        for token in text.split():
            try:
                days, offset, limits = _parse_entry(token)
            except ValueError as err:
                raise ValueError(f'expected {_ENTRY_EXPECTED} (entry "{token}": {err})') from None
            for day in days:
                at = day * timedelta(days=1) + offset
                specific = len(days) == 1
                previous = table.get(at)
                if previous is not None and previous[0] == specific:
                    when = token.partition(",")[0]
                    raise ValueError(f'expected {_ENTRY_EXPECTED} (two entries for "{when}")')
                if previous is None or specific:
                    table[at] = (specific, BandwidthEntry(at, *limits))
        entries = tuple(table[at][1] for at in sorted(table))
        return cls(text, entries, timetable=True)

    def __str__(self) -> str:
        return self.text

    def limits_at(self, dt: datetime) -> Limits:
        """(upload, download) bytes/s in force at ``dt``; None = unlimited.

        ``dt``'s own wall-clock fields (weekday, hour, minute, ...) are used: pass local time
        (``datetime.now()``) for a timetable written in local time."""
        return self._current(_week_offset(dt))[1]

    def next_change_after(self, dt: datetime) -> datetime | None:
        """The first instant after ``dt`` at which ``limits_at`` returns different limits, or
        None if the limits never change (a plain rate, or a timetable of equal limits)."""
        offset = _week_offset(dt)
        index, current = self._current(offset)
        n = len(self.entries)
        for step in range(1, n):
            entry = self.entries[(index + step) % n]
            if (entry.upload, entry.download) != current:
                return dt + (entry.at - offset) % WEEK
        return None

    def _current(self, offset: timedelta) -> tuple[int, Limits]:
        index = bisect.bisect_right([e.at for e in self.entries], offset) - 1  # -1: wrap around
        entry = self.entries[index % len(self.entries)]
        return index % len(self.entries), (entry.upload, entry.download)


def _week_offset(dt: datetime) -> timedelta:
    return timedelta(
        days=dt.weekday(), hours=dt.hour, minutes=dt.minute, seconds=dt.second,
        microseconds=dt.microsecond,
    )


def _parse_entry(token: str) -> tuple[tuple[int, ...], timedelta, Limits]:
    """``[Day-]HH:MM,RATE`` -> (days it applies to, time of day, limits)."""
    when, sep, rate = token.partition(",")
    if not sep:
        raise ValueError("no comma between time and rate")
    day_text, dash, time_text = when.rpartition("-")
    days: tuple[int, ...] = tuple(range(7))
    if dash:
        name = day_text.lower()
        if name in _DAY_NAMES:
            days = (_DAY_NAMES.index(name),)
        elif name in _FULL_DAY_NAMES:
            days = (_FULL_DAY_NAMES.index(name),)
        else:
            raise ValueError("day must be Mon..Sun")
    m = _TIME_RE.fullmatch(time_text)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError("time must be HH:MM from 00:00 to 23:59")
    try:
        limits = _parse_limits(rate)
    except ValueError:
        raise ValueError('rate must be like "5MiB/s", "off" or "10MiB/s:off"') from None
    return days, timedelta(hours=int(m.group(1)), minutes=int(m.group(2))), limits
