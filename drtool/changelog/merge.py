"""Merging small slices into larger ones as they age (the idea of Litestream's compaction
levels), so a day of log leaves hundreds of objects per table, not tens of thousands.

``LEVELS``: slices whose end is older than ``age`` are merged per ``bucket`` of the primary's
clock (level 1: 10-minute buckets once 2 minutes old; level 2: hour buckets once an hour old).
A merge takes touching slices of one timeline that lie in one bucket and are all of a lower
level, writes one slice covering their union (``follows``: what the first followed; per key
the last version of each granule, exactly what the parts held: no restorable second is
lost), and only then deletes the parts. A reader that lists both sees the merged slice and the
parts overlapping and takes the widest (timeline.Timeline.runs). Merging reads slices, so the
runner merges those it can decrypt: its own session's (a writer key reads what it wrote
itself); slices of earlier runs stay as they are unless an identity is configured. Merged
slices are capped at ``MAX_MERGED_BYTES`` of stored parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from drtool.changelog.slices import (
    SliceHeader, SliceRef, decode_slice, encode_slice, merge_entries, parse_log_name,
    slice_name,
)
from drtool.errors import DrtoolError, EncryptionKeyError
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository

MAX_MERGED_BYTES = 64 << 20


@dataclass(frozen=True)
class Level:
    level: int
    bucket_ms: int
    age_ms: int


LEVELS = (Level(1, 10 * 60_000, 2 * 60_000), Level(2, 3_600_000, 3_600_000))


@dataclass
class MergeReport:
    merged: int = 0  # slices written
    replaced: int = 0  # slices deleted after their merge was written
    skipped: int = 0  # groups left alone (unreadable with this process's keys)


def _groups(slices: list[SliceRef], level: Level, now_ms: int) -> list[list[SliceRef]]:
    """Runs of touching slices, ending before ``now - age``, inside one bucket, 2 or more."""
    out: list[list[SliceRef]] = []
    current: list[SliceRef] = []
    for s in sorted(slices):
        fits = (s.t1 <= now_ms - level.age_ms
                and (s.t1 - 1) // level.bucket_ms == s.t0 // level.bucket_ms)
        if current and fits and current[-1].t1 == s.t0 and \
                s.t0 // level.bucket_ms == current[0].t0 // level.bucket_ms:
            current.append(s)
            continue
        if len(current) > 1:
            out.append(current)
        current = [s] if fits else []
    if len(current) > 1:
        out.append(current)
    return out


async def merge_table(repo: Repository, table: str, now_ms: int,
                      levels: tuple[Level, ...] = LEVELS) -> MergeReport:
    """Merge the aged slices of ``table`` ("db.table"); see the module docstring."""
    report = MergeReport()
    key = repo.log_table_key(table)
    for level in levels:
        by_timeline: dict[str, list[SliceRef]] = {}
        for name, size in (await repo.list_log(f"{LOG_PREFIX}{key}/")).items():
            ref = parse_log_name(name, size)
            if isinstance(ref, SliceRef):
                by_timeline.setdefault(ref.timeline, []).append(ref)
        for timeline, slices in sorted(by_timeline.items()):
            covered = _widest(slices)
            for group in _groups(covered, level, now_ms):
                if sum(s.size for s in group) > MAX_MERGED_BYTES:
                    continue
                try:
                    parts = [decode_slice(s.name, await repo.get_slice(s.name)) for s in group]
                except EncryptionKeyError:
                    report.skipped += 1
                    continue
                if any(h.level >= level.level for h, _ in parts):
                    continue
                first = parts[0][0]
                entries = merge_entries([e for _, e in parts])
                header = SliceHeader(table, timeline, group[0].t0, group[-1].t1, first.follows,
                                     len(entries), level.level)
                name = slice_name(key, timeline, header.t0, header.t1)
                blob = await repo.seal_slice(name, encode_slice(header, entries))
                await repo.put_log_blob(name, blob)
                report.merged += 1
                for s in group:
                    await repo.delete_log(s.name)
                    report.replaced += 1
    return report


def _widest(slices: list[SliceRef]) -> list[SliceRef]:
    """Drop slices lying inside a wider one (parts of a merge whose deletion was cut short)."""
    out: list[SliceRef] = []
    for s in sorted(slices, key=lambda s: (s.t0, -s.t1)):
        if out and s.t1 <= out[-1].t1 and s.t0 >= out[-1].t0:
            continue
        out.append(s)
    return out


__all__ = ["LEVELS", "Level", "MergeReport", "merge_table", "DrtoolError"]
