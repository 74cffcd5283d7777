"""A table's timelines, their restorable intervals, and the plan of a restore to a time.

Read from the repository's listing of ``log/<table key>/`` and the base markers (both
readable with the writer key alone): per timeline, the slices' intervals and the bases. A
timeline's slices form *runs* (maximal sequences whose intervals touch: ``t1`` of one equals
``t0`` of the next; where merged and unmerged slices overlap, the widest slice starting at a
point is taken). A base ``b`` makes ``[b.restorable_from, run.end)`` restorable when one run
covers ``b.from`` (the time its timeline's feed was ready) up to ``run.end``. A table's
restorable times are the union of these intervals over its timelines.

The plan of a restore to ``T`` (the idea of Litestream's restore plan): the base with the
greatest ``restorable_from <= T`` whose run reaches past ``T``, and that run's slices from
``b.from`` up to the one holding ``T``. Nothing here is trusted for the data: each slice
read proves its table, timeline and interval (its header, authenticated with its name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drtool.changelog.slices import BaseRef, SliceRef, parse_log_name, timeline_start
from drtool.errors import IntegrityError, ObjectNotFound, UsageError
from drtool.model import TableName
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Base:
    snapshot: str
    from_ms: int  # the log of its timeline starts here (the feed was ready)
    restorable_from: int  # the base was complete at this time


@dataclass
class Timeline:
    id: str
    slices: list[SliceRef] = field(default_factory=list)
    bases: list[Base] = field(default_factory=list)

    @property
    def start(self) -> int:
        return timeline_start(self.id)

    def runs(self) -> list[list[SliceRef]]:
        """Maximal runs of touching slices, in time order."""
        by_start: dict[int, SliceRef] = {}
        for s in self.slices:
            if s.t0 not in by_start or s.t1 > by_start[s.t0].t1:
                by_start[s.t0] = s
        runs: list[list[SliceRef]] = []
        covered_to = None
        for t0 in sorted(by_start):
            s = by_start[t0]
            if covered_to is not None and t0 < covered_to:
                if s.t1 <= covered_to:
                    continue  # inside a wider (merged) slice already taken
                raise IntegrityError(f"slices of timeline {self.id} overlap at {iso_ms(t0)}")
            if runs and covered_to == t0:
                runs[-1].append(s)
            else:
                runs.append([s])
            covered_to = s.t1
        return runs

    def gaps(self) -> list[tuple[int, int, str]]:
        """``(t0, t1, name)`` of each hole between two runs: slices that were written (the
        timeline went on after them) but are missing now; ``name`` is the missing slice's
        (or, if merged ones are missing, the interval's) name."""
        runs = self.runs()
        out = []
        for before, after in zip(runs, runs[1:]):
            a, b = before[-1].t1, after[0].t0
            out.append((a, b, f"{before[-1].name.rsplit('/', 1)[0]}/s-{a:013d}-{b:013d}"))
        return out

    def intervals(self) -> list[tuple[int, int, Base]]:
        """``(start, end, base)``: ``[start, end)`` is restorable from ``base``."""
        out = []
        for run in self.runs():
            lo, hi = run[0].t0, run[-1].t1
            for b in self.bases:
                if lo <= b.from_ms and b.restorable_from < hi:
                    out.append((b.restorable_from, hi, b))
        return out


async def load_timelines(repo: Repository, table: TableName) -> list[Timeline]:
    """Every timeline of ``table``'s log, oldest first (base markers read and checked)."""
    key = repo.log_table_key(str(table))
    timelines: dict[str, Timeline] = {}
    for name, size in (await repo.list_log(f"{LOG_PREFIX}{key}/")).items():
        ref = parse_log_name(name, size)
        if ref is None:
            continue
        tl = timelines.setdefault(ref.timeline, Timeline(ref.timeline))
        if isinstance(ref, SliceRef):
            tl.slices.append(ref)
        else:
            tl.bases.append(await _read_base(repo, ref, table))
    for tl in timelines.values():
        tl.slices.sort()
        tl.bases.sort(key=lambda b: b.restorable_from)
    return [timelines[k] for k in sorted(timelines)]


async def _read_base(repo: Repository, ref: BaseRef, table: TableName) -> Base:
    try:
        data = json.loads(await repo.get_base_marker(ref.name))
        if (data.get("table"), data.get("timeline"), data.get("snapshot")) != (
                str(table), ref.timeline, ref.snapshot):
            raise ValueError("names another base")
        return Base(ref.snapshot, int(data["from"]), int(data["restorable_from"]))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"base marker {ref.name} is malformed") from None


def restorable(timelines: list[Timeline]) -> list[tuple[int, int]]:
    """The table's restorable times as disjoint ``[start, end)`` intervals, in order."""
    spans = sorted((lo, hi) for tl in timelines for lo, hi, _ in tl.intervals())
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


@dataclass(frozen=True)
class RestorePlan:
    table: TableName
    at: int
    timeline: str
    base: Base
    slices: tuple[SliceRef, ...]


def plan_restore(table: TableName, timelines: list[Timeline], at: int) -> RestorePlan:
    """The base and slices that give ``table`` as it was at ``at`` (ms, primary's clock).
    Raises UsageError (exit 2) naming the nearest restorable times when ``at`` is in a gap,
    before the first base or after the newest sealed slice."""
    best = None
    for tl in timelines:
        for lo, hi, base in tl.intervals():
            if lo <= at < hi and (best is None or (base.restorable_from, tl.id) >
                                  (best[1].restorable_from, best[0].id)):
                best = (tl, base)
    if best is None:
        for tl in timelines:  # a hole between a base and T: name the first missing slice
            end = max((s.t1 for s in tl.slices), default=0)
            for a, _b, name in tl.gaps():
                if a <= at < end and any(base.from_ms < a for base in tl.bases):
                    raise missing_slice(name, at)
        raise UsageError(not_restorable(table, timelines, at))
    tl, base = best
    run = next(r for r in tl.runs() if r[0].t0 <= base.from_ms and at < r[-1].t1)
    slices = tuple(s for s in run if s.t1 > base.from_ms and s.t0 <= at)
    return RestorePlan(table, at, tl.id, base, slices)


def not_restorable(table: TableName, timelines: list[Timeline], at: int) -> str:
    spans = restorable(timelines)
    if not spans:
        return (f"{table} cannot be restored to {iso_ms(at)}: its change log has no restorable "
                "time yet (no base with sealed slices; is [archive] on and the runner running?)")
    before = [hi - 1 for lo, hi in spans if hi <= at]
    after = [lo for lo, hi in spans if lo > at]
    sides = []
    if before:
        sides.append(f"{iso_ms(max(before))} before")
    if after:
        sides.append(f"{iso_ms(min(after))} after")
    return (f"{table} cannot be restored to {iso_ms(at)}: not inside its change log; nearest "
            f"restorable times: {' and '.join(sides)} (see drtool timeline --table {table})")


def missing_slice(name: str, at: int) -> IntegrityError:
    return IntegrityError(f"slice {name} is missing from the repository: the restore to "
                          f"{iso_ms(at)} needs it; choose a time before it "
                          "(drtool timeline) or restore a snapshot")


__all__ = ["Base", "RestorePlan", "Timeline", "iso_ms", "load_timelines", "plan_restore",
           "restorable", "not_restorable", "missing_slice", "ObjectNotFound"]
