"""The ``[tables]`` and ``[throttle]`` sections of a policy: which tables drtool copies, and how
fast it may read them from the primary and send them to the repository.

Helper of ``drtool.config.policy`` (which calls ``parse_tables`` and ``parse_throttle``); every
failure is a one-line PolicyError. Globs are ``fnmatchcase`` patterns over "db.table"; rates
are policy units (``drtool.util.units``: "10MiB/s", timetables, "5000/s").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from drtool.model import TableName
from drtool.config.fields import Section
from drtool.util.units import BANDWIDTH_EXPECTED, DOC_RATE_EXPECTED, BandwidthSchedule, parse_doc_rate

TABLES_KEYS = ("include", "exclude")
THROTTLE_KEYS = ("bandwidth", "primary_reads")


@dataclass(frozen=True)
class TablesPolicy:
    """Which tables a snapshot or replication covers: ``fnmatchcase`` globs over "db.table".
    ``state_db`` is drtool's own database (``[replication] state_db``)."""

    include: tuple[str, ...] = ("*.*",)
    exclude: tuple[str, ...] = ()
    state_db: str = "drtool"

    def selects(self, name: TableName) -> bool:
        """True when ``name`` matches an include glob and no exclude glob. Tables of the
        ``rethinkdb`` system database and of drtool's state database are never selected,
        whatever the globs say."""
        text = str(name)
        return (
            name.db not in ("rethinkdb", self.state_db)
            and any(fnmatchcase(text, p) for p in self.include)
            and not any(fnmatchcase(text, p) for p in self.exclude)
        )

    def selected(self, available: Iterable[TableName]) -> list[TableName]:
        """The tables of ``available`` that ``selects`` takes, in their order."""
        return [t for t in available if self.selects(t)]


@dataclass(frozen=True)
class ThrottlePolicy:
    """``bandwidth``: byte-rate limits over time (None: unlimited). ``primary_reads``:
    documents per second read from the primary (None: unlimited)."""

    bandwidth: BandwidthSchedule | None = None
    primary_reads: float | None = None


def parse_tables(sec: Section | None, state_db: str) -> TablesPolicy:
    """The TablesPolicy of [tables] (defaults when ``sec`` is None: every table);
    ``state_db`` is [replication] state_db. Raises PolicyError for an empty include list
    or a glob without a "."."""
    if sec is None:
        return TablesPolicy(state_db=state_db)
    include = sec.strings("include") if sec.has("include") else TablesPolicy.include
    if not include:
        raise sec.error("include", 'at least one "db.table" glob like "app.*"', [])
    for key, patterns in (("include", include), ("exclude", sec.strings("exclude"))):
        for i, pattern in enumerate(patterns):
            if "." not in pattern and pattern != "*":
                raise sec.error(f"{key}[{i}]", f'a "db.table" glob like "{pattern}.*"', pattern)
    return TablesPolicy(include=include, exclude=sec.strings("exclude"), state_db=state_db)


def parse_throttle(sec: Section | None) -> ThrottlePolicy:
    """The ThrottlePolicy of [throttle] (unlimited when ``sec`` is None). Raises PolicyError."""
    if sec is None:
        return ThrottlePolicy()
    return ThrottlePolicy(
        bandwidth=sec.parsed("bandwidth", BandwidthSchedule.parse, BANDWIDTH_EXPECTED)
        if sec.has("bandwidth") else None,
        primary_reads=sec.parsed("primary_reads", parse_doc_rate, DOC_RATE_EXPECTED)
        if sec.has("primary_reads") else None,
    )
